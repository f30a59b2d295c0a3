"""The blocks a stage is built from: one module class per block kind of the notation, registered
under that kind (:data:`BLOCKS`), each made from one :class:`BlockArgs`.

The kinds themselves (names and what they compute) are :data:`effnet.describe.blocks.BLOCK_KINDS`,
which the block-string parser validates against; :func:`register_block` refuses a module for a
kind the notation does not know, so the parser and the builder cannot drift apart."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

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


#: Module class of each block kind, filled by :func:`register_block`.
BLOCKS: dict[str, type[nn.Module]] = {}


def register_block(kind: str) -> Callable[[type[nn.Module]], type[nn.Module]]:
    """Class decorator: the module built for block kind ``kind`` (a kind of the notation)."""

    if kind not in BLOCK_KINDS:
        raise ValueError(f"block kind {kind!r} is not in the notation (effnet.describe.blocks.BLOCK_KINDS)")

    def add(cls: type[nn.Module]) -> type[nn.Module]:
        BLOCKS[kind] = cls
        return cls

    return add


def build_block(block: BlockSpec, repeat: int, norm: NormSettings, drop_path: float, input_size: int) -> nn.Module:
    """The module of one repeat of a stage."""
    return BLOCKS[block.kind](BlockArgs.of(block, repeat, norm, drop_path, input_size))


class _Residual(nn.Module):
    """Shared residual handling: identity + stochastic depth where shapes allow."""

    has_skip: bool

    def _init_residual(self, args: BlockArgs) -> None:
        self.has_skip = args.skip and args.stride == 1 and args.in_ch == args.out_ch
        drop = args.drop_path
        self.drop_path = StochasticDepth(drop, "row") if self.has_skip and drop > 0 else nn.Identity()

    def _add(self, out: torch.Tensor, shortcut: torch.Tensor) -> torch.Tensor:
        if self.has_skip:
            return self.drop_path(out) + shortcut
        return out


@register_block("mb")
class MBConv(_Residual):
    """Inverted residual: 1×1 expand (skipped at ratio 1) → depthwise → SE → 1×1 project."""

    def __init__(self, args: BlockArgs) -> None:
        super().__init__()
        mid = int(round(args.in_ch * args.expand_ratio))
        self.expand = args.conv(args.in_ch, mid) if args.expand_ratio != 1 else None
        self.depthwise = args.conv(mid, mid, args.kernel, args.stride, groups=mid)
        self.se = args.se(mid)
        self.project = args.conv(mid, args.out_ch, act=False)
        self._init_residual(args)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x
        if self.expand is not None:
            out = self.expand(out)
        out = self.depthwise(out)
        if self.se is not None:
            out = self.se(out)
        return self._add(self.project(out), x)


@register_block("fu")
class FusedMBConv(_Residual):
    """EfficientNetV2's Fused-MBConv: k×k expand convolution (strided, in → in·e) → SE → 1×1 project;
    at expansion 1 one k×k convolution (in → out, activated), SE before it on the input, as the
    official ``FusedMBConvBlock``. SE's bottleneck comes from the block's input channels."""

    def __init__(self, args: BlockArgs) -> None:
        super().__init__()
        if args.expand_ratio != 1:
            mid = int(round(args.in_ch * args.expand_ratio))
            self.expand = args.conv(args.in_ch, mid, args.kernel, args.stride)
            self.se = args.se(mid)
            self.project = args.conv(mid, args.out_ch, act=False)
        else:
            self.expand = None
            self.se = args.se(args.in_ch)
            self.project = args.conv(args.in_ch, args.out_ch, args.kernel, args.stride)
        self._init_residual(args)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.expand(x) if self.expand is not None else x
        if self.se is not None:
            out = self.se(out)
        return self._add(self.project(out), x)


@register_block("ds")
class DepthwiseSeparable(_Residual):
    """Depthwise k×k → SE → pointwise 1×1, both activated (MobileNetV1, MnasNet's SepConv)."""

    def __init__(self, args: BlockArgs) -> None:
        super().__init__()
        self.depthwise = args.conv(args.in_ch, args.in_ch, args.kernel, args.stride, groups=args.in_ch)
        self.se = args.se(args.in_ch)
        self.pointwise = args.conv(args.in_ch, args.out_ch)
        self._init_residual(args)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.depthwise(x)
        if self.se is not None:
            out = self.se(out)
        return self._add(self.pointwise(out), x)


@register_block("cn")
class RegularConv(_Residual):
    """A plain k×k convolution (activated) → SE, with a residual where shapes allow."""

    def __init__(self, args: BlockArgs) -> None:
        super().__init__()
        self.conv = args.conv(args.in_ch, args.out_ch, args.kernel, args.stride)
        self.se = args.se(args.out_ch)
        self._init_residual(args)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x)
        if self.se is not None:
            out = self.se(out)
        return self._add(out, x)


class _ResNetBlock(nn.Module):
    """Shared ResNet residual: projection shortcut when the shape changes, activation after the sum."""

    def _init_shortcut(self, args: BlockArgs) -> None:
        self.has_skip = args.skip
        changes = args.stride != 1 or args.in_ch != args.out_ch
        self.shortcut = args.conv(args.in_ch, args.out_ch, 1, args.stride, act=False) if args.skip and changes else None
        drop = args.drop_path
        self.drop_path = StochasticDepth(drop, "row") if args.skip and drop > 0 else nn.Identity()
        self.out_act = make_activation(args.norm.activation)

    def _finish(self, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        if self.has_skip:
            shortcut = x if self.shortcut is None else self.shortcut(x)
            out = self.drop_path(out) + shortcut
        return self.out_act(out)


@register_block("bn")
class Bottleneck(_ResNetBlock):
    """ResNet bottleneck (v1.5, stride on the k×k): 1×1 to out×e → k×k → 1×1 to out."""

    def __init__(self, args: BlockArgs) -> None:
        super().__init__()
        mid = max(1, int(round(args.out_ch * args.expand_ratio)))
        self.reduce = args.conv(args.in_ch, mid)
        self.conv = args.conv(mid, mid, args.kernel, args.stride)
        self.se = args.se(mid)
        self.expand = args.conv(mid, args.out_ch, act=False)
        self._init_shortcut(args)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(self.reduce(x))
        if self.se is not None:
            out = self.se(out)
        return self._finish(self.expand(out), x)


@register_block("ba")
class BasicBlock(_ResNetBlock):
    """ResNet basic block: two k×k convolutions."""

    def __init__(self, args: BlockArgs) -> None:
        super().__init__()
        self.conv1 = args.conv(args.in_ch, args.out_ch, args.kernel, args.stride)
        self.conv2 = args.conv(args.out_ch, args.out_ch, args.kernel, 1, act=False)
        self.se = args.se(args.out_ch)
        self._init_shortcut(args)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv2(self.conv1(x))
        if self.se is not None:
            out = self.se(out)
        return self._finish(out, x)


_missing = set(BLOCK_KINDS) - set(BLOCKS)
if _missing:  # pragma: no cover - a kind added to the notation without a module
    raise ImportError(f"block kinds without a module: {', '.join(sorted(_missing))}")
