"""The blocks a stage is built from, one class per block kind of the notation."""

from __future__ import annotations

import torch
from torch import nn
from torchvision.ops import StochasticDepth

from effnet.build.layers import ConvNormAct, NormSettings, SqueezeExcite, make_activation, se_channels


class _Residual(nn.Module):
    """Shared residual handling: identity + stochastic depth where shapes allow."""

    has_skip: bool

    def _init_residual(self, in_ch: int, out_ch: int, stride: int, skip: bool, drop_path: float) -> None:
        self.has_skip = skip and stride == 1 and in_ch == out_ch
        self.drop_path = StochasticDepth(drop_path, "row") if self.has_skip and drop_path > 0 else nn.Identity()

    def _add(self, out: torch.Tensor, shortcut: torch.Tensor) -> torch.Tensor:
        if self.has_skip:
            return self.drop_path(out) + shortcut
        return out


class MBConv(_Residual):
    """Inverted residual: 1×1 expand (skipped at ratio 1) → depthwise → SE → 1×1 project."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel: int,
        stride: int,
        expand_ratio: float,
        se_ratio: float,
        skip: bool,
        norm: NormSettings,
        drop_path: float = 0.0,
        input_size: int = 224,
    ) -> None:
        super().__init__()
        mid = int(round(in_ch * expand_ratio))
        self.expand = ConvNormAct(in_ch, mid, 1, 1, norm) if expand_ratio != 1 else None
        self.depthwise = ConvNormAct(mid, mid, kernel, stride, norm, groups=mid, input_size=input_size)
        self.se = SqueezeExcite(mid, se_channels(in_ch, se_ratio), norm.activation) if se_ratio > 0 else None
        self.project = ConvNormAct(mid, out_ch, 1, 1, norm, act=False)
        self._init_residual(in_ch, out_ch, stride, skip, drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x
        if self.expand is not None:
            out = self.expand(out)
        out = self.depthwise(out)
        if self.se is not None:
            out = self.se(out)
        return self._add(self.project(out), x)


class DepthwiseSeparable(_Residual):
    """Depthwise k×k → SE → pointwise 1×1, both activated (MobileNetV1, MnasNet's SepConv)."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel: int,
        stride: int,
        expand_ratio: float,
        se_ratio: float,
        skip: bool,
        norm: NormSettings,
        drop_path: float = 0.0,
        input_size: int = 224,
    ) -> None:
        super().__init__()
        self.depthwise = ConvNormAct(in_ch, in_ch, kernel, stride, norm, groups=in_ch, input_size=input_size)
        self.se = SqueezeExcite(in_ch, se_channels(in_ch, se_ratio), norm.activation) if se_ratio > 0 else None
        self.pointwise = ConvNormAct(in_ch, out_ch, 1, 1, norm)
        self._init_residual(in_ch, out_ch, stride, skip, drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.depthwise(x)
        if self.se is not None:
            out = self.se(out)
        return self._add(self.pointwise(out), x)


class RegularConv(_Residual):
    """A plain k×k convolution (activated) → SE, with a residual where shapes allow."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel: int,
        stride: int,
        expand_ratio: float,
        se_ratio: float,
        skip: bool,
        norm: NormSettings,
        drop_path: float = 0.0,
        input_size: int = 224,
    ) -> None:
        super().__init__()
        self.conv = ConvNormAct(in_ch, out_ch, kernel, stride, norm, input_size=input_size)
        self.se = SqueezeExcite(out_ch, se_channels(in_ch, se_ratio), norm.activation) if se_ratio > 0 else None
        self._init_residual(in_ch, out_ch, stride, skip, drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x)
        if self.se is not None:
            out = self.se(out)
        return self._add(out, x)


class _ResNetBlock(nn.Module):
    """Shared ResNet residual: projection shortcut when the shape changes, activation after the sum."""

    def _init_shortcut(
        self, in_ch: int, out_ch: int, stride: int, skip: bool, norm: NormSettings, drop_path: float, input_size: int
    ) -> None:
        self.has_skip = skip
        self.shortcut = (
            ConvNormAct(in_ch, out_ch, 1, stride, norm, act=False, input_size=input_size)
            if skip and (stride != 1 or in_ch != out_ch)
            else None
        )
        self.drop_path = StochasticDepth(drop_path, "row") if skip and drop_path > 0 else nn.Identity()
        self.out_act = make_activation(norm.activation)

    def _finish(self, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        if self.has_skip:
            shortcut = x if self.shortcut is None else self.shortcut(x)
            out = self.drop_path(out) + shortcut
        return self.out_act(out)


class Bottleneck(_ResNetBlock):
    """ResNet bottleneck (v1.5, stride on the k×k): 1×1 to out×e → k×k → 1×1 to out."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel: int,
        stride: int,
        expand_ratio: float,
        se_ratio: float,
        skip: bool,
        norm: NormSettings,
        drop_path: float = 0.0,
        input_size: int = 224,
    ) -> None:
        super().__init__()
        mid = max(1, int(round(out_ch * expand_ratio)))
        self.reduce = ConvNormAct(in_ch, mid, 1, 1, norm)
        self.conv = ConvNormAct(mid, mid, kernel, stride, norm, input_size=input_size)
        self.se = SqueezeExcite(mid, se_channels(in_ch, se_ratio), norm.activation) if se_ratio > 0 else None
        self.expand = ConvNormAct(mid, out_ch, 1, 1, norm, act=False)
        self._init_shortcut(in_ch, out_ch, stride, skip, norm, drop_path, input_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(self.reduce(x))
        if self.se is not None:
            out = self.se(out)
        return self._finish(self.expand(out), x)


class BasicBlock(_ResNetBlock):
    """ResNet basic block: two k×k convolutions."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel: int,
        stride: int,
        expand_ratio: float,
        se_ratio: float,
        skip: bool,
        norm: NormSettings,
        drop_path: float = 0.0,
        input_size: int = 224,
    ) -> None:
        super().__init__()
        self.conv1 = ConvNormAct(in_ch, out_ch, kernel, stride, norm, input_size=input_size)
        self.conv2 = ConvNormAct(out_ch, out_ch, kernel, 1, norm, act=False)
        self.se = SqueezeExcite(out_ch, se_channels(in_ch, se_ratio), norm.activation) if se_ratio > 0 else None
        self._init_shortcut(in_ch, out_ch, stride, skip, norm, drop_path, input_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv2(self.conv1(x))
        if self.se is not None:
            out = self.se(out)
        return self._finish(out, x)


#: Which module each block kind of the notation builds.
BLOCK_TYPES: dict[str, type[nn.Module]] = {
    "mb": MBConv,
    "ds": DepthwiseSeparable,
    "cn": RegularConv,
    "bn": Bottleneck,
    "ba": BasicBlock,
}
