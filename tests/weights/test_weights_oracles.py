"""Importers checked against the reference implementations (random weights, randomised BN statistics)."""

import pytest
import timm
import torch
import torchvision

import effnet
from effnet.errors import UserError
from effnet.factory import load_model, load_weights
from effnet.weights import detect_format
from effnet.weights.torchvision import TORCHVISION


def randomise(model, seed=0):
    """Random BN statistics and affine parameters, so BN eps and every tensor's place matter."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                n = module.num_features
                module.running_mean.copy_(torch.randn(n, generator=gen) * 0.2)
                module.running_var.copy_(torch.rand(n, generator=gen) + 0.5)  # a wrong eps moves logits ~2e-3
                module.weight.copy_(torch.rand(n, generator=gen) + 0.5)
                module.bias.copy_(torch.randn(n, generator=gen) * 0.2)
    return model.eval()


def logits_diff(ours, ref, size, batch=2, seed=1):
    x = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        a, b = ours.eval()(x), ref(x)
    assert b.std() > 1e-2  # a real signal, not a constant
    return float((a - b).abs().max())


@pytest.mark.parametrize(
    "timm_name, ours, size, padding, eps",
    [
        ("tf_efficientnet_b0", "efficientnet_b0", 224, "same", 1e-3),  # native size: static 'same' padding
        ("tf_efficientnet_b0", "efficientnet_b0", 97, "same", 1e-3),  # odd size: TF pads symmetrically
        ("tf_efficientnet_b2", "efficientnet_b2", 64, "same", 1e-3),
        ("tf_efficientnet_lite0", "efficientnet_lite0", 64, "same", 1e-3),
        ("efficientnet_b0", "efficientnet_b0", 64, "symmetric", 1e-5),
    ],
)
def test_timm_logits_match(timm_name, ours, size, padding, eps):
    ref = randomise(timm.create_model(timm_name, pretrained=False))
    model = effnet.create_model(ours, padding=padding)
    assert detect_format(ref.state_dict()) == "timm"
    load_weights(model, ref.state_dict())
    assert model.spec.bn_eps == eps and model.stem.bn.eps == eps
    assert logits_diff(model, ref, size) < 1e-4


def test_torchvision_logits_match():
    ref = randomise(torchvision.models.efficientnet_b0())
    model = effnet.create_model("efficientnet_b0", padding="symmetric")
    assert detect_format(ref.state_dict()) == "torchvision"
    load_weights(model, ref.state_dict(), format="torchvision")
    assert model.spec.bn_eps == 1e-5
    assert logits_diff(model, ref, 64) < 1e-4
    with pytest.raises(UserError, match="padding='symmetric'"):
        load_weights(effnet.create_model("efficientnet_b0"), ref.state_dict())


def test_torchvision_eps_rule():
    with torch.device("meta"):
        b4 = effnet.create_model("efficientnet_b4", padding="symmetric")
        b5 = effnet.create_model("efficientnet_b5", padding="symmetric")
    assert TORCHVISION.bn_eps_for(b4.spec) == 1e-5 and TORCHVISION.bn_eps_for(b5.spec) == 1e-3


def test_lukemelas_logits_match():
    lukemelas = pytest.importorskip("efficientnet_pytorch")
    ref = randomise(lukemelas.EfficientNet.from_name("efficientnet-b0", image_size=64))
    model = effnet.create_model("efficientnet_b0")
    assert detect_format(ref.state_dict()) == "lukemelas"
    load_weights(model, ref.state_dict())
    assert logits_diff(model, ref, 64) < 1e-4


def test_lite0_package_file_is_lukemelas_layout():
    model, info = load_model("lite0-imagenet")
    assert model.spec.name == "efficientnet_lite0" and model.spec.padding == "same" and model.spec.bn_eps == 1e-3
    assert info.num_classes == 1000 and info.class_names[285] == "Egyptian cat"
    assert info.preprocessing.mean == pytest.approx((127 / 255,) * 3)


def test_wrong_model_and_wrong_layout_are_explained(tmp_path):
    ref = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    with pytest.raises(UserError, match=r"looks like efficientnet_lite0, model is efficientnet_b3: .*conv_stem"):
        load_weights(effnet.create_model("efficientnet_b3"), ref.state_dict())
    with pytest.raises(UserError, match="keys are in the timm layout, not torchvision"):
        load_weights(effnet.create_model("efficientnet_lite0", padding="symmetric"), ref.state_dict(), "torchvision")
    b0 = effnet.create_model("efficientnet_b0", num_classes=10)
    before = b0.stem.conv.weight.clone()
    with pytest.raises(UserError, match="file has 1000 classes, model 10"):
        load_weights(b0, timm.create_model("tf_efficientnet_b0", pretrained=False).state_dict())
    assert torch.equal(before, b0.stem.conv.weight)  # nothing half-loaded


def test_checkpoint_wrappers_and_convert_cli(tmp_path, cli):
    ref = randomise(timm.create_model("tf_efficientnet_lite0", pretrained=False))
    path = tmp_path / "ckpt.pth"
    torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in ref.state_dict().items()}}, path)
    out = tmp_path / "lite0.safetensors"
    code, stdout, err = cli("convert", str(path), "--to", str(out), "--model", "tf_efficientnet_lite0", "--json")
    assert code == 0, err
    assert '"format": "timm"' in stdout and '"padding": "same"' in stdout
    model, info = load_model(out)
    assert info.spec.name == "efficientnet_lite0" and info.extra["converted_from"] == "ckpt.pth"
    assert logits_diff(model, ref, 64) < 1e-4


def test_lite0_file_as_b3_cli_error(tmp_path, cli):
    code, out, err = cli("predict", str(tmp_path / "x.png"), "--weights", "lite0-imagenet", "--model", "b3")
    assert code == 2 and out == ""
    assert "looks like efficientnet_lite0, model is efficientnet_b3" in err and "Traceback" not in err
    assert err.count("\n") == 1


def test_pretrained_finetune_start():
    model, info = load_model("lite0-imagenet", num_classes=10, drop_path_rate=0.1)
    assert model.classifier.out_features == 10 and info.num_classes == 10 and info.class_names is None
    reference, _ = load_model("lite0-imagenet")
    assert torch.equal(model.head.conv.weight, reference.head.conv.weight)
    assert model.spec.drop_path_rate == 0.1 and info.preprocessing.mean == pytest.approx((127 / 255,) * 3)
