"""Datasets for training: scikit-learn's bundled handwritten digits and image folders.

Augmentation randomness is a function of (seed, epoch, sample index) only, so a run gives the
same batches whatever the number of loader workers and however often it is interrupted.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from effnet.errors import UserError
from effnet.preprocess import Preprocessing, default_preprocessing, official_crop_pct
from effnet.train.recipe import Recipe

VAL_FOLDERS = ("val", "validation", "test")


class DataWarning(UserWarning):
    """Something in a dataset was skipped (unreadable or non-image files)."""


class ImageSource:
    """Indexable images with integer targets: ``load(i)`` gives an RGB PIL image and its target."""

    targets: list[int]

    def __len__(self) -> int:
        return len(self.targets)

    def load(self, index: int) -> tuple[Image.Image, int]:
        raise NotImplementedError


class MemoryImages(ImageSource):
    """Images held in memory (the digits)."""

    def __init__(self, images: list[Image.Image], targets: list[int]) -> None:
        self.images = images
        self.targets = targets

    def load(self, index: int) -> tuple[Image.Image, int]:
        return self.images[index], self.targets[index]


class FileImages(ImageSource):
    """Image files; a file that fails to decode is reported once and replaced by the next good one
    (with that one's target)."""

    def __init__(self, files: list[Path], targets: list[int]) -> None:
        self.files = files
        self.targets = targets
        self.failed: set[int] = set()

    def load(self, index: int) -> tuple[Image.Image, int]:
        for offset in range(len(self.files)):
            i = (index + offset) % len(self.files)
            if i in self.failed:
                continue
            try:
                with Image.open(self.files[i]) as image:
                    return image.convert("RGB"), self.targets[i]
            except (OSError, ValueError, SyntaxError) as err:
                self.failed.add(i)
                warnings.warn(f"skipped unreadable image {self.files[i]}: {err}", DataWarning, stacklevel=2)
        raise UserError("no readable image left in the dataset")


@dataclass
class DataSplits:
    """A training and a validation split with their class names."""

    name: str
    train: ImageSource
    val: ImageSource
    class_names: list[str]
    in_memory: bool = False
    #: Recipe settings this data needs unless the user says otherwise (digits must not be flipped).
    recipe_defaults: dict[str, Any] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def load_digits_splits(val_fraction: float = 0.2) -> DataSplits:
    """scikit-learn's 1,797 bundled 8×8 handwritten digits as RGB images, with a fixed stratified split."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    pixels = (bunch.images * (255.0 / 16.0)).round().clip(0, 255).astype("uint8")
    images = [Image.fromarray(p, mode="L").convert("RGB") for p in pixels]
    targets = [int(t) for t in bunch.target]
    train_idx, val_idx = train_test_split(
        list(range(len(images))), test_size=val_fraction, stratify=targets, random_state=0
    )
    pick = lambda idx: MemoryImages([images[i] for i in idx], [targets[i] for i in idx])  # noqa: E731
    return DataSplits(
        name="digits",
        train=pick(train_idx),
        val=pick(val_idx),
        class_names=[str(c) for c in range(10)],
        in_memory=True,
        recipe_defaults={"hflip": False, "crop_scale": (0.6, 1.0), "crop_pct": 1.0},
    )


def _scan_class_folders(root: Path, class_names: list[str] | None, skipped: list[str]) -> tuple[list[Path], list[int]]:
    if class_names is None:
        class_names = sorted(entry.name for entry in os.scandir(root) if entry.is_dir())
    files: list[Path] = []
    targets: list[int] = []
    index = {name: i for i, name in enumerate(class_names)}
    for entry in sorted(os.scandir(root), key=lambda e: e.name):
        if not entry.is_dir():
            continue
        if entry.name not in index:
            raise UserError(f"{root} has class folder {entry.name!r} that the training split does not have")
        for dirpath, dirnames, names in os.walk(entry.path):
            dirnames.sort()
            for name in sorted(names):
                if name.startswith("."):
                    continue
                path = Path(dirpath) / name
                if _is_image(path):
                    files.append(path)
                    targets.append(index[entry.name])
                else:
                    skipped.append(str(path))
    return files, targets


def _is_image(path: Path) -> bool:
    """Whether PIL recognises the file's header (cheap; full decoding happens when loading)."""
    try:
        with Image.open(path) as image:
            image.size  # noqa: B018
        return True
    except (OSError, ValueError, SyntaxError):
        return False


def load_folder_splits(root: str | Path) -> DataSplits:
    """``root/train/<class>/…`` and ``root/val/`` (or ``test/``) as torchvision's ImageFolder reads them.

    Files that are not readable images are skipped with one warning naming them and their count.
    """
    root = Path(root)
    if not root.exists():
        raise UserError(f"data folder {root} does not exist (give a folder with train/ and val/, or 'digits')")
    if not root.is_dir():
        raise UserError(f"data {root} is not a folder")
    train_dir = root / "train"
    if not train_dir.is_dir():
        raise UserError(f"data folder {root} has no train/ folder (expected train/ and val/ or test/)")
    val_dir = next((root / name for name in VAL_FOLDERS if (root / name).is_dir()), None)
    if val_dir is None:
        raise UserError(f"data folder {root} has no val/ or test/ folder")
    class_names = sorted(entry.name for entry in os.scandir(train_dir) if entry.is_dir())
    if len(class_names) < 2:
        raise UserError(f"{train_dir} needs at least two class folders, found {len(class_names)}")
    skipped: list[str] = []
    train_files, train_targets = _scan_class_folders(train_dir, class_names, skipped)
    val_files, val_targets = _scan_class_folders(val_dir, class_names, skipped)
    if skipped:
        shown = ", ".join(skipped[:20]) + (f", … ({len(skipped) - 20} more)" if len(skipped) > 20 else "")
        warnings.warn(
            f"skipped {len(skipped)} file(s) that are not readable images: {shown}", DataWarning, stacklevel=2
        )
    if not train_files:
        raise UserError(f"{train_dir} holds no readable images")
    if not val_files:
        raise UserError(f"{val_dir} holds no readable images")
    return DataSplits(
        name=str(root),
        train=FileImages(train_files, train_targets),
        val=FileImages(val_files, val_targets),
        class_names=class_names,
        skipped=skipped,
    )


def load_splits(data: str | Path) -> DataSplits:
    """``"digits"`` (built in, no download) or an image folder with ``train/`` and ``val/``/``test/``."""
    if str(data) == "digits":
        return load_digits_splits()
    return load_folder_splits(data)


# -- transforms -------------------------------------------------------------------------------


def normalization(spec: Any) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The mean and std (0–1 pixels) the model family expects (Lite: 127/128 of 0–255)."""
    pre = default_preprocessing(spec)
    return tuple(pre.mean), tuple(pre.std)


def eval_preprocessing(
    recipe: Recipe, resolution: int, mean: tuple[float, ...], std: tuple[float, ...]
) -> Preprocessing:
    """How a run evaluates (and what its weight file records): the recipe's crop (default the
    official size/(size+32)) and interpolation, the run's normalisation."""
    crop_pct = recipe.crop_pct if recipe.crop_pct is not None else official_crop_pct(resolution)
    return Preprocessing(resolution, crop_pct, recipe.interpolation, tuple(mean), tuple(std))  # type: ignore[arg-type]


