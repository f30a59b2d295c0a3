"""Side by side: effnet EfficientNet-B0 against timm's and torchvision's, inference and training,
and the deployment paths: bfloat16, int8 in ONNX Runtime (effnet's B0 and Lite0, timm's B0
quantized the same way), with their accuracy.

One process per allocator (glibc's default and a tuned one, :data:`ALLOCATORS`, the fast path's own
tuning off in both; ``--processes N``: N each, alternating, their rounds pooled and each one's
ratios printed too), same threads,
batch sizes, input and layout (channels_last) for every model; A/B repetitions interleaved (every
configuration timed once per round, in a fresh random order each round, after one untimed call;
rounds repeated) so machine load and the memory state one model leaves for the next hit all sides
alike; medians printed, and inference ratios as the median of per-round ratios (paired, so drift
between rounds cancels). ONNX models are exported and quantized once, in the parent, into a cache
folder (``--cache``, reused when given again). Training peak memory is measured per configuration
in a fresh subprocess (CPU: peak resident memory, VmHWM; CUDA: ``max_memory_allocated``).
Accuracy (``--accuracy``): top-1 agreement with float32 on real photos (scikit-image's and
scikit-learn's, with flips and crops) of the ImageNet Lite0, and CIFAR-10 test top-1 of a Lite0
fine-tuned on CIFAR-10 (``--cifar10-weights``: made once by ``bench_cifar10_train.py --which
finetune --output runs/cifar10-lite0``) in float32, bfloat16 and int8.

    python benchmarks/bench_speed.py            # full run (CPU here, CUDA when present)
    python benchmarks/bench_speed.py --quick    # smoke test: small input, few repetitions
    python benchmarks/bench_speed.py --json     # machine-readable
    python benchmarks/bench_speed.py --processes 3 --rounds 3   # three fresh processes per allocator

Peers are built with pretrained=False / weights=None: nothing is downloaded.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import math
import os
import random
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

#: glibc malloc settings per allocator run: the default, and one that keeps freed memory instead of
#: handing it back to the system (no page faults for large fresh tensors; what PyTorch's CPU guides
#: get from jemalloc or tcmalloc, and what effnet's fast path sets itself by default). Both tell the
#: fast path to leave the allocator as it is, so that every model in a process runs under its setting.
ALLOCATORS = {
    "default": {"EFFNET_TUNE_ALLOCATOR": "0"},
    "tuned": {
        "MALLOC_MMAP_THRESHOLD_": "33554432",
        "MALLOC_TRIM_THRESHOLD_": "4294967296",
        "MALLOC_TOP_PAD_": "268435456",
        "EFFNET_TUNE_ALLOCATOR": "0",
    },
}
DEFAULT_CIFAR10 = Path("/work/shared/data/cifar10")
DEFAULT_CIFAR10_WEIGHTS = (
    Path(__file__).resolve().parents[1] / "runs" / "cifar10-lite0" / "finetune" / "model.safetensors"
)
#: Parts kept in float32 when the bench quantizes (effnet quantize's default: none).
KEEP: tuple[str, ...] = ()
TRAIN_CONFIGS = ("timm", "torchvision", "effnet", "effnet_memory", "effnet_checkpoint", "effnet_memory_checkpoint")
TARGETS = {
    "fast_eager_vs_timm_eager_b16": (">=", 1.3),
    "best_vs_timm_onnxruntime_b16": (">=", 1.0),
    "same_vs_symmetric_b16": (">=", 0.97),
    "fast_max_abs_diff": ("<=", 1e-4),
    "memory_peak_vs_timm": ("<=", 0.85),
    "memory_speed_vs_timm": (">=", 0.9),
    "checkpoint_activation_vs_timm": ("<=", 0.5),
    "tuned: fast_eager_vs_timm_eager_b16": (">=", 1.3),
    # the eager bf16 path: the one whose accuracy the bench measures (the compiled one keeps bf16 biases)
    "tuned: fast_bf16_vs_timm_eager_b16": (">=", 2.0),
    "tuned: lite0_int8_vs_lite0_onnxruntime_b16": (">=", 2.0),
    "bf16_photo_agreement": (">=", 0.99),
    "bf16_cifar10_agreement": (">=", 0.99),
    "bf16_cifar10_top1_drop": ("<=", 0.003),
    "int8_cifar10_top1_drop": ("<=", 0.01),
}


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def build(
    name: str, *, image_size: int, memory: bool = False, padding: str | None = None, drop_path: float = 0.2
) -> nn.Module:
    """A B0 by family: ``effnet`` (ours), ``timm`` or ``torchvision``; random weights (seeded: the
    same in every process, so the ONNX files exported in the parent hold them too), no download.

    All three drop residual branches at the same rate in training (stochastic depth 0.2: the paper's
    recipe, torchvision's and effnet's default; timm's model defaults to none), so a training step
    does the same work in each."""
    torch.manual_seed(0)
    if name == "timm":
        import timm

        return timm.create_model("efficientnet_b0", pretrained=False, drop_path_rate=drop_path)
    if name == "torchvision":
        import torchvision

        return torchvision.models.efficientnet_b0(weights=None, stochastic_depth_prob=drop_path)
    from effnet import create_model

    return create_model(
        "efficientnet_b0", padding=padding, resolution=image_size, memory_efficient=memory, drop_path_rate=drop_path
    )


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


# ---------------------------------------------------------------------------------------------- inference


def compiled(model: nn.Module) -> nn.Module:
    """torch.compile as the peers would use it, weights frozen for inference (same for every model)."""
    return torch.compile(model, options={"freezing": True})  # type: ignore[return-value]


def onnx_files(args: argparse.Namespace) -> dict[str, Path]:
    """Every ONNX model the inference paths run, by name, exported (and quantized, calibrated on the
    photos) once into ``args.cache`` and reused from there: effnet's B0 for the input size (as
    before) and for any size, timm's and torchvision's B0, the ImageNet Lite0, and int8 B0s and
    Lite0 (quantized alike: :data:`KEEP` in float32, per-channel, minmax, 7-bit weights but for the
    depthwise ones where this CPU has no VNNI, as ``effnet quantize`` does: :func:`int8_bits`)."""
    from effnet.export.onnx import INPUT_NAME, export_onnx
    from effnet.export.quantize import ImageCalibration, quantize_onnx
    from effnet.infer.fast import exportable
    from effnet.preprocess import default_preprocessing

    cache, size = Path(args.cache), args.image_size
    cache.mkdir(parents=True, exist_ok=True)
    b0 = build("effnet", image_size=size).eval()
    lite0 = lite0_imagenet()[0]
    make = {
        "effnet": lambda: export_onnx(exportable(b0), input_size=size),
        "effnet any size": lambda: export_onnx(exportable(b0, any_size="onnx")),
        "timm": lambda: export_onnx(build("timm", image_size=size).eval(), input_size=size),
        "torchvision": lambda: export_onnx(build("torchvision", image_size=size).eval(), input_size=size),
        "lite0": lambda: export_onnx(exportable(lite0), input_size=size),
    }
    files = {}
    for name, export in make.items():
        files[name] = cache / f"{name.replace(' ', '-')}-{size}.onnx"
        if not files[name].exists():
            log(f"  exporting {name} to ONNX")
            files[name].write_bytes(export())
    photos = photo_files(cache)
    for name, model, keep in (
        ("effnet", b0, KEEP),
        ("timm", b0, KEEP),
        ("lite0", lite0, KEEP),
        ("effnet", b0, ("se",)),
    ):
        label = f"{name} int8" + (f" ({','.join(keep)} float32)" if keep != KEEP else "")
        files[label] = path = cache / f"{label.replace(' ', '-').replace(',', '-')}-{size}{int8_bits()}.onnx"
        if not path.exists():
            log(f"  quantizing {label}")
            transform = default_preprocessing(model.spec.with_(resolution=size)).eval_transform()
            calibration = ImageCalibration(photos, transform, INPUT_NAME, str(cache))
            data = quantize_onnx(files[name].read_bytes(), calibration, keep=keep, reduce_range=bool(int8_bits()))
            path.write_bytes(data[0])
    return files


def int8_bits() -> str:
    """How int8 weights are quantized for this CPU, as a cache file suffix: "" for 8 bits, "-7bit-dw8"
    where it has no VNNI or AMX-INT8 (full-range weights saturate its int8 matrix products: 7 bits but
    for the depthwise weights, as ``effnet quantize`` does)."""
    from effnet.infer.hardware import int8_dot_products_on_cpu

    return "" if int8_dot_products_on_cpu() else "-7bit-dw8"


def onnxruntime_runner(path: Path, threads: int, split: bool = False) -> Callable[[torch.Tensor], Any]:
    """An ONNX file (batch dynamic) in ONNX Runtime with ``threads`` threads: one session and NCHW
    input as a user would run it, or with ``split`` the way effnet's onnxruntime backend runs its
    own export (batches split between one-thread runs, channels_last input passed as NHWC without
    a copy)."""
    from effnet.export.ort import OrtModule

    return OrtModule(path.read_bytes(), threads, split=split, channels_last=split)


def lite0_imagenet() -> tuple[nn.Module, Any]:
    """The ImageNet-trained Lite0 (package data, no download) and its weight info."""
    from effnet.factory import load_model

    model, info = load_model("lite0-imagenet")
    return model.eval(), info


def photo_files(folder: Path) -> list[Path]:
    """Real photos as PNG files in ``folder/photos``: the ten scikit-image ships (two grey) and
    scikit-learn's two sample images, each also flipped and as its centre half (48 images)."""
    import skimage.data
    from PIL import Image, ImageOps
    from sklearn.datasets import load_sample_images

    out = folder / "photos"
    if not any(out.glob("*.png")):
        out.mkdir(parents=True, exist_ok=True)
        names = ["astronaut", "chelsea", "coffee", "rocket", "cat", "hubble_deep_field", "immunohistochemistry",
                 "retina", "camera", "coins"]  # fmt: skip
        images = {name: Image.fromarray(getattr(skimage.data, name)()).convert("RGB") for name in names}
        images |= {f"sklearn{i}": Image.fromarray(a).convert("RGB") for i, a in enumerate(load_sample_images().images)}
        for name, image in images.items():
            w, h = image.size
            half = image.crop((w // 4, h // 4, w // 4 + w // 2, h // 4 + h // 2))
            for tag, variant in (("", image), ("-flip", ImageOps.mirror(image)), ("-half", half),
                                 ("-half-flip", ImageOps.mirror(half))):  # fmt: skip
                variant.save(out / f"{name}{tag}.png")
    return sorted(out.glob("*.png"))


def inference_runners(
    args: argparse.Namespace, device: torch.device, files: dict[str, Path]
) -> dict[str, Callable[[torch.Tensor], Any]]:
    """Every inference configuration, by name."""
    from effnet.deploy.optimize import optimize
    from effnet.infer.hardware import native_on_cpu

    size = args.image_size
    cl = torch.channels_last
    ours = build("effnet", image_size=size).eval().to(device, memory_format=cl)
    ours_sym = build("effnet", image_size=size, padding="symmetric").eval().to(device, memory_format=cl)
    peers = {name: build(name, image_size=size).eval().to(device, memory_format=cl) for name in ("timm", "torchvision")}
    runners: dict[str, Callable[[torch.Tensor], Any]] = {
        "effnet eager (plain)": ours,
        "effnet fast": optimize(ours),
        "effnet fast (symmetric)": optimize(ours_sym),
    }
    if device.type == "cpu":
        runners["effnet fast (PyTorch convolutions)"] = optimize(ours, onednn=False)
    for name, model in peers.items():
        runners[f"{name} eager"] = model
    bf16 = device.type == "cuda" or native_on_cpu(torch.bfloat16)
    if bf16:
        runners["effnet fast bf16"] = optimize(ours, dtype="bfloat16")
        runners["timm eager bf16 (autocast)"] = autocast(peers["timm"], device, torch.bfloat16)
    if device.type == "cuda":  # float16: a GPU's other half precision (CPUs have no fast float16 convolutions)
        runners["effnet fast fp16"] = optimize(ours, dtype="float16")
        runners["timm eager fp16 (autocast)"] = autocast(peers["timm"], device, torch.float16)
    if args.compile:
        runners["effnet compiled"] = optimize(ours, backend="compile")
        if bf16:
            runners["effnet compiled bf16"] = optimize(ours, backend="compile", dtype="bfloat16")
        for name, model in peers.items():
            runners[f"{name} compiled"] = compiled(model)
    if args.onnxruntime and device.type == "cpu":
        threads = args.threads
        runners["effnet onnxruntime"] = onnxruntime_runner(files["effnet"], threads, split=True)
        runners["effnet onnxruntime (any size)"] = onnxruntime_runner(files["effnet any size"], threads, split=True)
        for name in peers:
            runners[f"{name} onnxruntime"] = onnxruntime_runner(files[name], threads)
        # effnet's way of running ONNX Runtime, given timm's export: what the runner adds, apart
        runners["timm onnxruntime (effnet's runner)"] = onnxruntime_runner(files["timm"], threads, split=True)
        if args.int8:  # every int8 model, and Lite0's float32 for its ratio, run by effnet's runner
            runners["effnet onnxruntime int8"] = onnxruntime_runner(files["effnet int8"], threads, split=True)
            runners["effnet onnxruntime int8 (SE float32)"] = onnxruntime_runner(
                files["effnet int8 (se float32)"], threads, split=True
            )
            runners["timm onnxruntime int8 (effnet's runner)"] = onnxruntime_runner(files["timm int8"], threads, True)
            runners["lite0 onnxruntime"] = onnxruntime_runner(files["lite0"], threads, split=True)
            runners["lite0 onnxruntime int8"] = onnxruntime_runner(files["lite0 int8"], threads, split=True)
    return runners


def autocast(model: nn.Module, device: torch.device, dtype: torch.dtype) -> Callable[[torch.Tensor], Any]:
    """``model`` under ``dtype`` autocast, as a peer's user would run it in half precision."""

    def run(x: torch.Tensor) -> Any:
        with torch.autocast(device.type, dtype=dtype):
            return model(x)

    return run


def fast_path_error(args: argparse.Namespace, device: torch.device) -> dict[str, float]:
    """Largest |fast path − plain model| on a batch (random BN statistics make folding count).

    ``fp32``: both in strict float32. On CUDA, cuDNN's default TF32 convolutions (10-bit mantissa)
    round the folded and unfolded weights differently; that figure is reported as ``tf32``."""
    from effnet.deploy.optimize import optimize

    torch.manual_seed(0)
    model = randomise_bn(build("effnet", image_size=args.image_size).eval())
    model = model.to(device, memory_format=torch.channels_last)
    x = torch.randn(4, 3, args.image_size, args.image_size, device=device)
    fast = optimize(model)
    errors = {}
    modes = ("fp32", "tf32") if device.type == "cuda" else ("fp32",)
    for mode in modes:
        with tf32(mode == "tf32"), torch.inference_mode():
            errors[mode] = (fast(x) - model(x)).abs().max().item()
    return errors


def randomise_bn(model: nn.Module) -> nn.Module:
    """``model`` with random BatchNorm running statistics (in place), so that folding them counts."""
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    return model


@contextlib.contextmanager
def tf32(enabled: bool) -> Iterator[None]:
    """Within the block: CUDA's TF32 convolutions and matrix products on or off (restored after)."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def time_call(fn: Callable[[torch.Tensor], Any], x: torch.Tensor, calls: int, device: torch.device) -> float:
    """Images per second of ``calls`` calls."""
    sync(device)
    start = time.perf_counter()
    for _ in range(calls):
        fn(x)
    sync(device)
    return calls * x.shape[0] / (time.perf_counter() - start)


def bench_inference(
    args: argparse.Namespace, device: torch.device, files: dict[str, Path]
) -> dict[str, dict[str, Any]]:
    """{batch: {configuration: {median, runs}}} with interleaved rounds."""
    runners = inference_runners(args, device, files)
    results: dict[str, dict[str, Any]] = {}
    plain = runners["effnet eager (plain)"]
    for batch in args.batch_sizes:
        x = torch.randn(batch, 3, args.image_size, args.image_size, device=device)
        x = x.contiguous(memory_format=torch.channels_last)
        calls: dict[str, int] = {}
        errors: dict[str, float] = {}
        with torch.inference_mode():
            reference = plain(x).float().cpu()
            for name, fn in runners.items():
                log(f"  warm-up batch {batch}: {name}")
                if name.startswith("effnet") and "symmetric" not in name:
                    errors[name] = (fn(x).float().cpu() - reference).abs().max().item()
                # first calls: allocation, oneDNN's kernels and packed weights for this input shape
                start = time.perf_counter()
                warm = 0
                while warm < 2 or time.perf_counter() - start < args.warmup:
                    fn(x)
                    warm += 1
                sync(device)
                start = time.perf_counter()
                fn(x)
                sync(device)
                one = time.perf_counter() - start
                calls[name] = max(1, math.ceil(args.min_time / max(one, 1e-4)))
            runs: dict[str, list[float]] = {name: [] for name in runners}
            order = list(runners)
            shuffle = random.Random(batch)
            for round_index in range(args.rounds):
                log(f"  batch {batch}: round {round_index + 1}/{args.rounds}")
                shuffle.shuffle(order)  # no configuration always follows the same one
                for name in order:
                    runners[name](x)  # steady state: the previous configuration's memory churn settles
                    runs[name].append(time_call(runners[name], x, calls[name], device))
        results[str(batch)] = {
            name: {
                "median": statistics.median(r),
                "runs": r,
                **({"max_abs_diff": errors[name]} if name in errors else {}),
            }
            for name, r in runs.items()
        }
    return results


# ---------------------------------------------------------------------------------------------- training


def peak_rss() -> int:
    """This process's peak resident memory in bytes: VmHWM (per address space, so a worker started
    from a large parent does not inherit the parent's peak, as ``ru_maxrss`` does across exec)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def train_worker(config: str, args: argparse.Namespace) -> dict[str, Any]:
    """One training configuration in this (fresh) process: images/s and peak memory."""
    device = torch.device(args.device)
    torch.manual_seed(0)
    family = "effnet" if config.startswith("effnet") else config
    model = build(family, image_size=args.image_size, memory="memory" in config)
    if "checkpoint" in config:
        model.set_grad_checkpointing(True)
    model = model.train().to(device, memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(args.train_batch, 3, args.image_size, args.image_size, device=device)
    x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 1000, (args.train_batch,), device=device)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()

    sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = peak_rss()
    step()  # warm-up (allocates optimizer state)
    speeds = []
    for _ in range(args.train_steps):
        sync(device)
        start = time.perf_counter()
        step()
        sync(device)
        speeds.append(args.train_batch / (time.perf_counter() - start))
    peak = torch.cuda.max_memory_allocated() if device.type == "cuda" else peak_rss()
    return {
        "images_per_s": statistics.median(speeds),
        "steps": speeds,
        "peak_mb": peak / 2**20,
        "base_mb": base / 2**20,
        "activation_mb": (peak - base) / 2**20,
    }


def bench_training(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """Every training configuration, each run in a fresh subprocess, rounds interleaved."""
    runs: dict[str, list[dict[str, Any]]] = {c: [] for c in TRAIN_CONFIGS}
    for round_index in range(args.train_rounds):
        for config in TRAIN_CONFIGS:
            log(f"  training round {round_index + 1}/{args.train_rounds}: {config}")
            command = [sys.executable, os.path.abspath(__file__), "--train-worker", config, *worker_args(args)]
            done = subprocess.run(command, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                raise RuntimeError(f"training worker {config} failed:\n{done.stderr[-3000:]}")
            runs[config].append(json.loads(done.stdout.strip().splitlines()[-1]))
    results = {}
    for config, items in runs.items():
        results[config] = {
            key: statistics.median(item[key] for item in items)
            for key in ("images_per_s", "peak_mb", "base_mb", "activation_mb")
        }
        results[config]["runs"] = items
    return results


def worker_args(args: argparse.Namespace) -> list[str]:
    return [
        "--device", args.device, "--threads", str(args.threads), "--image-size", str(args.image_size),
        "--train-batch", str(args.train_batch), "--train-steps", str(args.train_steps),
    ]  # fmt: skip


# ---------------------------------------------------------------------------------------------- report


def _div(a: float, b: float) -> float:
    return a / b if b else float("nan")


def _paired(table: dict[str, Any], a: str, b: str) -> float:
    """Median over rounds of ``a``'s images/s over ``b``'s in the same round: interleaved A/B, so
    that the machine's drift between rounds (±10% on a shared VM) cancels out of the ratio."""
    return statistics.median(x / y for x, y in zip(table[a]["runs"], table[b]["runs"], strict=True))


def ratios(inference: dict[str, Any], training: dict[str, Any], error: dict[str, float] | None) -> dict[str, float]:
    """The target figures: inference ratios paired per round (batch 16), training ratios of medians."""
    out: dict[str, float] = {}
    big = inference.get("16") or inference[max(inference, key=int)] if inference else None
    if big:
        med = {name: r["median"] for name, r in big.items()}
        out["fast_eager_vs_timm_eager_b16"] = _paired(big, "effnet fast", "timm eager")
        out["same_vs_symmetric_b16"] = _paired(big, "effnet fast", "effnet fast (symmetric)")
        ours = [k for k in ("effnet fast", "effnet compiled", "effnet onnxruntime") if k in med]
        best = max(ours, key=lambda k: med[k])
        out["best_path"] = best  # type: ignore[assignment]
        for key, peer in (
            ("best_vs_timm_onnxruntime_b16", "timm onnxruntime"),
            # both exports run the same way: the models alone
            ("best_vs_timm_onnxruntime_effnet_runner_b16", "timm onnxruntime (effnet's runner)"),
            ("best_vs_timm_compiled_b16", "timm compiled"),
        ):
            if peer in med:
                out[key] = _paired(big, best, peer)
        out["fast_eager_vs_torchvision_eager_b16"] = _paired(big, "effnet fast", "torchvision eager")
        bf16 = [k for k in ("effnet fast bf16", "effnet compiled bf16") if k in med]
        if bf16:
            out["best_bf16_path"] = max(bf16, key=lambda k: med[k])  # type: ignore[assignment]
            out["best_bf16_vs_timm_eager_b16"] = _paired(big, out["best_bf16_path"], "timm eager")  # type: ignore[arg-type]
            if "effnet fast bf16" in med:
                out["fast_bf16_vs_timm_eager_b16"] = _paired(big, "effnet fast bf16", "timm eager")
            out["timm_autocast_bf16_vs_timm_eager_b16"] = _paired(big, "timm eager bf16 (autocast)", "timm eager")
        if "effnet fast fp16" in med:
            out["fast_fp16_vs_timm_eager_b16"] = _paired(big, "effnet fast fp16", "timm eager")
            out["timm_autocast_fp16_vs_timm_eager_b16"] = _paired(big, "timm eager fp16 (autocast)", "timm eager")
        for key, a, b in (
            ("any_size_vs_fixed_onnxruntime_b16", "effnet onnxruntime (any size)", "effnet onnxruntime"),
            ("b0_int8_vs_b0_onnxruntime_b16", "effnet onnxruntime int8", "effnet onnxruntime"),
            (
                "timm_int8_vs_timm_onnxruntime_b16",
                "timm onnxruntime int8 (effnet's runner)",
                "timm onnxruntime (effnet's runner)",
            ),
            ("lite0_int8_vs_lite0_onnxruntime_b16", "lite0 onnxruntime int8", "lite0 onnxruntime"),
        ):
            if a in med and b in med:
                out[key] = _paired(big, a, b)
    if error is not None:
        out["fast_max_abs_diff"] = error["fp32"]
        if "tf32" in error:
            out["fast_max_abs_diff_tf32"] = error["tf32"]
    if training:
        timm = training["timm"]
        for key, config, field in (
            ("memory_peak_vs_timm", "effnet_memory", "peak_mb"),
            ("memory_speed_vs_timm", "effnet_memory", "images_per_s"),
            ("memory_activation_vs_timm", "effnet_memory", "activation_mb"),
            ("checkpoint_activation_vs_timm", "effnet_checkpoint", "activation_mb"),
            ("checkpoint_speed_vs_timm", "effnet_checkpoint", "images_per_s"),
            ("memory_checkpoint_activation_vs_timm", "effnet_memory_checkpoint", "activation_mb"),
            ("memory_checkpoint_speed_vs_timm", "effnet_memory_checkpoint", "images_per_s"),
            ("plain_speed_vs_timm", "effnet", "images_per_s"),
        ):
            out[key] = _div(training[config][field], timm[field])
    return out


def print_report(report: dict[str, Any]) -> None:
    print(f"device: {report['device']}  threads: {report['threads']}  input: {report['image_size']}² channels_last")
    cpu = report["cpu"]
    print(f"cpu: {cpu['cpu']}, torch kernels {cpu['torch_capability']}; instructions: {' '.join(cpu['flags'])}")
    for allocator, tables in report["inference"].items():
        print(f"\n== {allocator} allocator {report['allocators'][allocator] or '(glibc as it is)'}")
        print_inference(tables)
    if acc := report["accuracy"]:
        print("\naccuracy")
        for name, table in acc.items():
            print(
                f"  {name}: "
                + "; ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in table.items())
            )
    print_training_and_targets(report)


def print_inference(tables: dict[str, Any]) -> None:
    for batch, table in tables.items():
        base = table["timm eager"]["median"]
        print(f"\ninference, batch {batch} (images/s, median of {len(table['timm eager']['runs'])} interleaved rounds)")
        print(f"  {'configuration':35s} {'images/s':>10s} {'× timm eager':>13s} {'|Δ| vs plain':>12s}   runs")
        for name, r in table.items():
            runs = " ".join(f"{v:.1f}" for v in r["runs"])
            diff = f"{r['max_abs_diff']:.1e}" if "max_abs_diff" in r else ""
            print(f"  {name:35s} {r['median']:10.1f} {r['median'] / base:13.2f} {diff:>12s}   {runs}")


def print_training_and_targets(report: dict[str, Any]) -> None:
    if report["training"]:
        t = report["training"]
        print(f"\ntraining, batch {report['train_batch']} (SGD step; fresh process per configuration and round)")
        print(
            f"  {'configuration':28s} {'images/s':>9s} {'× timm':>7s} {'peak MB':>9s} {'× timm':>7s} {'act. MB':>9s} {'× timm':>7s}"
        )
        for name, r in t.items():
            tm = t["timm"]
            print(
                f"  {name:28s} {r['images_per_s']:9.2f} {r['images_per_s'] / tm['images_per_s']:7.2f} "
                f"{r['peak_mb']:9.0f} {r['peak_mb'] / tm['peak_mb']:7.2f} "
                f"{r['activation_mb']:9.0f} {r['activation_mb'] / tm['activation_mb']:7.2f}"
            )
    processes = report.get("processes", 1)
    print("\ntargets" + (f" (rounds of {processes} processes per allocator pooled; each process's own after 'per process')"
                         if processes > 1 else ""))  # fmt: skip
    for key, value in report["ratios"].items():
        allocator, _, base = key.rpartition(": ")
        each = report.get("per_process_ratios", {}).get(allocator or "default", {}).get(base)
        each_text = f"  per process {' '.join(f'{v:.3g}' for v in each)}" if each else ""
        if key in TARGETS:
            op, bound = TARGETS[key]
            ok = value >= bound if op == ">=" else value <= bound
            print(f"  {key:44s} {value:10.4g}  target {op} {bound:<6g} {'met' if ok else 'MISSED'}{each_text}")
        else:
            print(f"  {key:44s} {value if isinstance(value, str) else format(value, '10.4g')}{each_text}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (torch and ONNX Runtime)")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--rounds", type=int, default=9, help="interleaved inference rounds (per process)")
    parser.add_argument(
        "--processes", type=int, default=1, help="fresh inference processes per allocator, their rounds pooled"
    )
    parser.add_argument("--min-time", type=float, default=0.5, help="seconds per timed inference measurement")
    parser.add_argument(
        "--warmup", type=float, default=None, help="seconds of untimed calls per configuration (CPU 5, CUDA 1)"
    )
    parser.add_argument("--train-batch", type=int, default=32)
    parser.add_argument("--train-steps", type=int, default=3, help="timed steps per training process")
    parser.add_argument(
        "--train-rounds", type=int, default=None, help="fresh processes per training configuration (CPU 2, CUDA 1)"
    )
    parser.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="time torch.compile paths (default: on CPU; off on CUDA, where compiling takes minutes)",
    )
    parser.add_argument("--no-onnxruntime", dest="onnxruntime", action="store_false")
    parser.add_argument("--no-int8", dest="int8", action="store_false", help="skip the int8 paths")
    parser.add_argument(
        "--allocators",
        nargs="+",
        choices=tuple(ALLOCATORS),
        default=None,
        help="glibc settings to run under (default: both on CPU; on CUDA the default only)",
    )
    parser.add_argument("--no-accuracy", dest="accuracy", action="store_false", help="skip the accuracy figures")
    parser.add_argument("--cache", default=str(Path(__file__).resolve().parents[1] / "runs" / "bench-cache"),
                        help="folder for the ONNX models and photos (made once, reused)")  # fmt: skip
    parser.add_argument("--cifar10", default=str(DEFAULT_CIFAR10), help="CIFAR-10 image folders (train/, test/)")
    parser.add_argument("--cifar10-weights", default=str(DEFAULT_CIFAR10_WEIGHTS), help="the fine-tuned Lite0")
    parser.add_argument("--inference-worker", help=argparse.SUPPRESS)
    parser.add_argument("--files", default="{}", help=argparse.SUPPRESS)
    parser.add_argument("--no-training", dest="training", action="store_false")
    parser.add_argument("--no-inference", dest="inference", action="store_false")
    parser.add_argument("--quick", action="store_true", help="smoke test: 64² input, few repetitions")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--save", help="also write the JSON report to this file")
    parser.add_argument("--train-worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    cuda = args.device.startswith("cuda")
    if args.compile is None:  # so that a GPU run takes under 5 minutes by default
        args.compile = not cuda
    if args.allocators is None:  # the host's malloc does not bound a GPU's speed
        args.allocators = ["default"] if cuda else list(ALLOCATORS)
    if args.train_rounds is None:
        args.train_rounds = 1 if cuda else 2
    if args.warmup is None:  # on CPU, long enough for the fast paths' first-call choices (~32 calls)
        args.warmup = 1.0 if cuda else 5.0
    if args.quick:
        args.image_size, args.batch_sizes, args.rounds, args.min_time, args.warmup = 64, [1, 4], 2, 0.05, 0.0
        args.train_batch, args.train_steps, args.train_rounds, args.compile = 4, 1, 1, False
    return args


def inference_worker(args: argparse.Namespace) -> dict[str, Any]:
    """The inference benchmark in this process (started with one allocator's environment)."""
    device = torch.device(args.device)
    files = {name: Path(path) for name, path in json.loads(args.files).items()}
    return {
        "inference": bench_inference(args, device, files),
        "error": fast_path_error(args, device),
        "kernel": torch.backends.cpu.get_cpu_capability(),
    }


def bench_allocators(args: argparse.Namespace, files: dict[str, Path]) -> dict[str, dict[str, Any]]:
    """Every inference configuration under each allocator of ``args.allocators``, in ``args.processes``
    fresh processes each (allocators alternating), their rounds pooled (:func:`pool_workers`)."""
    done_by: dict[str, list[dict[str, Any]]] = {name: [] for name in args.allocators}
    for index in range(args.processes):
        for name in args.allocators:
            log(f"inference with the {name} allocator, process {index + 1}/{args.processes}")
            command = [sys.executable, os.path.abspath(__file__), "--inference-worker", name, *sys.argv[1:]]
            command += ["--files", json.dumps({k: str(v) for k, v in files.items()})]
            env = {**os.environ, **ALLOCATORS[name]}
            done = subprocess.run(command, stdout=subprocess.PIPE, text=True, check=False, env=env)
            if done.returncode != 0:
                raise RuntimeError(f"inference worker ({name} allocator) failed")
            done_by[name].append(json.loads(done.stdout.strip().splitlines()[-1]))
    return {name: pool_workers(workers) for name, workers in done_by.items()}


def pool_workers(workers: list[dict[str, Any]]) -> dict[str, Any]:
    """Several processes' results as one: each configuration's rounds in process order (so that
    paired ratios pair rounds of one process), the largest error, the first calls' choices of each,
    and each process's own target ratios (``per_process``: a process's luck with its memory layout
    moves timm eager by up to ±15% on some VMs, so one process's ratio is one draw)."""
    if len(workers) == 1:
        return workers[0]
    inference: dict[str, dict[str, Any]] = {}
    for batch, table in workers[0]["inference"].items():
        inference[batch] = {}
        for name, first in table.items():
            entries = [w["inference"][batch][name] for w in workers]
            runs = [v for e in entries for v in e["runs"]]
            pooled: dict[str, Any] = {"median": statistics.median(runs), "runs": runs}
            if "max_abs_diff" in first:
                pooled["max_abs_diff"] = max(e["max_abs_diff"] for e in entries)
            inference[batch][name] = pooled
    per_process: dict[str, list[float]] = {}
    for w in workers:
        for key, value in ratios(w["inference"], {}, None).items():
            if not isinstance(value, str):
                per_process.setdefault(key, []).append(value)
    return {
        "inference": inference,
        "error": {k: max(w["error"][k] for w in workers) for k in workers[0]["error"]},
        "kernel": workers[0]["kernel"],
        "per_process": per_process,
    }


def accuracy(args: argparse.Namespace, files: dict[str, Path]) -> dict[str, Any]:
    """Top-1 agreement with float32 on the photos (ImageNet Lite0: bf16 fast path, int8 in ONNX
    Runtime) and CIFAR-10 test top-1 of the fine-tuned Lite0 in float32, bfloat16 and int8; on CUDA
    the fast path in strict float32 (the reference), cuDNN's default TF32, bfloat16 and float16."""
    from effnet.data.images import read_rgb
    from effnet.deploy.optimize import optimize
    from effnet.export.onnx import INPUT_NAME, export_onnx
    from effnet.export.ort import OrtModule
    from effnet.export.quantize import ImageCalibration, image_files, quantize_onnx
    from effnet.factory import load_model
    from effnet.infer.fast import exportable
    from effnet.infer.hardware import native_on_cpu

    def top1(run: Callable[[torch.Tensor], Any], x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return torch.cat([run(x[i : i + 100].to(device)).float().argmax(-1).cpu() for i in range(0, len(x), 100)])

    def paths(model: nn.Module, name: str, calibration: ImageCalibration | None) -> dict[str, Callable]:
        if device.type == "cuda":
            model = model.to(device, memory_format=torch.channels_last)
            return {
                "float32 fast path": strict_float32(optimize(model)),
                "tf32 fast path": optimize(model),
                "bfloat16 fast path": optimize(model, dtype="bfloat16"),
                "float16 fast path": optimize(model, dtype="float16"),
            }
        assert calibration is not None
        fp32 = cache / f"{name}-fp32.onnx"
        if not fp32.exists():
            fp32.write_bytes(export_onnx(exportable(model, any_size="onnx")))
        int8 = cache / f"{name}-int8{int8_bits()}.onnx"
        if not int8.exists():
            int8.write_bytes(
                quantize_onnx(fp32.read_bytes(), calibration, keep=KEEP, reduce_range=bool(int8_bits()))[0]
            )
        return {
            "float32 fast path": optimize(model),
            # where the CPU has no bf16 instructions the fast path would compute in float32: not a bf16 figure
            **({"bfloat16 fast path": optimize(model, dtype="bfloat16")} if native_on_cpu(torch.bfloat16) else {}),
            "float32 onnxruntime": OrtModule(fp32.read_bytes(), args.threads),
            "int8 onnxruntime": OrtModule(int8.read_bytes(), args.threads),
        }

    cache = Path(args.cache)
    device = torch.device(args.device)
    out: dict[str, Any] = {}
    if device.type == "cpu" and not native_on_cpu(torch.bfloat16):
        log("  this CPU has no bfloat16 instructions: bf16 accuracy not measured (it would be float32's)")
    lite0, info = lite0_imagenet()
    transform = info.preprocessing.eval_transform()
    photos = photo_files(cache)
    x = torch.stack([transform(read_rgb(p)) for p in photos])
    runs = paths(lite0, "lite0-imagenet", ImageCalibration(photos, transform, INPUT_NAME, str(cache)))
    want = top1(runs["float32 fast path"], x)
    out["photos"] = {"images": len(photos), **{k: float((top1(f, x) == want).float().mean()) for k, f in runs.items()}}
    out["photos"]["disagreeing"] = [  # which photos a path's top-1 differs on
        f"{photos[i].stem} ({name})" for name, f in runs.items() for i in torch.nonzero(top1(f, x) != want).flatten()
    ]
    if not Path(args.cifar10_weights).exists():
        log(f"  no fine-tuned Lite0 at {args.cifar10_weights}: CIFAR-10 top-1 not measured")
        return out
    model, info = load_model(str(args.cifar10_weights))
    transform = info.preprocessing.eval_transform()
    names = info.class_names
    test = [(p, names.index(p.parent.name)) for p in image_files(Path(args.cifar10) / "test", "cifar10")]
    calibration = None
    if device.type == "cpu":
        calibration_paths = random.Random(0).sample(image_files(Path(args.cifar10) / "train", "cifar10"), 200)
        calibration = ImageCalibration(calibration_paths, transform, INPUT_NAME, "train")
    # the cached exports are named after the weight file's contents: other weights, other files
    digest = hashlib.sha256(Path(args.cifar10_weights).read_bytes()).hexdigest()[:12]
    runs = paths(model.eval(), f"cifar10-lite0-{digest}", calibration)
    log(f"  CIFAR-10: preprocessing {len(test)} test images")
    x = torch.stack([transform(read_rgb(p)) for p, _ in test])
    y = torch.tensor([t for _, t in test])
    out["cifar10"] = {
        "images": len(test),
        "weights": str(args.cifar10_weights),
        "resolution": info.preprocessing.resolution,
    }
    tops = {name: top1(run, x) for name, run in runs.items()}
    for name, top in tops.items():
        out["cifar10"][name] = float((top == y).float().mean())
        out["cifar10"][f"{name}: agreement with float32"] = float((top == tops["float32 fast path"]).float().mean())
    return out


def strict_float32(run: Callable[[torch.Tensor], Any]) -> Callable[[torch.Tensor], Any]:
    """``run`` with CUDA's TF32 convolutions and matrix products off: the float32 reference."""

    def strict(x: torch.Tensor) -> Any:
        with tf32(False):
            return run(x)

    return strict


def accuracy_ratios(acc: dict[str, Any]) -> dict[str, float]:
    """Agreement with float32 and top-1 drops of each reduced precision that was measured (bf16 only
    where the CPU has its instructions, float16 and TF32 on CUDA, int8 in ONNX Runtime on CPU)."""
    out = {}
    paths = {
        "bf16": "bfloat16 fast path",
        "fp16": "float16 fast path",
        "tf32": "tf32 fast path",
        "int8": "int8 onnxruntime",
    }
    references = {"int8": "float32 onnxruntime"}
    photos, c = acc.get("photos", {}), acc.get("cifar10", {})
    for short, path in paths.items():
        if path in photos:
            out[f"{short}_photo_agreement"] = photos[path]
        if path in c:
            out[f"{short}_cifar10_top1_drop"] = c[references.get(short, "float32 fast path")] - c[path]
            out[f"{short}_cifar10_agreement"] = c[f"{path}: agreement with float32"]
    return out


def main(argv: list[str] | None = None) -> None:
    from effnet.atomic import atomic_write_text
    from effnet.infer.hardware import cpu_features

    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.train_worker:
        print(json.dumps(train_worker(args.train_worker, args)))
        return
    if args.inference_worker:
        print(json.dumps(inference_worker(args)))
        return
    device = torch.device(args.device)
    log(f"bench_speed on {device} with {args.threads} threads")
    files = onnx_files(args) if args.onnxruntime and device.type == "cpu" else {}
    workers = bench_allocators(args, files) if args.inference else {}
    training = bench_training(args) if args.training else {}
    acc = accuracy(args, files) if args.accuracy else {}
    all_ratios: dict[str, Any] = {}
    for name, worker in workers.items():
        prefix = "" if name == "default" else f"{name}: "
        kept = ratios(worker["inference"], training if not prefix else {}, worker["error"])
        all_ratios |= {f"{prefix}{key}": value for key, value in kept.items()}
    if not workers:
        all_ratios = ratios({}, training, None)
    report = {
        "device": torch.cuda.get_device_name() if device.type == "cuda" else f"cpu ({os.cpu_count()} cores)",
        "cpu": cpu_features(),
        "threads": args.threads,
        "image_size": args.image_size,
        "train_batch": args.train_batch,
        "torch": torch.__version__,
        "load_average": os.getloadavg(),
        "allocators": {name: ALLOCATORS[name] for name in workers},
        "processes": args.processes,
        "per_process_ratios": {name: w["per_process"] for name, w in workers.items() if "per_process" in w},
        "inference": {name: worker["inference"] for name, worker in workers.items()},
        "training": training,
        "accuracy": acc,
        "ratios": all_ratios | accuracy_ratios(acc),
    }
    if args.save:
        atomic_write_text(args.save, json.dumps(report, indent=1))
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        print_report(report)
        print(f"\nload average (1, 5, 15 min) at the end: {' '.join(f'{v:.2f}' for v in report['load_average'])}")


if __name__ == "__main__":
    main()
