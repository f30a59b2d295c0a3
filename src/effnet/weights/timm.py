"""timm's EfficientNet layout (``conv_stem``, ``blocks.S.J.conv_dw``, ``conv_head``, ``classifier``),
EfficientNetV2 included (Fused-MBConv as ``EdgeResidual``, its expansion-1 form as ``ConvBnAct``).

timm's ``tf_efficientnet_*`` / ``tf_efficientnet_lite*`` / ``tf_efficientnetv2_*`` ports keep
TensorFlow's 'same' padding and BatchNorm eps 1e-3; its own ``efficientnet_*`` /
``efficientnetv2_*`` use symmetric padding and eps 1e-5. The two share their keys, so the model's
padding says which one a file is. (``efficientnetv2_rw_*`` differ in structure: their expansion-1
EdgeResidual has two convolutions, which the official Fused-MBConv does not.)
"""

from __future__ import annotations

from collections.abc import Mapping, Set

from torch import nn

from effnet.describe.network import NetworkSpec
from effnet.preprocess import Preprocessing
from effnet.weights.layout import Layout, Part, WeightFormat

# Blocks with an expansion (InvertedResidual) and without (DepthwiseSeparableConv).
_EXPANDED = {
    "expand.conv": "conv_pw",
    "expand.bn": "bn1",
    "dw.conv": "conv_dw",
    "dw.bn": "bn2",
    "se.reduce": "se.conv_reduce",
    "se.expand": "se.conv_expand",
    "project.conv": "conv_pwl",
    "project.bn": "bn3",
}
_SEPARABLE = {
    "dw.conv": "conv_dw",
    "dw.bn": "bn1",
    "se.reduce": "se.conv_reduce",
    "se.expand": "se.conv_expand",
    "project.conv": "conv_pw",
    "project.bn": "bn2",
}


# Fused-MBConv: with an expansion (EdgeResidual) and without (ConvBnAct).
_FUSED = {
    "expand.conv": "conv_exp",
    "expand.bn": "bn1",
    "se.reduce": "se.conv_reduce",
    "se.expand": "se.conv_expand",
    "project.conv": "conv_pwl",
    "project.bn": "bn2",
}
_FUSED_SINGLE = {"project.conv": "conv", "project.bn": "bn1"}


class TimmLayout(Layout):
    name = "timm"
    block_kinds = ("mb", "fu")
    fixed = {
        "stem.conv": "conv_stem",
        "stem.bn": "bn1",
        "head.conv": "conv_head",
        "head.bn": "bn2",
        "classifier": "classifier",
    }

    def block_key(self, part: Part, model: nn.Module) -> str:
        if part.kind == "fu":
            names = _FUSED if part.has_expand else _FUSED_SINGLE
        else:
            names = _EXPANDED if part.has_expand else _SEPARABLE
        return f"blocks.{part.stage}.{part.index}.{names[part.role]}"


def _detect(keys: Set[str], metadata: Mapping[str, str]) -> bool:
    return "conv_stem.weight" in keys and any(k.startswith("blocks.0.0.") for k in keys)


def _padding_for_model(name: str) -> str:
    return "same" if name.strip().lower().startswith("tf_") else "symmetric"


def _preprocessing(spec: NetworkSpec, name: str) -> Preprocessing | None:
    """timm's tf_efficientnetv2_s/m/l/xl checkpoints: mean = std = 0.5, the full image (crop 1.0)."""
    if spec.name in ("efficientnetv2_s", "efficientnetv2_m", "efficientnetv2_l", "efficientnetv2_xl"):
        return Preprocessing(spec.resolution, 1.0, "bicubic", (0.5,) * 3, (0.5,) * 3)
    return None


def _bn_eps(spec: NetworkSpec) -> float:
    return 1e-3 if spec.padding == "same" else 1e-5


TIMM = WeightFormat(
    name="timm",
    about="timm's efficientnet_* (symmetric padding) and tf_efficientnet_* ('same' padding) models",
    detect=_detect,
    layout=TimmLayout(),
    bn_eps=_bn_eps,
    padding_for_model=_padding_for_model,
    preprocessing_for_model=_preprocessing,
)