def build_transform(
    recipe: Recipe, resolution: int, mean: tuple[float, ...], std: tuple[float, ...], *, train: bool
) -> Any:
    """Train: random-resized crop, flip, AutoAugment/RandAugment; eval: the run's
    :class:`~effnet.preprocess.Preprocessing` (resize + centre crop)."""
    from torchvision.transforms import v2

    if not train:
        return eval_preprocessing(recipe, resolution, mean, std).eval_transform()
    mode = getattr(v2.InterpolationMode, recipe.interpolation.upper())
    steps: list[Any] = [  # on PIL images: their geometric operations support bicubic
        v2.RandomResizedCrop(
            resolution, scale=recipe.crop_scale, ratio=recipe.crop_ratio, interpolation=mode, antialias=True
        )
    ]
    if recipe.hflip:
        steps.append(v2.RandomHorizontalFlip())
    if recipe.augment == "autoaugment":
        steps.append(v2.AutoAugment(v2.AutoAugmentPolicy.IMAGENET, interpolation=mode))
    elif recipe.augment == "randaugment":
        steps.append(v2.RandAugment(recipe.randaugment_n, recipe.randaugment_m, interpolation=mode))
    steps += [v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))]
    return v2.Compose(steps)


# -- datasets and sampling ----------------------------------------------------------------------


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """The augmentation seed of one sample in one epoch."""
    return ((seed * 1_000_003 + epoch) * 1_000_000_007 + index) % (2**62)


class TransformedDataset(Dataset):
    """Images through a transform; keys are ``(index, seed)`` pairs, the seed fixing the augmentation."""

    def __init__(self, source: ImageSource, transform: Any) -> None:
        self.source = source
        self.transform = transform

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, int]:
        index, seed = (key, None) if isinstance(key, int) else key
        image, target = self.source.load(index)
        if seed is None:
            return self.transform(image), target
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.transform(image), target


class ResumableSampler(Sampler):
    """torch's DistributedSampler (shuffled per epoch, sharded over processes) that can start part-way
    through an epoch and attaches each sample's augmentation seed."""

    def __init__(self, size: int, *, seed: int, rank: int = 0, world: int = 1) -> None:
        self.inner = DistributedSampler(range(size), num_replicas=world, rank=rank, shuffle=True, seed=seed)
        self.seed = seed
        self.epoch = 0
        self.start = 0

    def set_position(self, epoch: int, start: int = 0) -> None:
        """Sample epoch ``epoch`` from its ``start``-th sample (of this process's share) on."""
        self.inner.set_epoch(epoch)
        self.epoch = epoch
        self.start = start

    def __iter__(self) -> Iterator[tuple[int, int]]:
        for position, index in enumerate(self.inner):
            if position >= self.start:
                yield index, sample_seed(self.seed, self.epoch, index)

    def __len__(self) -> int:
        return len(self.inner) - self.start


def default_workers(in_memory: bool) -> int:
    if in_memory:
        return 0
    return max(0, min(8, (os.cpu_count() or 1) - 1))


def make_train_loader(
    dataset: TransformedDataset, sampler: ResumableSampler, batch_size: int, workers: int, pin: bool
) -> DataLoader:
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        drop_last=True,
        pin_memory=pin,
        persistent_workers=workers > 0,
    )


class ShardSampler(Sampler):
    """Indices ``rank, rank + world, …`` in order: every sample evaluated exactly once over all processes."""

    def __init__(self, size: int, rank: int = 0, world: int = 1) -> None:
        self.indices = list(range(rank, size, world))

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def make_eval_loader(
    dataset: TransformedDataset, batch_size: int, workers: int, pin: bool, rank: int = 0, world: int = 1
) -> DataLoader:
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=ShardSampler(len(dataset), rank, world),
        num_workers=workers,
        pin_memory=pin,
        persistent_workers=workers > 0,
    )
