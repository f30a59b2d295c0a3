"""Other baselines the compound scaler accepts: ResNets and MobileNets, written as descriptions.

Each is listed by :mod:`effnet.zoo`, so ``effnet info
resnet50`` and ``effnet scale --base mobilenet_v2 --width 2`` work like the EfficientNets.
Shapes follow torchvision (parameter counts equal torchvision's exactly at 1000 classes); ResNets
are v1.5 (stride on the 3×3 of the bottleneck) with projection shortcuts where the shape changes.
"""

from __future__ import annotations

from effnet.describe.blocks import parse_blocks
from effnet.describe.network import NetworkSpec

#: torchvision's BatchNorm defaults (PyTorch momentum 0.1 = TF decay 0.9, eps 1e-5).
_TORCH_BN = {"bn_eps": 1e-5, "bn_momentum": 0.1}


def _resnet(name: str, kind: str, repeats: tuple[int, int, int, int]) -> NetworkSpec:
    """A ResNet: 7×7/2 stem to 64, 3×3/2 max-pool, four stages, no head conv, no dropout."""
    if kind == "bn":  # bottleneck: out = 4 × mid, mid = out × 0.25
        widths, expand = (256, 512, 1024, 2048), 0.25
    else:  # basic block: two 3×3 at the stage width
        widths, expand = (64, 128, 256, 512), 1
    blocks = []
    in_ch = 64
    for index, (count, out_ch) in enumerate(zip(repeats, widths)):
        stride = 1 if index == 0 else 2
        blocks.append(f"{kind}_r{count}_k3_s{stride}{stride}_e{expand}_i{in_ch}_o{out_ch}")
        in_ch = out_ch
    return NetworkSpec(
        name=name,
        blocks=parse_blocks(blocks),
        stem_channels=64,
        stem_kernel=7,
        stem_stride=2,
        stem_pool=True,
        head_channels=0,
        activation="relu",
        padding="symmetric",
        dropout=0.0,
        drop_path_rate=0.0,
        **_TORCH_BN,
    )


RESNET18 = _resnet("resnet18", "ba", (2, 2, 2, 2))
RESNET34 = _resnet("resnet34", "ba", (3, 4, 6, 3))
RESNET50 = _resnet("resnet50", "bn", (3, 4, 6, 3))
RESNET101 = _resnet("resnet101", "bn", (3, 4, 23, 3))

#: MobileNetV1 (Howard et al. 2017): 13 depthwise-separable blocks, no residuals, no head conv.
MOBILENET_V1 = NetworkSpec(
    name="mobilenet_v1",
    blocks=parse_blocks(
        [
            "ds_r1_k3_s11_e1_i32_o64_noskip",
            "ds_r2_k3_s22_e1_i64_o128_noskip",
            "ds_r2_k3_s22_e1_i128_o256_noskip",
            "ds_r6_k3_s22_e1_i256_o512_noskip",
            "ds_r2_k3_s22_e1_i512_o1024_noskip",
        ]
    ),
    stem_channels=32,
    head_channels=0,
    activation="relu6",
    padding="symmetric",
    dropout=0.001,  # TF-slim keep_prob 0.999
    drop_path_rate=0.0,
    **_TORCH_BN,
)

#: MobileNetV2 (Sandler et al. 2018): inverted residuals without SE, ReLU6, 1280-channel head.
MOBILENET_V2 = NetworkSpec(
    name="mobilenet_v2",
    blocks=parse_blocks(
        [
            "r1_k3_s11_e1_i32_o16",
            "r2_k3_s22_e6_i16_o24",
            "r3_k3_s22_e6_i24_o32",
            "r4_k3_s22_e6_i32_o64",
            "r3_k3_s11_e6_i64_o96",
            "r3_k3_s22_e6_i96_o160",
            "r1_k3_s11_e6_i160_o320",
        ]
    ),
    stem_channels=32,
    head_channels=1280,
    activation="relu6",
    padding="symmetric",
    dropout=0.2,
    drop_path_rate=0.0,
    **_TORCH_BN,
)

#: EfficientNet-B0 at width 0.25 and depth 0.34 (one or two blocks a stage) and 32 px: a CPU-sized
#: baseline on which the whole method (``effnet pipeline``) runs in minutes. Channels and repeats are
#: what ``scale_network(B0, width=0.25, depth=0.34)`` gives.
B0_MINI = NetworkSpec(
    name="b0_mini",
    blocks=parse_blocks(
        [
            "r1_k3_s11_e1_i8_o8_se0.25",
            "r1_k3_s22_e6_i8_o8_se0.25",
            "r1_k5_s22_e6_i8_o16_se0.25",
            "r2_k3_s22_e6_i16_o24_se0.25",
            "r2_k5_s11_e6_i24_o32_se0.25",
            "r2_k5_s22_e6_i32_o48_se0.25",
            "r1_k3_s11_e6_i48_o80_se0.25",
        ]
    ),
    stem_channels=8,
    head_channels=320,
    resolution=32,
    width=0.25,
    depth=0.34,
    resolution_multiplier=32 / 224,
)

BASELINE_SPECS: dict[str, NetworkSpec] = {
    spec.name: spec for spec in (RESNET18, RESNET34, RESNET50, RESNET101, MOBILENET_V1, MOBILENET_V2, B0_MINI)
}
