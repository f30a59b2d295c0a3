"""torchvision's EfficientNet layout (``features.0.0``, ``features.S.J.block.N``, ``classifier.1``),
``efficientnet_v2_s/m/l`` included (their ``FusedMBConv`` blocks: ``block.0`` [expand], ``block.1`` project).

torchvision's efficientnet_b0…b7 use symmetric padding; BatchNorm eps 1e-5 for b0–b4, 1e-3 for
b5–b7 and for every V2.
"""

from __future__ import annotations

from collections.abc import Mapping, Set

from torch import nn

from effnet.describe.network import NetworkSpec
from effnet.preprocess import Preprocessing
from effnet.weights.layout import Layout, Part, WeightFormat

#: Widths of torchvision's b5, b6, b7 (the models built with BatchNorm eps 1e-3).
_EPS_1E3_MIN_WIDTH = 1.6


class TorchvisionLayout(Layout):
    name = "torchvision"
    block_kinds = ("mb", "fu")
    fixed = {"stem.conv": "features.0.0", "stem.bn": "features.0.1", "classifier": "classifier.1"}

    def module_key(self, part: Part, model: nn.Module) -> str:
        if part.role in ("head.conv", "head.bn"):  # the head's index follows the stages
            return f"features.{len(model.stages) + 1}.{0 if part.role == 'head.conv' else 1}"
        return super().module_key(part, model)

    def block_key(self, part: Part, model: nn.Module) -> str:
        # block.N counts the block's sub-layers: [expand], depthwise (not in Fused-MBConv), [se], project.
        order = ["expand"] * part.has_expand + ["dw"] * (part.kind == "mb") + ["se"] * part.has_se + ["project"]
        group, leaf = part.role.split(".")
        index = order.index(group)
        base = f"features.{part.stage + 1}.{part.index}.block.{index}"
        if group == "se":
            return f"{base}.{'fc1' if leaf == 'reduce' else 'fc2'}"
        return f"{base}.{0 if leaf == 'conv' else 1}"


def _detect(keys: Set[str], metadata: Mapping[str, str]) -> bool:
    return "features.0.0.weight" in keys and any(".block." in k for k in keys)


def _preprocessing(spec: NetworkSpec, name: str) -> Preprocessing | None:
    """torchvision's V2 weights: the whole image at the model's size (S, M bilinear with ImageNet's
    mean/std; L bicubic with mean = std = 0.5)."""
    if spec.name in ("efficientnetv2_s", "efficientnetv2_m"):
        return Preprocessing(spec.resolution, 1.0, "bilinear")
    if spec.name == "efficientnetv2_l":
        return Preprocessing(spec.resolution, 1.0, "bicubic", (0.5,) * 3, (0.5,) * 3)
    return None


def _bn_eps(spec: NetworkSpec) -> float:
    if any(block.kind == "fu" for block in spec.blocks):  # EfficientNetV2
        return 1e-3
    return 1e-3 if spec.width >= _EPS_1E3_MIN_WIDTH and not spec.lite else 1e-5


TORCHVISION = WeightFormat(
    name="torchvision",
    about="torchvision's efficientnet_b0…b7 and efficientnet_v2_s/m/l",
    detect=_detect,
    layout=TorchvisionLayout(),
    bn_eps=_bn_eps,
    padding="symmetric",
    preprocessing_for_model=_preprocessing,
)
