"""Memory-saving training: activations that keep less for backward and recompute the rest.

A plain block (an MBConv, say) keeps, for backward, every intermediate of its expanded width: the convolution
outputs (BatchNorm inputs), the BatchNorm outputs (SiLU inputs), the SiLU outputs (next
convolution inputs) and the SE-gated tensor (projection input). In memory mode each expanded
tensor is kept once, as the BatchNorm input ``z``:

- BN+SiLU (``_BNSiLUFunction``) computes SiLU(BatchNorm(z)) in training and keeps only ``z``
  (plus per-channel statistics); backward recomputes the pre-activation from ``z``.
- The convolution reading ``x = SiLU(BatchNorm(z))``, for the projection times the SE gate
  (``_ConvAfterBNSiLUFunction``), keeps ``z`` (the very tensor BN+SiLU kept) instead of ``x`` or
  ``x·gate`` and recomputes them in backward, handing the pre-activation on to BN+SiLU's backward.
  A strided 'same' depthwise convolution pads symmetrically and crops its output: no padded copy.
- :class:`MemoryEfficientSiLU` is a SiLU that keeps its input (not an in-place clone).

Every block kind gets this from its steps (:class:`MemoryEfficientBlock`): a chain of convolutions
and squeeze-excitations, each convolution after a BN+SiLU keeping that BN's input.

Numerics match the plain modules (same formulas, float rounding aside). Everything here is plain
Python autograd, so a model in memory mode is neither scriptable nor exportable: switch it off with
:func:`set_memory_efficient` (``model.set_memory_efficient(False)``) first; state_dict keys never change.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from effnet.models.blocks import BLOCKS, Block, MBConv
from effnet.models.layers import ConvNormAct, PaddedConv2d, SqueezeExcite
from effnet.models.padding import axis_plan


def _affine(weight: torch.Tensor, bias: torch.Tensor, mean: torch.Tensor, invstd: torch.Tensor) -> tuple:
    """Per-channel (scale, shift) of a batch-normalisation, shaped to broadcast over N, C, H, W."""
    scale = invstd * weight
    shift = bias - mean * scale
    return scale.reshape(1, -1, 1, 1), shift.reshape(1, -1, 1, 1)


def _recompute(
    z: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor, activate: bool = True
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(pre-activation, activation or None) from the kept BatchNorm input."""
    pre = torch.addcmul(shift, z, scale)
    return pre, F.silu(pre) if activate else None


