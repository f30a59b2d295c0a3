"""torchvision's EfficientNet layout (``features.0.0``, ``features.S.J.block.N``, ``classifier.1``).

torchvision's efficientnet_b0…b7 use symmetric padding; BatchNorm eps 1e-5 for b0–b4, 1e-3 for b5–b7.
"""

from __future__ import annotations

from collections.abc import Mapping, Set

from torch import nn

from effnet.describe.network import NetworkSpec
from effnet.weights.format import WeightFormat
from effnet.weights.layout import Layout, Part

#: Widths of torchvision's b5, b6, b7 (the models built with BatchNorm eps 1e-3).
_EPS_1E3_MIN_WIDTH = 1.6


class TorchvisionLayout(Layout):
    name = "torchvision"
    fixed = {"stem.conv": "features.0.0", "stem.bn": "features.0.1", "classifier": "classifier.1"}

    def module_key(self, part: Part, model: nn.Module) -> str:
        if part.role in ("head.conv", "head.bn"):  # the head's index follows the stages
            return f"features.{len(model.stages) + 1}.{0 if part.role == 'head.conv' else 1}"
        return super().module_key(part, model)

    def block_key(self, part: Part, model: nn.Module) -> str:
        # block.N counts the block's sub-layers: [expand], depthwise, [se], project.
        order = (["expand"] if part.has_expand else []) + ["dw"] + (["se"] if part.has_se else []) + ["project"]
        group, leaf = part.role.split(".")
        index = order.index(group)
        base = f"features.{part.stage + 1}.{part.index}.block.{index}"
        if group == "se":
            return f"{base}.{'fc1' if leaf == 'reduce' else 'fc2'}"
        return f"{base}.{0 if leaf == 'conv' else 1}"


def _detect(keys: Set[str], metadata: Mapping[str, str]) -> bool:
    return "features.0.0.weight" in keys and any(".block." in k for k in keys)


def _bn_eps(spec: NetworkSpec) -> float:
    return 1e-3 if spec.width >= _EPS_1E3_MIN_WIDTH and not spec.lite else 1e-5


TORCHVISION = WeightFormat(
    name="torchvision",
    about="torchvision's efficientnet_b0…b7",
    detect=_detect,
    layout=TorchvisionLayout(),
    bn_eps=_bn_eps,
    padding="symmetric",
)
