"""The training augmentation: random-resized crop, flip, AutoAugment or RandAugment (torchvision v2).

Evaluation images go through :meth:`effnet.preprocess.Preprocessing.eval_transform`."""

from __future__ import annotations

from typing import Any, Protocol


class Augmentation(Protocol):
    """The settings the training augmentation reads (a :class:`~effnet.train.Recipe` has them all)."""

    @property
    def interpolation(self) -> str: ...
    @property
    def crop_scale(self) -> tuple[float, float]: ...
    @property
    def crop_ratio(self) -> tuple[float, float]: ...
    @property
    def hflip(self) -> bool: ...
    @property
    def augment(self) -> str: ...  # "autoaugment", "randaugment" or "none"
    @property
    def randaugment_n(self) -> int: ...
    @property
    def randaugment_m(self) -> int: ...


def train_transform(settings: Augmentation, resolution: int, mean: tuple[float, ...], std: tuple[float, ...]) -> Any:
    """PIL image → augmented, normalised float tensor of ``resolution`` px (mean/std of 0–1 pixels)."""
    import torch
    from torchvision.transforms import v2

    mode = getattr(v2.InterpolationMode, settings.interpolation.upper())
    steps: list[Any] = [  # on PIL images: their geometric operations support bicubic
        v2.RandomResizedCrop(
            resolution, scale=settings.crop_scale, ratio=settings.crop_ratio, interpolation=mode, antialias=True
        )
    ]
    if settings.hflip:
        steps.append(v2.RandomHorizontalFlip())
    if settings.augment == "autoaugment":
        steps.append(v2.AutoAugment(v2.AutoAugmentPolicy.IMAGENET, interpolation=mode))
    elif settings.augment == "randaugment":
        steps.append(v2.RandAugment(settings.randaugment_n, settings.randaugment_m, interpolation=mode))
    steps += [v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))]
    return v2.Compose(steps)
