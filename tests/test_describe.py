import json

import pytest

from effnet import NetworkSpec, UserError, get_description, parse_blocks
from effnet.describe.blocks import format_block, parse_block
from effnet.describe.family import B0_BLOCKS, EFFICIENTNET_B0


@pytest.mark.parametrize(
    "text",
    list(B0_BLOCKS) + ["r1_k3_s11_e1_i32_o16_se0.25_noskip", "ds_r2_k5_s22_e1_i8_o8", "bn_r3_k3_s11_e0.25_i64_o256"],
)
def test_block_string_round_trip(text):
    assert format_block(parse_block(text)) == text


def test_block_fields_decoded():
    block = parse_block("r2_k5_s22_e6_i24_o40_se0.25")
    assert (block.repeats, block.kernel, block.stride, block.expand_ratio) == (2, 5, 2, 6.0)
    assert (block.in_channels, block.out_channels, block.se_ratio, block.skip, block.kind) == (24, 40, 0.25, True, "mb")
    assert parse_block("r1_k3_s1_e1_i32_o16_noskip").skip is False


@pytest.mark.parametrize(
    "text, field",
    [
        ("r1_k3_s11_e1_i32", "'o'"),
        ("r1_k4_s11_e1_i32_o16", "kernel"),
        ("r1_k3_s33_e1_i32_o16", "stride"),
        ("r1_k3_s12_e1_i32_o16", "square"),
        ("r0_k3_s11_e1_i32_o16", "repeats"),
        ("r1_k3_s11_e1_i32_o16_se2", "se ratio"),
        ("r1_k3_s11_e1_i32_oX", "'oX'"),
        ("r1_k3_s11_ex_i32_o16", "'ex'"),
        ("r1_k3_s11_e1.2.3_i32_o16", "'e'"),
        ("zz_r1_k3_s11_e1_i32_o16", "'zz'"),
    ],
)
def test_malformed_block_strings_name_the_field(text, field):
    with pytest.raises(UserError, match=field):
        parse_block(text)


def test_description_json_round_trip(tmp_path):
    spec = get_description("efficientnet_b3")
    again = NetworkSpec.from_json(spec.to_json())
    assert again == spec
    path = tmp_path / "b3.json"
    spec.save(path)
    assert NetworkSpec.load(path) == spec
    data = json.loads(spec.to_json())
    assert data["blocks"][0] == "r2_k3_s11_e1_i40_o24_se0.25"
    assert data["resolution"] == 300 and data["dropout"] == 0.3


def test_description_rejects_unknown_fields_and_values():
    with pytest.raises(UserError, match="colour"):
        NetworkSpec.from_dict({"name": "x", "blocks": list(B0_BLOCKS), "colour": 3})
    with pytest.raises(UserError, match="activation"):
        EFFICIENTNET_B0.with_(activation="tanhh")
    with pytest.raises(UserError, match="padding"):
        EFFICIENTNET_B0.with_(padding="valid")
    with pytest.raises(UserError, match="JSON"):
        NetworkSpec.from_json("{not json")


def test_b0_written_once_in_block_notation():
    assert EFFICIENTNET_B0.block_strings == list(B0_BLOCKS)
    assert EFFICIENTNET_B0.num_blocks == 16
    assert parse_blocks(",".join(B0_BLOCKS)) == EFFICIENTNET_B0.blocks


def test_model_name_forms():
    assert get_description("b3") == get_description("efficientnet_b3") == get_description("tf_efficientnet_b3")
    with pytest.raises(UserError, match="unknown model"):
        get_description("efficientnet_b99")
