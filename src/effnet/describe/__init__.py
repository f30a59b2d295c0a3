"""Describe: networks as data (block strings, dataclasses, the published family)."""

from effnet.describe import baselines as baselines  # registers ResNets and MobileNets
from effnet.describe.blocks import BlockSpec, format_block, format_blocks, parse_block, parse_blocks
from effnet.describe.network import NetworkSpec
from effnet.describe.zoo import (
    COEFFICIENTS,
    EFFICIENTNET_B0,
    EFFICIENTNET_LITE0,
    get_description,
    model_names,
    register_baseline,
)

__all__ = [
    "BlockSpec",
    "COEFFICIENTS",
    "EFFICIENTNET_B0",
    "EFFICIENTNET_LITE0",
    "NetworkSpec",
    "format_block",
    "format_blocks",
    "get_description",
    "model_names",
    "parse_block",
    "parse_blocks",
    "register_baseline",
]
