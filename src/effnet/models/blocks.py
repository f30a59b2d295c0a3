"""The blocks a stage is built from: one registry entry per block kind of the notation
(:data:`KINDS`, a :class:`BlockKind`), holding as data everything about the block's structure, and
its module class (:data:`BLOCKS`), each made from one :class:`BlockArgs`.

An entry lists the block's :class:`Step` s in forward order (the named sub-modules, what each is,
which may be absent, the weight-layout role of each) and its residual rule. Every form of a block
is built from that data: the eager module here (one generic forward), the training memory mode
(:mod:`effnet.models.memory`), the fast path and export form (:mod:`effnet.infer.fast`) and the
weight layouts (:func:`effnet.weights.layout.model_parts`). Adding a kind: one :func:`register_block`
entry and class below (its kind first added to :data:`effnet.describe.blocks.BLOCK_KINDS`) and one
block string in ``tests/models/test_block_contract.py``.

The kinds themselves (names and what they compute) are :data:`effnet.describe.blocks.BLOCK_KINDS`,
which the block-string parser validates against; :func:`register_block` refuses a module for a
kind the notation does not know, so the parser and the builder cannot drift apart."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn
from torchvision.ops import StochasticDepth

from effnet.describe.blocks import BLOCK_KINDS, BlockSpec
from effnet.models.layers import ConvNormAct, NormSettings, SqueezeExcite, make_activation, se_channels


@dataclass(frozen=True)
class BlockArgs:
    """One block of a stage as built: its stage's :class:`BlockSpec` at one repeat (the first takes
    the stride and the channel change), the model's norm settings, its stochastic-depth rate and
    the input size it sees at the model's own resolution (for 'same' padding)."""

    in_ch: int
    out_ch: int
    kernel: int
    stride: int
    expand_ratio: float
    se_ratio: float
    skip: bool
    norm: NormSettings
    drop_path: float = 0.0
    input_size: int = 224

    @classmethod
    def of(cls, block: BlockSpec, repeat: int, norm: NormSettings, drop_path: float, input_size: int) -> BlockArgs:
        first = repeat == 0
        return cls(
            in_ch=block.in_channels if first else block.out_channels,
            out_ch=block.out_channels,
            kernel=block.kernel,
            stride=block.stride if first else 1,
            expand_ratio=block.expand_ratio,
            se_ratio=block.se_ratio,
            skip=block.skip,
            norm=norm,
            drop_path=drop_path,
            input_size=input_size,
        )

    def se(self, channels: int) -> SqueezeExcite | None:
        """The block's squeeze-excitation over ``channels`` (bottleneck from the block's input), or None."""
        if self.se_ratio <= 0:
            return None
        return SqueezeExcite(channels, se_channels(self.in_ch, self.se_ratio), self.norm.activation)

    def conv(self, in_ch: int, out_ch: int, kernel: int = 1, stride: int = 1, **kwargs: object) -> ConvNormAct:
        """A conv-norm-activation of this block (strided ones padded for the block's input size)."""
        return ConvNormAct(in_ch, out_ch, kernel, stride, self.norm, input_size=self.input_size, **kwargs)  # type: ignore[arg-type]


#: What a step is: a dense convolution with BatchNorm (1×1 or k×k; activated or not, as its module
#: says), a depthwise one, or a squeeze-excitation (which keeps its input's channels).
STEP_OPS = ("conv", "depthwise", "se")
#: Residual rules: ``identity`` (MBConv's: input + stochastic-depth(output) where ``skip`` and the
#: shapes allow) and ``projection`` (ResNet's: where ``skip``, a 1×1 conv-BatchNorm shortcut when the
#: shape changes, stochastic depth, and the activation after the sum).
RESIDUALS = ("identity", "projection")


