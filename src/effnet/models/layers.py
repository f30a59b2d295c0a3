"""The layers blocks are made of: padded convolutions, conv-norm-activation, squeeze-excitation."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from effnet.models.padding import same_padding


@dataclass(frozen=True)
class NormSettings:
    """What every BatchNorm, activation and padding in one model shares."""

    activation: str = "silu"
    eps: float = 1e-3
    momentum: float = 0.01
    padding: str = "same"


def make_activation(name: str) -> nn.Module:
    """An activation module by name."""
    if name == "silu":
        return nn.SiLU(inplace=True)
    if name == "relu":
        return nn.ReLU(inplace=True)
    if name == "relu6":
        return nn.ReLU6(inplace=True)
    if name == "hard_swish":
        return nn.Hardswish(inplace=True)
    if name == "gelu":
        return nn.GELU()
    raise ValueError(f"unknown activation {name!r}")


class PaddedConv2d(nn.Conv2d):
    """A convolution with TensorFlow 'SAME' padding.

    The padding for the model's own input size is computed once when the model is built; any
    other input size has its padding computed on the fly, so every size gives TensorFlow's result.
    """

    def __init__(self, *args: object, input_size: int, **kwargs: object) -> None:
        super().__init__(*args, padding=0, **kwargs)  # type: ignore[misc]
        self.input_size = input_size
        k, s = self.kernel_size[0], self.stride[0]
        top, bottom = same_padding(input_size, k, s)
        self.static_pad = (top, bottom, top, bottom)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2], x.shape[-1]
        if height == self.input_size and width == self.input_size:
            pad = self.static_pad
        else:
            k, s = self.kernel_size[0], self.stride[0]
            left, right = same_padding(int(width), k, s)
            top, bottom = same_padding(int(height), k, s)
            pad = (left, right, top, bottom)
        if pad[0] != 0 or pad[1] != 0 or pad[2] != 0 or pad[3] != 0:
            x = F.pad(x, pad)
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def make_conv(
    in_ch: int,
    out_ch: int,
    kernel: int,
    stride: int = 1,
    *,
    groups: int = 1,
    bias: bool = False,
    padding: str = "same",
    input_size: int = 224,
) -> nn.Conv2d:
    """A convolution padded TensorFlow's way ('same') or with k//2 on each side ('symmetric').

    'same' with stride 1 and an odd kernel is symmetric, so only strided convolutions need the
    padded variant.
    """
    if padding == "same" and stride > 1:
        return PaddedConv2d(in_ch, out_ch, kernel, stride, groups=groups, bias=bias, input_size=input_size)
    return nn.Conv2d(in_ch, out_ch, kernel, stride, padding=kernel // 2, groups=groups, bias=bias)


class ConvNormAct(nn.Module):
    """Convolution → BatchNorm → activation (``act=False`` for a linear projection)."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel: int,
        stride: int,
        norm: NormSettings,
        *,
        groups: int = 1,
        act: bool = True,
        input_size: int = 224,
    ) -> None:
        super().__init__()
        self.conv = make_conv(in_ch, out_ch, kernel, stride, groups=groups, padding=norm.padding, input_size=input_size)
        self.bn = nn.BatchNorm2d(out_ch, eps=norm.eps, momentum=norm.momentum)
        self.act = make_activation(norm.activation) if act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class SqueezeExcite(nn.Module):
    """Squeeze-excitation: mean over H, W → 1×1 reduce → activation → 1×1 expand → sigmoid gate."""

    def __init__(self, channels: int, reduced: int, activation: str) -> None:
        super().__init__()
        self.reduce = nn.Conv2d(channels, reduced, 1, bias=True)
        self.act = make_activation(activation)
        self.expand = nn.Conv2d(reduced, channels, 1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = x.mean((2, 3), keepdim=True)
        scale = self.expand(self.act(self.reduce(scale)))
        return x * scale.sigmoid()


def se_channels(in_channels: int, se_ratio: float) -> int:
    """The SE bottleneck: the block's *input* channels × ratio, at least 1."""
    return max(1, int(in_channels * se_ratio))
