"""Keras applications' EfficientNetB0–B7 HDF5 layout (``stem_conv/kernel``, ``block1a_dwconv``, ``top_conv``,
``predictions``), as in the released weight files and Keras 3's legacy-h5 saving.

Kernels are stored HWIO (depthwise: H, W, C, multiplier), dense kernels (in, out); 'same' padding,
BatchNorm eps 1e-3. Keras' own Rescaling/Normalization input layers are not weights of the network:
effnet's preprocessing does their job.
"""

from __future__ import annotations

from collections.abc import Mapping, Set

import torch
from torch import nn

from effnet.weights.layout import Layout, Part, WeightFormat

_BLOCK = {
    "expand.conv": "expand_conv",
    "expand.bn": "expand_bn",
    "dw.conv": "dwconv",
    "dw.bn": "bn",
    "se.reduce": "se_reduce",
    "se.expand": "se_expand",
    "project.conv": "project_conv",
    "project.bn": "project_bn",
}
_BN = {"weight": "gamma", "bias": "beta", "running_mean": "moving_mean", "running_var": "moving_variance"}


class KerasLayout(Layout):
    name = "keras"
    sep = "/"
    fixed = {
        "stem.conv": "stem_conv",
        "stem.bn": "stem_bn",
        "head.conv": "top_conv",
        "head.bn": "top_bn",
        "classifier": "predictions",
    }

    def block_key(self, part: Part, model: nn.Module) -> str:
        return f"block{part.stage + 1}{chr(ord('a') + part.index)}_{_BLOCK[part.role]}"

    def param_keys(self, prefix: str, name: str, kind: str) -> tuple[str, ...]:
        if kind == "bn":
            return (f"{prefix}/{_BN.get(name, name)}",)
        if name == "weight":
            names = ("depthwise_kernel", "kernel") if kind == "dwconv" else ("kernel",)
            return tuple(f"{prefix}/{n}" for n in names)
        return (f"{prefix}/{name}",)

    def convert(self, tensor: torch.Tensor, kind: str, name: str, target: torch.Tensor) -> torch.Tensor:
        if name != "weight":
            return tensor
        if kind == "conv" and tensor.ndim == 4:
            return tensor.permute(3, 2, 0, 1).contiguous()
        if kind == "dwconv" and tensor.ndim == 4:
            h, w, c, m = tensor.shape
            return tensor.permute(2, 3, 0, 1).reshape(c * m, 1, h, w).contiguous()
        if kind == "linear" and tensor.ndim == 2:
            return tensor.t().contiguous()
        return tensor

    def ignored(self, key: str) -> bool:
        return key.split("/", 1)[0].startswith(("normalization", "rescaling"))


def _detect(keys: Set[str], metadata: Mapping[str, str]) -> bool:
    return any(k.startswith("stem_conv/") for k in keys)


KERAS = WeightFormat(
    name="keras",
    about="Keras applications' EfficientNetB0–B7 HDF5 files",
    detect=_detect,
    layout=KerasLayout(),
    bn_eps=1e-3,
    padding="same",
)
