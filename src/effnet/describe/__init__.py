"""Describe: networks as data (block strings, dataclasses, the published family and other baselines)."""

from effnet.describe.blocks import BlockSpec, format_block, format_blocks, parse_block, parse_blocks
from effnet.describe.family import COEFFICIENTS, EFFICIENTNET_B0, EFFICIENTNET_LITE0
from effnet.describe.network import NetworkSpec

__all__ = [
    "BlockSpec",
    "COEFFICIENTS",
    "EFFICIENTNET_B0",
    "EFFICIENTNET_LITE0",
    "NetworkSpec",
    "format_block",
    "format_blocks",
    "parse_block",
    "parse_blocks",
]
