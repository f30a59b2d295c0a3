"""MnasNet's factorised hierarchical search space, as data over the same descriptions.

The reference network (B0 by default, any description works) is split into its stages. For every
stage the space offers a convolution op, a kernel, a squeeze-excitation ratio, a skip, a filter
multiplier and a change in the number of layers. An architecture is one value per decision; it
decodes to a :class:`~effnet.describe.NetworkSpec` that prints as block strings and builds with
:func:`effnet.create_model`.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from effnet.describe.blocks import MAX_KERNEL, BlockSpec
from effnet.describe.network import NetworkSpec
from effnet.errors import UserError
from effnet.scale.rounding import round_filters
from effnet.zoo import get_description

#: Convolution ops: name → (block kind, expansion ratio).
CONV_OPS: dict[str, tuple[str, float]] = {
    "cn": ("cn", 1.0),
    "ds": ("ds", 1.0),
    "mb1": ("mb", 1.0),
    "mb3": ("mb", 3.0),
    "mb6": ("mb", 6.0),
    # EfficientNetV2's search adds Fused-MBConv (the k×k expansion fused into one convolution)
    "fu1": ("fu", 1.0),
    "fu4": ("fu", 4.0),
    "fu6": ("fu", 6.0),
    "mb4": ("mb", 4.0),
}

#: Bounds of a space: options per decision (the controller's embeddings grow with them; MnasNet offers
#: 2–5), layers added to or removed from a stage (MnasNet: ±1), and filter multipliers (MnasNet: 0.75–1.25).
MAX_OPTIONS = 16
MAX_LAYER_OFFSET = 16
MAX_FILTER_MULTIPLIER = 8.0

#: The decisions taken for every stage, in the order the controller emits them.
DECISIONS = ("op", "kernel", "se", "skip", "filters", "layers")

Value = str | int | float | bool


def _op_of(block: BlockSpec) -> str | None:
    if block.kind in ("cn", "ds"):
        return block.kind
    if block.kind in ("mb", "fu"):
        return f"{block.kind}{block.expand_ratio:g}"
    return None


@dataclass(frozen=True)
class SearchSpace:
    """Per-stage choices around a reference network (MnasNet §4.1, EfficientNet §4).

    ``choices`` maps each decision of :data:`DECISIONS` to its options; every stage of the reference
    gets the same options. Filters are multipliers of the reference's output channels (rounded to
    multiples of 8) and layers are offsets to its repeats (at least one layer per stage).
    """

    reference: NetworkSpec = field(default_factory=lambda: get_description("efficientnet_b0"))
    ops: tuple[str, ...] = ("cn", "ds", "mb1", "mb3", "mb6")
    kernels: tuple[int, ...] = (3, 5)
    se_ratios: tuple[float, ...] = (0.0, 0.25)
    skips: tuple[bool, ...] = (True, False)
    filter_multipliers: tuple[float, ...] = (0.75, 1.0, 1.25)
    layer_offsets: tuple[int, ...] = (-1, 0, 1)

    def __post_init__(self) -> None:
        unknown = [op for op in self.ops if op not in CONV_OPS]
        if unknown:
            raise UserError(
                f"ops holds unknown conv op(s) {', '.join(unknown)} (known: {', '.join(CONV_OPS)})", field="ops"
            )
        for name in ("ops", "kernels", "se_ratios", "skips", "filter_multipliers", "layer_offsets"):
            values = getattr(self, name)
            if not values or len(set(values)) != len(values):
                raise UserError(f"{name} must be non-empty and without repeats, got {values!r}", field=name)
            if len(values) > MAX_OPTIONS:
                raise UserError(f"{name} holds {len(values)} options; at most {MAX_OPTIONS}", field=name)
            object.__setattr__(self, name, tuple(values))
        if any(k < 1 or k % 2 == 0 or k > MAX_KERNEL for k in self.kernels):
            raise UserError(f"kernels must be odd and at most {MAX_KERNEL}, got {self.kernels!r}", field="kernels")
        if any(abs(o) > MAX_LAYER_OFFSET for o in self.layer_offsets):
            raise UserError(
                f"layer_offsets must be within ±{MAX_LAYER_OFFSET}, got {self.layer_offsets!r}", field="layer_offsets"
            )
        if any(not 0 <= s <= 1 for s in self.se_ratios):
            raise UserError(f"se_ratios must be within [0, 1], got {self.se_ratios!r}", field="se_ratios")
        if any(not 0 < m <= MAX_FILTER_MULTIPLIER for m in self.filter_multipliers):
            raise UserError(
                f"filter_multipliers must be within (0, {MAX_FILTER_MULTIPLIER:g}], got {self.filter_multipliers!r}",
                field="filter_multipliers",
            )
        largest = {f"s{i}_{d}": max(self.options(d)) for i in range(self.num_stages) for d in ("filters", "layers")}
        self.network({**self.sample(random.Random(0)), **largest})  # the largest architecture within bounds

    # -- structure -----------------------------------------------------------------------------
    @property
    def num_stages(self) -> int:
        return len(self.reference.blocks)

    def options(self, decision: str) -> tuple[Value, ...]:
        """The options of one decision (the same for every stage)."""
        return {
            "op": self.ops,
            "kernel": self.kernels,
            "se": self.se_ratios,
            "skip": self.skips,
            "filters": self.filter_multipliers,
            "layers": self.layer_offsets,
        }[decision]

    @property
    def tokens(self) -> list[tuple[str, str]]:
        """(parameter name, decision) for every choice, stage by stage: ``s0_op``, ``s0_kernel``, …"""
        return [(f"s{i}_{d}", d) for i in range(self.num_stages) for d in DECISIONS]

    @property
    def size(self) -> int:
        """How many architectures the space holds."""
        per_stage = 1
        for decision in DECISIONS:
            per_stage *= len(self.options(decision))
        return per_stage**self.num_stages

    def distributions(self) -> dict[str, Any]:
        """Optuna categorical distributions, one per parameter."""
        from optuna.distributions import CategoricalDistribution

        return {name: CategoricalDistribution(list(self.options(d))) for name, d in self.tokens}

    def describe(self) -> dict[str, Any]:
        """The space as JSON-friendly data."""
        return {
            "reference": self.reference.name,
            "reference_blocks": self.reference.block_strings,
            "stages": self.num_stages,
            **{d: list(self.options(d)) for d in DECISIONS},
            "size": self.size,
        }

    # -- architectures -------------------------------------------------------------------------
    def indices(self, params: Mapping[str, Value]) -> list[int]:
        """Option indices of a parameter dict (the controller's actions)."""
        try:
            return [self.options(d).index(params[name]) for name, d in self.tokens]
        except (KeyError, ValueError) as err:
            raise UserError(f"architecture does not belong to this search space: {err}") from None

    def params(self, indices: Sequence[int]) -> dict[str, Value]:
        """The parameter dict of option indices."""
        tokens = self.tokens
        if len(indices) != len(tokens):
            raise UserError(f"an architecture needs {len(tokens)} choices, got {len(indices)}")
        return {name: self.options(d)[int(i)] for (name, d), i in zip(tokens, indices)}

    def sample(self, rng: random.Random) -> dict[str, Value]:
        """A uniformly random architecture."""
        return {name: rng.choice(self.options(d)) for name, d in self.tokens}

    def reference_params(self) -> dict[str, Value] | None:
        """The reference architecture's parameters, when the space contains it (None otherwise)."""
        params: dict[str, Value] = {}
        for i, block in enumerate(self.reference.blocks):
            values = {
                "op": _op_of(block),
                "kernel": block.kernel,
                "se": block.se_ratio,
                "skip": block.skip,
                "filters": 1.0,
                "layers": 0,
            }
            for decision, value in values.items():
                if value not in self.options(decision):
                    return None
                params[f"s{i}_{decision}"] = value
        return params

    def blocks(self, params: Mapping[str, Value]) -> tuple[BlockSpec, ...]:
        """The stages of one architecture."""
        self.indices(params)  # validates
        blocks = []
        channels = self.reference.stem_channels
        for i, ref in enumerate(self.reference.blocks):
            kind, expand = CONV_OPS[str(params[f"s{i}_op"])]
            out = round_filters(
                ref.out_channels, float(params[f"s{i}_filters"]), self.reference.channel_divisor, guard=False
            )
            blocks.append(
                BlockSpec(
                    repeats=max(1, ref.repeats + int(params[f"s{i}_layers"])),
                    kernel=int(params[f"s{i}_kernel"]),
                    stride=ref.stride,
                    expand_ratio=expand,
                    in_channels=channels,
                    out_channels=out,
                    se_ratio=float(params[f"s{i}_se"]),
                    skip=bool(params[f"s{i}_skip"]),
                    kind=kind,
                )
            )
            channels = out
        return tuple(blocks)

    def network(self, params: Mapping[str, Value], name: str = "nas") -> NetworkSpec:
        """The description of one architecture: the reference's stem, head and settings, new stages (a Lite
        reference's architectures stay Lite only without squeeze-excitation)."""
        blocks = self.blocks(params)
        lite = self.reference.lite and not any(block.has_se for block in blocks)
        return self.reference.with_(name=name, blocks=blocks, width=1.0, depth=1.0, lite=lite)


def space_from_reference(reference: NetworkSpec | None = None, **options: Any) -> SearchSpace:
    """A search space around ``reference`` (B0 when None) with optional option overrides."""
    kwargs = {k: tuple(v) for k, v in options.items() if v is not None}
    return SearchSpace(reference=reference, **kwargs) if reference is not None else SearchSpace(**kwargs)
