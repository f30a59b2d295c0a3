"""Small datasets decoded once into uint8 tensors, augmented on tensors a batch at a time.

The proxy of a scaling search trains dozens of small models on the same few thousand images. Decoding
JPEGs and cropping PIL images one by one then costs more than the model: :func:`tensor_splits` decodes
a dataset once per process into one uint8 tensor per split (on the GPU when training there), and
:class:`TensorSplits` gives the trainer batched loaders instead of per-image ones:

- training: torchvision's RandomResizedCrop boxes (same sampling rule, drawn for the whole batch from
  the batch's first sample seed, so a run is repeatable), cut and resized by ``torchvision.ops.roi_align``
  (bilinear, averaged over the box when shrinking, instead of PIL's bicubic), flipped, normalised;
- evaluation: the run's own evaluation transform (:meth:`effnet.preprocess.Preprocessing.eval_transform`)
  applied once per image and resolution, then served in batches: the same numbers as the per-image path.

Recipes with AutoAugment or RandAugment keep the per-image path (these policies are per image).
"""

from __future__ import annotations

import math
import os
from collections import OrderedDict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from effnet.data.datasets import DataSplits, ImageSource, load_splits
from effnet.data.sampling import ResumableSampler

#: The largest split (bytes of uint8 pixels) kept in memory; larger datasets use the per-image path.
MAX_BYTES = 2 * 1024**3
#: Evaluation tensors kept per dataset (one per resolution in use).
EVAL_CACHE = 2


class TensorImages(ImageSource):
    """Images as one uint8 tensor ``[N, 3, H, W]`` and their targets; ``load`` gives a PIL image."""

    def __init__(self, pixels: torch.Tensor, targets: list[int]) -> None:
        self.pixels = pixels
        self.targets = targets

    def load(self, index: int) -> tuple[Image.Image, int]:
        return Image.fromarray(self.pixels[index].permute(1, 2, 0).cpu().numpy()), self.targets[index]


def decode(source: ImageSource, max_bytes: int = MAX_BYTES) -> TensorImages | None:
    """Every image of ``source`` decoded into one tensor; None when they differ in size or would take
    more than ``max_bytes``."""
    first, _ = source.load(0)
    width, height = first.size
    if len(source) * 3 * width * height > max_bytes:
        return None
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:  # PIL decodes without the GIL
        loaded = list(pool.map(source.load, range(len(source))))
    if any(image.size != (width, height) for image, _ in loaded):
        return None
    pixels = torch.from_numpy(np.stack([np.asarray(image.convert("RGB")) for image, _ in loaded]))
    return TensorImages(pixels.permute(0, 3, 1, 2).contiguous(), [target for _, target in loaded])


