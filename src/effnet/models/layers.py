"""The layers blocks are made of: the activations (one table, :data:`ACTIVATIONS`, that every form
reads), padded convolutions, conv-norm-activation, squeeze-excitation."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from effnet.describe.network import ACTIVATIONS as DESCRIBED_ACTIVATIONS
from effnet.models.padding import same_padding


@dataclass(frozen=True)
class NormSettings:
    """What every BatchNorm, activation and padding in one model shares."""

    activation: str = "silu"
    eps: float = 1e-3
    momentum: float = 0.01
    padding: str = "same"


@dataclass(frozen=True)
class Activation:
    """One activation: its module, a function that overwrites its input where that is exact (the
    fast path's), and oneDNN's post-op (name, scalars) where oneDNN fuses it into a convolution."""

    module_type: type[nn.Module]
    apply: Callable[[torch.Tensor], torch.Tensor]
    onednn: tuple[str, tuple[float, ...]] | None
    inplace: bool = True

    def module(self) -> nn.Module:
        """A fresh module (in place where the activation allows)."""
        return self.module_type(inplace=True) if self.inplace else self.module_type()  # type: ignore[call-arg]


#: Every activation a description may name (:data:`effnet.describe.network.ACTIVATIONS`), by name.
ACTIVATIONS: dict[str, Activation] = {
    "silu": Activation(nn.SiLU, lambda x: F.silu(x, inplace=True), ("swish", ())),
    "relu": Activation(nn.ReLU, lambda x: F.relu(x, inplace=True), ("relu", ())),
    "relu6": Activation(nn.ReLU6, lambda x: F.hardtanh(x, 0.0, 6.0, inplace=True), ("hardtanh", (0.0, 6.0))),
    "hard_swish": Activation(nn.Hardswish, lambda x: F.hardswish(x, inplace=True), ("hardswish", ())),
    "gelu": Activation(nn.GELU, F.gelu, None, inplace=False),
}
if set(ACTIVATIONS) != set(DESCRIBED_ACTIVATIONS):  # pragma: no cover - the notation and the table drifted apart
    raise ImportError("effnet.models.layers.ACTIVATIONS and effnet.describe.network.ACTIVATIONS differ")


def make_activation(name: str) -> nn.Module:
    """An activation module by name."""
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}")
    return ACTIVATIONS[name].module()


def activation_name(module: nn.Module) -> str | None:
    """The activation a module computes, by name (a key of :data:`ACTIVATIONS`); None for identity
    (subclasses count: the training memory mode's SiLU is a SiLU)."""
    if isinstance(module, nn.Identity):
        return None
    name = next((name for name, act in ACTIVATIONS.items() if isinstance(module, act.module_type)), None)
    if name is None:
        raise ValueError(f"unsupported activation {type(module).__name__}")
    return name


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