class _SiLUFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        return F.silu(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        return torch.ops.aten.silu_backward(grad, x)


class _BNSiLUFunction(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any,
        z: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor,
        running_mean: torch.Tensor | None,
        running_var: torch.Tensor | None,
        momentum: float,
        eps: float,
        shared: dict,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        y, mean, invstd = torch.native_batch_norm(z, weight, bias, running_mean, running_var, True, momentum, eps)
        y = F.silu(y, inplace=True)
        ctx.eps = eps
        ctx.shared = shared
        ctx.save_for_backward(z, weight, bias, mean, invstd)
        ctx.mark_non_differentiable(mean, invstd)
        return y, mean, invstd

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor, _gmean: Any, _ginvstd: Any) -> tuple:
        z, weight, bias, mean, invstd = ctx.saved_tensors
        pre = ctx.shared.pop("pre", None)  # recomputed already by the convolution reading x
        if pre is None:
            pre, _ = _recompute(z, *_affine(weight, bias, mean, invstd), activate=False)
        grad_pre = torch.ops.aten.silu_backward(grad, pre)
        del pre
        mask = [ctx.needs_input_grad[0], ctx.needs_input_grad[1], ctx.needs_input_grad[2]]
        gz, gw, gb = torch.ops.aten.native_batch_norm_backward(
            grad_pre, z, weight, None, None, mean, invstd, True, ctx.eps, mask
        )
        return gz, gw, gb, None, None, None, None, None


def _conv_plan(conv: nn.Conv2d, height: int, width: int) -> tuple:
    """(symmetric padding, crop (top, left, height, width) of the output or None) of a convolution.

    TensorFlow 'same' padding becomes a larger symmetric padding and a crop: no padded copy of
    the (wide) input in forward, nor of its gradient in backward."""
    if not isinstance(conv, PaddedConv2d):
        return tuple(conv.padding), None
    k, s = conv.kernel_size[0], conv.stride[0]
    rows, cols = axis_plan(height, k, s), axis_plan(width, k, s)
    if not rows.crop and not cols.crop:
        return (rows.padding, cols.padding), None
    return (rows.padding, cols.padding), (rows.crop, cols.crop, math.ceil(height / s), math.ceil(width / s))


class _ConvAfterBNSiLUFunction(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any,
        x: torch.Tensor,
        gate: torch.Tensor | None,
        weight: torch.Tensor,
        z: torch.Tensor,
        bn_weight: torch.Tensor,
        bn_bias: torch.Tensor,
        mean: torch.Tensor,
        invstd: torch.Tensor,
        shared: dict,
        conv: tuple,
    ) -> torch.Tensor:
        padding, crop, stride, dilation, groups = conv
        ctx.conv = conv
        ctx.shared = shared
        ctx.has_gate = gate is not None
        ctx.save_for_backward(gate, weight, z, bn_weight, bn_bias, mean, invstd)
        out = F.conv2d(x * gate if gate is not None else x, weight, None, stride, padding, dilation, groups)
        if crop is not None:
            top, left, height, width = crop
            ctx.full_shape = out.shape
            out = out[:, :, top : top + height, left : left + width].contiguous(memory_format=_layout(x))
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple:
        gate, weight, z, bn_weight, bn_bias, mean, invstd = ctx.saved_tensors
        padding, crop, stride, dilation, groups = ctx.conv
        pre, x = _recompute(z, *_affine(bn_weight, bn_bias, mean, invstd))
        ctx.shared["pre"] = pre  # for BNSiLU's backward, which comes next
        inp = x * gate if ctx.has_gate else x
        if crop is not None:
            top, left, height, width = crop
            full = torch.empty(ctx.full_shape, dtype=grad.dtype, device=grad.device, memory_format=_layout(grad))
            full.zero_()
            full[:, :, top : top + height, left : left + width] = grad
            grad = full
        need_x, need_gate, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1], ctx.needs_input_grad[2]
        g_inp, g_w, _ = torch.ops.aten.convolution_backward(
            grad, inp, weight, None, stride, padding, dilation, False, (0, 0), groups,
            [need_x or need_gate, need_w, False],
        )  # fmt: skip
        del inp
        g_x = g_gate = None
        if g_inp is not None:
            if ctx.has_gate:
                g_gate = (g_inp * x).sum((2, 3), keepdim=True) if need_gate else None
                g_x = g_inp.mul_(gate) if need_x else None
            else:
                g_x = g_inp
        return g_x, g_gate, g_w, None, None, None, None, None, None, None


def _layout(x: torch.Tensor) -> torch.memory_format:
    return torch.channels_last if x.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format


