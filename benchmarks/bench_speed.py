"""Side by side: effnet EfficientNet-B0 against timm's and torchvision's, inference and training.

One process, same threads, batch sizes, input and layout (channels_last) for every model; A/B
repetitions interleaved (every configuration timed once per round, in a fresh random order each
round, after one untimed call; rounds repeated) so machine load and the memory state one model
leaves for the next hit all sides alike; medians printed, and inference ratios as the median of
per-round ratios (paired, so drift between rounds cancels). Training peak memory is measured per
configuration in a fresh subprocess (CPU: peak resident memory, VmHWM; CUDA: ``max_memory_allocated``).

    python benchmarks/bench_speed.py            # full run (CPU here, CUDA when present)
    python benchmarks/bench_speed.py --quick    # smoke test: small input, few repetitions
    python benchmarks/bench_speed.py --json     # machine-readable

Peers are built with pretrained=False / weights=None: nothing is downloaded.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

TRAIN_CONFIGS = ("timm", "torchvision", "effnet", "effnet_memory", "effnet_checkpoint", "effnet_memory_checkpoint")
TARGETS = {
    "fast_eager_vs_timm_eager_b16": (">=", 1.3),
    "best_vs_timm_onnxruntime_b16": (">=", 1.0),
    "same_vs_symmetric_b16": (">=", 0.97),
    "fast_max_abs_diff": ("<=", 1e-4),
    "memory_peak_vs_timm": ("<=", 0.85),
    "memory_speed_vs_timm": (">=", 0.9),
    "checkpoint_activation_vs_timm": ("<=", 0.5),
}


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def build(
    name: str, *, image_size: int, memory: bool = False, padding: str | None = None, drop_path: float = 0.2
) -> nn.Module:
    """A B0 by family: ``effnet`` (ours), ``timm`` or ``torchvision``; random weights, no download.

    All three drop residual branches at the same rate in training (stochastic depth 0.2: the paper's
    recipe, torchvision's and effnet's default; timm's model defaults to none), so a training step
    does the same work in each."""
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


def onnxruntime_runner(
    model: nn.Module, image_size: int, threads: int, split: bool = False
) -> Callable[[torch.Tensor], Any]:
    """The model exported to ONNX by effnet's exporter (batch dynamic) running in ONNX Runtime with ``threads`` threads:
    one session and NCHW input as a user would run it, or with ``split`` the way effnet's onnxruntime
    backend runs its own export (batches split between one-thread runs where that is faster,
    channels_last input passed as NHWC without a copy)."""
    from effnet.export.onnx import export_onnx
    from effnet.infer.ort import OrtModule

    return OrtModule(export_onnx(model.cpu(), input_size=image_size), threads, split=split, channels_last=split)


def inference_runners(args: argparse.Namespace, device: torch.device) -> dict[str, Callable[[torch.Tensor], Any]]:
    """Every inference configuration, by name."""
    from effnet.infer.optimize import optimize

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
        runners["effnet fast (oneDNN fused)"] = optimize(ours, onednn=True)
    for name, model in peers.items():
        runners[f"{name} eager"] = model
    if args.compile:
        runners["effnet compiled"] = optimize(ours, backend="compile")
        for name, model in peers.items():
            runners[f"{name} compiled"] = compiled(model)
    if args.onnxruntime and device.type == "cpu":
        runners["effnet onnxruntime"] = optimize(ours, backend="onnxruntime", input_size=size, threads=args.threads)
        for name, model in peers.items():
            runners[f"{name} onnxruntime"] = onnxruntime_runner(model, size, args.threads)
        # effnet's way of running ONNX Runtime, given timm's export: what the runner adds, apart
        runners["timm onnxruntime (effnet's runner)"] = onnxruntime_runner(
            peers["timm"], size, args.threads, split=True
        )
    return runners


def fast_path_error(args: argparse.Namespace, device: torch.device) -> dict[str, float]:
    """Largest |fast path − plain model| on a batch (random BN statistics make folding count).

    ``fp32``: both in strict float32. On CUDA, cuDNN's default TF32 convolutions (10-bit mantissa)
    round the folded and unfolded weights differently; that figure is reported as ``tf32``."""
    from effnet.infer.optimize import optimize

    torch.manual_seed(0)
    model = build("effnet", image_size=args.image_size).eval()
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    model = model.to(device, memory_format=torch.channels_last)
    x = torch.randn(4, 3, args.image_size, args.image_size, device=device)
    fast = optimize(model)
    errors = {}
    modes = ("fp32", "tf32") if device.type == "cuda" else ("fp32",)
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    try:
        for mode in modes:
            torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = mode == "tf32"
            with torch.inference_mode():
                errors[mode] = (fast(x) - model(x)).abs().max().item()
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved
    return errors


def time_call(fn: Callable[[torch.Tensor], Any], x: torch.Tensor, calls: int, device: torch.device) -> float:
    """Images per second of ``calls`` calls."""
    sync(device)
    start = time.perf_counter()
    for _ in range(calls):
        fn(x)
    sync(device)
    return calls * x.shape[0] / (time.perf_counter() - start)


def bench_inference(args: argparse.Namespace, device: torch.device) -> dict[str, dict[str, Any]]:
    """{batch: {configuration: {median, runs}}} with interleaved rounds."""
    runners = inference_runners(args, device)
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
                # first calls: allocation, and the fast paths' own choices per input shape on CPU
                # (early stages in chunks or not: 16 calls; ONNX Runtime's batch split between
                # threads or not: 32 calls), each made by timing both ways
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
        kept = first_call_choices(runners, batch)
        results[str(batch)] = {
            name: {
                "median": statistics.median(r),
                "runs": r,
                **({"max_abs_diff": errors[name]} if name in errors else {}),
                **({"kept": kept[name]} if name in kept else {}),
            }
            for name, r in runs.items()
        }
    return results


def first_call_choices(runners: dict[str, Callable[[torch.Tensor], Any]], batch: int) -> dict[str, str]:
    """What each fast path kept, after timing both ways on its first calls, for this batch size:
    early stages in chunks or whole batch (eager fast path), split or whole batch (ONNX Runtime)."""
    from effnet.infer.fast import FastEfficientNet
    from effnet.infer.ort import OrtModule

    words = {FastEfficientNet: ("whole batch", "early stages in chunks"), OrtModule: ("whole batch", "split")}
    out = {}
    for name, fn in runners.items():
        if type(fn) not in words:  # plain models, peers, compiled modules: no first-call choices
            continue
        ways = [second for key, second in fn.tuner.kept().items() if key[1] == batch]  # keys: (device or layout, N, …)
        if ways:
            out[name] = words[type(fn)][ways[-1]]
    return out


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
    for batch, table in report["inference"].items():
        base = table["timm eager"]["median"]
        print(f"\ninference, batch {batch} (images/s, median of {len(table['timm eager']['runs'])} interleaved rounds)")
        print(f"  {'configuration':35s} {'images/s':>10s} {'× timm eager':>13s} {'|Δ| vs plain':>12s}   runs")
        for name, r in table.items():
            runs = " ".join(f"{v:.1f}" for v in r["runs"])
            diff = f"{r['max_abs_diff']:.1e}" if "max_abs_diff" in r else ""
            print(f"  {name:35s} {r['median']:10.1f} {r['median'] / base:13.2f} {diff:>12s}   {runs}")
        if kept := {name: r["kept"] for name, r in table.items() if "kept" in r}:
            print("  kept after the first calls: " + "; ".join(f"{name}: {way}" for name, way in kept.items()))
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
    print("\ntargets")
    for key, value in report["ratios"].items():
        if key in TARGETS:
            op, bound = TARGETS[key]
            ok = value >= bound if op == ">=" else value <= bound
            print(f"  {key:44s} {value:10.4g}  target {op} {bound:<6g} {'met' if ok else 'MISSED'}")
        else:
            print(f"  {key:44s} {value if isinstance(value, str) else format(value, '10.4g')}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (torch and ONNX Runtime)")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--rounds", type=int, default=9, help="interleaved inference rounds")
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
    if args.train_rounds is None:
        args.train_rounds = 1 if cuda else 2
    if args.warmup is None:  # on CPU, long enough for the fast paths' first-call choices (~32 calls)
        args.warmup = 1.0 if cuda else 5.0
    if args.quick:
        args.image_size, args.batch_sizes, args.rounds, args.min_time, args.warmup = 64, [1, 4], 2, 0.05, 0.0
        args.train_batch, args.train_steps, args.train_rounds, args.compile = 4, 1, 1, False
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.train_worker:
        print(json.dumps(train_worker(args.train_worker, args)))
        return
    device = torch.device(args.device)
    log(f"bench_speed on {device} with {args.threads} threads")
    inference = bench_inference(args, device) if args.inference else {}
    error = fast_path_error(args, device) if args.inference else None
    training = bench_training(args) if args.training else {}
    report = {
        "device": torch.cuda.get_device_name() if device.type == "cuda" else f"cpu ({os.cpu_count()} cores)",
        "threads": args.threads,
        "image_size": args.image_size,
        "train_batch": args.train_batch,
        "torch": torch.__version__,
        "load_average": os.getloadavg(),
        "inference": inference,
        "training": training,
        "ratios": ratios(inference, training, error),
    }
    if args.save:
        with open(args.save, "w") as handle:
            json.dump(report, handle, indent=1)
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        print_report(report)
        print(f"\nload average (1, 5, 15 min) at the end: {' '.join(f'{v:.2f}' for v in report['load_average'])}")


if __name__ == "__main__":
    main()