def crop_boxes(
    count: int,
    height: int,
    width: int,
    scale: tuple[float, float],
    ratio: tuple[float, float],
    generator: torch.Generator,
) -> torch.Tensor:
    """``count`` boxes ``(x1, y1, x2, y2)`` in pixels drawn as torchvision's ``RandomResizedCrop`` draws one:
    ten tries of an area fraction in ``scale`` and a log-uniform aspect ratio in ``ratio``, else the
    central crop at the nearest allowed ratio."""
    tries = 10
    area = height * width
    target = area * torch.empty(count, tries).uniform_(scale[0], scale[1], generator=generator)
    log_ratio = torch.empty(count, tries).uniform_(math.log(ratio[0]), math.log(ratio[1]), generator=generator)
    aspect = torch.exp(log_ratio)
    w = torch.round(torch.sqrt(target * aspect))
    h = torch.round(torch.sqrt(target / aspect))
    fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = torch.where(fits.any(1), fits.float().argmax(1), torch.full((count,), -1))
    rows = torch.arange(count)
    pick = first.clamp(min=0)
    w, h = w[rows, pick], h[rows, pick]
    top = torch.floor(torch.rand(count, generator=generator) * (height - h + 1))
    left = torch.floor(torch.rand(count, generator=generator) * (width - w + 1))
    if (first < 0).any():  # the fallback of RandomResizedCrop
        in_ratio = width / height
        if in_ratio < min(ratio):
            cw, ch = width, round(width / min(ratio))
        elif in_ratio > max(ratio):
            cw, ch = round(height * max(ratio)), height
        else:
            cw, ch = width, height
        none = first < 0
        w[none], h[none] = float(cw), float(ch)
        top[none], left[none] = float((height - ch) // 2), float((width - cw) // 2)
    return torch.stack([left, top, left + w, top + h], dim=1)


class BatchedTrainLoader:
    """Augmented training batches from a :class:`TensorImages`, in the sampler's order (whole batches)."""

    def __init__(
        self,
        images: TensorImages,
        sampler: ResumableSampler,
        batch_size: int,
        recipe: Any,
        preprocessing: Any,
        resolution: int,
        device: torch.device,
    ) -> None:
        self.pixels = images.pixels.to(device)
        self.targets = torch.tensor(images.targets, dtype=torch.long, device=device)
        self.sampler = sampler
        self.batch_size = batch_size
        self.recipe = recipe
        self.resolution = resolution
        self.mean = torch.tensor(preprocessing.mean, device=device).view(1, 3, 1, 1) * 255
        self.std = torch.tensor(preprocessing.std, device=device).view(1, 3, 1, 1) * 255

    def __len__(self) -> int:
        return len(self.sampler) // self.batch_size

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        keys: list[tuple[int, int]] = []
        for key in self.sampler:
            keys.append(key)
            if len(keys) == self.batch_size:
                yield self.batch(keys)
                keys = []

    def batch(self, keys: list[tuple[int, int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """The augmented, normalised batch of ``(index, seed)`` keys; its randomness is the first seed's."""
        from torchvision.ops import roi_align

        generator = torch.Generator().manual_seed(keys[0][1])
        index = torch.tensor([i for i, _ in keys], device=self.pixels.device)
        count, (height, width) = len(keys), self.pixels.shape[-2:]
        boxes = crop_boxes(count, height, width, self.recipe.crop_scale, self.recipe.crop_ratio, generator)
        rois = torch.cat([torch.arange(count, dtype=torch.float32)[:, None], boxes], dim=1).to(self.pixels.device)
        size = (self.resolution, self.resolution)
        images = roi_align(self.pixels[index].float(), rois, size, spatial_scale=1.0, sampling_ratio=-1, aligned=True)
        if self.recipe.hflip:
            flip = (torch.rand(count, generator=generator) < 0.5).to(images.device)
            images = torch.where(flip[:, None, None, None], images.flip(-1), images)
        return (images - self.mean) / self.std, self.targets[index]


class BatchedEvalLoader:
    """Evaluation batches of this process's share (every ``world``-th image from ``rank``)."""

    def __init__(self, images: torch.Tensor, targets: list[int], batch_size: int, rank: int, world: int) -> None:
        self.images = images[rank::world]
        self.targets = torch.tensor(targets[rank::world], dtype=torch.long, device=images.device)
        self.batch_size = batch_size

    def __len__(self) -> int:
        return math.ceil(len(self.targets) / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for start in range(0, len(self.targets), self.batch_size):
            yield self.images[start : start + self.batch_size], self.targets[start : start + self.batch_size]


@dataclass
class TensorSplits(DataSplits):
    """:class:`DataSplits` whose images are uint8 tensors; the trainer asks it for batched loaders."""

    def __post_init__(self) -> None:
        self._eval: OrderedDict[tuple[Any, str], torch.Tensor] = OrderedDict()

    def eval_images(self, preprocessing: Any, device: torch.device) -> torch.Tensor:
        """The validation images through the run's evaluation transform, once per preprocessing."""
        key = (preprocessing, str(device))
        if key not in self._eval:
            transform = preprocessing.eval_transform()
            images = torch.stack([transform(self.val.load(i)[0]) for i in range(len(self.val))]).to(device)
            self._eval[key] = images
            while len(self._eval) > EVAL_CACHE:
                self._eval.popitem(last=False)
        return self._eval[key]

    def batched_train_loader(
        self,
        recipe: Any,
        batch_size: int,
        sampler: ResumableSampler,
        preprocessing: Any,
        resolution: int,
        device: torch.device,
    ) -> BatchedTrainLoader | None:
        """Training batches augmented on tensors at ``resolution``; None for recipes with per-image policies."""
        if recipe.augment != "none":
            return None
        assert isinstance(self.train, TensorImages)
        return BatchedTrainLoader(self.train, sampler, batch_size, recipe, preprocessing, resolution, device)

    def batched_eval_loader(
        self, preprocessing: Any, batch_size: int, device: torch.device, rank: int, world: int
    ) -> BatchedEvalLoader:
        """Evaluation batches of the prepared validation tensors (the per-image path's numbers)."""
        return BatchedEvalLoader(self.eval_images(preprocessing, device), self.val.targets, batch_size, rank, world)


_CACHE: dict[str, DataSplits] = {}


def tensor_splits(data: str | Path, max_bytes: int = MAX_BYTES) -> DataSplits:
    """``data`` (``"digits"`` or an image folder) decoded into a :class:`TensorSplits`, once per process;
    the per-image :class:`DataSplits` where its images differ in size or exceed ``max_bytes``."""
    key = "digits" if str(data) == "digits" else str(Path(data).resolve())
    if key not in _CACHE:
        splits = load_splits(data)
        train, val = decode(splits.train, max_bytes), decode(splits.val, max_bytes)
        if train is None or val is None:
            _CACHE[key] = splits
        else:
            _CACHE[key] = TensorSplits(
                name=splits.name,
                train=train,
                val=val,
                class_names=splits.class_names,
                in_memory=True,
                recipe_defaults=dict(splits.recipe_defaults),
                skipped=list(splits.skipped),
            )
    return _CACHE[key]
