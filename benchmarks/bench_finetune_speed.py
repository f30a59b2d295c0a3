"""Fine-tuning speed: training images/s of ``finetune_model`` (the ImageNet Lite0 on a folder of 32-px
digit PNGs) against the loop a user writes by hand, side by side in one process, rounds interleaved
and their order shuffled, at 64 and 224 px, batch 32:

- ``finetune RECIPE``: :func:`effnet.train.finetune_model` with its defaults and ``--recipes`` (default
  ``finetune``);
- ``plain effnet``: a plain loop over the same effnet module (AdamW, a new head, label smoothing, no
  augmentation: torchvision's ImageFolder, Resize, ToTensor, Normalize, one loader process as the user's);
- ``plain timm``: the same loop over ``timm.create_model("efficientnet_lite0")`` (random weights: speed only);
- ``old finetune`` (with ``--old``): ``finetune_model`` of another copy of effnet (see bench_proxy_speed.py).

Images/s counts the training loop (batches drawn, steps taken), not the set-up or evaluation.
"""

from __future__ import annotations

import argparse
import importlib
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from results import interleaved, save_result

sys.path.insert(0, str(Path(__file__).resolve().parent))


def write_digits(root: Path, train: int, val: int) -> Path:
    """scikit-learn's digits as a folder of 32-px PNGs (``train/<class>/…``, ``val/<class>/…``)."""
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits

    bunch = load_digits()
    for split, rows in (("train", range(train)), ("val", range(train, train + val))):
        for i in rows:
            folder = root / split / f"digit{bunch.target[i]}"
            folder.mkdir(parents=True, exist_ok=True)
            pixels = (bunch.images[i] * 255 / 16).astype(np.uint8)
            Image.fromarray(pixels).convert("RGB").resize((32, 32), Image.BICUBIC).save(folder / f"{i}.png")
    return root


def finetune_runner(
    root: Path, resolution: int, batch_size: int, steps: int, recipe: str, package: str = "effnet"
) -> Callable[[], dict]:
    finetune_model = importlib.import_module(f"{package}.train").finetune_model

    def run() -> dict:
        report = finetune_model(
            "lite0-imagenet",
            root,
            recipe=recipe,
            epochs=1,
            batch_size=batch_size,
            resolution=resolution,
            max_steps_per_epoch=steps,
            progress=False,
        )
        return {"images_per_second": report.images_per_second}

    return run


def plain_runner(kind: str, root: Path, resolution: int, batch_size: int, steps: int) -> Callable[[], dict]:
    from torchvision import datasets, transforms

    from effnet.factory import load_model

    def run() -> dict:
        if kind == "timm":
            import timm

            model = timm.create_model("efficientnet_lite0", pretrained=False)
            mean, std = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
        else:
            model, info = load_model("lite0-imagenet", resolution=resolution)
            mean, std = info.preprocessing.mean, info.preprocessing.std
        tf = transforms.Compose([
            transforms.Resize((resolution, resolution), interpolation=transforms.InterpolationMode.BICUBIC),
            transforms.ToTensor(),
            transforms.Normalize(mean, std),
        ])  # fmt: skip
        train = datasets.ImageFolder(root / "train", tf)
        if kind == "timm":
            model.reset_classifier(len(train.classes))
        else:
            model.classifier = torch.nn.Linear(model.classifier.in_features, len(train.classes))
        loader = torch.utils.data.DataLoader(train, batch_size, shuffle=True, drop_last=True, num_workers=1)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
        criterion = torch.nn.CrossEntropyLoss(label_smoothing=0.1)
        model.train()
        done, start = 0, time.perf_counter()
        for images, targets in loader:
            loss = criterion(model(images), targets)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            done += 1
            if done == steps:
                break
        return {"images_per_second": done * batch_size / (time.perf_counter() - start)}

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--resolutions", type=int, nargs="+", default=[64, 224])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=4, help="training steps per run (64 px gets 4× as many)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--recipes", nargs="+", default=["finetune"], help="fine-tuning recipes to time")
    parser.add_argument("--save", action="store_true", help="save the figures with benchmarks/results.py")
    parser.add_argument("--old", help="folder holding a renamed copy of effnet (effnet_old; see bench_proxy_speed.py)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.old:
        sys.path.insert(0, str(Path(args.old).resolve()))
    table: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = write_digits(Path(tmp) / "digits", train=max(320, 4 * args.steps * args.batch_size), val=64)
        for resolution in args.resolutions:
            steps = args.steps * (4 if resolution <= 64 else 1)
            shape = (resolution, args.batch_size, steps)
            runners = {f"finetune {recipe}": finetune_runner(root, *shape, recipe) for recipe in args.recipes}
            if args.old:
                runners["old finetune"] = finetune_runner(root, *shape, "finetune", "effnet_old")
            runners["plain effnet"] = plain_runner("effnet", root, *shape)
            runners["plain timm"] = plain_runner("timm", root, *shape)
            found = interleaved(runners, args.rounds)
            row = table[str(resolution)] = {
                name: round(statistics.median(r["images_per_second"] for r in runs), 2) for name, runs in found.items()
            }
            if resolution == args.resolutions[0]:
                print(f"{'px':>4} {'':22} {'img/s':>8} {'vs plain effnet':>16}")
            for name, speed in row.items():
                print(f"{resolution:>4} {name:22} {speed:8.2f} {speed / row['plain effnet']:15.2f}×", flush=True)
    if args.save:
        save_result("finetune-speed", {"settings": vars(args), "images_per_second": table})


if __name__ == "__main__":
    main()
