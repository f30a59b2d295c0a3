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


#: Bounds on a weight file's preprocessing (0–1 pixel units): a std near 0 (1e-30) or NaN makes every
#: probability NaN; the short side before the crop stays within twice the largest resolution.
MIN_STD = 1e-3
MAX_STD = 1e3
MAX_MEAN = 1e3
MAX_RESIZE = 2 * MAX_RESOLUTION

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
        for name in ("mean", "std"):
            try:
                object.__setattr__(self, name, tuple(float(v) for v in getattr(self, name)))
            except (TypeError, ValueError):
                raise UserError(f"preprocessing {name} must be three numbers, got {getattr(self, name)!r}",
                                field=name) from None  # fmt: skip
        check_whole_number("preprocessing resolution", self.resolution, 1, high=MAX_RESOLUTION)
        crop = self.crop_pct
        if isinstance(crop, bool) or not isinstance(crop, (int, float)) or not 0 < crop <= 1:
            raise UserError(f"preprocessing crop_pct must be within (0, 1], got {crop!r}", field="crop_pct")
        if self.resolution / crop > MAX_RESIZE:  # crop_pct 1e-6 would resize every image to millions of pixels
            raise UserError(
                f"preprocessing crop_pct {crop!r} resizes images to {self.resolution / crop:,.0f} px before the "
                f"{self.resolution} px crop, more than {MAX_RESIZE:,}",
                field="crop_pct",
            )
        if self.interpolation not in INTERPOLATIONS:
            raise UserError(f"interpolation {self.interpolation!r} is unknown (known: {', '.join(INTERPOLATIONS)})")
        if self.crop_mode not in CROP_MODES:
            raise UserError(f"crop_mode {self.crop_mode!r} is unknown (known: {', '.join(CROP_MODES)})")
        if len(self.mean) != 3 or len(self.std) != 3:
            raise UserError("preprocessing mean and std need three values each", field="mean")
        if not all(math.isfinite(m) and abs(m) <= MAX_MEAN for m in self.mean):
            raise UserError(f"preprocessing mean must be finite numbers within ±{MAX_MEAN:g}, got {self.mean}",
                            field="mean")  # fmt: skip
        if not all(math.isfinite(s) and MIN_STD <= s <= MAX_STD for s in self.std):
            raise UserError(f"preprocessing std must be numbers within [{MIN_STD:g}, {MAX_STD:g}], got {self.std}",
                            field="std")  # fmt: skip

    @property
    def resize_size(self) -> int:
        """The short side before the center crop."""
        return math.floor(self.resolution / self.crop_pct + 1e-6)

    def resized_size(self, width: int, height: int) -> tuple[int, int]:
        """The size (width, height) an image of ``width`` × ``height`` pixels is resized to before the crop."""
        side = self.resize_size
        if self.crop_mode == "squash":
            return side, side
        scale = side / max(1, min(width, height))
        return max(side, round(width * scale)), max(side, round(height * scale))

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
