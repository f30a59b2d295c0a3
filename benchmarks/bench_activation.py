"""What SiLU costs the CPU fast path, and how far timm's eager speed moves between processes.

B0 224², batch 16, in several fresh processes per allocator (glibc's default and the tuned one of
``bench_speed.py``); in each, interleaved rounds of timm eager float32, effnet's fast path in float32
and bfloat16 (where the CPU has bfloat16 instructions), and the same fast paths with every SiLU
replaced by ReLU. ReLU has the same memory traffic and a near-free post-op, so the "ReLU" rows are a
bound for what a cheaper exact SiLU kernel could give (they compute a different function: a
measurement, not a model). Also times SiLU and ReLU alone, in place, on one of B0's maps.

Prints per process: images/s, paired ratios to timm eager, SiLU's share of each fast path; then the
median over processes. ``--json`` prints one JSON object; ``--save`` writes it to
``benchmarks/results/<machine>/<date>-activation.json`` (``results.py``).

    python benchmarks/bench_activation.py --processes 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any

import torch

from bench_speed import ALLOCATORS
from effnet.infer.hardware import cpu_features, native_on_cpu
from results import save_result


def _relu_everywhere(fast: torch.nn.Module) -> torch.nn.Module:
    """``fast`` (an optimized model) with every SiLU its convolutions fuse replaced by ReLU."""
    from effnet.infer.conv import FastConv

    for module in fast.modules():
        if isinstance(module, FastConv) and module.act == "silu":
            module.act = "relu"
    return fast


def _paths() -> dict[str, Any]:
    import timm

    import effnet

    torch.manual_seed(0)
    model = effnet.create_model("efficientnet_b0").eval()
    paths: dict[str, Any] = {
        "timm eager": timm.create_model("efficientnet_b0").eval().to(memory_format=torch.channels_last)
    }
    for dtype in ("float32", "bfloat16") if native_on_cpu(torch.bfloat16) else ("float32",):
        paths[f"fast {dtype}"] = effnet.optimize(model, dtype=dtype)
        paths[f"fast {dtype}, ReLU for SiLU"] = _relu_everywhere(effnet.optimize(model, dtype=dtype))
    return paths


def _best_ms(fn: Any, calls: int, rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        fn()
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        best = min(best, (time.perf_counter() - start) / calls)
    return best * 1e3


def elementwise(shape: tuple[int, ...] = (16, 144, 56, 56)) -> dict[str, float]:
    """SiLU and ReLU in place on one of B0's maps (its third block's expansion at batch 16), in
    nanoseconds per element, a copy's time taken off (each call first restores the input)."""
    x = torch.randn(shape).contiguous(memory_format=torch.channels_last)
    out: dict[str, float] = {}
    for dtype in (torch.float32, torch.bfloat16):
        src = x.to(dtype, copy=True)  # a copy even in float32: SiLU in place would decay x to denormals
        y = src.clone()
        copy = _best_ms(lambda: y.copy_(src), 20, 5)  # noqa: B023
        for name, act in (("silu", torch.nn.functional.silu), ("relu", torch.nn.functional.relu)):
            ms = _best_ms(lambda: act(y.copy_(src), inplace=True), 20, 5)  # noqa: B023
            out[f"{name} {str(dtype).removeprefix('torch.')} ns/element"] = (ms - copy) * 1e6 / x.numel()
    return out


def worker(rounds: int, calls: int) -> dict[str, Any]:
    """One process: every path, interleaved rounds; images/s per round."""
    paths = _paths()
    x = torch.randn(16, 3, 224, 224).contiguous(memory_format=torch.channels_last)
    runs: dict[str, list[float]] = {name: [] for name in paths}
    with torch.inference_mode():
        for fn in paths.values():
            for _ in range(40):  # past the fast path's first-call choices (32 calls)
                fn(x)
        for _ in range(rounds):
            for name, fn in paths.items():
                runs[name].append(16e3 / _best_ms(lambda: fn(x), calls, 1))  # noqa: B023
    return {"runs": runs, "elementwise": elementwise()}


def summarise(runs: dict[str, list[float]]) -> dict[str, float]:
    """Median images/s, paired ratios to timm eager, SiLU's share of each fast path's time."""
    out = {f"{name} images/s": statistics.median(v) for name, v in runs.items()}
    base = runs["timm eager"]
    for name, values in runs.items():
        if name != "timm eager":
            out[f"{name} × timm eager"] = statistics.median(a / b for a, b in zip(values, base, strict=True))
        relu = runs.get(f"{name}, ReLU for SiLU")
        if relu:  # time with SiLU − time with ReLU, as a share of the time with SiLU
            out[f"{name}: SiLU share"] = statistics.median(1 - a / b for a, b in zip(values, relu, strict=True))
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--processes", type=int, default=3, help="fresh processes per allocator")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds per process")
    parser.add_argument("--calls", type=int, default=8, help="calls per timed measurement")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--allocators", nargs="+", choices=tuple(ALLOCATORS), default=list(ALLOCATORS))
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--save", action="store_true", help="also write the report to benchmarks/results/")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.worker:
        print(json.dumps(worker(args.rounds, args.calls)))
        return
    report: dict[str, Any] = {"cpu": cpu_features(), "threads": args.threads, "torch": torch.__version__}
    command = [sys.executable, os.path.abspath(__file__), "--worker", "--rounds", str(args.rounds)]
    command += ["--calls", str(args.calls), "--threads", str(args.threads)]
    for allocator in args.allocators:
        processes = []
        for index in range(args.processes):
            print(f"[{allocator} allocator, process {index + 1}/{args.processes}]", file=sys.stderr, flush=True)
            env = {**os.environ, **ALLOCATORS[allocator]}
            done = subprocess.run(command, stdout=subprocess.PIPE, text=True, check=True, env=env)
            result = json.loads(done.stdout.strip().splitlines()[-1])
            processes.append({"summary": summarise(result["runs"]), **result})
        keys = processes[0]["summary"]
        median = {key: statistics.median(p["summary"][key] for p in processes) for key in keys}
        report[allocator] = {"processes": processes, "median over processes": median}
    if args.save:
        print(f"saved {save_result('activation', report)}", file=sys.stderr)
    if args.json:
        print(json.dumps(report, indent=1))
        return
    cpu = report["cpu"]
    print(f"cpu: {cpu['cpu']}, torch kernels {cpu['torch_capability']}; instructions: {' '.join(cpu['flags'])}")
    print(f"B0 224², batch 16, {args.threads} threads; {args.rounds} interleaved rounds per process")
    for allocator in args.allocators:
        entry = report[allocator]
        print(f"\n== {allocator} allocator {ALLOCATORS[allocator] or '(glibc as it is)'}")
        keys = list(entry["median over processes"])
        print(f"  {'':44s}" + "".join(f"{f'proc {i + 1}':>9s}" for i in range(args.processes)) + f"{'median':>9s}")
        for key in keys:
            values = [p["summary"][key] for p in entry["processes"]] + [entry["median over processes"][key]]
            print(f"  {key:44s}" + "".join(f"{v:9.3g}" for v in values))
        for key in entry["processes"][0]["elementwise"]:
            values = [p["elementwise"][key] for p in entry["processes"]]
            print(f"  {key:44s}" + "".join(f"{v:9.3g}" for v in values))


if __name__ == "__main__":
    main()
