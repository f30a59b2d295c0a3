import math

import pytest

from effnet import UserError, compound_coefficients, get_description, profile, scale_compound, scale_network
from effnet.describe.family import COEFFICIENTS, EFFICIENTNET_B0, EFFICIENTNET_LITE0
from effnet.scale import round_filters, round_repeats

PARAMS = {
    "b0": 5_288_548,
    "b1": 7_794_184,
    "b2": 9_109_994,
    "b3": 12_233_232,
    "b4": 19_341_616,
    "b5": 30_389_784,
    "b6": 43_040_704,
    "b7": 66_347_960,
    "b8": 87_413_142,
    "l2": 480_309_308,
    "lite0": 4_652_008,
    "lite1": 5_416_680,
    "lite2": 6_092_072,
    "lite3": 8_197_096,
    "lite4": 13_006_568,
}


@pytest.mark.parametrize("name, params", PARAMS.items())
def test_parameter_counts_exact(name, params):
    assert profile(name).params == params


def test_multiply_adds_match_reference():
    # The reference implementations' counts (timm / official), at native resolution.
    assert profile("b0").macs == pytest.approx(385_814_752, rel=0.01)
    assert profile("b7").macs == pytest.approx(37_745_884_192, rel=0.01)
    # Paper Table 2 rounds: B1 0.70B, B3 1.8B, B5 9.9B (their count) -- within a few percent.
    assert profile("b1").macs == pytest.approx(0.70e9, rel=0.03)
    assert profile("b3").macs == pytest.approx(1.8e9, rel=0.03)


def test_round_filters_official_rule():
    assert round_filters(32, 1.1) == 32  # 35.2 -> 32 (within 10%)
    assert round_filters(320, 1.1) == 352
    assert round_filters(40, 1.1) == 48  # 44 -> 48 (int(48)//8*8)
    assert round_filters(16, 1.4) == 24  # 22.4 -> 24
    assert round_filters(24, 1.4) == 32  # 33.6 -> 32
    assert round_filters(112, 2.0) == 224
    for ch in (16, 24, 40, 80, 112, 192, 320, 1280):
        for w in (0.5, 0.75, 1.1, 1.3, 1.7, 4.3):
            new = round_filters(ch, w)
            assert new % 8 == 0 and new >= 0.9 * ch * w


def test_round_repeats_is_ceil():
    assert [round_repeats(r, 1.2) for r in (1, 2, 3, 4)] == [2, 3, 4, 5]
    assert round_repeats(3, 3.1) == 10


def test_compound_coefficients():
    c = compound_coefficients(1)
    assert (c.depth, c.width, c.resolution) == pytest.approx((1.2, 1.1, 1.15))
    assert c.macs_factor == pytest.approx(1.2 * 1.1**2 * 1.15**2)
    c = compound_coefficients(2.5, 1.3, 1.05, 1.1)
    assert c.depth == pytest.approx(1.3**2.5) and c.resolution == pytest.approx(1.1**2.5)
    assert compound_coefficients(0).depth == 1.0
    for bad in (-17, math.nan, math.inf):
        with pytest.raises(UserError, match="phi"):
            compound_coefficients(bad)
    with pytest.raises(UserError, match="alpha"):
        compound_coefficients(1, alpha=float("nan"))


def test_scaling_is_pure_and_matches_table():
    before = EFFICIENTNET_B0.to_json()
    b4 = scale_network(EFFICIENTNET_B0, depth=1.8, width=1.4, image_size=380, dropout=0.4)
    assert EFFICIENTNET_B0.to_json() == before
    assert b4.blocks == get_description("b4").blocks
    assert b4.stem_channels == 48 and b4.head_channels == 1792
    assert [b.repeats for b in b4.blocks] == [2, 4, 4, 6, 6, 8, 2]


def test_lite_keeps_stem_head_and_end_stages():
    lite4 = get_description("lite4")
    assert lite4.stem_channels == 32 and lite4.head_channels == 1280
    assert lite4.blocks[0].repeats == 1 and lite4.blocks[-1].repeats == 1
    assert lite4.blocks[0].in_channels == 32
    assert [b.repeats for b in lite4.blocks] == [1, 4, 4, 6, 6, 8, 1]
    assert lite4.activation == "relu6" and all(b.se_ratio == 0 for b in lite4.blocks)
    assert COEFFICIENTS["efficientnet_lite4"].resolution == 300 == lite4.resolution
    assert scale_network(EFFICIENTNET_LITE0, width=2.0).stem_channels == 32


def test_single_dimension_uses_same_function():
    width_only = scale_network(EFFICIENTNET_B0, width=2.0)
    assert [b.repeats for b in width_only.blocks] == [b.repeats for b in EFFICIENTNET_B0.blocks]
    assert width_only.resolution == 224 and width_only.blocks[-1].out_channels == 640
    res_only = scale_network(EFFICIENTNET_B0, resolution=2.0)
    assert res_only.blocks == EFFICIENTNET_B0.blocks and res_only.resolution == 448
    assert profile(res_only).macs == pytest.approx(4 * profile(EFFICIENTNET_B0).macs, rel=0.01)


def test_fractional_phi_grows_monotonically():
    macs = [profile(scale_compound(EFFICIENTNET_B0, phi)).macs for phi in (0, 0.5, 1, 1.5, 2, 3)]
    assert macs == sorted(macs)
    assert macs[0] == 385_814_752
    spec = scale_compound(EFFICIENTNET_B0, 0.5)
    assert spec.depth == pytest.approx(1.2**0.5) and spec.width == pytest.approx(1.1**0.5)


def test_phi_one_cost():
    """φ=1: ideal growth α·β²·γ² = 1.92; the official rounding (ceil of repeats in 1-block stages,
    channels up to multiples of 8) makes the real model 2.23× B0."""
    spec = scale_compound(EFFICIENTNET_B0, 1)
    ratio = profile(spec).macs / profile(EFFICIENTNET_B0).macs
    assert spec.resolution == 256
    assert 1.9 <= ratio <= 2.3
    assert ratio == pytest.approx(2.2287, abs=1e-3)
