"""Explaining a model as a scaling of its base: multipliers, implied φ, rounding; and φ < 0."""

import math

import pytest

from effnet import UserError, compound_coefficients, create_model, get_description, profile, scale_compound
from effnet.describe.family import EFFICIENTNET_B0, EFFICIENTNET_LITE0, EFFICIENTNETV2_BASE, EFFICIENTNETV2_S
from effnet.scale import scale_network
from effnet.scale.explain import explain_scaling
from effnet.zoo import description_from_blocks

#: The published table (official code): width, depth, resolution against B0 (224 px).
PUBLISHED_V1 = {
    "b1": (1.0, 1.1, 240),
    "b2": (1.1, 1.2, 260),
    "b3": (1.2, 1.4, 300),
    "b4": (1.4, 1.8, 380),
    "b5": (1.6, 2.2, 456),
    "b6": (1.8, 2.6, 528),
    "b7": (2.0, 3.1, 600),
}
#: EfficientNetV2-B1…B3 against V2's base (224 px), from effnetv2_configs.py.
PUBLISHED_V2 = {
    "efficientnetv2_b1": (1.0, 1.1, 240),
    "efficientnetv2_b2": (1.1, 1.2, 260),
    "efficientnetv2_b3": (1.2, 1.4, 300),
}


def _phi(multiplier: float, base: float) -> float:
    return math.log(multiplier) / math.log(base)


@pytest.mark.parametrize("name, row", PUBLISHED_V1.items())
def test_v1_table_against_b0(name, row):
    width, depth, pixels = row
    e = explain_scaling(get_description(name), EFFICIENTNET_B0, official=True)
    assert (e.width, e.depth, e.image_size, e.source) == (
        pytest.approx(width),
        pytest.approx(depth),
        pixels,
        "recorded",
    )
    assert e.phi["depth"] == pytest.approx(_phi(depth, 1.2))
    assert e.phi["width"] == pytest.approx(_phi(width, 1.1))
    assert e.phi["resolution"] == pytest.approx(_phi(pixels / 224, 1.15))
    assert e.ideal_macs_ratio == pytest.approx(depth * width**2 * (pixels / 224) ** 2)
    assert not e.one_phi and "hand-written" in e.notes()[0] and "not one φ" in e.notes()[1]


def test_b4_numbers():
    e = explain_scaling(get_description("b4"), EFFICIENTNET_B0, official=True)
    assert round(e.phi["depth"], 2) == 3.22 and round(e.phi["width"], 2) == 3.53
    assert round(e.phi["resolution"], 2) == 3.78
    assert e.ideal_macs_ratio == pytest.approx(10.153, abs=1e-3)
    rounding = {(r.part, r.quantity): r for r in e.roundings}
    assert (rounding["stage 1", "channels"].asked, rounding["stage 1", "channels"].got) == (pytest.approx(22.4), 24)
    assert (rounding["stage 2", "channels"].asked, rounding["stage 2", "channels"].got) == (pytest.approx(33.6), 32)
    assert (rounding["stage 6", "repeats"].asked, rounding["stage 6", "repeats"].got) == (pytest.approx(7.2), 8)
    assert rounding["stage 6", "repeats"].rule == "ceil" and not rounding["stage 7", "channels"].moved
    assert (rounding["head", "channels"].got, rounding["stem", "channels"].got) == (1792, 48)
    assert sum(r.moved for r in e.roundings) == 12


@pytest.mark.parametrize("name, row", PUBLISHED_V2.items())
def test_v2_against_its_base(name, row):
    width, depth, pixels = row
    e = explain_scaling(get_description(name), EFFICIENTNETV2_BASE, official=True)
    assert (e.width, e.depth, e.image_size) == (pytest.approx(width), pytest.approx(depth), pixels)
    assert e.phi["depth"] == pytest.approx(_phi(depth, 1.2)) and e.phi["resolution"] == pytest.approx(
        _phi(pixels / 224, 1.15)
    )


def test_v2_s_is_its_own_base():
    e = explain_scaling(get_description("efficientnetv2_s"), EFFICIENTNETV2_S)
    assert e.phi == {"depth": 0.0, "width": 0.0, "resolution": 0.0} and "itself" in e.notes()[0]


def test_lite_keeps_first_and_last_repeats():
    e = explain_scaling(get_description("lite4"), EFFICIENTNET_LITE0, official=True)
    assert (e.width, e.depth, e.image_size) == (pytest.approx(1.4), pytest.approx(1.8), 300)
    repeats = [r for r in e.roundings if r.quantity == "repeats"]
    assert repeats[0].rule == repeats[-1].rule == "fixed (Lite)" and repeats[0].got == 1
    assert not any(r.part in ("stem", "head") for r in e.roundings)


def test_multipliers_read_off_block_strings():
    b4 = get_description("b4")
    spec = description_from_blocks(b4.block_strings, resolution=380)
    e = explain_scaling(spec, EFFICIENTNET_B0)
    assert (e.source, e.width, e.depth, e.image_size) == ("structure", 1.4, 1.8, 380)
    head = next(r for r in e.roundings if r.part == "head")
    assert head.got == 1280 and head.rule.startswith("set by the description")


def test_ten_percent_guard_named():
    spec = scale_network(EFFICIENTNET_B0, width=0.25)
    stage3 = next(r for r in explain_scaling(spec, EFFICIENTNET_B0).roundings if r.part == "stage 3")
    assert (stage3.asked, stage3.got, stage3.rule) == (10.0, 16, "10% guard: one step of 8 up")


def test_compound_scale_is_one_phi():
    e = explain_scaling(scale_compound(EFFICIENTNET_B0, 2.0), EFFICIENTNET_B0)
    assert e.one_phi and e.phi["depth"] == pytest.approx(2.0) and e.phi["width"] == pytest.approx(2.0)
    assert e.phi["resolution"] == pytest.approx(_phi(296 / 224, 1.15)) and "one φ" in e.notes()[0]


def test_other_layout_refused():
    with pytest.raises(UserError) as err:
        explain_scaling(get_description("resnet50"), EFFICIENTNET_B0)
    assert err.value.field == "base"


def test_negative_phi_scales_below_b0_builds_and_profiles():
    c = compound_coefficients(-1)
    assert (c.depth, c.width, c.resolution) == (pytest.approx(1 / 1.2), pytest.approx(1 / 1.1), pytest.approx(1 / 1.15))
    spec = scale_compound(EFFICIENTNET_B0, -1)
    assert spec.resolution == 196 and [b.repeats for b in spec.blocks] == [1, 2, 2, 3, 3, 4, 1]
    counts = profile(spec)
    assert counts.params == 4_548_152 and counts.macs < profile(EFFICIENTNET_B0).macs
    assert sum(p.numel() for p in create_model(spec).parameters()) == counts.params
    e = explain_scaling(spec, EFFICIENTNET_B0)
    assert e.phi["depth"] == pytest.approx(-1.0) and e.phi["width"] == pytest.approx(-1.0) and e.one_phi


def test_phi_bounds():
    with pytest.raises(UserError) as err:
        compound_coefficients(-16.5)
    assert err.value.field == "phi"
    assert compound_coefficients(-16).width == pytest.approx(1.1**-16)
