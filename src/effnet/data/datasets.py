"""Datasets: scikit-learn's bundled handwritten digits and image folders (``train/`` and ``val/``)."""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image

from effnet.data.images import PIXELS_VARIABLE, ImageTooLarge, max_image_pixels, open_image
from effnet.errors import UserError

if TYPE_CHECKING:
    import torch

VAL_FOLDERS = ("val", "validation", "test")


class DataWarning(UserWarning):
    """Something in a dataset was skipped (unreadable, non-image or too large files) or is missing (a
    class without training images)."""


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
    """Image files; a file that fails to decode (or is over the pixel limit) is reported once and replaced
    by the next good one (with that one's target)."""

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
                with open_image(self.files[i]) as image:
                    return image.convert("RGB"), self.targets[i]
            except (OSError, ValueError, SyntaxError) as err:  # ImageTooLarge is a ValueError
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

    def batched_train_loader(
        self, recipe: Any, batch_size: int, sampler: Any, preprocessing: Any, resolution: int, device: torch.device
    ) -> Iterable[tuple[torch.Tensor, torch.Tensor]] | None:
        """A training loader augmenting whole batches on tensors, or None: images one by one
        (:class:`effnet.data.tensor_cache.TensorSplits` has one)."""
        return None

    def batched_eval_loader(
        self, preprocessing: Any, batch_size: int, device: torch.device, rank: int, world: int
    ) -> Iterable[tuple[torch.Tensor, torch.Tensor]] | None:
        """An evaluation loader serving prepared tensors, or None: images one by one."""
        return None


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


def _unreadable(folder: str | Path, err: OSError) -> UserError:
    return UserError(f"cannot read {err.filename or folder}: {err.strerror or err}")


def class_folders(root: Path) -> list[str]:
    """The names of the folders directly under ``root``, sorted; an unreadable ``root`` is a UserError."""
    try:
        return sorted(entry.name for entry in os.scandir(root) if entry.is_dir())
    except OSError as err:
        raise _unreadable(root, err) from None


def _check_readable(folder: Path) -> None:
    """A UserError naming the first folder under ``folder`` (itself included) that cannot be listed:
    ``os.walk``, which ``make_dataset`` uses, would skip it and its images without a word."""

    def refuse(err: OSError) -> None:
        raise _unreadable(folder, err)

    for _ in os.walk(folder, onerror=refuse, followlinks=True):
        pass


@dataclass
class SkippedFiles:
    """Files a scan left out: not readable as images, and over the pixel limit."""

    unreadable: list[str] = field(default_factory=list)
    too_large: list[str] = field(default_factory=list)

    def summary(self, folder: Path) -> str:
        """`` (skipped N file(s): …)`` naming the first three files skipped under ``folder``, or nothing."""
        paths = [p for p in self.unreadable + self.too_large if Path(p).is_relative_to(folder)]
        if not paths:
            return ""
        return f" (skipped {len(paths)} file(s): {', '.join(paths[:3])}{', …' if len(paths) > 3 else ''})"

    def warn(self) -> None:
        """One DataWarning per kind, naming the files (the first 20) and their count."""
        for paths, what in (
            (self.unreadable, "that are not readable images"),
            (self.too_large, f"over the pixel limit of {max_image_pixels():,} ({PIXELS_VARIABLE})"),
        ):
            if paths:
                shown = ", ".join(paths[:20]) + (f", … ({len(paths) - 20} more)" if len(paths) > 20 else "")
                warnings.warn(f"skipped {len(paths)} file(s) {what}: {shown}", DataWarning, stacklevel=3)


def _is_image(path: str, skipped: SkippedFiles) -> bool:
    """Whether PIL recognises the file's header within the pixel limit (cheap; decoding happens when
    loading); a file that fails is added to ``skipped``."""
    try:
        with open_image(path):
            return True
    except ImageTooLarge:
        skipped.too_large.append(path)
    except (OSError, ValueError, SyntaxError):
        skipped.unreadable.append(path)
    return False


