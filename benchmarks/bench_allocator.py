"""The CPU fast path under glibc's default allocator and under the tuned one, optionally beside an older
effnet in the same process.

One fresh process per allocator setting (:data:`SETTINGS`):

- ``default``: nothing set; the fast path is built with ``tune_allocator=False``, so the whole process
  runs on glibc's defaults (what a user gets who opts out, or whose C library is not glibc);
- ``tuned``: the README's ``MALLOC_*_`` variables set before the process starts;
- ``mallopt``: nothing set; the fast path sets them itself when it is built, and ``M_MMAP_MAX=0``
  (effnet's default: :mod:`effnet.infer.allocator`), before anything is timed.

In each process every path runs B0 (``--size``², batch ``--batch``, ``--threads`` threads) in rounds: per
round, the paths in a fresh random order, each timed over ``--calls`` calls after one untimed call, so
machine load hits all alike. Printed: images/s (median over rounds) and, with ``--old``, the median of
the per-round ratios new/old (paired, so drift between rounds cancels). ``--old FOLDER``: a folder
holding ``effnet_old``, a copy of an older ``src/effnet`` whose imports say ``effnet_old`` instead of
``effnet``, timed beside the current code (its shape tuner, where it has one, decides first). A process
that changes the allocator changes it for both trees, so ``--apart N`` also compares them as each runs
for a user who sets nothing: N pairs of processes, one after the other, the old tree alone on glibc's
defaults and the new alone setting the allocator up itself; across processes, each path's speed is
taken relative to a fixed-work reference timed in the same rounds, which cancels most of the load.
``--ort`` adds ONNX Runtime's whole-batch and split runs. ``--save`` writes the report (``results.py``).

    python benchmarks/bench_allocator.py                           # current code, each setting
    python benchmarks/bench_allocator.py --old /tmp/old_effnet --apart 3   # old vs new
    python benchmarks/bench_allocator.py --ort --dtypes float32    # ONNX Runtime: whole batch vs split
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

#: Environment per allocator setting, and whether the fast path may set the allocator up itself.
SETTINGS: dict[str, tuple[dict[str, str], bool]] = {
    "default": ({}, False),
    "tuned": (
        {
            "MALLOC_MMAP_THRESHOLD_": "33554432",
            "MALLOC_TRIM_THRESHOLD_": "4294967296",
            "MALLOC_TOP_PAD_": "268435456",
        },
        True,
    ),
    "mallopt": ({}, True),
}


#: The fixed-work path timed in every round (matrix products into a kept tensor): across processes,
#: each path's speed relative to it cancels most of the machine's changing load.
REFERENCE = "reference (matrix products)"


def _old_optimize(folder: str) -> Callable[..., Any]:
    """The older tree's ``optimize`` (``effnet_old.deploy.optimize`` or, before that move, ``effnet_old.infer.optimize``)."""
    sys.path.insert(0, folder)
    for name in ("effnet_old.deploy.optimize", "effnet_old.infer.optimize"):
        try:
            return importlib.import_module(name).optimize
        except ModuleNotFoundError:
            continue
    raise SystemExit(f"--old {folder}: no effnet_old package with optimize there")


def _paths(args: argparse.Namespace, tune: bool) -> dict[str, Callable[[Any], Any]]:
    """Every path this process times, by name; the old tree's built first (its import costs nothing at run time)."""
    import torch

    import effnet
    from effnet.export.ort import OrtModule
    from effnet.infer.hardware import native_on_cpu

    dtypes = [d for d in args.dtypes if d == "float32" or native_on_cpu(getattr(torch, d))]
    torch.manual_seed(0)
    model = effnet.create_model("efficientnet_b0").eval()
    paths: dict[str, Callable[[Any], Any]] = {}
    if args.old and args.only != "new":
        old_optimize = _old_optimize(args.old)
        old_effnet = importlib.import_module("effnet_old")
        torch.manual_seed(0)
        old_model = old_effnet.create_model("efficientnet_b0").eval()
        old_model.load_state_dict(model.state_dict())
        for dtype in dtypes:
            paths[f"old {dtype}"] = old_optimize(old_model, dtype=dtype)
    for dtype in dtypes if args.only != "old" else ():
        paths[f"new {dtype}"] = effnet.optimize(model, dtype=dtype, tune_allocator=tune)
    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    product = torch.empty(1024, 1024)

    def reference(_: Any) -> Any:  # fixed work, no allocation: what the machine's load alone changes
        for _ in range(3):
            torch.mm(a, b, out=product)
        return product

    paths[REFERENCE] = reference
    if args.ort and not args.only:
        from effnet.export.onnx import export_onnx
        from effnet.infer.fast import exportable

        onnx_model = export_onnx(exportable(model, any_size="onnx"))
        paths["onnxruntime whole batch"] = OrtModule(onnx_model, args.threads, split=False)
        paths["onnxruntime split"] = OrtModule(onnx_model, args.threads, split=True)
    return paths


