"""Crafted weight files: a header that lies is refused in one line before anything is allocated."""

import json

import pytest
import torch

import effnet
from helpers import crafted_weights


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
    path = crafted_weights(good_file, tmp_path / "crafted.safetensors", **change)
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
    path = crafted_weights(
        good_file, tmp_path / "crafted.safetensors", description=_description(good_file, **{field: value})
    )
    code, out, err = cli("predict", str(good_file), "--weights", str(path))
    assert code == 2 and needle in err and err.count("\n") == 1 and "Traceback" not in err, err


def test_a_good_file_still_loads(good_file):
    model, info = effnet.load_model(good_file)
    assert info.class_names == ["a", "b", "c"] and isinstance(model.classifier, torch.nn.Linear)