@dataclass(frozen=True)
class Step:
    """One named sub-module of a block, in forward order."""

    #: The block's attribute (its state-dict prefix).
    name: str
    #: What it is (one of :data:`STEP_OPS`).
    op: str
    #: Its weight-layout role: its tensors are the parts ``f"{role}.{child}"`` (``expand.conv``,
    #: ``dw.bn``, ``se.reduce``, ``project.conv``, …).
    role: str
    #: The module from the block's arguments and the channels the step reads; None: absent here.
    make: Callable[[BlockArgs, int], nn.Module | None]
    #: Whether ``make`` may leave the step out (at expansion 1, without squeeze-excitation).
    optional: bool = False


@dataclass(frozen=True)
class BlockKind:
    """A block kind's registry entry: its steps, residual rule and module class."""

    kind: str
    title: str
    steps: tuple[Step, ...]
    residual: str
    module: type[Block]

    def step(self, name: str) -> Step:
        return next(step for step in self.steps if step.name == name)


#: The registry entry of each block kind, filled by :func:`register_block`.
KINDS: dict[str, BlockKind] = {}
#: Module class of each block kind (``KINDS[kind].module``).
BLOCKS: dict[str, type[Block]] = {}


def register_block(
    kind: str, *steps: Step, residual: str = "identity", title: str = ""
) -> Callable[[type[Block]], type[Block]]:
    """Class decorator: the entry of block kind ``kind`` (a kind of the notation), whose module is
    the decorated :class:`Block` subclass."""

    if kind not in BLOCK_KINDS:
        raise ValueError(f"block kind {kind!r} is not in the notation (effnet.describe.blocks.BLOCK_KINDS)")
    if residual not in RESIDUALS or not steps or any(step.op not in STEP_OPS for step in steps):
        raise ValueError(f"block kind {kind!r}: steps of {STEP_OPS} and a residual of {RESIDUALS} needed")

    def add(cls: type[Block]) -> type[Block]:
        KINDS[kind] = cls.entry = BlockKind(kind, title or cls.__name__, steps, residual, cls)
        BLOCKS[kind] = cls
        return cls

    return add


def kind_of_block(block: nn.Module) -> BlockKind | None:
    """The entry ``block`` was built from (the training memory mode subclasses the blocks), or None."""
    entry = getattr(block, "entry", None)
    return entry if isinstance(entry, BlockKind) and isinstance(block, entry.module) else None


def build_block(block: BlockSpec, repeat: int, norm: NormSettings, drop_path: float, input_size: int) -> nn.Module:
    """The module of one repeat of a stage."""
    return BLOCKS[block.kind](BlockArgs.of(block, repeat, norm, drop_path, input_size))


