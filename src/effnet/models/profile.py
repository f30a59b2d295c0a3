"""Parameters, multiply-adds and activation sizes of a description, counted without allocating real
weights (PyTorch's meta device), and the memory check made before a model or a batch is allocated."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from effnet.describe.network import MAX_RESOLUTION, NetworkSpec
from effnet.errors import UserError, check_whole_number
from effnet.models.efficientnet import EfficientNet
from effnet.results import Result
from effnet.zoo import resolve_description


@dataclass(frozen=True)
class Profile(Result):
    """Size and cost of a model at one resolution, for one image. ``macs`` are multiply-adds (the
    paper's FLOPS); ``activations`` the elements written by every convolution and linear layer (the
    cost of Dollár et al. 2021, "Fast and Accurate Model Scaling", which tracks run time better than
    multiply-adds); ``layer_outputs`` the elements every layer outputs (normalisations and
    activation functions too: what training keeps for backward, roughly, and what the memory
    estimate uses), ``peak_layer_output`` the largest single output."""

    params: int
    macs: int
    resolution: int
    activations: int = 0
    layer_outputs: int = 0
    peak_layer_output: int = 0

    def memory_bytes(self, batch_size: int, *, training: bool, bytes_per_element: int = 4) -> int:
        """About what running this model needs: weights (training: with their gradients and two
        optimiser buffers) and layer outputs (training: every layer's; inference: a few of the
        largest at a time)."""
        weights = self.params * bytes_per_element * (4 if training else 1)
        per_image = self.layer_outputs if training else 3 * self.peak_layer_output
        return weights + per_image * batch_size * bytes_per_element


def profile(
    model_or_description: str | NetworkSpec | EfficientNet,
    *,
    num_classes: int = 1000,
    in_chans: int = 3,
    resolution: int | None = None,
) -> Profile:
    """Count parameters, multiply-adds and activations (outputs of convolutions and linear layers)
    for one image, and every layer's output for the memory estimate.

    The model is built on PyTorch's meta device, so even L2 at 800 px costs milliseconds.
    torch.utils.flop_counter counts 2 FLOPs per multiply-add; we report multiply-adds.
    """
    if isinstance(model_or_description, EfficientNet):
        model = model_or_description
        spec, num_classes, in_chans = model.spec, model.num_classes, model.in_chans
    else:
        spec = resolve_description(model_or_description)
    if resolution is not None:
        check_whole_number("resolution", resolution, 1, " of pixels", high=MAX_RESOLUTION)
    size = resolution or spec.resolution
    sizes: list[int] = []
    written: list[int] = []  # by convolutions and linear layers

    def count(module: nn.Module, _inputs: object, output: object) -> None:
        if isinstance(output, torch.Tensor):
            sizes.append(output.numel())
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                written.append(output.numel())

    with torch.device("meta"):
        meta = EfficientNet(spec, num_classes=num_classes, in_chans=in_chans).eval()
        params = sum(p.numel() for p in meta.parameters())
        hooks = [m.register_forward_hook(count) for m in meta.modules() if not list(m.children())]
        counter = FlopCounterMode(display=False)
        with counter, torch.no_grad():
            meta(torch.empty(1, in_chans, size, size))
        for hook in hooks:
            hook.remove()
    return Profile(
        params=int(params),
        macs=int(counter.get_total_flops() // 2),
        resolution=size,
        activations=int(sum(written)),
        layer_outputs=int(sum(sizes)),
        peak_layer_output=int(max(sizes, default=0)),
    )


def available_memory_bytes(device: torch.device | str = "cpu") -> int | None:
    """Memory free for a new allocation: the GPU's free memory, or on the CPU Linux's MemAvailable and,
    under an address-space limit (``ulimit -v``), no more than what is left of it (None where neither
    can be read)."""
    device = torch.device(device)
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    free = _meminfo_available()
    left = _address_space_left()
    return free if left is None else left if free is None else min(free, left)


def _meminfo_available() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _address_space_left() -> int | None:
    """Bytes this process may still map under its address-space limit; None without a limit."""
    try:
        import resource

        soft = resource.getrlimit(resource.RLIMIT_AS)[0]
        if soft == resource.RLIM_INFINITY:
            return None
        status = Path("/proc/self/status").read_text()
        used = next(int(line.split()[1]) * 1024 for line in status.splitlines() if line.startswith("VmSize:"))
    except (ImportError, OSError, ValueError, StopIteration):
        return None
    return max(0, soft - used)


def check_memory(
    spec: NetworkSpec,
    *,
    batch_size: int,
    training: bool,
    device: torch.device | str = "cpu",
    num_classes: int = 1000,
    in_chans: int = 3,
    resolution: int | None = None,
) -> Profile:
    """Refuse, before anything is allocated, a model and batch that cannot fit in the device's memory
    (one line with the numbers). Returns the description's profile."""
    counts = profile(spec, num_classes=num_classes, in_chans=in_chans, resolution=resolution)
    need = counts.memory_bytes(batch_size, training=training)
    free = available_memory_bytes(device)
    if free is not None and need > free:
        what = "training" if training else "inference"
        raise UserError(
            f"{spec.name} at {counts.resolution} px needs ~{need / 2**30:.1f} GiB for {what} at batch {batch_size} "
            f"({counts.params / 1e6:.1f}M parameters, {counts.layer_outputs * batch_size * 4 / 2**30:.1f} GiB of "
            f"layer outputs), {free / 2**30:.1f} GiB available on {torch.device(device)}: use a smaller batch, "
            "resolution or model",
            field="batch_size",
        )
    return counts


def measure_latency_ms(
    spec: NetworkSpec,
    *,
    resolution: int | None = None,
    num_classes: int = 1000,
    batch_size: int = 1,
    repeats: int = 10,
    warmup: int = 2,
    threads: int | None = None,
) -> float:
    """Median wall time of one forward pass (eval mode, no grad) on this machine's CPU, in ms."""
    import statistics
    import time

    size = resolution or spec.resolution
    model = EfficientNet(spec, num_classes=num_classes).eval()
    x = torch.randn(batch_size, 3, size, size)
    old = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        times = []
        with torch.inference_mode():
            for i in range(warmup + repeats):
                start = time.perf_counter()
                model(x)
                if i >= warmup:
                    times.append(1000 * (time.perf_counter() - start))
    finally:
        torch.set_num_threads(old)
    return statistics.median(times)
