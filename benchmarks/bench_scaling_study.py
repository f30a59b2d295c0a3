"""Scaling study on CIFAR-10: does compound scaling beat each single dimension at equal multiply-adds?

1. A class-balanced subsample of CIFAR-10 (symlinks): ``--train-per-class`` images of each class from
   CIFAR's train set for training, ``--test-per-class`` from CIFAR's test set for the reported accuracy
   (all of them with ``--train-per-class 0``).
2. ``effnet study-scaling`` (:func:`effnet.search.study.study_scaling`): the baseline scaled by width
   only, depth only, resolution only (the paper's sweeps, truncated) and compound φ (α=1.2, β=1.1,
   γ=1.15); every point trained with ``--seeds`` seeds under the same budget; points costing more than
   ``--max-macs-ratio`` × the baseline are skipped. ``--workers`` processes share the study.
3. Prints every point (mean and 95% interval over the seeds), then each single dimension against
   compound at equal multiply-adds (compound interpolated in log MACs within its measured range),
   with the interval of the difference and a verdict. Writes the figure (error bars), the CSV,
   ``result.json`` and ``summary.md``; ``--save`` also writes the result to
   ``benchmarks/results/<machine>/<date>-scaling-study.json``.

Profiles (``--profile``; any option given overrides the profile's value):

- ``cpu`` (about an hour on an idle 2-core CPU): ``b0_mini`` at 40 px (CIFAR's 32 px upsampled: at
  32 px the last feature map is 1×1 and every larger resolution jumps to 2×2, so resolution and compound
  points cost ≥ 2.3× and 3.5× the baseline; at 40 px they start at 1.5× and 1.9×), 500 training and
  200 test images per class (a test accuracy's standard error ≈ 1.1 points), 3 seeds, 6 epochs per
  point, two workers of one thread each.
- ``gpu`` (under 8 minutes on one GPU): full CIFAR-10 (50,000 / 10,000) at 40 px, 5 seeds, 10 epochs
  at batch 256, data and augmentation on the GPU, four workers sharing it.

``--throughput`` only measures the proxy's training images/s on 32-px CIFAR-10, image by image
(JPEG decoding and PIL crops in a loader process) against the in-memory batched path, same model.

Usage: python benchmarks/bench_scaling_study.py [--profile cpu|gpu] [--data /work/shared/data/cifar10] …
The study is resumable: rerunning with the same options trains only what is missing.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch

from effnet import get_description
from effnet.atomic import atomic_write_text
from effnet.search.proxy import Proxy
from effnet.search.record import row_estimate
from effnet.search.stats import show
from effnet.search.study import Sweeps, study_scaling
from results import machine_info, save_result

ROOT = Path(__file__).resolve().parents[1]
PROFILES: dict[str, dict[str, Any]] = {
    "cpu": dict(
        train_per_class=500,
        test_per_class=200,
        resolution=40,
        epochs=6,
        batch_size=64,
        seeds=3,
        workers=2,
        threads=1,
        widths="1,1.4,1.8",
        depths="1,2,3",
        resolutions="1,1.3,1.5,1.7,2",
        phis="0,0.5,1,2",
        max_macs_ratio=6.0,
    ),
}
PROFILES["gpu"] = dict(
    PROFILES["cpu"],
    train_per_class=0,
    test_per_class=0,
    epochs=10,
    batch_size=256,
    seeds=5,
    workers=4,
    threads=2,
    widths="1,1.4,1.8,2.6",
    depths="1,2,3,4",
    max_macs_ratio=7.0,
)


def subsample(source: Path, target: Path, per_class: dict[str, tuple[str, int]]) -> None:
    """Symlink the first ``count`` files of each class of ``source/<split>`` into ``target/<name>``."""
    for name, (split, count) in per_class.items():
        folder = source / split
        if not folder.is_dir():
            sys.exit(f"no {folder}: pass --data with CIFAR-10 in image-folder layout (train/, test/)")
        for class_dir in sorted(p for p in folder.iterdir() if p.is_dir()):
            out = target / name / class_dir.name
            out.mkdir(parents=True, exist_ok=True)
            for file in sorted(class_dir.iterdir())[:count]:
                link = out / file.name
                if not link.exists():
                    link.symlink_to(file.resolve())


def floats(text: str) -> tuple[float, ...]:
    return tuple(float(v) for v in text.split(","))


def settings(args: argparse.Namespace, data: Path) -> tuple[Proxy, Sweeps]:
    proxy = Proxy(
        data=str(data),
        resolution=args.resolution,
        epochs=args.epochs,
        batch_size=args.batch_size,
        recipe="small",
        seeds=args.seeds,
        budget=args.budget_mode,
    )
    sweeps = Sweeps(
        widths=floats(args.widths),
        depths=floats(args.depths),
        resolutions=floats(args.resolutions),
        phis=floats(args.phis),
        max_macs_ratio=args.max_macs_ratio,
    )
    return proxy, sweeps


def worker(args: argparse.Namespace, data: Path) -> None:
    """One process of the study: trains the points nobody else has claimed."""
    torch.set_num_threads(args.threads)
    proxy, sweeps = settings(args, data)
    study_scaling(
        get_description(args.base),
        proxy=proxy,
        sweeps=sweeps,
        output=args.output,
        study_name="bench-scaling-study",
        plot=None,
        csv_path=None,
    )


def throughput(args: argparse.Namespace, data: Path) -> dict[str, Any]:
    """Training images/s of the proxy on 32-px CIFAR-10, per image vs in memory (same model, twice each)."""
    from effnet.search.proxy import proxy_splits
    from effnet.train import train_model

    torch.set_num_threads(args.threads)
    spec = get_description(args.base).with_(resolution=32)
    runs: dict[str, list[float]] = {"per_image": [], "memory": []}
    memory = proxy_splits(Proxy(data=str(data)))
    for _ in range(2):
        for name, source in (("per_image", str(data)), ("memory", memory)):
            report = train_model(spec, source, epochs=1, batch_size=64, recipe="small", progress=False, seed=0)
            runs[name].append(round(report.images_per_second, 1))
            print(f"{name:>9}: {report.images_per_second:.1f} images/s", flush=True)
    return {"images_per_second": runs, "threads": args.threads, "machine": machine_info()}


def summary_markdown(result: Any, args: argparse.Namespace, seconds: float) -> str:
    """The study as Markdown: the settings, every point, the verdicts."""
    lines = [
        f"{args.base} on CIFAR-10 ({args.train_per_class or 'all'} train / {args.test_per_class or 'all'} test images "
        f"per class), {args.resolution} px, {result.budget}, {result.seeds} seeds per point, {result.points} points, "
        f"{seconds / 60:.0f} min",
        "",
        "| curve | value | px | multiply-adds | params | top-1 (mean ± 95%) | seeds' top-1 |",
        "|---|---|---|---|---|---|---|",
    ]
    for family, rows in result.curves.items():
        for r in rows:
            seeds = ", ".join("—" if a is None else f"{100 * a:.1f}" for a in r.get("accuracies") or ())
            lines.append(
                f"| {family} | {r['value']:g} | {r['resolution'] or '—'} | {(r['macs'] or 0) / 1e6:.2f}M "
                f"| {(r['params'] or 0) / 1e3:.0f}k | {show(row_estimate(r))} | {seeds} |"
            )
    cost = {"macs": "multiply-adds", "time": "training time", "params": "parameters"}[result.compare_by]
    lines += ["", f"Compound against each single dimension at equal {cost}:", ""]
    lines += [f"- **{family}**: {c['verdict']}" for family, c in result.comparison.items()]
    if result.not_learned:
        lines += ["", f"Points below the learning threshold: {', '.join(result.not_learned)}."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--profile", choices=list(PROFILES), default="cpu")
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "cifar10")
    parser.add_argument("--output", type=Path, help="default runs/bench_scaling_study_<profile>")
    parser.add_argument("--base", default="b0_mini")
    for name, value in PROFILES["cpu"].items():
        kind = type(value) if not isinstance(value, str) else str
        parser.add_argument(f"--{name.replace('_', '-')}", type=kind, help=f"(profile cpu: {value})")
    parser.add_argument("--budget-mode", default="epochs", choices=("epochs", "macs", "plateau"))
    parser.add_argument("--throughput", action="store_true", help="only measure the proxy's images/s")
    parser.add_argument("--save", action="store_true", help="also write the result to benchmarks/results/")
    args = parser.parse_args()
    for name, value in PROFILES[args.profile].items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    args.output = args.output or ROOT / "runs" / f"bench_scaling_study_{args.profile}"
    device = "cuda" if args.profile == "gpu" and torch.cuda.is_available() else "cpu"

    data = args.data
    if args.train_per_class or args.test_per_class:
        data = args.output / "data"
        subsample(args.data, data, {"train": ("train", args.train_per_class), "val": ("test", args.test_per_class)})
    if args.throughput:
        numbers = throughput(args, data)
        atomic_write_text(args.output / "throughput.json", json.dumps(numbers, indent=2) + "\n", mkdir=True)
        if args.save:
            print(f"saved {save_result('scaling-throughput', numbers, device=device)}", file=sys.stderr)
        return

    started = time.perf_counter()
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=worker, args=(args, data)) for _ in range(args.workers)]
    for process in workers:
        process.start()
    for process in workers:
        process.join()
    if any(p.exitcode != 0 for p in workers):
        sys.exit(f"a worker failed (exit codes {[p.exitcode for p in workers]}); rerun to resume")
    torch.set_num_threads(args.threads)
    proxy, sweeps = settings(args, data)
    result = study_scaling(  # every point is trained: this collects them and draws the figure
        get_description(args.base), proxy=proxy, sweeps=sweeps, output=args.output, study_name="bench-scaling-study"
    )
    seconds = time.perf_counter() - started
    text = summary_markdown(result, args, seconds)
    print(text)
    print(f"figure: {result.plot}\ncsv: {result.csv}")
    atomic_write_text(args.output / "summary.md", text)
    record = {**result.to_dict(), "seconds": seconds, "profile": args.profile, "load_average": os.getloadavg()}
    atomic_write_text(
        args.output / "result.json",
        json.dumps({**record, "machine": machine_info(device)}, indent=2, default=str) + "\n",
    )
    if args.save:
        print(f"saved {save_result('scaling-study', json.loads(json.dumps(record, default=str)), device=device)}")


if __name__ == "__main__":
    main()
