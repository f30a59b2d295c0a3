"""CIFAR-10 training benchmark: (a) a B0-family model from scratch at 32×32 and (b) fine-tuning the
ImageNet-pretrained EfficientNet-Lite0, each within a wall-clock budget.

    python benchmarks/bench_cifar10_train.py --which scratch --threads 1 --minutes 58    # (a) as reported
    python benchmarks/bench_cifar10_train.py --which finetune --resolution 112 --freeze-stages 3 \
        --crop-min 0.6 --threads 2 --minutes 58                                          # (b) as reported
    python benchmarks/bench_cifar10_train.py --minutes 2.5 --resolution 224 --workers 14 # on a GPU

(a) is B0 with a stride-1 stem (32×32 inputs reach the head at 2×2, not 1×1), width and depth ×0.5 on
a CPU and full size on a GPU; (b) fine-tunes at 64×64 on a CPU (``--resolution``).

Data: ``../shared/data/cifar10/{train,test}`` (image-folder layout; ``--data`` to change). Each run is
planned to fit its budget (a short timing of the model picks the number of steps and of CPU threads,
then the cosine schedule is laid over exactly those steps); ``time_limit`` stops it, evaluated, if
the machine turns out slower than planned. Prints test top-1, wall time and training images/s;
``--save`` also writes them to ``benchmarks/results/<machine>/<date>-cifar10-train.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import torch

from effnet import create_model, get_description, scale_network
from effnet.train import TrainReport
from results import save_result

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "cifar10"
TRAIN_IMAGES, TEST_IMAGES = 50_000, 10_000


def step_speed(
    model: torch.nn.Module, batch: int, resolution: int, threads: int, device: str = "cpu", steps: int = 3
) -> float:
    """Training images/s of one forward + backward + SGD step on random data (bf16 + channels_last on CUDA)."""
    torch.set_num_threads(threads)
    cuda = device.startswith("cuda")
    model = model.to(device, memory_format=torch.channels_last if cuda else torch.contiguous_format).train()
    x = torch.randn(batch, 3, resolution, resolution, device=device)
    y = torch.randint(0, 10, (batch,), device=device)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    times = []
    for _ in range(steps + (3 if cuda else 1)):
        start = time.perf_counter()
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda):
            loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad()
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return batch / min(times[-steps:])


def plan(
    model: torch.nn.Module, batch: int, resolution: int, seconds: float, threads: int | None, device: str = "cpu"
) -> dict:
    """Threads, epochs and steps per epoch that fit ``seconds`` (training plus one test pass per epoch)."""
    if device.startswith("cuda"):
        threads = threads or torch.get_num_threads()
    choices = [threads] if threads else sorted({1, os.cpu_count() or 1})  # a busy machine: 1 can win
    speeds = {t: step_speed(model, batch, resolution, t, device) for t in choices}
    best = max(speeds, key=speeds.get)
    speed = speeds[best] * 0.85  # data loading, EMA and logging
    eval_speed = speed * 2.5
    usable = seconds * 0.9 - 30  # dataset scan, start-up, final writing
    steps_per_epoch = TRAIN_IMAGES // batch
    epochs = 1
    for candidate in range(1, 1000):
        need = candidate * (steps_per_epoch * batch / speed + TEST_IMAGES / eval_speed)
        if need > usable:
            break
        epochs = candidate
    full = epochs * (steps_per_epoch * batch / speed + TEST_IMAGES / eval_speed) <= usable
    if not full:  # not even one epoch: fewer steps in one epoch
        steps_per_epoch = max(10, int((usable - TEST_IMAGES / eval_speed) * speed / batch))
    return {"threads": best, "planned_images_per_second": round(speeds[best], 1), "epochs": epochs,
            "steps_per_epoch": steps_per_epoch}  # fmt: skip


def run_scratch(args: argparse.Namespace) -> dict:
    from effnet.train import train_model

    cuda = args.device.startswith("cuda")
    width = args.width if args.width is not None else (1.0 if cuda else 0.5)
    depth = args.depth if args.depth is not None else (1.0 if cuda else 0.5)
    spec = get_description(args.model).with_(padding=args.padding)
    if width != 1.0 or depth != 1.0:
        spec = scale_network(spec, width=width, depth=depth)
    name = f"{args.model}" + (f"-w{width:g}-d{depth:g}" if (width, depth) != (1.0, 1.0) else "")
    name += f"-stem{args.stem_stride}" if args.stem_stride != 2 else ""
    spec = spec.with_(resolution=32, stem_stride=args.stem_stride, name=name)
    batch = args.batch_size or (256 if cuda else 128)
    schedule = plan(create_model(spec, num_classes=10), batch, 32, args.minutes * 60, args.threads, args.device)
    torch.set_num_threads(schedule["threads"])
    print(f"(a) from scratch: {spec.name} at 32×32, plan {schedule}", file=sys.stderr)
    report = train_model(
        spec, str(args.data), epochs=schedule["epochs"], batch_size=batch, resolution=32, seed=args.seed,
        recipe="small", progress=sys.stderr.isatty(), max_steps_per_epoch=schedule["steps_per_epoch"],
        time_limit=args.minutes * 60, output=args.output / "scratch" if args.output else None,
        crop_scale=(0.5, 1.0), warmup_epochs=min(1.0, schedule["epochs"] / 8), on_epoch_end=_epoch_line,
        classifier_init="zero", weight_decay=args.weight_decay, device=args.device, workers=args.workers,
    )  # fmt: skip
    return _summary("scratch", report, schedule)


def run_finetune(args: argparse.Namespace) -> dict:
    from effnet.train import finetune_model
    from effnet.train.finetune import BackboneFreezer

    res = args.resolution
    model = create_model("efficientnet_lite0", num_classes=10, resolution=res)
    BackboneFreezer(0, args.freeze_stages)(model, 0)  # timed as trained: no backward through frozen stages
    batch = args.batch_size or (256 if args.device.startswith("cuda") else 64)
    schedule = plan(model, batch, res, args.minutes * 60, args.threads, args.device)
    torch.set_num_threads(schedule["threads"])
    print(f"(b) fine-tune Lite0 (ImageNet) at {res}×{res}, plan {schedule}", file=sys.stderr)
    report = finetune_model(
        "lite0-imagenet", str(args.data), epochs=schedule["epochs"], batch_size=batch, resolution=res,
        seed=args.seed, progress=sys.stderr.isatty(), max_steps_per_epoch=schedule["steps_per_epoch"],
        time_limit=args.minutes * 60, output=args.output / "finetune" if args.output else None,
        crop_scale=(args.crop_min, 1.0), warmup_epochs=min(0.5, schedule["epochs"] / 10), on_epoch_end=_epoch_line,
        device=args.device, workers=args.workers, freeze_stages=args.freeze_stages,
    )  # fmt: skip
    return _summary("finetune", report, schedule)


def _epoch_line(epoch: int, metrics: dict) -> None:
    print(
        f"  epoch {epoch}: train loss {metrics['train_loss']:.3f}  test top-1 {metrics['top1']:.2%}  "
        f"{metrics['images_per_second']:.0f} img/s  {metrics['seconds']:.0f}s training",
        file=sys.stderr,
    )


def _summary(name: str, report: TrainReport, schedule: dict) -> dict:
    return {
        "run": name,
        "model": report.model,
        "resolution": report.resolution,
        "test_top1": round(report.top1, 4),
        "test_top5": round(report.top5, 4),
        "wall_seconds": report.seconds,
        "train_images_per_second": round(report.images_per_second, 1),
        "epochs_done": report.epochs_done,
        "steps": report.steps,
        "stopped_early": report.stopped_early,
        "threads": schedule["threads"],
        "device": getattr(report, "device", ""),
        "params": report.params,
        "macs": report.macs,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help=f"CIFAR-10 folder (default {DEFAULT_DATA})")
    parser.add_argument("--which", choices=("scratch", "finetune", "both"), default="both")
    parser.add_argument("--minutes", type=float, default=60.0, help="budget of each run (default 60)")
    parser.add_argument("--batch-size", type=int, default=None, help="CPU: 128 from scratch, 64 fine-tuning; GPU 256")
    parser.add_argument("--model", default="efficientnet_b0", help="(a): a B0-family model")
    parser.add_argument("--width", type=float, default=None, help="(a): width multiplier (CPU 0.5, GPU 1)")
    parser.add_argument("--depth", type=float, default=None, help="(a): depth multiplier (CPU 0.5, GPU 1)")
    parser.add_argument(
        "--stem-stride", type=int, default=1, help="(a): 1 (default) keeps 32×32 inputs at 2×2 before the head; 2 as B0"
    )
    parser.add_argument("--weight-decay", type=float, default=5e-4, help="(a): SGD weight decay")
    parser.add_argument("--padding", default="symmetric", help="(a): symmetric (fast on CPU) or same (TF)")
    parser.add_argument("--resolution", type=int, default=64, help="(b): fine-tuning resolution")
    parser.add_argument("--freeze-stages", type=int, default=0, help="(b): keep the stem and N first stages as loaded")
    parser.add_argument("--crop-min", type=float, default=0.5, help="(b): random-resized-crop smallest area")
    parser.add_argument(
        "--threads", type=int, default=None, help="CPU threads (default: the faster of 1 and all cores)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=None, help="data-loading processes (default: cpus − 1, ≤ 8)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--output", type=Path, default=None, help="keep weights, checkpoints and logs here")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.add_argument("--save", action="store_true", help="also write the results to benchmarks/results/")
    args = parser.parse_args()
    if not (args.data / "train").is_dir():
        parser.error(f"no CIFAR-10 at {args.data} (expected train/ and test/ image folders)")
    results = []
    if args.which in ("scratch", "both"):
        results.append(run_scratch(args))
    if args.which in ("finetune", "both"):
        results.append(run_finetune(args))
    if args.save:
        saved = save_result("cifar10-train", {"runs": results}, device=str(args.device))
        print(f"saved {saved}", file=sys.stderr)
    if args.json:
        json.dump(results, sys.stdout, indent=2)
        print()
    else:
        for r in results:
            print(
                f"{r['run']:9s} {r['model']:20s} {r['resolution']:4d}px  test top-1 {r['test_top1']:.2%}  "
                f"wall {r['wall_seconds'] / 60:.1f} min  {r['train_images_per_second']:.0f} img/s  "
                f"{r['epochs_done']} epoch(s), {r['steps']} steps, {r['threads']} thread(s)"
                + ("  (stopped by the time limit)" if r["stopped_early"] else "")
            )
    return 0 if math.isfinite(sum(r["test_top1"] for r in results)) else 1


if __name__ == "__main__":
    raise SystemExit(main())