class MemoryEfficientSiLU(nn.SiLU):
    """SiLU keeping its input only (not an in-place clone); recomputes the sigmoid in backward."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() and x.requires_grad:
            return _SiLUFunction.apply(x)
        return F.silu(x, inplace=self.inplace)


def _bn_silu(bn: nn.BatchNorm2d, z: torch.Tensor) -> tuple[torch.Tensor, tuple | None]:
    """SiLU(BatchNorm(z)); in training with autograd, keeps only z and returns its statistics."""
    if bn.training and torch.is_grad_enabled() and bn.affine and bn.momentum is not None:
        if bn.track_running_stats and bn.num_batches_tracked is not None:
            bn.num_batches_tracked.add_(1)
        shared: dict = {}
        y, mean, invstd = _BNSiLUFunction.apply(
            z, bn.weight, bn.bias, bn.running_mean, bn.running_var, bn.momentum, bn.eps, shared
        )
        return y, (bn.weight, bn.bias, mean, invstd, shared)
    return F.silu(bn(z), inplace=True), None


def _conv_after(
    conv: nn.Conv2d, x: torch.Tensor, z: torch.Tensor, stats: tuple | None, gate: torch.Tensor | None = None
) -> torch.Tensor:
    """``conv(x · gate)`` where x = SiLU(BatchNorm(z)), keeping z instead of x (when stats are known)."""
    if stats is None or conv.bias is not None:
        return conv(x * gate if gate is not None else x)
    padding, crop = _conv_plan(conv, int(x.shape[-2]), int(x.shape[-1]))
    spec = (padding, crop, tuple(conv.stride), tuple(conv.dilation), conv.groups)
    return _ConvAfterBNSiLUFunction.apply(x, gate, conv.weight, z, *stats, spec)


def _se_gate(se: SqueezeExcite, x: torch.Tensor) -> torch.Tensor:
    scale = x.mean((2, 3), keepdim=True)
    return se.expand(se.act(se.reduce(scale))).sigmoid()


def _is_silu(module: nn.Module) -> bool:
    return type(module) in (nn.SiLU, MemoryEfficientSiLU)


class MemoryEfficientConvNormAct(ConvNormAct):
    """ConvNormAct whose BatchNorm + SiLU keep only the convolution output."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.conv(x)
        if _is_silu(self.act):
            return _bn_silu(self.bn, z)[0]
        return self.act(self.bn(z))


class MemoryEfficientBlock(Block):
    """A block (any kind: its steps are convolutions and squeeze-excitations) keeping each tensor a
    BatchNorm + SiLU produces once, as the BatchNorm input, and recomputing the rest: a convolution
    reading such a tensor (through a squeeze-excitation gate or not) keeps the BatchNorm input
    instead. Steps with another activation run as in the plain block."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, z, stats, gate = x, x, None, None
        for name in self.present:
            step = getattr(self, name)
            if isinstance(step, SqueezeExcite):
                if gate is not None:
                    out, stats = out * gate, None
                gate = _se_gate(step, out)
                continue
            z = _conv_after(step.conv, out, z, stats, gate)
            gate = None
            if _is_silu(step.act):
                out, stats = _bn_silu(step.bn, z)
            else:
                out, stats = step.act(step.bn(z)), None
        if gate is not None:
            out = out * gate
        return self.residual(out, x)


@functools.cache
def memory_form(block: type[Block]) -> type[MemoryEfficientBlock]:
    """The memory-mode class of a block class (the same modules and keys, another forward)."""
    return type(f"MemoryEfficient{block.__name__}", (MemoryEfficientBlock, block), {"__module__": __name__})


#: The memory-mode MBConv (every block kind has one: :func:`memory_form`).
MemoryEfficientMBConv = memory_form(MBConv)

_SWAPS: dict[type, type] = {
    ConvNormAct: MemoryEfficientConvNormAct,
    nn.SiLU: MemoryEfficientSiLU,
}


def set_memory_efficient(model: nn.Module, enable: bool = True) -> nn.Module:
    """Switch memory mode on or off in place (module classes swap; parameters and keys stay)."""
    swaps = _SWAPS if enable else {v: k for k, v in _SWAPS.items()}
    blocks = set(BLOCKS.values())
    for module in model.modules():
        cls = type(module)
        new = swaps.get(cls)
        if cls in blocks and enable:
            new = memory_form(cls)
        elif issubclass(cls, MemoryEfficientBlock) and not enable:
            new = next(base for base in cls.__mro__[2:] if base in blocks)
        if new is not None:
            module.__class__ = new
    if hasattr(model, "memory_efficient"):
        model.memory_efficient = enable
    return model
