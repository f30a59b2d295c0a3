"""A whole network as data: stem, stages of blocks, head and the settings the builder needs."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

from effnet.describe.blocks import MAX_CHANNELS, MAX_KERNEL, BlockSpec, format_blocks, parse_blocks
from effnet.errors import UserError, check_whole_number, read_bounded

#: A description file is a few kilobytes (L2: 2 KB); anything this large is not one.
MAX_DESCRIPTION_BYTES = 1_000_000
ACTIVATIONS = ("silu", "relu", "relu6", "hard_swish", "gelu")
PADDINGS = ("same", "symmetric")


@dataclass(frozen=True)
class NetworkSpec:
    """A declarative description of a ConvNet that :func:`effnet.create_model` builds.

    ``width``, ``depth`` and ``resolution_multiplier`` record the scaling already applied to the
    baseline (informational; the channels, repeats and resolution are already scaled).
    """

    name: str
    blocks: tuple[BlockSpec, ...]
    stem_channels: int = 32
    stem_kernel: int = 3
    stem_stride: int = 2
    stem_pool: bool = False
    head_channels: int = 1280
    activation: str = "silu"
    bn_eps: float = 1e-3
    bn_momentum: float = 0.01
    padding: str = "same"
    dropout: float = 0.2
    drop_path_rate: float = 0.2
    resolution: int = 224
    width: float = 1.0
    depth: float = 1.0
    resolution_multiplier: float = 1.0
    fix_stem_head: bool = False
    fix_first_last_repeats: bool = False
    channel_divisor: int = 8
    #: An EfficientNet-Lite: trained on 0–255 pixels with mean 127 and std 128, no squeeze-excitation.
    lite: bool = False
    #: Scaled channels never fall more than 10% below exact (V1's rounding; V2's has no such guard).
    channel_guard: bool = True
    #: The resolution the published model trains at, when it differs from ``resolution`` (its
    #: evaluation size; EfficientNetV2 trains smaller). None: the same.
    train_resolution: int | None = None
    #: Scaling never takes the resolution above this (EfficientNetV2 caps it at 480 px). None: no cap.
    max_resolution: int | None = None

    def __post_init__(self) -> None:
        if isinstance(self.blocks, (list, str)):
            object.__setattr__(
                self,
                "blocks",
                tuple(parse_blocks(self.blocks))
                if isinstance(self.blocks, str) or (self.blocks and isinstance(self.blocks[0], str))
                else tuple(self.blocks),
            )
        check_network(self)

    # -- derived -----------------------------------------------------------------------------
    @property
    def block_strings(self) -> list[str]:
        return format_blocks(self.blocks)

    @property
    def num_blocks(self) -> int:
        return sum(block.repeats for block in self.blocks)

    @property
    def total_stride(self) -> int:
        stride = self.stem_stride * (2 if self.stem_pool else 1)
        for block in self.blocks:
            stride *= block.stride
        return stride

    @property
    def num_features(self) -> int:
        """Channels entering the classifier."""
        return self.head_channels or self.blocks[-1].out_channels

    def with_(self, **changes: Any) -> NetworkSpec:
        """A validated copy with some fields changed."""
        unknown = set(changes) - {f.name for f in fields(self)}
        if unknown:
            raise UserError(f"unknown description field(s): {', '.join(sorted(unknown))}")
        return replace(self, **changes)

    # -- serialisation -----------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["blocks"] = self.block_strings
        return data

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> NetworkSpec:
        if not isinstance(data, dict):
            raise UserError("a network description must be a JSON object")
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise UserError(f"unknown description field(s): {', '.join(sorted(map(str, unknown)))}"[:300])
        if "blocks" not in data or "name" not in data:
            raise UserError("a network description needs at least 'name' and 'blocks'")
        values = dict(data)
        values["blocks"] = parse_blocks(values["blocks"])
        try:
            return cls(**values)
        except TypeError as err:  # a value of the wrong type where arithmetic meets it
            raise UserError(f"bad network description: {err}") from None

    @classmethod
    def from_json(cls, text: str | bytes) -> NetworkSpec:
        try:
            data = json.loads(text)
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise UserError(f"network description is not valid JSON: {err}"[:300]) from None
        except RecursionError:
            raise UserError("network description is not valid JSON: nested too deeply") from None
        return cls.from_dict(data)

    def save(self, path: str | Path) -> None:
        """Write the description as JSON (atomically: a full disk leaves any old file intact)."""
        from effnet.atomic import atomic_write_text

        atomic_write_text(path, self.to_json() + "\n")

    @classmethod
    def load(cls, path: str | Path) -> NetworkSpec:
        # a regular file read at most one byte past the bound: a FIFO would block, /dev/zero never end
        text = read_bounded(path, MAX_DESCRIPTION_BYTES, "description file")
        try:
            return cls.from_json(text.decode("utf-8"))
        except UnicodeDecodeError:
            raise UserError(f"description file {path} is not UTF-8 text") from None


#: Bounds of a description: far beyond every published network (L2: 800 px, 5,504 head channels,
#: about 90 blocks; V2-XL about 100 blocks), small enough that a description never makes effnet build
#: millions of modules or an input no machine holds.
MAX_RESOLUTION = 4096
MAX_BLOCKS = 2000
MAX_STAGES = 100


def check_network(spec: NetworkSpec) -> None:
    """Raise UserError naming the field when a description cannot be built."""
    if not isinstance(spec.name, str) or not spec.name:
        raise UserError(f"description field name must be a non-empty string, got {spec.name!r}", field="name")
    if not spec.blocks:
        raise UserError("a network needs at least one block", field="blocks")
    if len(spec.blocks) > MAX_STAGES or spec.num_blocks > MAX_BLOCKS:
        raise UserError(
            f"a network may have at most {MAX_STAGES} stages and {MAX_BLOCKS} blocks, this one has "
            f"{len(spec.blocks)} and {spec.num_blocks}",
            field="blocks",
        )
    if spec.activation not in ACTIVATIONS:
        raise UserError(
            f"activation {spec.activation!r} is unknown (known: {', '.join(ACTIVATIONS)})", field="activation"
        )
    if spec.padding not in PADDINGS:
        raise UserError(f"padding {spec.padding!r} is unknown (known: {', '.join(PADDINGS)})", field="padding")
    for name in ("stem_channels", "stem_kernel", "stem_stride", "channel_divisor"):
        check_whole_number(f"description field {name}", getattr(spec, name), 1, high=MAX_CHANNELS)
    check_whole_number("resolution", spec.resolution, 1, " of pixels", high=MAX_RESOLUTION)
    if spec.stem_kernel % 2 == 0 or spec.stem_kernel > MAX_KERNEL:
        raise UserError(f"description field stem_kernel must be odd and ≤ {MAX_KERNEL}, got {spec.stem_kernel}")
    check_whole_number("description field head_channels", spec.head_channels, 0, high=MAX_CHANNELS)
    for name in ("train_resolution", "max_resolution"):
        if getattr(spec, name) is not None:
            check_whole_number(name, getattr(spec, name), 1, " of pixels", high=MAX_RESOLUTION)
    for name in ("stem_pool", "fix_stem_head", "fix_first_last_repeats", "lite", "channel_guard"):
        if not isinstance(getattr(spec, name), bool):
            raise UserError(f"description field {name} must be true or false, got {getattr(spec, name)!r}")
    for name in ("dropout", "drop_path_rate"):
        value = getattr(spec, name)
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not math.isfinite(value)
            or not 0 <= value < 1
        ):
            raise UserError(f"description field {name} must be within [0, 1), got {value!r}", field=name)
    for name in ("bn_eps", "bn_momentum", "width", "depth", "resolution_multiplier"):
        value = getattr(spec, name)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
            raise UserError(f"description field {name} must be a positive number, got {value!r}", field=name)
    # PyTorch's momentum is the weight of the new batch in the running statistics: above 1 they diverge
    if spec.bn_momentum > 1:
        raise UserError(f"description field bn_momentum must be within (0, 1], got {spec.bn_momentum!r}",
                        field="bn_momentum")  # fmt: skip
    check_channels(spec)
    if spec.lite:
        for number, block in enumerate(spec.blocks, start=1):
            if block.se_ratio > 0:
                raise UserError(
                    f"stage {number} ({block.to_string()}) has squeeze-excitation, which a Lite description "
                    "(lite: true) does not have",
                    field="blocks",
                )
    if spec.resolution < spec.total_stride:
        raise UserError(
            f"resolution {spec.resolution} is smaller than the network's total stride {spec.total_stride}",
            field="resolution",
        )


def check_channels(spec: NetworkSpec) -> None:
    """Each stage must take the channels the one before it gives: stem → stage 1 → … (stages count from 1)."""
    given, source = spec.stem_channels, "the stem"
    for number, block in enumerate(spec.blocks, start=1):
        if block.in_channels != given:
            raise UserError(
                f"stage {number} ({block.to_string()}) takes {block.in_channels} input channels but {source} "
                f"gives {given}",
                field="blocks",
            )
        given, source = block.out_channels, f"stage {number}"
