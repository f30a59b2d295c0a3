"""Crafted weight files: a header that lies is refused in one line before anything is allocated."""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

import effnet

TINY = "r1_k3_s11_e1_i16_o8_se0.25,r1_k3_s22_e4_i8_o16_se0.25"


@pytest.fixture(scope="module")
def good_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("w") / "tiny.safetensors"
    spec = effnet.NetworkSpec(name="tiny", blocks=effnet.parse_blocks(TINY), stem_channels=16, head_channels=64)
    effnet.save_weights(effnet.create_model(spec, num_classes=3), path, class_names=["a", "b", "c"])
    return path


def _crafted(good, tmp_path, **changes):
    from safetensors import safe_open

    with safe_open(str(good), framework="pt") as f:
        metadata = dict(f.metadata())
    metadata.update(changes)
    path = tmp_path / "crafted.safetensors"
    save_file(load_file(good), path, metadata=metadata)
    return path


def _description(good, **changes):
    from safetensors import safe_open

    with safe_open(str(good), framework="pt") as f:
        data = json.loads(f.metadata()["description"])
    data.update(changes)
    return json.dumps(data)


@pytest.mark.parametrize(
    "change, needle",
    [
        ({"class_names": "5"}, "class_names is not a list"),
        ({"class_names": '["a", 5, "c"]'}, "class_names is not a list"),
        ({"num_classes": "1000000000"}, "damaged effnet header"),
        ({"in_chans": "100000"}, "damaged effnet header"),
        ({"num_classes": "x"}, "damaged effnet header"),
        ({"preprocessing": json.dumps({"resolution": 40000, "crop_pct": 1.0})}, "preprocessing resolution"),
        ({"description": "{"}, "not valid JSON"),
    ],
)
def test_lying_headers_are_one_line(cli, good_file, tmp_path, change, needle):
    path = _crafted(good_file, tmp_path, **change)
    code, out, err = cli("predict", str(good_file), "--weights", str(path))
    assert code == 2 and needle in err and err.count("\n") == 1 and "Traceback" not in err, err


@pytest.mark.parametrize(
    "field, value, needle",
    [
        ("blocks", ["r1000000000_k3_s11_e1_i16_o8_se0.25"], "repeats"),
        ("resolution", 40000, "resolution"),
        ("blocks", 5, "blocks must be block strings"),
        ("head_channels", 10**9, "head_channels"),
    ],
)
def test_lying_descriptions_in_headers_are_one_line(cli, good_file, tmp_path, field, value, needle):
    path = _crafted(good_file, tmp_path, description=_description(good_file, **{field: value}))
    code, out, err = cli("predict", str(good_file), "--weights", str(path))
    assert code == 2 and needle in err and err.count("\n") == 1 and "Traceback" not in err, err


def test_a_good_file_still_loads(good_file):
    model, info = effnet.load_model(good_file)
    assert info.class_names == ["a", "b", "c"] and isinstance(model.classifier, torch.nn.Linear)
