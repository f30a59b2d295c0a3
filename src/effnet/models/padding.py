"""TensorFlow 'SAME' padding arithmetic: the one home of it, used by the eager layers
(:class:`~effnet.models.layers.PaddedConv2d`), the training memory mode and the inference fast path.

out = ceil(in / stride); pad_total = max((out − 1)·stride + kernel − in, 0); before = pad_total // 2,
the rest after. At even sizes strided layers pad one more row/column after than before, so the
padding depends on the input size."""

from __future__ import annotations

import math
from typing import NamedTuple


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow's 'SAME' padding of one dimension: (before, after), the extra after."""
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def same_padding_by_crop(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow 'SAME' from a symmetric padding: (padding p, outputs to skip at the start).

    Padding p ≥ after with p ≡ before (mod stride) and skipping the first (p − before) / stride
    outputs gives exactly the asymmetric result, without a padded copy of the input.
    """
    before, after = same_padding(size, kernel, stride)
    extra = max(0, math.ceil((after - before) / stride))
    return before + extra * stride, extra


class AxisPlan(NamedTuple):
    """How to get 'SAME' along one axis from a symmetric convolution."""

    padding: int  # symmetric padding to apply
    crop: int  # outputs to skip at the start (0 when 'SAME' is symmetric here)
    before: int  # TF's own padding before
    after: int  # and after


def axis_plan(size: int, kernel: int, stride: int) -> AxisPlan:
    """'SAME' along one axis: as is where symmetric, else a larger symmetric padding and a crop."""
    before, after = same_padding(size, kernel, stride)
    if before == after:
        return AxisPlan(before, 0, before, after)
    padding, crop = same_padding_by_crop(size, kernel, stride)
    return AxisPlan(padding, crop, before, after)