def _warm(fn: Callable[[Any], Any], x: Any) -> int:
    """Calls ``fn`` until its first-call tuning (an older fast path's) is over; the number of calls."""
    calls = 0
    tuner = getattr(fn, "tuner", None)
    key = ("cpu", *x.shape)
    while True:
        fn(x)
        calls += 1
        if tuner is None or tuner.choice(key) is not None or calls >= 64:
            return calls


def worker(args: argparse.Namespace) -> dict[str, Any]:
    """This process's measurement under ``args.worker``'s setting."""
    import torch

    from effnet.infer.allocator import allocator_state

    torch.set_num_threads(args.threads)
    _, tune = SETTINGS[args.worker]
    paths = _paths(args, tune)
    x = torch.randn(args.batch, 3, args.size, args.size).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        reference = {name.removeprefix("new "): fn(x).float() for name, fn in paths.items() if name.startswith("new ")}
        warm = {name: _warm(fn, x) for name, fn in paths.items()}
        kept = {name: str(fn.first_call_choices()) for name, fn in paths.items() if hasattr(fn, "first_call_choices")}
        diffs = {  # each path against the new one in its precision (ONNX Runtime: float32)
            name: float((fn(x).float() - reference.get(name.split()[-1], reference["float32"])).abs().max())
            for name, fn in paths.items()
            if reference and name != REFERENCE
        }
        times: dict[str, list[float]] = {name: [] for name in paths}
        faults: dict[str, list[float]] = {name: [] for name in paths}  # minor page faults per call
        order = list(paths)
        shuffle = random.Random(0)
        for _ in range(args.rounds):
            shuffle.shuffle(order)
            for name in order:
                paths[name](x)
                before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
                start = time.perf_counter()
                for _ in range(args.calls):
                    paths[name](x)
                times[name].append((time.perf_counter() - start) / args.calls)
                faults[name].append((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / args.calls)
    result: dict[str, Any] = {
        "setting": args.worker,
        "allocator": allocator_state(),
        "environment": {k: v for k, v in os.environ.items() if k.startswith("MALLOC_")},
        "images_per_second": {
            name: args.batch / statistics.median(t) for name, t in times.items() if name != REFERENCE
        },
        # per path: the median over rounds of the reference's time over the path's (load cancels)
        "speed_to_reference": {
            name: statistics.median(r / t for r, t in zip(times[REFERENCE], times[name]))
            for name in times
            if name != REFERENCE
        },
        "seconds_per_call": times,
        "page_faults_per_call": {name: statistics.median(f) for name, f in faults.items() if name != REFERENCE},
        "warm_up_calls": warm,
        "old_kept": kept,
        "max_abs_diff_to_new": diffs,
    }
    ratios = {}
    for name in paths:
        if name.startswith("new "):
            old = "old " + name.removeprefix("new ")
            if old in times:
                ratios[f"{name} / {old}"] = statistics.median(o / n for n, o in zip(times[name], times[old]))
    if "onnxruntime split" in times:
        whole, split = times["onnxruntime whole batch"], times["onnxruntime split"]
        ratios["onnxruntime split / whole batch"] = statistics.median(w / s for s, w in zip(split, whole))
    result["speed_ratios"] = ratios  # above 1: the first is faster
    return result


def _apart_ratios(apart: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """Per precision: the ratio of the new tree's median speed over its processes to the old's, and each
    pair's own ratio (the two processes of a pair ran one after the other); speeds relative to the
    reference path of their own process."""
    out = {}
    for path in apart["new alone"][0]["images_per_second"]:
        dtype = path.removeprefix("new ")
        new = [run["speed_to_reference"][path] for run in apart["new alone"]]
        old = [run["speed_to_reference"][f"old {dtype}"] for run in apart["old alone"]]
        out[dtype] = {
            "ratio of medians": statistics.median(new) / statistics.median(old),
            "per pair": [n / o for n, o in zip(new, old)],
        }
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--old", metavar="FOLDER", help="folder holding an older tree as package effnet_old")
    parser.add_argument("--settings", nargs="+", choices=tuple(SETTINGS), default=list(SETTINGS))
    parser.add_argument("--dtypes", nargs="+", choices=("float32", "bfloat16"), default=["float32", "bfloat16"])
    parser.add_argument("--ort", action="store_true", help="also ONNX Runtime: whole batch and split")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--calls", type=int, default=2, help="timed calls per path and round")
    parser.add_argument("--processes", type=int, default=1, help="processes per setting, settings alternating")
    parser.add_argument(
        "--apart",
        type=int,
        default=0,
        metavar="N",
        help="with --old, also N pairs of processes with nothing set, alternating: the old tree alone "
        "(glibc's defaults) and the new alone (setting the allocator up itself), each as a user would run it (speeds relative to a fixed-work reference timed in the same rounds)",
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--save", action="store_true", help="write it to benchmarks/results (results.py)")
    parser.add_argument("--worker", choices=tuple(SETTINGS), help=argparse.SUPPRESS)
    parser.add_argument("--only", choices=("old", "new"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args)))
        return 0
    report: dict[str, Any] = {
        "model": "efficientnet_b0",
        "size": args.size,
        "batch": args.batch,
        "threads": args.threads,
        "rounds": args.rounds,
        "calls": args.calls,
        "old": args.old,
        "processes": {name: [] for name in args.settings},
    }
    forwarded = [a for a in sys.argv[1:] if a not in ("--json", "--save")]

    def run(setting: str, *extra: str) -> dict[str, Any] | None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")} | SETTINGS[setting][0]
        env.pop("EFFNET_TUNE_ALLOCATOR", None)
        command = [sys.executable, __file__, *forwarded, "--worker", setting, *extra]
        done = subprocess.run(command, env=env, capture_output=True, text=True)
        if done.returncode:
            sys.stderr.write(done.stderr)
            return None
        return json.loads(done.stdout.strip().splitlines()[-1])

    for index in range(args.processes):
        for name in args.settings:
            print(f"[{name} allocator, process {index + 1}/{args.processes}]", file=sys.stderr, flush=True)
            if (result := run(name)) is None:
                return 1
            report["processes"][name].append(result)
    if args.old and args.apart:
        apart: dict[str, list[dict[str, Any]]] = {"old alone": [], "new alone": []}
        for index in range(args.apart):
            for name, setting, only in (("old alone", "default", "old"), ("new alone", "mallopt", "new")):
                print(f"[{name}, pair {index + 1}/{args.apart}]", file=sys.stderr, flush=True)
                if (result := run(setting, "--only", only)) is None:
                    return 1
                apart[name].append(result)
        report["apart"] = {"processes": apart, "new alone / old alone": _apart_ratios(apart)}
    if args.save:
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        from results import save_result

        print(f"wrote {save_result('allocator', report)}", file=sys.stderr)
    if args.json:
        print(json.dumps(report, indent=1))
        return 0
    for name, runs in report["processes"].items():
        for run in runs:
            print(f"== {name} ({run['allocator']}; {run['environment'] or 'no MALLOC_* set'})")
            for path, ips in run["images_per_second"].items():
                diff = run["max_abs_diff_to_new"].get(path, float("nan"))
                faults = run["page_faults_per_call"][path]
                print(f"  {path:26} {ips:7.1f} images/s  {faults:8.0f} page faults/call  max |diff| to new {diff:.2g}")
            for ratio, value in run["speed_ratios"].items():
                print(f"  {ratio:40} {value:.3f}")
            for path, kept in run["old_kept"].items():
                print(f"  {path} kept: {kept}")
    if "apart" in report:
        print("== apart: old alone (glibc's defaults) vs new alone (allocator set up by the fast path)")
        for dtype, entry in report["apart"]["new alone / old alone"].items():
            pairs = " ".join(f"{r:.3f}" for r in entry["per pair"])
            print(f"  {dtype:10} new/old {entry['ratio of medians']:.3f} (per pair: {pairs})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
