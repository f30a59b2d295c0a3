"""The published EfficientNets as data: the B0 and Lite0 baselines, written once, and the official
coefficient table. Looking a model up by name (which applies the scaling) is :mod:`effnet.zoo`."""

from __future__ import annotations

from dataclasses import dataclass

from effnet.describe.blocks import parse_blocks
from effnet.describe.network import NetworkSpec

#: EfficientNet-B0, exactly as in the official code.
B0_BLOCKS = (
    "r1_k3_s11_e1_i32_o16_se0.25",
    "r2_k3_s22_e6_i16_o24_se0.25",
    "r2_k5_s22_e6_i24_o40_se0.25",
    "r3_k3_s22_e6_i40_o80_se0.25",
    "r3_k5_s11_e6_i80_o112_se0.25",
    "r4_k5_s22_e6_i112_o192_se0.25",
    "r1_k3_s11_e6_i192_o320_se0.25",
)

EFFICIENTNET_B0 = NetworkSpec(name="efficientnet_b0", blocks=parse_blocks(B0_BLOCKS))

#: EfficientNet-Lite0: B0 without squeeze-excitation, ReLU6, stem/head and end stages fixed, trained
#: on 0–255 pixels with mean 127 and std 128 (``lite``).
EFFICIENTNET_LITE0 = NetworkSpec(
    name="efficientnet_lite0",
    blocks=tuple(block.with_(se_ratio=0.0) for block in EFFICIENTNET_B0.blocks),
    activation="relu6",
    fix_stem_head=True,
    fix_first_last_repeats=True,
    lite=True,
)


@dataclass(frozen=True)
class Coefficient:
    """One row of the official table: multipliers relative to the family's baseline."""

    base: str
    width: float
    depth: float
    resolution: int
    dropout: float


#: The official coefficient table (width, depth, resolution, dropout).
COEFFICIENTS: dict[str, Coefficient] = {
    "efficientnet_b0": Coefficient("b0", 1.0, 1.0, 224, 0.2),
    "efficientnet_b1": Coefficient("b0", 1.0, 1.1, 240, 0.2),
    "efficientnet_b2": Coefficient("b0", 1.1, 1.2, 260, 0.3),
    "efficientnet_b3": Coefficient("b0", 1.2, 1.4, 300, 0.3),
    "efficientnet_b4": Coefficient("b0", 1.4, 1.8, 380, 0.4),
    "efficientnet_b5": Coefficient("b0", 1.6, 2.2, 456, 0.4),
    "efficientnet_b6": Coefficient("b0", 1.8, 2.6, 528, 0.5),
    "efficientnet_b7": Coefficient("b0", 2.0, 3.1, 600, 0.5),
    "efficientnet_b8": Coefficient("b0", 2.2, 3.6, 672, 0.5),
    "efficientnet_l2": Coefficient("b0", 4.3, 5.3, 800, 0.5),
    "efficientnet_lite0": Coefficient("lite0", 1.0, 1.0, 224, 0.2),
    "efficientnet_lite1": Coefficient("lite0", 1.0, 1.1, 240, 0.2),
    "efficientnet_lite2": Coefficient("lite0", 1.1, 1.2, 260, 0.3),
    "efficientnet_lite3": Coefficient("lite0", 1.2, 1.4, 280, 0.3),
    "efficientnet_lite4": Coefficient("lite0", 1.4, 1.8, 300, 0.3),
}

#: The baselines the coefficient table scales, by the key its rows name.
FAMILY_BASES: dict[str, NetworkSpec] = {"b0": EFFICIENTNET_B0, "lite0": EFFICIENTNET_LITE0}
