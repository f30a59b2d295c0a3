"""What the fast path folds and fuses: BatchNorm into the convolution before it, and each activation
module into a function (in place where the activation allows) or a oneDNN post-op."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from effnet.errors import UserError

#: Each activation by name, as a function that overwrites its input where that is exact.
ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "silu": lambda x: F.silu(x, inplace=True),
    "relu": lambda x: F.relu(x, inplace=True),
    "relu6": lambda x: F.hardtanh(x, 0.0, 6.0, inplace=True),
    "hard_swish": lambda x: F.hardswish(x, inplace=True),
    "gelu": F.gelu,
}

#: oneDNN post-op name and scalars of each activation oneDNN can fuse into a convolution.
ONEDNN_ACTIVATIONS: dict[str, tuple[str, list[float]]] = {
    "silu": ("swish", []),
    "relu": ("relu", []),
    "relu6": ("hardtanh", [0.0, 6.0]),
    "hard_swish": ("hardswish", []),
}


def activation_name(module: nn.Module) -> str | None:
    """The activation a module computes, by name (a key of :data:`ACTIVATIONS`); None for identity."""
    from effnet.models.memory import MemoryEfficientSiLU

    if isinstance(module, nn.Identity):
        return None
    if isinstance(module, nn.SiLU | MemoryEfficientSiLU):
        return "silu"
    if isinstance(module, nn.ReLU6):
        return "relu6"
    if isinstance(module, nn.ReLU):
        return "relu"
    if isinstance(module, nn.Hardswish):
        return "hard_swish"
    if isinstance(module, nn.GELU):
        return "gelu"
    raise UserError(f"optimize: unsupported activation {type(module).__name__}")


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
