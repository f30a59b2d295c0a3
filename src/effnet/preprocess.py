"""How images are prepared for a model: resolution, crop fraction, interpolation, normalisation.

The one home of these facts (ImageNet mean/std, the Lite models' 127/128, the official evaluation
crop size/(size+32)) and of the evaluation transform, which prediction and training's validation
both build from a :class:`Preprocessing`."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from typing import Any

from effnet.describe.network import MAX_RESOLUTION, NetworkSpec
from effnet.errors import UserError, check_whole_number

#: ImageNet mean and standard deviation of 0–1 RGB pixels (the official B-series preprocessing).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: The Lite models' "0–255 pixels, mean 127, std 128", written for 0–1 pixels (numerically the same).
LITE_MEAN = (127.0 / 255.0,) * 3
LITE_STD = (128.0 / 255.0,) * 3
#: The official evaluation crop: the center size/(size+32) of the short side.
CROP_PADDING = 32


def official_crop_pct(size: int) -> float:
    """The official evaluation crop fraction at ``size`` px: size / (size + 32) (0.875 at 224)."""
    return size / (size + CROP_PADDING)


INTERPOLATIONS = ("bicubic", "bilinear", "nearest")
#: center: resize the short side, keeping the aspect ratio; squash: resize both sides (timm's EfficientNetV2-M/L/XL).
CROP_MODES = ("center", "squash")


@dataclass(frozen=True)
class Preprocessing:
    """Evaluation preprocessing: resize the short side to ``resolution / crop_pct`` (``crop_mode``
    squash: both sides, the aspect ratio not kept), center-crop ``resolution``, scale to 0–1 and
    normalise with ``mean``/``std`` (0–1 pixel units)."""

    resolution: int
    crop_pct: float
    interpolation: str = "bicubic"
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    crop_mode: str = "center"

    def __post_init__(self) -> None:
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))
        check_whole_number("preprocessing resolution", self.resolution, 1, high=MAX_RESOLUTION)
        if not isinstance(self.crop_pct, (int, float)) or not 0 < self.crop_pct <= 1:
            raise UserError(f"preprocessing crop_pct must be within (0, 1], got {self.crop_pct!r}")
        if self.interpolation not in INTERPOLATIONS:
            raise UserError(f"interpolation {self.interpolation!r} is unknown (known: {', '.join(INTERPOLATIONS)})")
        if self.crop_mode not in CROP_MODES:
            raise UserError(f"crop_mode {self.crop_mode!r} is unknown (known: {', '.join(CROP_MODES)})")
        if len(self.mean) != 3 or len(self.std) != 3 or any(not math.isfinite(s) or s <= 0 for s in self.std):
            raise UserError("preprocessing mean and std need three values each, std > 0")

    @property
    def resize_size(self) -> int:
        """The short side before the center crop."""
        return math.floor(self.resolution / self.crop_pct + 1e-6)

    def eval_transform(self) -> Any:
        """A torchvision.transforms.v2 pipeline: PIL image (resized by PIL, as timm and torchvision
        do) or uint8 tensor → normalised float tensor."""
        import torch
        from torchvision.transforms import v2

        mode = getattr(v2.InterpolationMode, self.interpolation.upper())
        size = self.resize_size if self.crop_mode == "center" else (self.resize_size, self.resize_size)
        return v2.Compose(
            [
                v2.Resize(size, interpolation=mode, antialias=True),
                v2.CenterCrop(self.resolution),
                v2.ToImage(),
                v2.ToDtype(torch.float32, scale=True),
                v2.Normalize(list(self.mean), list(self.std)),
            ]
        )

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> Preprocessing:
        try:
            data = json.loads(text)
            return cls(
                resolution=int(data["resolution"]),
                crop_pct=float(data["crop_pct"]),
                interpolation=str(data.get("interpolation", "bicubic")),
                mean=tuple(data.get("mean", IMAGENET_MEAN)),
                std=tuple(data.get("std", IMAGENET_STD)),
                crop_mode=str(data.get("crop_mode", "center")),
            )
        except (ValueError, KeyError, TypeError) as err:
            raise UserError(f"bad preprocessing record in weight file: {err}") from None


def default_preprocessing(spec: NetworkSpec) -> Preprocessing:
    """The official evaluation preprocessing for a description: crop size/(size+32), bicubic,
    ImageNet mean/std (Lite: mean 127, std 128 of 0–255 pixels)."""
    size = spec.resolution
    lite = spec.lite
    return Preprocessing(
        resolution=size,
        crop_pct=official_crop_pct(size),
        interpolation="bicubic",
        mean=LITE_MEAN if lite else IMAGENET_MEAN,
        std=LITE_STD if lite else IMAGENET_STD,
    )
