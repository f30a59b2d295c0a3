"""torchvision's EfficientNet layout (``features.0.0``, ``features.S.J.block.N``, ``classifier.1``).

torchvision's efficientnet_b0…b7 use symmetric padding; BatchNorm eps 1e-5 for b0–b4, 1e-3 for b5–b7.
"""

from __future__ import annotations

from collections.abc import Iterable

from torch import nn

from effnet.errors import UserError
from effnet.weights.layout import Layout, Part

#: Widths of torchvision's b5, b6, b7 (the models built with BatchNorm eps 1e-3).
_EPS_1E3_MIN_WIDTH = 1.6


class TorchvisionLayout(Layout):
    name = "torchvision"
    padding = "symmetric"

    def module_key(self, part: Part, model: nn.Module) -> str:
        if part.role == "stem.conv":
            return "features.0.0"
        if part.role == "stem.bn":
            return "features.0.1"
        head = len(model.stages) + 1
        if part.role == "head.conv":
            return f"features.{head}.0"
        if part.role == "head.bn":
            return f"features.{head}.1"
        if part.role == "classifier":
            return "classifier.1"
        # block.N counts the block's sub-layers: [expand], depthwise, [se], project.
        order = (["expand"] if part.has_expand else []) + ["dw"] + (["se"] if part.has_se else []) + ["project"]
        group, leaf = part.role.split(".")
        index = order.index(group)
        base = f"features.{part.stage + 1}.{part.index}.block.{index}"
        if group == "se":
            return f"{base}.{'fc1' if leaf == 'reduce' else 'fc2'}"
        return f"{base}.{0 if leaf == 'conv' else 1}"

    def bn_eps(self, model: nn.Module) -> float:
        spec = model.spec
        if spec.padding != "symmetric":
            raise UserError("torchvision weights need a model built with padding='symmetric'")
        return 1e-3 if spec.width >= _EPS_1E3_MIN_WIDTH and not spec.lite else 1e-5


def looks_like(keys: Iterable[str]) -> bool:
    keys = set(keys)
    return "features.0.0.weight" in keys and any(".block." in k for k in keys)