class Block(nn.Module):
    """A block built from its kind's entry: each present step an attribute (an absent one None), run
    in order, then the residual rule."""

    entry: ClassVar[BlockKind]
    has_skip: bool

    def __init__(self, args: BlockArgs) -> None:
        super().__init__()
        channels, present = args.in_ch, []
        for step in self.entry.steps:
            module = step.make(args, channels)
            setattr(self, step.name, module)
            if module is not None:
                present.append(step.name)
                channels = module.conv.out_channels if isinstance(module, ConvNormAct) else channels
        #: The names of the steps this block has, in order.
        self.present: tuple[str, ...] = tuple(present)
        drop = args.drop_path
        if self.entry.residual == "identity":
            self.has_skip = args.skip and args.stride == 1 and args.in_ch == args.out_ch
            self.drop_path = StochasticDepth(drop, "row") if self.has_skip and drop > 0 else nn.Identity()
            return
        self.has_skip = args.skip
        changes = args.stride != 1 or args.in_ch != args.out_ch
        self.shortcut = args.conv(args.in_ch, args.out_ch, 1, args.stride, act=False) if args.skip and changes else None
        self.drop_path = StochasticDepth(drop, "row") if args.skip and drop > 0 else nn.Identity()
        self.out_act = make_activation(args.norm.activation)

    def steps(self) -> list[tuple[Step, nn.Module]]:
        """The present steps with their modules, in order."""
        return [(self.entry.step(name), getattr(self, name)) for name in self.present]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x
        for name in self.present:
            out = getattr(self, name)(out)
        return self.residual(out, x)

    def residual(self, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """The block's output from its last step's ``out`` and its input ``x``."""
        if self.entry.residual == "identity":
            return self.drop_path(out) + x if self.has_skip else out
        if self.has_skip:
            out = self.drop_path(out) + (x if self.shortcut is None else self.shortcut(x))
        return self.out_act(out)


def _expanded(args: BlockArgs) -> int:
    return int(round(args.in_ch * args.expand_ratio))


#: A squeeze-excitation over the channels it reads (its bottleneck from the block's input).
_SE = Step("se", "se", "se", lambda a, c: a.se(c), optional=True)


@register_block(
    "mb",
    Step(
        "expand", "conv", "expand", lambda a, c: a.conv(c, _expanded(a)) if a.expand_ratio != 1 else None, optional=True
    ),
    Step("depthwise", "depthwise", "dw", lambda a, c: a.conv(c, c, a.kernel, a.stride, groups=c)),
    _SE,
    Step("project", "conv", "project", lambda a, c: a.conv(c, a.out_ch, act=False)),
    title="MBConv",
)
class MBConv(Block):
    """Inverted residual: 1×1 expand (skipped at ratio 1) → depthwise → SE → 1×1 project."""


@register_block(
    "fu",
    Step(
        "expand", "conv", "expand",
        lambda a, c: a.conv(c, _expanded(a), a.kernel, a.stride) if a.expand_ratio != 1 else None, optional=True,
    ),
    _SE,
    Step(
        "project", "conv", "project",
        lambda a, c: a.conv(c, a.out_ch, act=False) if a.expand_ratio != 1 else a.conv(c, a.out_ch, a.kernel, a.stride),
    ),
    title="Fused-MBConv",
)  # fmt: skip
class FusedMBConv(Block):
    """EfficientNetV2's Fused-MBConv: k×k expand convolution (strided, in → in·e) → SE → 1×1 project;
    at expansion 1 one k×k convolution (in → out, activated), SE before it on the input, as the
    official ``FusedMBConvBlock``. SE's bottleneck comes from the block's input channels."""


@register_block(
    "ds",
    Step("depthwise", "depthwise", "dw", lambda a, c: a.conv(c, c, a.kernel, a.stride, groups=c)),
    _SE,
    Step("pointwise", "conv", "project", lambda a, c: a.conv(c, a.out_ch)),
    title="depthwise-separable",
)
class DepthwiseSeparable(Block):
    """Depthwise k×k → SE → pointwise 1×1, both activated (MobileNetV1, MnasNet's SepConv)."""


@register_block(
    "cn",
    Step("conv", "conv", "conv", lambda a, c: a.conv(c, a.out_ch, a.kernel, a.stride)),
    _SE,
    title="regular convolution",
)
class RegularConv(Block):
    """A plain k×k convolution (activated) → SE, with a residual where shapes allow."""


@register_block(
    "bn",
    Step("reduce", "conv", "reduce", lambda a, c: a.conv(c, max(1, int(round(a.out_ch * a.expand_ratio))))),
    Step("conv", "conv", "conv", lambda a, c: a.conv(c, c, a.kernel, a.stride)),
    _SE,
    Step("expand", "conv", "project", lambda a, c: a.conv(c, a.out_ch, act=False)),
    residual="projection",
    title="ResNet bottleneck",
)
class Bottleneck(Block):
    """ResNet bottleneck (v1.5, stride on the k×k): 1×1 to out×e → k×k → 1×1 to out."""


@register_block(
    "ba",
    Step("conv1", "conv", "conv1", lambda a, c: a.conv(c, a.out_ch, a.kernel, a.stride)),
    Step("conv2", "conv", "conv2", lambda a, c: a.conv(c, c, a.kernel, 1, act=False)),
    _SE,
    residual="projection",
    title="ResNet basic block",
)
class BasicBlock(Block):
    """ResNet basic block: two k×k convolutions."""


_missing = set(BLOCK_KINDS) - set(BLOCKS)
if _missing:  # pragma: no cover - a kind added to the notation without a module
    raise ImportError(f"block kinds without a module: {', '.join(sorted(_missing))}")
