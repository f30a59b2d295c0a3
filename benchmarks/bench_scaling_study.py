"""Scaling study on CIFAR-10 at proxy scale: does compound scaling beat each single dimension at equal MACs?

1. A class-balanced subsample of CIFAR-10 (symlinks): ``--train-per-class`` images of each class from
   CIFAR's train set for training, ``--test-per-class`` from CIFAR's test set for the reported accuracy.
2. ``effnet study-scaling`` (:func:`effnet.search.study.study_scaling`) on the CPU-sized ``b0_mini``
   baseline at 48 px (CIFAR's 32 px upsampled: at 32 px the last feature map is 1×1 and any larger
   resolution jumps to 2×2, so resolution and compound points cost ≥ 3.5× the baseline): width only, depth only, resolution only (the paper's sweeps, truncated) and
   compound φ (α=1.2, β=1.1, γ=1.15), every point trained with the same short budget; points costing
   more than ``--max-macs-ratio`` × the baseline are skipped.
3. Prints every point, then for each single dimension how often compound is ahead at equal multiply-adds
   (compound's accuracy interpolated on log MACs) and by how much on average. Writes the figure and CSV.

Usage: python benchmarks/bench_scaling_study.py [--data ../shared/data/cifar10] [--epochs 5] …
The study is resumable: rerunning with the same options trains only what is missing.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from effnet import get_description
from effnet.atomic import atomic_write_text
from effnet.search.proxy import Proxy
from effnet.search.study import Sweeps, study_scaling

ROOT = Path(__file__).resolve().parents[1]


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "cifar10")
    parser.add_argument("--output", type=Path, default=ROOT / "runs" / "bench_scaling_study")
    parser.add_argument("--base", default="b0_mini")
    parser.add_argument("--train-per-class", type=int, default=200)
    parser.add_argument("--test-per-class", type=int, default=100)
    parser.add_argument("--resolution", type=int, default=48)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--widths", default="1,1.4,1.8")
    parser.add_argument("--depths", default="1,2,3")
    parser.add_argument("--resolutions", default="1,1.3,1.5,1.7")
    parser.add_argument("--phis", default="0,0.5,1,2")
    parser.add_argument("--max-macs-ratio", type=float, default=6.0)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (a loader process decodes)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    data = args.output / "data"
    subsample(args.data, data, {"train": ("train", args.train_per_class), "val": ("test", args.test_per_class)})
    floats = lambda text: tuple(float(v) for v in text.split(","))  # noqa: E731
    sweeps = Sweeps(
        widths=floats(args.widths),
        depths=floats(args.depths),
        resolutions=floats(args.resolutions),
        phis=floats(args.phis),
        max_macs_ratio=args.max_macs_ratio,
    )
    proxy = Proxy(
        data=str(data), resolution=args.resolution, epochs=args.epochs, batch_size=args.batch_size, recipe="small"
    )
    started = time.perf_counter()
    result = study_scaling(
        get_description(args.base),
        proxy=proxy,
        sweeps=sweeps,
        output=args.output,
        study_name="bench-scaling-study",
        progress=sys.stderr.isatty(),
    )
    seconds = time.perf_counter() - started

    print(
        f"{args.base} on CIFAR-10 ({args.train_per_class}/class train, {args.test_per_class}/class test), "
        f"{args.resolution} px, {args.epochs} epochs a point, {result.points} points, {seconds:.0f} s"
    )
    print(f"{'family':<11} {'value':>5} {'px':>4} {'MACs':>9} {'params':>9} {'top-1':>7}")
    for family, rows in result.curves.items():
        for r in rows:
            acc = "—" if r["accuracy"] is None else f"{100 * r['accuracy']:.2f}%"
            print(
                f"{family:<11} {r['value']:>5g} {r['resolution'] or 0:>4} {(r['macs'] or 0) / 1e6:>8.2f}M "
                f"{(r['params'] or 0) / 1e3:>8.1f}k {acc:>7}"
            )
    print()
    for family, c in result.comparison.items():
        verdict = "compound better" if c["mean_gain"] > 0 else "compound NOT better"
        print(
            f"compound vs {family:<10}: ahead at {c['compound_ahead']}/{c['points']} equal-MACs points, "
            f"mean {100 * c['mean_gain']:+.2f} points → {verdict}"
        )
    accs = [r["accuracy"] for rows in result.curves.values() for r in rows if r["accuracy"] is not None]
    if accs:
        p, n = sum(accs) / len(accs), 10 * args.test_per_class
        print(
            f"(one accuracy on {n} test images has a standard error of about ±{100 * (p * (1 - p) / n) ** 0.5:.1f} points)"
        )
    missing = {"width", "depth", "resolution"} - set(result.comparison)
    for family in sorted(missing):
        print(f"compound vs {family:<10}: no {family} point within compound's MACs range")
    print(f"figure: {result.plot}\ncsv: {result.csv}")
    atomic_write_text(
        args.output / "result.json", json.dumps({**result.to_dict(), "seconds": seconds}, indent=2) + "\n"
    )


if __name__ == "__main__":
    main()
