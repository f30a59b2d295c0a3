"""Block descriptions and the official block-string notation.

A block string describes one stage: ``r2_k3_s22_e6_i16_o24_se0.25`` is two MBConv blocks,
kernel 3, stride 2 (the first block), expansion 6, 16 → 24 channels, squeeze-excitation 0.25.
``noskip`` disables the residual. An optional leading type token selects another block kind
(``mb`` MBConv, the default and never printed; ``ds`` depthwise-separable; ``cn`` a regular
convolution; ``bn`` a ResNet bottleneck; ``ba`` a ResNet basic block), so that search spaces
and other baselines speak the same notation. EfficientNetV2's Fused-MBConv is written the official
way, with the conv-type field ``c1`` (``r2_k3_s2_e4_i24_o48_c1``; ``c0`` is MBConv); timm's leading
``er`` (fused) and ``ir`` (MBConv) and its ``skip`` token (the default here) are read too.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace

from effnet.errors import UserError

#: Block kinds the builder knows, with what each computes.
BLOCK_KINDS: dict[str, str] = {
    "mb": "MBConv: 1x1 expand, depthwise kxk, squeeze-excitation, 1x1 project",
    "ds": "depthwise-separable: depthwise kxk, squeeze-excitation, 1x1 project (activated)",
    "cn": "regular kxk convolution, squeeze-excitation",
    "bn": "ResNet bottleneck: 1x1 reduce (out x e), kxk, 1x1 expand",
    "ba": "ResNet basic: two kxk convolutions",
    "fu": "Fused-MBConv (EfficientNetV2): kxk expand, squeeze-excitation, 1x1 project; e=1: one kxk convolution",
}
#: Leading tokens other notations use for these kinds (timm's ``er`` EdgeResidual, ``ir`` InvertedResidual).
KIND_ALIASES: dict[str, str] = {"er": "fu", "ir": "mb"}
#: The official conv-type field ``c``: 0 MBConv, 1 Fused-MBConv.
CONV_TYPES: dict[int, str] = {0: "mb", 1: "fu"}

_TOKEN = re.compile(r"^([a-z]+)([0-9.]*)$")


@dataclass(frozen=True)
class BlockSpec:
    """One stage of identical blocks: the first takes the stride and the channel change."""

    repeats: int
    kernel: int
    stride: int
    expand_ratio: float
    in_channels: int
    out_channels: int
    se_ratio: float = 0.0
    skip: bool = True
    kind: str = "mb"

    def __post_init__(self) -> None:
        check_block(self)

    @property
    def has_se(self) -> bool:
        return self.se_ratio > 0

    def to_string(self) -> str:
        """The official block string for this stage."""
        return format_block(self)

    def with_(self, **changes: object) -> BlockSpec:
        """A copy with some fields changed (validated again)."""
        return replace(self, **changes)


def _number(text: str) -> str:
    value = float(text)
    return str(int(value)) if value.is_integer() else repr(value)


#: Bounds of a block's fields: far beyond every published network (L2's widest stage has 5,504
#: channels and 21 repeats; V2-XL 32 repeats), small enough that a description can never make effnet
#: build millions of modules or tensors no machine holds.
MAX_REPEATS = 1000
MAX_KERNEL = 31
MAX_CHANNELS = 65536
MAX_EXPANSION = 64.0


def check_block(block: BlockSpec) -> None:
    """Raise UserError naming the field when a block cannot be built."""
    if block.kind not in BLOCK_KINDS:
        raise UserError(f"block type {block.kind!r} is unknown (known: {', '.join(BLOCK_KINDS)})", field="blocks")
    for name in ("repeats", "kernel", "stride", "in_channels", "out_channels"):
        value = getattr(block, name)
        if isinstance(value, bool) or not isinstance(value, int):
            raise UserError(f"block field {name} must be a whole number, got {value!r}", field="blocks")
    if not 1 <= block.repeats <= MAX_REPEATS:
        raise UserError(f"block field repeats (r) must be within 1…{MAX_REPEATS}, got {block.repeats}", field="blocks")
    if not 1 <= block.kernel <= MAX_KERNEL or block.kernel % 2 == 0:
        raise UserError(
            f"block field kernel (k) must be an odd number within 1…{MAX_KERNEL}, got {block.kernel}", field="blocks"
        )
    if block.stride not in (1, 2):
        raise UserError(f"block field stride (s) must be 1 or 2, got {block.stride}", field="blocks")
    for name in ("in_channels", "out_channels"):
        if not 1 <= getattr(block, name) <= MAX_CHANNELS:
            raise UserError(
                f"block fields in/out channels (i, o) must be within 1…{MAX_CHANNELS}, got {getattr(block, name)}",
                field="blocks",
            )
    for name, value in (("expand ratio (e)", block.expand_ratio), ("se ratio (se)", block.se_ratio)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise UserError(f"block field {name} must be a finite number, got {value!r}", field="blocks")
    if not 0 < block.expand_ratio <= MAX_EXPANSION:
        raise UserError(
            f"block field expand ratio (e) must be > 0 and ≤ {MAX_EXPANSION:g}, got {block.expand_ratio}",
            field="blocks",
        )
    if not 0 <= block.se_ratio <= 1:
        raise UserError(f"block field se ratio (se) must be within [0, 1], got {block.se_ratio}", field="blocks")
    if not isinstance(block.skip, bool):
        raise UserError(f"block field skip must be true or false, got {block.skip!r}", field="blocks")


def parse_block(text: str) -> BlockSpec:
    """Parse one block string such as ``r1_k3_s11_e1_i32_o16_se0.25`` (or ``noskip``)."""
    if not isinstance(text, str) or not text.strip():
        raise UserError("empty block string", field="blocks")
    fields: dict[str, object] = {"skip": True, "se_ratio": 0.0, "kind": "mb"}
    tokens = text.strip().split("_")
    prefix = None
    if tokens[0] in BLOCK_KINDS or tokens[0] in KIND_ALIASES:
        prefix = tokens.pop(0)
        fields["kind"] = KIND_ALIASES.get(prefix, prefix)
    seen: set[str] = set()
    for token in tokens:
        if token in ("noskip", "skip"):
            fields["skip"] = token == "skip"
            continue
        match = _TOKEN.match(token)
        if not match:
            raise UserError(f"block string {text!r}: cannot read field {token!r}", field="blocks")
        key, value = match.groups()
        if key in seen:
            raise UserError(f"block string {text!r}: field {key!r} given twice", field="blocks")
        seen.add(key)
        try:
            if key == "r":
                fields["repeats"] = int(value)
            elif key == "k":
                fields["kernel"] = int(value)
            elif key == "s":
                strides = {int(c) for c in value} if len(value) == 2 else {int(value)}
                if len(strides) != 1:
                    raise UserError(
                        f"block string {text!r}: field s (stride) must be square, got {value!r}", field="blocks"
                    )
                fields["stride"] = strides.pop()
            elif key == "e":
                fields["expand_ratio"] = float(value)
            elif key == "i":
                fields["in_channels"] = int(value)
            elif key == "o":
                fields["out_channels"] = int(value)
            elif key == "se":
                fields["se_ratio"] = float(value)
            elif key == "c":
                kind = CONV_TYPES.get(int(value))
                if kind is None or (prefix is not None and fields["kind"] != kind):
                    raise UserError(
                        f"block string {text!r}: field c (conv type) must be 0 (MBConv) or 1 (Fused-MBConv)"
                        + (f" and agree with {prefix!r}" if prefix else "")
                        + f", got {value!r}",
                        field="blocks",
                    )
                fields["kind"] = kind
            else:
                raise UserError(f"block string {text!r}: unknown field {key!r}", field="blocks")
        except ValueError as err:
            if isinstance(err, UserError):
                raise
            raise UserError(f"block string {text!r}: field {key!r} has a bad value {value!r}", field="blocks") from None
    fields.setdefault("expand_ratio", 1.0)
    for key, name in (("r", "repeats"), ("k", "kernel"), ("s", "stride"), ("i", "in_channels"), ("o", "out_channels")):
        if name not in fields:
            raise UserError(f"block string {text!r}: field {key!r} ({name}) is missing", field="blocks")
    try:
        return BlockSpec(**fields)  # type: ignore[arg-type]
    except UserError as err:
        raise UserError(f"block string {text!r}: {err}", field="blocks") from None


def format_block(block: BlockSpec) -> str:
    """Print a block in the official notation (the inverse of :func:`parse_block`)."""
    parts = [] if block.kind in ("mb", "fu") else [block.kind]
    parts += [
        f"r{block.repeats}",
        f"k{block.kernel}",
        f"s{block.stride}{block.stride}",
        f"e{_number(str(block.expand_ratio))}",
        f"i{block.in_channels}",
        f"o{block.out_channels}",
    ]
    if block.se_ratio > 0:
        parts.append(f"se{_number(str(block.se_ratio))}")
    if block.kind == "fu":
        parts.append("c1")
    if not block.skip:
        parts.append("noskip")
    return "_".join(parts)


def parse_blocks(text: str | list[str] | tuple[str, ...]) -> tuple[BlockSpec, ...]:
    """Parse a comma-separated string (or a list) of block strings."""
    if isinstance(text, str):
        items = text.split(",")
    elif isinstance(text, (list, tuple)) and all(isinstance(item, str) for item in text):
        items = list(text)
    else:
        raise UserError(f"blocks must be block strings (a list or a comma-separated string), got {text!r}"[:200],
                        field="blocks")  # fmt: skip
    items = [item.strip() for item in items if item.strip()]
    if not items:
        raise UserError("no block strings given", field="blocks")
    return tuple(parse_block(item) for item in items)


def format_blocks(blocks: tuple[BlockSpec, ...] | list[BlockSpec]) -> list[str]:
    """The block strings of a sequence of stages."""
    return [format_block(block) for block in blocks]