def scan_class_folders(
    root: Path, class_names: list[str], skipped: SkippedFiles | None = None, *, known: str = "the training split"
) -> tuple[list[Path], list[int]]:
    """The images under ``root/<class>/`` (any depth, in sorted order) by torchvision's ``make_dataset``,
    with the index of their class in ``class_names``; hidden files are ignored, files PIL does not read go
    to ``skipped`` (or are left out); a class folder not in ``class_names`` is a UserError saying which
    classes were ``known``, and so is a folder that cannot be read."""
    from torchvision.datasets.folder import make_dataset

    skipped = skipped if skipped is not None else SkippedFiles()
    present = class_folders(root)
    extra = [name for name in present if name not in class_names]
    if extra:
        raise UserError(f"{root} has class folder {extra[0]!r} that {known} does not have")
    for name in present:
        _check_readable(root / name)

    def is_valid_file(path: str) -> bool:
        return not os.path.basename(path).startswith(".") and _is_image(path, skipped)

    index = {name: i for i, name in enumerate(class_names)}
    samples = make_dataset(str(root), index, is_valid_file=is_valid_file, allow_empty=True)
    return [Path(path) for path, _ in samples], [target for _, target in samples]


def load_folder_splits(root: str | Path) -> DataSplits:
    """``root/train/<class>/…`` and ``root/val/`` (or ``test/``) as torchvision's ImageFolder reads them.

    Files that are not readable images, and images over the pixel limit (:mod:`effnet.data.images`), are
    skipped with a warning naming them and their count; a class folder without training images is a
    warning naming it; a folder that cannot be read is a UserError naming it.
    """
    root = Path(root)
    try:
        if not root.exists():
            raise UserError(f"data folder {root} does not exist (give a folder with train/ and val/, or 'digits')")
        if not root.is_dir():
            raise UserError(f"data {root} is not a folder")
        train_dir = root / "train"
        if not train_dir.is_dir():
            raise UserError(f"data folder {root} has no train/ folder (expected train/ and val/ or test/)")
        val_dir = next((root / name for name in VAL_FOLDERS if (root / name).is_dir()), None)
    except OSError as err:
        raise _unreadable(root, err) from None
    if val_dir is None:
        raise UserError(f"data folder {root} has no val/ or test/ folder")
    class_names = class_folders(train_dir)
    if len(class_names) < 2:
        raise UserError(f"{train_dir} needs at least two class folders, found {len(class_names)}")
    max_image_pixels()  # a bad EFFNET_MAX_IMAGE_PIXELS is one error, not every image skipped
    skipped = SkippedFiles()
    train_files, train_targets = scan_class_folders(train_dir, class_names, skipped)
    val_files, val_targets = scan_class_folders(val_dir, class_names, skipped)
    for folder, files in ((train_dir, train_files), (val_dir, val_files)):
        if not files:  # one line: what was skipped is part of the reason
            raise UserError(f"{folder} holds no readable images{skipped.summary(folder)}")
    skipped.warn()
    trained = set(train_targets)
    empty = [name for i, name in enumerate(class_names) if i not in trained]
    if empty:
        warnings.warn(
            f"{len(empty)} class folder(s) of {train_dir} hold no readable images, so the model never sees "
            f"those classes in training: {', '.join(empty[:20])}",
            DataWarning,
            stacklevel=2,
        )
    return DataSplits(
        name=str(root),
        train=FileImages(train_files, train_targets),
        val=FileImages(val_files, val_targets),
        class_names=class_names,
        skipped=skipped.unreadable + skipped.too_large,
    )


def load_splits(data: str | Path) -> DataSplits:
    """``"digits"`` (built in, no download) or an image folder with ``train/`` and ``val/``/``test/``."""
    if str(data) == "digits":
        return load_digits_splits()
    return load_folder_splits(data)
