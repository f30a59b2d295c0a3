"""Explain a model as a scaling of a base: its depth, width and resolution multipliers, the φ each
implies under (α, β, γ), the ideal multiply-add ratio d·w²·r², and where the official rounding
(channels to a multiple of 8 with V1's 10% guard, ``ceil`` on repeats) moved each stage.

Pure: a description and its base in, an :class:`Explanation` out. Names and profiling live above
this layer; callers pass the real multiply-add counts if they want the real ratio beside the ideal one.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

from effnet.describe.network import NetworkSpec
from effnet.errors import UserError, check_number
from effnet.scale.compound import ALPHA, BETA, GAMMA, round_pixels, scale_network
from effnet.scale.rounding import round_filters, round_repeats

#: Implied φ that differ by more than this are "not one φ".
PHI_TOLERANCE = 0.05
#: Candidate multipliers tried, simplest first, when a description does not record its own.
_STEPS = (0.1, 0.05, 0.01, 0.001)
_SPAN = (0.05, 8.0)


@dataclass(frozen=True)
class Rounding:
    """One place the rounding acted: what the multiplier asked for and what the rule gave."""

    part: str
    quantity: str
    base: int
    asked: float
    got: int
    rule: str

    @property
    def moved(self) -> bool:
        return not math.isclose(self.asked, self.got, rel_tol=1e-9, abs_tol=1e-9)

    def to_dict(self) -> dict[str, object]:
        return {"part": self.part, "quantity": self.quantity, "base": self.base, "asked": round(self.asked, 4),
                "got": self.got, "moved": self.moved, "rule": self.rule}  # fmt: skip


@dataclass(frozen=True)
class Explanation:
    """A model as a scaling of ``base``; :meth:`to_dict` is the ``--json`` record."""

    name: str
    base: str
    depth: float
    width: float
    resolution: float
    image_size: int
    base_image_size: int
    #: "recorded" (the description's own multipliers reproduce it) or "structure" (read off its stages).
    source: str
    alpha: float
    beta: float
    gamma: float
    phi: dict[str, float | None]
    roundings: tuple[Rounding, ...]
    official: bool = False
    macs: int | None = None
    base_macs: int | None = None
    extra: dict[str, object] = field(default_factory=dict)

    @property
    def ideal_macs_ratio(self) -> float:
        return self.depth * self.width**2 * self.resolution**2

    @property
    def real_macs_ratio(self) -> float | None:
        return None if not self.macs or not self.base_macs else self.macs / self.base_macs

    @property
    def single_phi(self) -> float:
        """The one φ closest to all three multipliers (least squares on their logarithms)."""
        logs = [(math.log(m), math.log(b)) for m, b in self._pairs() if b != 1.0]
        den = sum(lb * lb for _, lb in logs)
        return sum(lm * lb for lm, lb in logs) / den if den else 0.0

    @property
    def one_phi(self) -> bool:
        values = [v for v in self.phi.values() if v is not None]
        return not values or max(values) - min(values) <= PHI_TOLERANCE

    def _pairs(self) -> list[tuple[float, float]]:
        return [(self.depth, self.alpha), (self.width, self.beta), (self.resolution, self.gamma)]

    def compound_at_single_phi(self) -> dict[str, float]:
        phi = self.single_phi
        return {
            "phi": phi,
            "depth": self.alpha**phi,
            "width": self.beta**phi,
            "image_size": round_pixels(self.base_image_size * self.gamma**phi),
        }

    def notes(self) -> list[str]:
        """The explanation in sentences."""
        p = self.phi
        implied = (
            f"φ {_fmt(p['depth'])} (depth), {_fmt(p['width'])} (width), {_fmt(p['resolution'])} (resolution)"
            f" under (α, β, γ) = ({self.alpha:g}, {self.beta:g}, {self.gamma:g})"
        )
        lines = []
        mults = f"width {self.width:.4g}, depth {self.depth:.4g}, {self.image_size} px"
        if self.official and any(v not in (None, 0.0) for v in p.values()):
            lines.append(
                f"{self.name} comes from the official hand-written coefficient table ({mults} against "
                f"{self.base}), not from α^φ, β^φ, γ^φ."
            )
        if all(v in (None, 0.0) for v in p.values()):
            lines.append(f"It is {self.base} itself at every dimension: φ 0.")
        elif self.one_phi:
            lines.append(f"Its multipliers agree on one φ: {implied}.")
        else:
            c = self.compound_at_single_phi()
            lines.append(
                f"Its multipliers imply {implied}: not one φ. The closest single φ, {c['phi']:.2f}, would give "
                f"depth ×{c['depth']:.3f}, width ×{c['width']:.3f}, {c['image_size']} px."
            )
        ratio = f"Ideal multiply-add ratio d·w²·r² = {self.ideal_macs_ratio:.3f}"
        real = self.real_macs_ratio
        lines.append(ratio + (f"; real {real:.3f} (rounding, stem, head and classifier)." if real else "."))
        span = self.extra.get("depth_range")
        if self.source == "structure":
            lines.append(
                "The description records no multipliers: these are the simplest that reproduce its stages"
                + (f" (any depth in ({span[0]:g}, {span[1]:g}] gives the same repeats)." if span else ".")  # type: ignore[index]
            )
        moved = [r for r in self.roundings if r.moved]
        if moved:
            lines.append(
                f"Rounding moved {len(moved)} of {len(self.roundings)} channel and repeat counts (see the table)."
            )
        return lines

    def to_dict(self) -> dict[str, object]:
        c = self.compound_at_single_phi()
        real = self.real_macs_ratio
        return {
            "name": self.name,
            "base": self.base,
            "official_table": self.official,
            "multipliers_from": self.source,
            "width": round(self.width, 6),
            "depth": round(self.depth, 6),
            "resolution": self.image_size,
            "base_resolution": self.base_image_size,
            "resolution_multiplier": round(self.resolution, 6),
            "alpha": self.alpha,
            "beta": self.beta,
            "gamma": self.gamma,
            "phi": {k: None if v is None else round(v, 4) for k, v in self.phi.items()},
            "one_phi": self.one_phi,
            "single_phi": {k: round(v, 4) if isinstance(v, float) else v for k, v in c.items()},
            "ideal_macs_ratio": round(self.ideal_macs_ratio, 4),
            "macs": self.macs,
            "base_macs": self.base_macs,
            "real_macs_ratio": None if real is None else round(real, 4),
            "rounding": [r.to_dict() for r in self.roundings],
            "notes": self.notes(),
            **self.extra,
        }


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def implied_phi(multiplier: float, base: float) -> float | None:
    """log(multiplier) / log(base): the φ at which base^φ gives the multiplier (None for base 1)."""
    return None if base == 1.0 else math.log(multiplier) / math.log(base)


def _shape(spec: NetworkSpec) -> list[tuple[object, ...]]:
    return [(b.kind, b.kernel, b.stride, b.expand_ratio) for b in spec.blocks]


def _reproduces(spec: NetworkSpec, base: NetworkSpec, depth: float, width: float) -> bool:
    try:
        scaled = scale_network(base, depth=depth, width=width, image_size=spec.resolution)
    except UserError:
        return False
    return (
        scaled.block_strings == spec.block_strings
        and scaled.stem_channels == spec.stem_channels
        and scaled.head_channels == spec.head_channels
    )


def _simplest(candidates_ok: Callable[[float], bool]) -> float | None:
    """The simplest multiplier (fewest decimals, then smallest) that ``candidates_ok`` accepts."""
    for step in _STEPS:
        n_lo, n_hi = int(round(_SPAN[0] / step)), int(round(_SPAN[1] / step))
        for n in range(n_lo, n_hi + 1):
            value = round(n * step, 6)
            if candidates_ok(value):
                return value
    return None


def _from_structure(spec: NetworkSpec, base: NetworkSpec) -> tuple[float, float]:
    last = len(base.blocks) - 1
    scaled_stages = [i for i in range(len(base.blocks)) if not (base.fix_first_last_repeats and i in (0, last))]

    def depth_ok(d: float) -> bool:
        return all(round_repeats(base.blocks[i].repeats, d) == spec.blocks[i].repeats for i in scaled_stages)

    def width_ok(w: float) -> bool:
        return all(
            round_filters(b.out_channels, w, base.channel_divisor, guard=base.channel_guard) == s.out_channels
            for b, s in zip(base.blocks, spec.blocks, strict=True)
        )

    depth = _simplest(depth_ok) if scaled_stages else 1.0
    width = _simplest(width_ok)
    if depth is None:
        depth = sum(spec.blocks[i].repeats for i in scaled_stages) / sum(base.blocks[i].repeats for i in scaled_stages)
    if width is None:
        ratios = sorted(s.out_channels / b.out_channels for b, s in zip(base.blocks, spec.blocks, strict=True))
        width = ratios[len(ratios) // 2]
    return depth, width


def _roundings(spec: NetworkSpec, base: NetworkSpec, depth: float, width: float) -> tuple[Rounding, ...]:
    div, guard = base.channel_divisor, base.channel_guard

    def chan(part: str, b: int, got: int) -> Rounding:
        exact = b * width
        plain = max(div, int(exact + div / 2) // div * div)
        rule = f"nearest multiple of {div}"
        if guard and plain < 0.9 * exact:
            rule = f"10% guard: one step of {div} up"
        if width == 1.0 and got == b:
            rule = "kept"
        elif got != round_filters(b, width, div, guard=guard):
            rule = "set by the description, not by the rule"
        return Rounding(part, "channels", b, exact, got, rule)

    out: list[Rounding] = []
    if not base.fix_stem_head:
        out.append(chan("stem", base.stem_channels, spec.stem_channels))
    last = len(base.blocks) - 1
    for i, (b, s) in enumerate(zip(base.blocks, spec.blocks, strict=True)):
        fixed = base.fix_first_last_repeats and i in (0, last)
        out.append(chan(f"stage {i + 1}", b.out_channels, s.out_channels))
        asked = float(b.repeats) if fixed else b.repeats * depth
        out.append(
            Rounding(
                f"stage {i + 1}",
                "repeats",
                b.repeats,
                asked,
                s.repeats,
                "fixed (Lite)" if fixed else ("kept" if depth == 1.0 and s.repeats == b.repeats else "ceil"),
            )
        )
    if base.head_channels and not base.fix_stem_head:
        out.append(chan("head", base.head_channels, spec.head_channels or 0))
    return tuple(out)


def explain_scaling(
    spec: NetworkSpec,
    base: NetworkSpec,
    *,
    alpha: float = ALPHA,
    beta: float = BETA,
    gamma: float = GAMMA,
    official: bool = False,
    macs: int | None = None,
    base_macs: int | None = None,
) -> Explanation:
    """Explain ``spec`` as a scaling of ``base`` (same stage layout: kinds, kernels, strides, expansions).

    The multipliers are the description's own where they reproduce it through the official rounding,
    else the simplest ones that do (read off the stages). ``official`` marks a row of the published
    table; ``macs``/``base_macs`` add the real multiply-add ratio.
    """
    for name, value in (("spec", spec), ("base", base)):
        if not isinstance(value, NetworkSpec):
            raise UserError(f"{name} must be a NetworkSpec, got {type(value).__name__}", field=name)
    bases = {
        n: check_number(n, v, low=0.0, strict_low=True) for n, v in (("alpha", alpha), ("beta", beta), ("gamma", gamma))
    }
    if _shape(spec) != _shape(base):
        raise UserError(
            f"{spec.name}'s stages (kinds, kernels, strides, expansions) do not match {base.name}'s: it is not a "
            f"scaling of it; give --base with the same stage layout",
            field="base",
        )
    depth, width = spec.depth / base.depth, spec.width / base.width
    source = "recorded"
    extra: dict[str, object] = {}
    if not _reproduces(spec, base, depth, width):
        depth, width = _from_structure(spec, base)
        source = "structure"
        extra["depth_range"] = _depth_range(spec, base)
    resolution = spec.resolution / base.resolution
    a, b, g = bases["alpha"], bases["beta"], bases["gamma"]
    phi = {"depth": implied_phi(depth, a), "width": implied_phi(width, b), "resolution": implied_phi(resolution, g)}
    return Explanation(
        name=spec.name,
        base=base.name,
        depth=depth,
        width=width,
        resolution=resolution,
        image_size=spec.resolution,
        base_image_size=base.resolution,
        source=source,
        alpha=a,
        beta=b,
        gamma=g,
        phi=phi,
        roundings=_roundings(spec, base, depth, width),
        official=official,
        macs=macs,
        base_macs=base_macs,
        extra=extra,
    )


def _depth_range(spec: NetworkSpec, base: NetworkSpec) -> list[float] | None:
    """The depths (low, high] whose ``ceil`` gives every scaled stage's repeats: block strings alone
    cannot tell them apart (B0's repeats give the same counts at depth 1.1 and 1.2)."""
    last = len(base.blocks) - 1
    pairs = [(b.repeats, s.repeats) for i, (b, s) in enumerate(zip(base.blocks, spec.blocks, strict=True))
             if not (base.fix_first_last_repeats and i in (0, last))]  # fmt: skip
    if not pairs:
        return None
    low, high = max((got - 1) / r for r, got in pairs), min(got / r for r, got in pairs)
    return [round(low, 6), round(high, 6)] if low < high else None
