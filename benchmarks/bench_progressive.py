"""CIFAR-10: fixed-size training against progressive learning (EfficientNetV2) at the same wall-clock budget.

    python benchmarks/bench_progressive.py --which fixed --minutes 10 &          # the two runs side by side,
    python benchmarks/bench_progressive.py --which progressive --minutes 10      # one thread each (as reported)
    python benchmarks/bench_progressive.py --minutes 10                          # or one after the other

The model is EfficientNetV2-B0's description scaled to width ×0.5 and depth ×0.5 (0.77M parameters,
7.6M multiply-adds at 32 px) with a stride-1 stem, so 32×32 images reach the head at 2×2 instead of 1×1,
and symmetric padding (faster on a CPU): the full V2-B0 (7.1M parameters at 224 px) trains a few
hundred 32-px images a second on two cores, too few for a 10-minute budget to teach it anything.

Both runs train 4 epochs of equal length (stages are epochs, so ``progressive`` has one epoch a stage)
with the ``small`` recipe (SGD + Nesterov, cosine, label smoothing 0.1, EMA, random-resized crops of
50–100 % and flips, classifier at zero, weight decay 5e-4), evaluate the full test set at 32 px after
each epoch, and differ only in:

- ``fixed``: 32 px throughout, the model's dropout (0.2);
- ``progressive``: 4 stages of 16, 21, 27, 32 px with dropout 0.1 → 0.2 (the paper's ramp of size and
  regularisation, scaled down; no RandAugment or mixup: neither run has them, as the paper's
  small-model settings start with almost none).

An "epoch" here is a planned number of steps drawn from a fresh shuffle of all 50,000 training images
(``max_steps_per_epoch``), not a subset: a short timing of the model at each stage's size picks the
steps that fill the budget, so the faster small-image stages give the progressive run more steps.
``time_limit`` stops a run, evaluated, at the budget if the machine turns out slower than planned.
Prints test top-1, images/s and wall time with the CPU model, its flags and the load average; ``--save``
also writes them to ``benchmarks/results/<machine>/<date>-progressive.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import torch

from bench_cifar10_train import DEFAULT_DATA, TEST_IMAGES, step_speed
from effnet import create_model, get_description, scale_network
from effnet.train import get_recipe, train_model
from effnet.train.progressive import plan_stages
from results import machine_info, save_result

EPOCHS = 4
RUNS = {
    "fixed": {},
    "progressive": {"progressive_stages": 4, "resolution_start": 16, "dropout_start": 0.1},
}


def model_spec(width: float, depth: float):
    spec = get_description("efficientnetv2_b0").with_(padding="symmetric")
    spec = scale_network(spec, width=width, depth=depth)
    return spec.with_(resolution=32, stem_stride=1, name=f"efficientnetv2_b0-w{width:g}-d{depth:g}-stem1")


def plan(spec, settings: dict, args: argparse.Namespace) -> dict:
    """Steps per epoch that fill the budget: each epoch's training at its stage's image size (timed on
    random data, less 30 % for data loading, which shares the cores, EMA and logging) plus a test pass."""
    recipe = get_recipe("small", **settings)
    sizes = [plan_stages(recipe, EPOCHS, spec, 32).stage_of(epoch).resolution for epoch in range(EPOCHS)]
    model = create_model(spec, num_classes=10)
    speeds = {size: step_speed(model, args.batch_size, size, args.threads) * 0.7 for size in sorted(set(sizes))}
    eval_speed = speeds[32] * 2.5
    usable = args.minutes * 60 * 0.95 - 10 - EPOCHS * TEST_IMAGES / eval_speed  # set-up, final writing, tests
    seconds_per_step_of_every_epoch = sum(args.batch_size / speeds[size] for size in sizes)
    steps = max(10, int(usable / seconds_per_step_of_every_epoch))
    return {"epoch_sizes": sizes, "planned_images_per_second": {k: round(v, 1) for k, v in speeds.items()},
            "steps_per_epoch": steps}  # fmt: skip


def run(name: str, args: argparse.Namespace) -> dict:
    spec = model_spec(args.width, args.depth)
    torch.set_num_threads(args.threads)
    settings = RUNS[name]
    schedule = plan(spec, settings, args)
    print(f"{name}: {spec.name}, plan {schedule}", file=sys.stderr)
    load_before = os.getloadavg()
    report = train_model(
        spec, str(args.data), epochs=EPOCHS, batch_size=args.batch_size, resolution=32, seed=args.seed,
        recipe="small", progress=sys.stderr.isatty(), max_steps_per_epoch=schedule["steps_per_epoch"],
        time_limit=args.minutes * 60, output=args.output / name if args.output else None,
        crop_scale=(0.5, 1.0), warmup_epochs=0.5, classifier_init="zero", weight_decay=5e-4,
        workers=args.workers, on_epoch_end=_epoch_line, **settings,
    )  # fmt: skip
    return {
        "run": name,
        "model": report.model,
        "params": report.params,
        "macs_at_32px": report.macs,
        "test_top1": round(report.top1, 4),
        "test_top5": round(report.top5, 4),
        "wall_seconds": report.seconds,
        "train_seconds": report.train_seconds,
        "train_images_per_second": round(report.images_per_second, 1),
        "images_seen": round(report.images_per_second * report.train_seconds),
        "steps": report.steps,
        "epochs_done": report.epochs_done,
        "stopped_early": report.stopped_early,
        "per_epoch": [
            {k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()} for row in report.history
        ],
        "plan": schedule,
        "threads": args.threads,
        "load_average_before": [round(v, 2) for v in load_before],
        "load_average_after": [round(v, 2) for v in os.getloadavg()],
    }


def _epoch_line(epoch: int, metrics: dict) -> None:
    stage = f" (stage {metrics['stage']}, {metrics['train_resolution']} px)" if "stage" in metrics else ""
    print(
        f"  epoch {epoch}{stage}: train loss {metrics['train_loss']:.3f}  test top-1 {metrics['top1']:.2%}  "
        f"{metrics['images_per_second']:.0f} img/s  {metrics['seconds']:.0f}s training",
        file=sys.stderr,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help=f"CIFAR-10 folder (default {DEFAULT_DATA})")
    parser.add_argument("--which", choices=(*RUNS, "both"), default="both")
    parser.add_argument("--minutes", type=float, default=10.0, help="budget of each run (default 10)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--width", type=float, default=0.5)
    parser.add_argument("--depth", type=float, default=0.5)
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (default 1: fastest on a busy 2-core CPU)")
    parser.add_argument("--workers", type=int, default=1, help="data-loading processes (default 1)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=None, help="keep weights, checkpoints and logs here")
    parser.add_argument("--save", action="store_true", help="also write the results to benchmarks/results/")
    args = parser.parse_args()
    if not (args.data / "train").is_dir():
        parser.error(f"no CIFAR-10 at {args.data} (expected train/ and test/ image folders)")
    names = list(RUNS) if args.which == "both" else [args.which]
    results = {"runs": [run(name, args) for name in names]}
    print(json.dumps({"machine": machine_info(), **results}, indent=1))
    if args.save:
        print(f"saved {save_result('progressive', results)}", file=sys.stderr)
    for r in results["runs"]:
        print(
            f"{r['run']:12s} test top-1 {r['test_top1']:.2%}  wall {r['wall_seconds'] / 60:.1f} min  "
            f"{r['train_images_per_second']:.0f} img/s  {r['images_seen']} images, {r['steps']} steps"
            + ("  (stopped by the time limit)" if r["stopped_early"] else ""),
            file=sys.stderr,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
