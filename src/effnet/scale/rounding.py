"""Rounding of scaled channels and repeats: the one home of both rules.

EfficientNet (V1): channels × width to the nearest multiple of 8, at least 8, and never more than
10% below the exact value (``guard``); EfficientNetV2 and MnasNet-style search spaces round to the
nearest multiple without that guard. Repeats: ceil(depth × repeats)."""

from __future__ import annotations

import math


def round_filters(channels: float, width: float = 1.0, divisor: int = 8, *, guard: bool = True) -> int:
    """Channels × ``width`` to the nearest multiple of ``divisor`` (at least ``divisor``); with
    ``guard`` (the official V1 rule), one more step where that would lose more than 10%."""
    exact = channels * width
    new = max(divisor, int(exact + divisor / 2) // divisor * divisor)
    if guard and new < 0.9 * exact:
        new += divisor
    return int(new)


def round_repeats(repeats: int, depth: float) -> int:
    """Official repeat rounding: ceil(depth × repeats)."""
    return int(math.ceil(depth * repeats))
