"""effnet's native weight files: self-describing safetensors, safe loading, clear errors."""

import json
import os
import pickle

import pytest
import torch
from safetensors import safe_open

import effnet
from effnet.errors import UserError
from effnet.factory import load_model, load_weights
from effnet.weights import (
    LITE_MEAN,
    LITE_STD,
    Preprocessing,
    default_preprocessing,
    imagenet_class_names,
    save_weights,
)

TINY = "r1_k3_s11_e1_i16_o8_se0.25,r1_k3_s22_e4_i8_o16_se0.25"


def tiny(**kwargs):
    spec = effnet.NetworkSpec(name="tiny", blocks=effnet.parse_blocks(TINY), stem_channels=16, head_channels=64)
    torch.manual_seed(0)
    model = effnet.create_model(spec.with_(resolution=32), **kwargs)
    for module in model.modules():  # non-trivial BN statistics
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.normal_(0, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    return model.eval()


def test_round_trip_is_exact_and_self_describing(tmp_path):
    model = tiny(num_classes=3, padding="symmetric")
    names = ["cat", "dog", "fox"]
    pre = Preprocessing(resolution=32, crop_pct=0.8, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    path = tmp_path / "tiny.safetensors"
    save_weights(model, path, class_names=names, preprocessing=pre, extra={"trained_on": "nothing"})
    assert [p.name for p in tmp_path.iterdir()] == ["tiny.safetensors"]  # no temp file left behind

    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
    assert meta["format"] == "effnet" and meta["num_classes"] == "3" and meta["in_chans"] == "3"
    assert json.loads(meta["description"])["blocks"] == TINY.split(",")
    assert json.loads(meta["class_names"]) == names

    loaded, info = load_model(path)
    assert info.spec == model.spec and info.num_classes == 3 and info.class_names == names
    assert info.preprocessing == pre and info.extra["trained_on"] == "nothing"
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded.eval()(x), model(x))


def test_finetune_start_replaces_only_the_classifier(tmp_path):
    model = tiny(num_classes=3)
    path = tmp_path / "t.safetensors"
    save_weights(model, path)
    fresh, info = load_model(path, num_classes=7, drop_path_rate=0.1)
    assert info.num_classes == 7 and info.class_names is None and fresh.spec.drop_path_rate == 0.1
    assert fresh.classifier.out_features == 7
    assert torch.equal(fresh.stem.conv.weight, model.stem.conv.weight)
    assert torch.equal(fresh.head.bn.running_var, model.head.bn.running_var)


def test_mismatch_names_the_tensor_and_loads_nothing(tmp_path):
    path = tmp_path / "t.safetensors"
    source = tiny(num_classes=3)
    source.stem.conv.weight.data.add_(1.0)
    save_weights(source, path)
    target = tiny(num_classes=10)
    before = {k: v.clone() for k, v in target.state_dict().items()}
    with pytest.raises(UserError, match=r"file has 3 classes, model 10: .*'classifier\.weight'"):
        load_weights(target, path)
    after = target.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    load_weights(target, path, exclude_classifier=True)  # the fine-tuning start point
    assert torch.equal(target.stem.conv.weight, source.stem.conv.weight)
    assert not torch.equal(target.classifier.weight[:3], source.classifier.weight)


def test_padding_or_activation_disagreement_is_refused(tmp_path):
    path = tmp_path / "t.safetensors"
    save_weights(tiny(padding="symmetric"), path)
    with pytest.raises(UserError, match="padding 'symmetric'"):
        load_weights(tiny(padding="same"), path)


def test_truncated_file_is_a_user_error_and_exit_2(tmp_path, cli):
    path = tmp_path / "t.safetensors"
    save_weights(tiny(), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match="not a valid safetensors file"):
        load_model(path)
    code, out, err = cli("convert", str(path), "--to", str(tmp_path / "o.safetensors"))
    assert code == 2 and out == "" and "truncated" in err and "Traceback" not in err and err.count("\n") == 1


def test_missing_file_and_foreign_file_without_model(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_model(tmp_path / "nope.safetensors")
    sd_path = tmp_path / "plain.pth"
    torch.save({"model": {"conv_stem.weight": torch.zeros(1), "blocks.0.0.conv_dw.weight": torch.zeros(1)}}, sd_path)
    with pytest.raises(UserError, match="not an effnet weight file"):
        load_model(sd_path)


class _Payload:
    """A pickle that would create a marker file when unpickled."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickle_that_runs_code_is_refused(tmp_path, cli):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pth"
    torch.save({"state_dict": {"x": torch.zeros(1)}, "payload": _Payload(marker)}, evil)
    raw = tmp_path / "evil_raw.pt"
    raw.write_bytes(pickle.dumps(_Payload(marker), protocol=2))
    for path in (evil, raw):
        model = effnet.create_model("efficientnet_lite0")
        with pytest.raises(UserError, match="refused"):
            load_weights(model, path)
        code, _, err = cli("convert", str(path), "--to", str(tmp_path / "o.safetensors"), "--model", "lite0")
        assert code == 2 and "refused" in err and "Traceback" not in err
    assert not marker.exists()
    # the payload is real: unpickling without weights_only would have run it
    pickle.loads(raw.read_bytes())
    assert marker.exists()


def test_default_preprocessing_and_transform():
    b3 = default_preprocessing(effnet.get_description("efficientnet_b3"))
    assert b3.resolution == 300 and b3.crop_pct == pytest.approx(300 / 332) and b3.resize_size == 332
    lite = default_preprocessing(effnet.get_description("efficientnet_lite0"))
    assert lite.mean == LITE_MEAN and lite.std == LITE_STD and lite.resize_size == 256
    from PIL import Image

    image = Image.new("RGB", (400, 300), (127, 255, 0))
    x = lite.eval_transform()(image)
    assert x.shape == (3, 224, 224) and x.dtype == torch.float32
    # the Lite rule: (pixel - 127) / 128 on 0–255 pixels
    assert x[:, 100, 100].tolist() == pytest.approx([0.0, 128 / 128, -127 / 128], abs=1e-6)


def test_imagenet_class_names_ship_as_package_data():
    names = imagenet_class_names()
    assert len(names) == 1000 and names[281] == "tabby" and names[285] == "Egyptian cat" and names[967] == "espresso"


def test_save_refuses_wrong_class_name_count(tmp_path):
    with pytest.raises(UserError, match="2 class names"):
        save_weights(tiny(num_classes=3), tmp_path / "x.safetensors", class_names=["a", "b"])
    assert not os.listdir(tmp_path)


def test_unknown_layout_and_format_names():
    model = tiny()
    with pytest.raises(UserError, match="cannot tell which layout"):
        load_weights(model, {"encoder.conv1.weight": torch.zeros(1)})
    with pytest.raises(UserError, match="weight format 'caffe' is unknown"):
        load_weights(model, {"stem.conv.weight": torch.zeros(1)}, format="caffe")
