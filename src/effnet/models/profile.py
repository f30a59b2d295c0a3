"""Parameters and multiply-adds of a description, counted without allocating real weights."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils.flop_counter import FlopCounterMode

from effnet.describe.network import NetworkSpec
from effnet.models.efficientnet import EfficientNet
from effnet.zoo import resolve_description


@dataclass(frozen=True)
class Profile:
    """Size and cost of a model at one resolution. ``macs`` are multiply-adds (the paper's FLOPS)."""

    params: int
    macs: int
    resolution: int


def profile(
    model_or_description: str | NetworkSpec | EfficientNet,
    *,
    num_classes: int = 1000,
    in_chans: int = 3,
    resolution: int | None = None,
) -> Profile:
    """Count parameters and multiply-adds of convolutions and linear layers for one image.

    The model is built on PyTorch's meta device, so even L2 at 800 px costs milliseconds.
    torch.utils.flop_counter counts 2 FLOPs per multiply-add; we report multiply-adds.
    """
    if isinstance(model_or_description, EfficientNet):
        model = model_or_description
        spec, num_classes, in_chans = model.spec, model.num_classes, model.in_chans
    else:
        spec = resolve_description(model_or_description)
    size = resolution or spec.resolution
    with torch.device("meta"):
        meta = EfficientNet(spec, num_classes=num_classes, in_chans=in_chans).eval()
        params = sum(p.numel() for p in meta.parameters())
        counter = FlopCounterMode(display=False)
        with counter, torch.no_grad():
            meta(torch.empty(1, in_chans, size, size))
    return Profile(params=int(params), macs=int(counter.get_total_flops() // 2), resolution=size)


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
