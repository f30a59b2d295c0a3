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


def test_channel_breaks_name_the_stage():
    with pytest.raises(
        UserError, match=r"stage 1 \(r1_k3_s11_e1_i16_o16\) takes 16 input channels but the stem gives 32"
    ):
        NetworkSpec(name="x", blocks="r1_k3_s11_e1_i16_o16")
    blocks = "r1_k3_s11_e1_i32_o16,r1_k3_s22_e6_i16_o24,r1_k3_s22_e6_i40_o80"
    with pytest.raises(UserError, match=r"stage 3 .* takes 40 input channels but stage 2 gives 24"):
        NetworkSpec(name="x", blocks=blocks)


@pytest.mark.parametrize(
    "data, needle",
    [
        ({"name": "x", "blocks": 5}, "blocks must be block strings"),
        ({"name": "x", "blocks": [1, 2]}, "blocks must be block strings"),
        ({"name": 5, "blocks": ["r1_k3_s11_e1_i32_o16"]}, "name must be a non-empty string"),
        ({"name": "x", "blocks": ["r1_k3_s11_e1_i32_o16"], "resolution": 40000}, "resolution must be"),
        ({"name": "x", "blocks": ["r1_k3_s11_e1_i32_o16"], "stem_pool": "yes"}, "stem_pool must be true or false"),
        ({"name": "x", "blocks": ["r1_k3_s11_e1_i32_o16"], "dropout": "0.2"}, "dropout must be within"),
        ({"name": "x", "blocks": ["r1001_k3_s11_e1_i32_o16"]}, "repeats"),
        ({"name": "x", "blocks": ["r1_k33_s11_e1_i32_o16"]}, "kernel"),
        ({"name": "x", "blocks": ["r1_k3_s11_e100_i32_o16"]}, "expand ratio"),
        ({"name": "x", "blocks": ["r1_k3_s11_e1_i32_o100000"]}, "channels"),
        ({"name": "x", "blocks": ["r1_k3_s11_e1" + "0" * 400 + "_i32_o16"]}, "expand ratio"),
        ({"name": "x", "blocks": ["r1000_k3_s11_e1_i32_o32"] * 3}, "at most"),
    ],
)
def test_bad_descriptions_are_user_errors(data, needle):
    with pytest.raises(UserError, match=needle):
        NetworkSpec.from_dict(data)


def test_description_files_that_are_not_descriptions(tmp_path):
    path = tmp_path / "d.json"
    path.write_bytes(b'{"name": "\xff\xfe"}')
    with pytest.raises(UserError, match="not UTF-8"):
        NetworkSpec.load(path)
    path.write_text("[" * 100_000)
    with pytest.raises(UserError, match="not valid JSON"):
        NetworkSpec.load(path)


def test_every_block_kind_has_a_module():
    from effnet.describe.blocks import BLOCK_KINDS
    from effnet.models.blocks import BLOCKS, register_block

    assert set(BLOCKS) == set(BLOCK_KINDS)
    with pytest.raises(ValueError, match="not in the notation"):
        register_block("zz")


def test_description_from_blocks_is_the_one_place():
    from effnet.zoo import description_from_blocks

    spec = description_from_blocks("r1_k3_s22_e1_i8_o16_se0.25", resolution=64)
    assert spec.stem_channels == 8 and spec.resolution == 64 and spec.head_channels == 1280
