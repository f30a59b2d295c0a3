"""Architecture search on CIFAR-10 at proxy scale, then the best found vs B0 at the same multiply-adds.

1. A class-balanced subsample of CIFAR-10 (symlinks): a search split (train / held-out val, both from
   CIFAR's train set) and a final split (the same train images / CIFAR's test set).
2. ``effnet nas`` (``search_architectures``) with the chosen strategy: every proposal trained with the
   same short budget at the proxy resolution, rewarded by ACC × (MACs/T)^w.
3. B0 scaled to the best architecture's multiply-adds (``effnet.scale`` + a bisection on the width
   multiplier, same resolution), then both trained with the same (longer) budget and tested.

Usage: python benchmarks/bench_nas_cifar10.py [--data ../shared/data/cifar10] [--trials 10] …
Prints the figures and writes OUTPUT/result.json; ``--save`` also writes them to
``benchmarks/results/<machine>/<date>-nas-cifar10.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

from effnet import NetworkSpec, get_description, profile, scale_network
from effnet.atomic import atomic_write_text
from effnet.nas import SearchSpace, search_architectures
from effnet.train import train_model
from results import save_result

ROOT = Path(__file__).resolve().parents[1]


def subsample(source: Path, target: Path, splits: dict[str, tuple[str, int, int]]) -> None:
    """Symlink ``count`` files per class from ``source/<split>/<class>`` (starting at ``offset``)."""
    for name, (split, offset, count) in splits.items():
        for class_dir in sorted(p for p in (source / split).iterdir() if p.is_dir()):
            files = sorted(class_dir.iterdir())[offset : offset + count]
            out = target / name / class_dir.name
            out.mkdir(parents=True, exist_ok=True)
            for f in files:
                link = out / f.name
                if not link.exists():
                    os.symlink(f.resolve(), link)


def match_width(base: NetworkSpec, macs: int, resolution: int) -> tuple[NetworkSpec, float]:
    """The width multiplier (depth 1, same resolution) whose MACs come closest to ``macs``."""
    lo, hi = 0.1, 4.0
    best = None
    for _ in range(30):
        mid = (lo + hi) / 2
        spec = scale_network(base, width=mid, name=f"{base.name}-w{mid:.3f}").with_(resolution=resolution)
        got = profile(spec, num_classes=10).macs
        if best is None or abs(got - macs) < abs(best[0] - macs):
            best = (got, spec, mid)
        lo, hi = (mid, hi) if got < macs else (lo, mid)
    return best[1], best[2]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "cifar10"))
    parser.add_argument("--output", default="/tmp/effnet-bench-nas")
    parser.add_argument("--strategy", default="rl")
    parser.add_argument("--trials", type=int, default=16, help="at most this many architectures")
    parser.add_argument("--search-minutes", type=float, default=5.0, help="stop proposing after this long")
    parser.add_argument("--train-per-class", type=int, default=100)
    parser.add_argument("--val-per-class", type=int, default=40)
    parser.add_argument("--test-per-class", type=int, default=100)
    parser.add_argument("--search-epochs", type=int, default=3)
    parser.add_argument("--final-epochs", type=int, default=8)
    parser.add_argument("--resolution", type=int, default=32)
    parser.add_argument("--warmup-epochs", type=float, default=0.3, help="short budgets: a short warm-up")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--weight-decay", type=float, default=5e-4)
    parser.add_argument("--ref-width", type=float, default=1.0, help="the search space's reference: B0 × width")
    parser.add_argument("--ref-depth", type=float, default=1.0, help="… × depth (also B0's depth in the comparison)")
    parser.add_argument("--stem-stride", type=int, default=2, help="1 keeps 32-px inputs at 2×2 before the head")
    parser.add_argument("--save", action="store_true", help="also write the result to benchmarks/results/")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    source, out = Path(args.data), Path(args.output)
    if not (source / "train").is_dir():
        print(f"no CIFAR-10 image folder at {source}", file=sys.stderr)
        return 2
    n, v, t = args.train_per_class, args.val_per_class, args.test_per_class
    subsample(source, out / "search", {"train": ("train", 0, n), "val": ("train", n, v)})
    subsample(source, out / "final", {"train": ("train", 0, n), "test": ("test", 0, t)})

    # short from-scratch budgets: a zero-initialised classifier (the official U(±1/√classes) starts a
    # 10-class, wide-head model at a loss near 10) and CIFAR's usual weight decay
    overrides = {"warmup_epochs": args.warmup_epochs, "classifier_init": "zero", "weight_decay": args.weight_decay}
    # B0 at the proxy's depth and stem stride: the search space's reference (also at its width) and the
    # baseline the best architecture is compared with (at the width matching its multiply-adds)
    b0 = get_description("efficientnet_b0").with_(stem_stride=args.stem_stride)
    if args.ref_depth != 1.0:
        b0 = scale_network(b0, depth=args.ref_depth)
    reference = scale_network(b0, width=args.ref_width) if args.ref_width != 1.0 else b0
    reference = reference.with_(name="b0-proxy-reference")
    start = time.perf_counter()
    for n_trials in range(1, args.trials + 1):  # one more each call: the study resumes, the clock decides
        result = search_architectures(
            str(out / "search"),
            strategy=args.strategy,
            n_trials=n_trials,
            epochs=args.search_epochs,
            resolution=args.resolution,
            batch_size=args.batch_size,
            seed=args.seed,
            output=out / "nas",
            study_name=f"bench-{args.strategy}",
            train_overrides=overrides,
            space=SearchSpace(reference=reference),
        )
        if time.perf_counter() - start > args.search_minutes * 60:
            break
    search_seconds = time.perf_counter() - start
    best = NetworkSpec.load(result.best["description"]).with_(resolution=args.resolution)
    best_macs = profile(best, num_classes=10).macs
    matched, width = match_width(b0, best_macs, args.resolution)
    b0_macs = profile(b0.with_(resolution=args.resolution), num_classes=10).macs

    rows = []
    for label, spec in (("nas-best", best), (f"b0 width×{width:.3f}", matched)):
        report = train_model(
            spec,
            data=str(out / "final"),
            epochs=args.final_epochs,
            batch_size=args.batch_size,
            resolution=args.resolution,
            seed=args.seed,
            recipe="small",
            output=None,
            progress=True,
            **overrides,
        )
        rows.append(
            {
                "model": label,
                "macs": report.macs,
                "params": report.params,
                "test_top1": round(report.top1, 4),
                "seconds": round(report.seconds, 1),
                "blocks": spec.block_strings,
            }
        )
    done = [r for r in result.trials if r["state"] == "COMPLETE"]
    summary = {
        "strategy": args.strategy,
        "trials": len(done),
        "search_seconds": round(search_seconds, 1),
        "proxy": f"{n}/class train, {v}/class held-out val, {args.search_epochs} epoch(s) at {args.resolution}px",
        "final": f"{n}/class train, {t}/class CIFAR test, {args.final_epochs} epochs at {args.resolution}px, recipe small",
        "reference": reference.block_strings,
        "stem_stride": args.stem_stride,
        "target_macs_at_proxy": result.objective.effective_target,
        "b0_macs_at_proxy": b0_macs,
        "best_trial": {k: result.best[k] for k in ("number", "accuracy", "macs", "params", "reward")},
        "proxy_accuracy_range": [min(r["accuracy"] for r in done), max(r["accuracy"] for r in done)],
        "comparison": rows,
        "pareto_png": result.files.get("pareto"),
    }
    atomic_write_text(out / "result.json", json.dumps(summary, indent=2) + "\n")
    if args.save:
        print(f"saved {save_result('nas-cifar10', summary)}", file=sys.stderr)
    print(json.dumps(summary, indent=2))
    print(f"\n{'model':<20} {'MACs@' + str(args.resolution):>12} {'params':>10} {'test top-1':>10} {'seconds':>8}")
    for r in rows:
        print(f"{r['model']:<20} {r['macs']:>12,} {r['params']:>10,} {r['test_top1']:>10.4f} {r['seconds']:>8}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
