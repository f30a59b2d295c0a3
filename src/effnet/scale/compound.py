"""Compound scaling as pure functions: description in, scaled description out.

Channels and repeats are rounded by :mod:`effnet.scale.rounding` (the official rules).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from effnet.describe.network import NetworkSpec
from effnet.errors import UserError, check_number, check_whole_number
from effnet.scale.rounding import round_filters, round_repeats

#: The paper's coefficients, found by grid search at φ = 1 on B0.
ALPHA, BETA, GAMMA = 1.2, 1.1, 1.15
#: Scaled resolutions are rounded to a multiple of this many pixels.
RESOLUTION_STEP = 4


@dataclass(frozen=True)
class Coefficients:
    """Multipliers for depth, width and resolution."""

    depth: float
    width: float
    resolution: float

    @property
    def macs_factor(self) -> float:
        """How much the multiply-adds grow, ideally: d · w² · r²."""
        return self.depth * self.width**2 * self.resolution**2


#: The largest φ accepted: beyond L2 (about φ = 15 in width) and the planner's range.
MAX_PHI = 16.0
#: The smallest φ accepted: φ < 0 scales below the baseline (as TinyNet does), down to the mirror bound.
MIN_PHI = -MAX_PHI
#: The largest depth, width or resolution multiplier accepted (L2 is ×5.3 in depth).
MAX_MULTIPLIER = 64.0


def _multiplier(name: str, value: float) -> float:
    return check_number(name, value, low=0.0, high=MAX_MULTIPLIER, strict_low=True)


def compound_coefficients(phi: float, alpha: float = ALPHA, beta: float = BETA, gamma: float = GAMMA) -> Coefficients:
    """d = α^φ, w = β^φ, r = γ^φ for any real φ in [−16, 16] (φ < 0 shrinks the baseline)."""
    phi = check_number("phi", phi, low=MIN_PHI, high=MAX_PHI)
    bases = {name: check_number(name, value, low=0.0, strict_low=True)
             for name, value in (("alpha", alpha), ("beta", beta), ("gamma", gamma))}  # fmt: skip
    scaled = {}
    for (name, base), dimension in zip(bases.items(), ("depth", "width", "resolution"), strict=True):
        try:
            scaled[dimension] = base**phi
        except OverflowError:
            scaled[dimension] = math.inf
        if scaled[dimension] > MAX_MULTIPLIER:
            raise UserError(
                f"phi {phi:g} with {name} {base:g} scales {dimension} by {scaled[dimension]:.3g}, more than the "
                f"{MAX_MULTIPLIER:g} effnet accepts",
                field="phi",
            )
    return Coefficients(**scaled)


def round_pixels(size: float) -> int:
    """A scaled resolution, rounded to a multiple of :data:`RESOLUTION_STEP` pixels."""
    return max(RESOLUTION_STEP, int(round(size / RESOLUTION_STEP)) * RESOLUTION_STEP)


def scale_network(
    spec: NetworkSpec,
    *,
    depth: float = 1.0,
    width: float = 1.0,
    resolution: float = 1.0,
    image_size: int | None = None,
    dropout: float | None = None,
    name: str | None = None,
) -> NetworkSpec:
    """Scale a description by depth, width and resolution multipliers (any one alone, too).

    ``image_size`` sets the resolution in pixels instead of multiplying it; a multiplied resolution
    stops at the description's ``max_resolution`` (EfficientNetV2: 480 px). Channels round by the
    description's rule (``channel_guard``: V1's 10% guard, or V2's plain rounding).
    Lite-style descriptions (``fix_stem_head``, ``fix_first_last_repeats``) keep their stem, head
    and first and last stage repeats, as the official Lite models do.
    """
    _check_spec(spec)
    depth = _multiplier("depth", depth)
    width = _multiplier("width", width)
    resolution = _multiplier("resolution", resolution)
    divisor = spec.channel_divisor

    def chans(c: int) -> int:
        return round_filters(c, width, divisor, guard=spec.channel_guard) if width != 1.0 else c

    last = len(spec.blocks) - 1
    blocks = []
    for index, block in enumerate(spec.blocks):
        keep_repeats = spec.fix_first_last_repeats and index in (0, last)
        in_ch = chans(block.in_channels)
        if index == 0 and spec.fix_stem_head:
            in_ch = spec.stem_channels
        blocks.append(
            block.with_(
                repeats=block.repeats if keep_repeats else round_repeats(block.repeats, depth),
                in_channels=in_ch,
                out_channels=chans(block.out_channels),
            )
        )
    if image_size is None:
        image_size = round_pixels(spec.resolution * resolution)
        if resolution == 1.0:
            image_size = spec.resolution
        if spec.max_resolution is not None:
            image_size = min(image_size, max(spec.max_resolution, spec.resolution))
    else:
        check_whole_number("image_size", image_size, 1, " of pixels")  # the description bounds it, naming resolution
    if dropout is not None:
        check_number("dropout", dropout, low=0.0)  # the description checks < 1
    if name is not None and (not isinstance(name, str) or not name):
        raise UserError(f"name must be a non-empty string, got {name!r}", field="name")
    return spec.with_(
        name=name or spec.name,
        blocks=tuple(blocks),
        stem_channels=spec.stem_channels if spec.fix_stem_head else chans(spec.stem_channels),
        head_channels=(
            spec.head_channels if spec.fix_stem_head or not spec.head_channels else chans(spec.head_channels)
        ),
        resolution=image_size,
        train_resolution=(
            None
            if spec.train_resolution is None
            else round_pixels(spec.train_resolution * image_size / spec.resolution)
        ),
        width=spec.width * width,
        depth=spec.depth * depth,
        resolution_multiplier=spec.resolution_multiplier * (image_size / spec.resolution),
        dropout=spec.dropout if dropout is None else dropout,
    )


def scale_compound(
    spec: NetworkSpec,
    phi: float,
    alpha: float = ALPHA,
    beta: float = BETA,
    gamma: float = GAMMA,
    *,
    name: str | None = None,
) -> NetworkSpec:
    """Compound scaling: depth α^φ, width β^φ, resolution γ^φ (φ < 0 scales below the baseline)."""
    _check_spec(spec)
    c = compound_coefficients(phi, alpha, beta, gamma)
    phi = float(phi)
    return scale_network(
        spec, depth=c.depth, width=c.width, resolution=c.resolution, name=name or f"{spec.name}-phi{phi:g}"
    )


def _check_spec(spec: object) -> None:
    """A UserError naming ``spec`` unless it is a description (a model's name is not: this layer sits
    below the names; :func:`effnet.get_description` turns one into a description)."""
    if not isinstance(spec, NetworkSpec):
        hint = (
            f" (get_description({spec[:40]!r}) gives the description of a named model)" if isinstance(spec, str) else ""
        )
        raise UserError(f"spec must be a NetworkSpec, got {type(spec).__name__}{hint}", field="spec")
