"""What the fast path folds and fuses: BatchNorm into the convolution before it, and each activation
module into its entry of :data:`effnet.models.layers.ACTIVATIONS` (a function, in place where the
activation allows, or a oneDNN post-op)."""

from __future__ import annotations

import math

import torch
from torch import nn

from effnet.errors import UserError
from effnet.models import layers
from effnet.models.layers import ACTIVATIONS, ConvNormAct, SqueezeExcite


def activation_name(module: nn.Module) -> str | None:
    """The activation a module computes, by name (a key of :data:`effnet.models.layers.ACTIVATIONS`);
    None for identity."""
    try:
        return layers.activation_name(module)
    except ValueError:
        raise UserError(f"optimize: unsupported activation {type(module).__name__}") from None


def fold_batchnorm(conv: nn.Conv2d, bn: nn.BatchNorm2d | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Weight (channels_last) and bias of ``bn(conv(x))`` as one convolution (BN in eval mode),
    computed in float32 at least (a bfloat16 model is folded in float32, then cast by the caller)."""
    dtype = torch.promote_types(conv.weight.dtype, torch.float32)
    weight = conv.weight.detach().to(dtype, copy=True)
    bias = (
        conv.bias.detach().to(dtype, copy=True)
        if conv.bias is not None
        else torch.zeros(weight.shape[0], dtype=dtype, device=weight.device)
    )
    if bn is None:
        return weight.contiguous(memory_format=torch.channels_last), bias
    scale = bn.weight.detach().to(dtype) / torch.sqrt(bn.running_var.to(dtype) + bn.eps)
    weight = weight * scale.reshape(-1, 1, 1, 1)
    bias = (bias - bn.running_mean.to(dtype)) * scale + bn.bias.detach().to(dtype)
    return weight.contiguous(memory_format=torch.channels_last), bias


def expected_activation(norm: ConvNormAct) -> torch.Tensor:
    """Per channel, the mean of ``norm``'s output over the data it was trained on, from its own
    BatchNorm and nothing else: after BatchNorm a channel is ~N(β, γ²), and the activation's mean
    over that Gaussian is a sum over 2,001 points within ±8σ (float64; exact to ~1e-6 for kinked
    activations such as ReLU6 too, where a Gauss–Hermite rule is off by 1e-2)."""
    u = torch.linspace(-8.0, 8.0, 2001, dtype=torch.float64)
    density = torch.exp(-0.5 * u * u) * (u[1] - u[0]) / math.sqrt(2 * math.pi)
    bn = norm.bn
    z = bn.bias.detach().double()[:, None] + bn.weight.detach().double().abs()[:, None] * u
    name = activation_name(norm.act)
    a = ACTIVATIONS[name].apply(z) if name else z
    return (a * density).sum(1) / density.sum()


def expected_gated(se: SqueezeExcite, mean: torch.Tensor) -> torch.Tensor:
    """``mean`` (a channel's expected activation) times the squeeze-excitation gate at that mean: the
    gated map's expected value, taking E[gate·x] ≈ gate(E[x])·E[x] (data-free). The module itself
    computes it, on ``mean`` as a 1×1 map (whose spatial mean is ``mean``), in its own precision."""
    weight = se.reduce.weight
    with torch.no_grad():
        return se(mean.to(weight.device, weight.dtype)[None, :, None, None]).flatten().double()


def correct_rounding_bias(conv: nn.Module, mean: torch.Tensor, dtype: torch.dtype) -> None:
    """Bias correction for a folded convolution about to be cast to ``dtype`` (bfloat16, float16):
    rounding its weights shifts each output channel on average by Σ(w − round(w))·E[input]; that shift
    goes into the float32 bias now. ``mean`` is E[input] per input channel, data-free from the layers
    that feed it (:func:`expected_activation`, :func:`expected_gated`; Nagel et al. 2019 do this for
    int8). Depthwise and dense convolutions; grouped ones are left as they are. No cost per call (its
    effect on the logits' error: ``benchmarks/SPEED.md``)."""
    weight, bias = conv.weight, conv.bias
    depthwise = weight.shape[1] == 1 and conv.groups == weight.shape[0] > 1
    if weight.dtype != torch.float32 or dtype == torch.float32 or not (depthwise or conv.groups == 1):
        return
    mean = mean.to(weight.device, torch.float64)
    lost = (weight.double() - weight.to(dtype).double()).sum((2, 3))  # out × in/groups
    bias += (lost[:, 0] * mean if depthwise else lost @ mean).float()
