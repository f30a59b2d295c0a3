"""The training augmentation: random-resized crop, flip, AutoAugment or RandAugment (torchvision v2), and
mixup/CutMix on batches.

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


def batch_mixer(mixup_alpha: float, cutmix_alpha: float, num_classes: int) -> Any:
    """``(images, targets) → (mixed images, soft targets)`` on a training batch: torchvision's MixUp and/or
    CutMix (α = 0: that one is off; both on: one of the two per batch, with equal odds, as timm's and
    torchvision's reference scripts); None when both are off. Draws from torch's global random numbers
    (saved in checkpoints)."""
    if not mixup_alpha and not cutmix_alpha:
        return None
    from torchvision.transforms import v2

    mixers = [kind(alpha=alpha, num_classes=num_classes)
              for kind, alpha in ((v2.MixUp, mixup_alpha), (v2.CutMix, cutmix_alpha)) if alpha]  # fmt: skip
    return mixers[0] if len(mixers) == 1 else v2.RandomChoice(mixers)
