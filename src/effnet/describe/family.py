"""The published EfficientNets as data: the V1 B0 and Lite0 baselines and the EfficientNetV2
baselines, each written once as the official block strings, and the official coefficient table.
Looking a model up by name (which applies the scaling) is :mod:`effnet.zoo`."""

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
    #: The training resolution where the official code trains smaller than it evaluates (V2).
    train_resolution: int | None = None


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


def _v2(name: str, blocks: tuple[str, ...], resolution: int, train_resolution: int, dropout: float) -> NetworkSpec:
    """An EfficientNetV2 baseline (``effnetv2_configs.py``): the stem feeds the first stage, head 1280,
    BatchNorm eps 1e-3 and TF momentum 0.9, survival 0.8, rounding without V1's 10% guard, scaled
    resolutions capped at 480 px."""
    parsed = parse_blocks(blocks)
    return NetworkSpec(
        name=name,
        blocks=parsed,
        stem_channels=parsed[0].in_channels,
        head_channels=1280,
        bn_eps=1e-3,
        bn_momentum=0.1,
        dropout=dropout,
        drop_path_rate=0.2,
        resolution=resolution,
        train_resolution=train_resolution,
        channel_guard=False,
        max_resolution=480,
    )


#: EfficientNetV2's searched baseline (V2-B0 … B3 are it at other widths and depths).
V2_BASE_BLOCKS = (
    "r1_k3_s1_e1_i32_o16_c1",
    "r2_k3_s2_e4_i16_o32_c1",
    "r2_k3_s2_e4_i32_o48_c1",
    "r3_k3_s2_e4_i48_o96_se0.25",
    "r5_k3_s1_e6_i96_o112_se0.25",
    "r8_k3_s2_e6_i112_o192_se0.25",
)
V2_S_BLOCKS = (
    "r2_k3_s1_e1_i24_o24_c1",
    "r4_k3_s2_e4_i24_o48_c1",
    "r4_k3_s2_e4_i48_o64_c1",
    "r6_k3_s2_e4_i64_o128_se0.25",
    "r9_k3_s1_e6_i128_o160_se0.25",
    "r15_k3_s2_e6_i160_o256_se0.25",
)
V2_M_BLOCKS = (
    "r3_k3_s1_e1_i24_o24_c1",
    "r5_k3_s2_e4_i24_o48_c1",
    "r5_k3_s2_e4_i48_o80_c1",
    "r7_k3_s2_e4_i80_o160_se0.25",
    "r14_k3_s1_e6_i160_o176_se0.25",
    "r18_k3_s2_e6_i176_o304_se0.25",
    "r5_k3_s1_e6_i304_o512_se0.25",
)
V2_L_BLOCKS = (
    "r4_k3_s1_e1_i32_o32_c1",
    "r7_k3_s2_e4_i32_o64_c1",
    "r7_k3_s2_e4_i64_o96_c1",
    "r10_k3_s2_e4_i96_o192_se0.25",
    "r19_k3_s1_e6_i192_o224_se0.25",
    "r25_k3_s2_e6_i224_o384_se0.25",
    "r7_k3_s1_e6_i384_o640_se0.25",
)
V2_XL_BLOCKS = (
    "r4_k3_s1_e1_i32_o32_c1",
    "r8_k3_s2_e4_i32_o64_c1",
    "r8_k3_s2_e4_i64_o96_c1",
    "r16_k3_s2_e4_i96_o192_se0.25",
    "r24_k3_s1_e6_i192_o256_se0.25",
    "r32_k3_s2_e6_i256_o512_se0.25",
    "r8_k3_s1_e6_i512_o640_se0.25",
)

EFFICIENTNETV2_BASE = _v2("efficientnetv2_base", V2_BASE_BLOCKS, 224, 192, 0.2)
EFFICIENTNETV2_S = _v2("efficientnetv2_s", V2_S_BLOCKS, 384, 300, 0.2)
EFFICIENTNETV2_M = _v2("efficientnetv2_m", V2_M_BLOCKS, 480, 384, 0.3)
EFFICIENTNETV2_L = _v2("efficientnetv2_l", V2_L_BLOCKS, 480, 384, 0.4)
EFFICIENTNETV2_XL = _v2("efficientnetv2_xl", V2_XL_BLOCKS, 512, 384, 0.4)

#: EfficientNetV2 (official ``effnetv2_configs.py``): width, depth, eval and train resolution, dropout.
COEFFICIENTS.update(
    {
        "efficientnetv2_b0": Coefficient("v2_base", 1.0, 1.0, 224, 0.2, 192),
        "efficientnetv2_b1": Coefficient("v2_base", 1.0, 1.1, 240, 0.2, 192),
        "efficientnetv2_b2": Coefficient("v2_base", 1.1, 1.2, 260, 0.3, 208),
        "efficientnetv2_b3": Coefficient("v2_base", 1.2, 1.4, 300, 0.3, 240),
        "efficientnetv2_s": Coefficient("v2_s", 1.0, 1.0, 384, 0.2, 300),
        "efficientnetv2_m": Coefficient("v2_m", 1.0, 1.0, 480, 0.3, 384),
        "efficientnetv2_l": Coefficient("v2_l", 1.0, 1.0, 480, 0.4, 384),
        "efficientnetv2_xl": Coefficient("v2_xl", 1.0, 1.0, 512, 0.4, 384),
    }
)

#: The baselines the coefficient table scales, by the key its rows name.
FAMILY_BASES: dict[str, NetworkSpec] = {
    "b0": EFFICIENTNET_B0,
    "lite0": EFFICIENTNET_LITE0,
    "v2_base": EFFICIENTNETV2_BASE,
    "v2_s": EFFICIENTNETV2_S,
    "v2_m": EFFICIENTNETV2_M,
    "v2_l": EFFICIENTNETV2_L,
    "v2_xl": EFFICIENTNETV2_XL,
}
