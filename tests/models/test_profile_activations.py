"""Activations (Dollár et al. 2021): elements written by every convolution and linear layer for one
image, counted by hand here; every layer's output stays the memory estimate's measure."""

import json

import pytest

from effnet.models.profile import profile
from effnet.zoo import description_from_blocks

#: At 32 px with 10 classes, around every block below: the stem (3×3 stride 2, 16 channels at 16×16),
#: the head (1×1 to 1280 channels at 8×8) and the classifier (10 outputs).
STEM = 16 * 16 * 16
HEAD = 1280 * 8 * 8
CLASSIFIER = 10


def test_a_two_block_network_matches_the_hand_count():
    spec = description_from_blocks("r1_k3_s11_e1_i16_o8_se0.25,r1_k3_s22_e4_i8_o16_se0.25", resolution=32)
    block1 = (
        16 * 16 * 16  # depthwise 3×3 (expansion 1: no expand conv), 16 channels at 16×16
        + 4  # SE reduce 1×1: int(16 · 0.25) = 4 channels at 1×1
        + 16  # SE expand 1×1: 16 channels at 1×1
        + 8 * 16 * 16  # project 1×1 to 8 channels at 16×16
    )
    block2 = (
        32 * 16 * 16  # expand 1×1 to 8 · 4 = 32 channels at 16×16
        + 32 * 8 * 8  # depthwise 3×3 stride 2: 32 channels at 8×8
        + 2  # SE reduce: int(8 · 0.25) = 2 (from the block's input channels)
        + 32  # SE expand
        + 16 * 8 * 8  # project 1×1 to 16 channels at 8×8
    )
    counts = profile(spec, num_classes=10)
    assert counts.activations == STEM + block1 + block2 + HEAD + CLASSIFIER == 103_488
    # Every layer's output (BatchNorm, activation functions, pooling too) is larger, and is what training keeps.
    assert counts.layer_outputs == 316_998 and counts.peak_layer_output == HEAD
    assert counts.memory_bytes(1, training=True) == 4 * (4 * counts.params + counts.layer_outputs)


#: One stride-2 block of each kind, 16 → 24 channels, SE 0.25 (4 channels, from the block's input),
#: input 16×16, output 8×8.
BLOCKS = {
    "mb": (
        "r1_k3_s22_e2_i16_o24_se0.25",
        32 * 16 * 16 + 32 * 8 * 8 + (4 + 32) + 24 * 8 * 8,  # expand 1×1, depthwise, SE, project
    ),
    "fu": (
        "fu_r1_k3_s22_e2_i16_o24_se0.25",
        32 * 8 * 8 + (4 + 32) + 24 * 8 * 8,  # expand 3×3 stride 2, SE, project 1×1
    ),
    "fu e1": (
        "fu_r1_k3_s22_e1_i16_o24_se0.25",
        (4 + 16) + 24 * 8 * 8,  # SE on the input, then one 3×3 stride-2 convolution
    ),
    "ds": (
        "ds_r1_k3_s22_e1_i16_o24_se0.25",
        16 * 8 * 8 + (4 + 16) + 24 * 8 * 8,  # depthwise, SE, pointwise
    ),
    "cn": (
        "cn_r1_k3_s22_e1_i16_o24_se0.25",
        24 * 8 * 8 + (4 + 24),  # 3×3 convolution, SE
    ),
    "bn": (
        "bn_r1_k3_s22_e0.5_i16_o24_se0.25",
        # reduce 1×1 to 12 at 16×16, 3×3 stride 2, SE, expand 1×1, projection shortcut 1×1 stride 2
        12 * 16 * 16 + 12 * 8 * 8 + (4 + 12) + 24 * 8 * 8 + 24 * 8 * 8,
    ),
    "ba": (
        "ba_r1_k3_s22_e1_i16_o24_se0.25",
        24 * 8 * 8 + 24 * 8 * 8 + (4 + 24) + 24 * 8 * 8,  # conv1 stride 2, conv2, SE, projection shortcut
    ),
}


@pytest.mark.parametrize("kind", list(BLOCKS))
def test_every_block_kind_counts_its_convolutions(kind):
    block, by_hand = BLOCKS[kind]
    counts = profile(description_from_blocks(block, resolution=32), num_classes=10)
    assert counts.activations == STEM + by_hand + HEAD + CLASSIFIER
    assert counts.activations < counts.layer_outputs


def test_published_models_match_the_paper_and_grow_with_phi():
    # Dollár et al. 2021, table of EfficientNet: B0 has 6.7M activations (0.39B multiply-adds).
    assert profile("efficientnet_b0").activations == 6_748_036
    b = [profile(f"efficientnet_b{i}").activations for i in range(4)]
    assert b == sorted(b) and b[3] > 2 * b[0]


def test_models_and_info_show_activations(cli):
    code, out, err = cli("info", "efficientnet_b0", "--json")
    assert code == 0, err
    assert json.loads(out)["activations"] == 6_748_036
    code, out, err = cli("info", "efficientnet_b0")
    assert code == 0 and "activations          : 6,748,036" in out, err
    code, out, err = cli("models")  # the table (its rows are the --json records, as info's)
    assert code == 0 and "activations" in out.splitlines()[0], err
    b0 = next(line for line in out.splitlines() if line.startswith("efficientnet_b0 "))
    assert "6,748,036" in b0
