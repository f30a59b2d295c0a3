"""Published checkpoints by name without the network: caches laid out as huggingface_hub and torch.hub lay
them out, a throwaway HTTP server on 127.0.0.1 standing in for the Hub and PyTorch's download server, and
every failure one line, exit 2, nothing half-written."""

import hashlib
import json
import os
import subprocess
import sys
from dataclasses import replace

import pytest
import skimage.data
import timm
import torch
import torchvision
from PIL import Image
from safetensors.torch import save_file
from test_weights_oracles import logits_diff, randomise

import effnet
from effnet.errors import UserError
from effnet.factory import load_model, load_weights
from effnet.weights import PRETRAINED
from effnet.weights.hub import UrlFile, converted_path, hub_cache, torch_checkpoints
from effnet.weights.pretrained import find_pretrained, get_pretrained
from hub_server import REVISION, Server, isolate_caches, online

B0 = "tf_efficientnet_b0.in1k"


@pytest.fixture(autouse=True)
def caches(tmp_path, monkeypatch):
    """Every cache in a temporary folder, the Hub offline unless a test serves it: nothing here reads the
    user's caches or the network."""
    return isolate_caches(tmp_path, monkeypatch)


def tensors_of(model):
    return {key: value.contiguous() for key, value in model.state_dict().items()}


def put_in_hub_cache(repo_id, tensors, filename="model.safetensors"):
    """A file in huggingface_hub's cache layout: snapshots/<revision>/FILE and refs/main."""
    folder = hub_cache() / f"models--{repo_id.replace('/', '--')}"
    (folder / "snapshots" / REVISION).mkdir(parents=True, exist_ok=True)
    (folder / "refs").mkdir(exist_ok=True)
    (folder / "refs" / "main").write_text(REVISION)
    path = folder / "snapshots" / REVISION / filename
    if filename.endswith(".safetensors"):
        save_file(tensors, path)
    else:
        torch.save(tensors, path)
    return path


def put_in_torch_cache(url, tensors):
    """A file in torch.hub's layout: $TORCH_HOME/hub/checkpoints/<name with its hash>."""
    path = torch_checkpoints() / url.rsplit("/", 1)[-1]
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(tensors, path)
    return path


def leftovers(*folders):
    """Every file under the folders (half-written files would show here)."""
    return sorted(str(p.relative_to(f)) for f in folders if f.exists() for p in f.rglob("*") if p.is_file())


@pytest.fixture
def server():
    srv = Server()
    yield srv
    srv.close()


@pytest.fixture(scope="module")
def b0_reference():
    return randomise(timm.create_model("tf_efficientnet_b0", pretrained=False))


@pytest.fixture(scope="module")
def chelsea(tmp_path_factory):
    path = tmp_path_factory.mktemp("photos") / "chelsea.png"
    Image.fromarray(skimage.data.chelsea()).save(path)
    return path


def timm_probabilities(reference, name, image):
    """The reference model's class probabilities with timm's own evaluation transform for ``name``."""
    config = timm.data.resolve_data_config({}, pretrained_cfg=timm.models.get_pretrained_cfg(name).to_dict())
    x = timm.data.create_transform(**config)(Image.open(image).convert("RGB")).unsqueeze(0)
    with torch.no_grad():
        return reference(x).softmax(-1)[0]


def predicted(out):
    (result,) = json.loads(out)
    return {entry["index"]: entry["prob"] for entry in result["top"]}


# -- the checkpoint's own preprocessing, from a pre-populated cache -------------------------------------------


def test_predict_offline_from_the_hub_cache_with_the_checkpoints_preprocessing(b0_reference, chelsea):
    """The command as a user runs it: HF_HUB_OFFLINE=1 seen by huggingface_hub at its import."""
    put_in_hub_cache(f"timm/{B0}", tensors_of(b0_reference))
    command = [sys.executable, "-m", "effnet", "predict", str(chelsea), "--weights", B0, "--top", "1000", "--json"]
    done = subprocess.run(command, env=dict(os.environ), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    probs = predicted(done.stdout)
    reference = timm_probabilities(b0_reference, B0, chelsea)
    assert len(probs) == 1000 and max(abs(probs[i] - float(reference[i])) for i in probs) < 1e-5
    assert converted_path(B0).is_file()  # converted once, kept in effnet's own cache


def test_each_checkpoint_keeps_its_own_preprocessing(b0_reference, chelsea, cli):
    name = "tf_efficientnet_b0.ap_in1k"  # AdvProp: mean = std = 0.5, unlike the other B0 checkpoints
    put_in_hub_cache(f"timm/{name}", tensors_of(b0_reference))
    code, out, err = cli("predict", str(chelsea), "--weights", name, "--top", "1000", "--json")
    assert code == 0, err
    reference = timm_probabilities(b0_reference, name, chelsea)
    assert max(abs(p - float(reference[i])) for i, p in predicted(out).items()) < 1e-5
    assert load_model(name)[1].preprocessing.mean == (0.5, 0.5, 0.5)


# -- downloads from the loopback server ----------------------------------------------------------------------


def test_hub_download_verifies_caches_and_the_second_run_makes_no_request(
    server, monkeypatch, cli, b0_reference, chelsea
):
    online(monkeypatch, server)
    server.hub(f"timm/{B0}", tensors_of(b0_reference))
    code, out, err = cli("predict", str(chelsea), "--weights", B0, "--top", "1000", "--json")
    assert code == 0, err
    assert [method for method, _ in server.requests] == ["HEAD", "GET"]
    assert (hub_cache() / f"models--timm--{B0}" / "snapshots" / REVISION / "model.safetensors").is_file()
    reference = timm_probabilities(b0_reference, B0, chelsea)
    assert max(abs(p - float(reference[i])) for i, p in predicted(out).items()) < 1e-5
    first = list(server.requests)
    code, out2, err = cli("predict", str(chelsea), "--weights", B0, "--top", "1000", "--json")
    assert code == 0, err
    assert server.requests == first and out2 == out  # the converted file: no request at all


def test_hub_falls_back_to_pytorch_model_bin(server, monkeypatch, b0_reference):
    online(monkeypatch, server)
    server.files[f"/timm/{B0}/resolve/main/pytorch_model.bin"] = _torch_bytes(tensors_of(b0_reference))
    model, info = load_model(B0)
    assert ("HEAD", f"/timm/{B0}/resolve/main/model.safetensors") in server.requests
    assert logits_diff(model, b0_reference, 64) < 1e-4 and info.source == B0


def _torch_bytes(obj):
    import io

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def serve_torchvision(server, monkeypatch, data, name="efficientnet_b0.tv_in1k", digest=None):
    """The entry's file served by the loopback server under a name carrying ``digest``'s first digits."""
    digest = digest or hashlib.sha256(data).hexdigest()
    path = f"/models/efficientnet_b0_rwightman-{digest[:8]}.pth"
    server.files[path] = data
    monkeypatch.setitem(PRETRAINED, name, replace(PRETRAINED[name], source=UrlFile(server.url + path)))
    return torch_checkpoints() / path.rsplit("/", 1)[-1]


def test_torchvision_download_checks_the_hash_and_caches(server, monkeypatch, cli):
    online(monkeypatch, server)
    reference = randomise(torchvision.models.efficientnet_b0())
    cached = serve_torchvision(server, monkeypatch, _torch_bytes(reference.state_dict()))
    monkeypatch.setattr("effnet.weights.hub._show_progress", lambda: True)
    model, info = load_model("EfficientNet_B0_Weights.DEFAULT")
    assert cached.is_file() and [m for m, _ in server.requests] == ["GET"]
    assert logits_diff(model, reference, 64) < 1e-4
    assert info.preprocessing.resolution == 224 and info.preprocessing.resize_size == 256
    assert model.spec.padding == "symmetric" and info.extra["license"] == "BSD-3-Clause"
    load_model("efficientnet_b0.tv_in1k")
    assert len(server.requests) == 1


def test_downloads_show_a_progress_bar(server, monkeypatch, capsys, b0_reference):
    online(monkeypatch, server)
    monkeypatch.setattr("effnet.weights.hub._show_progress", lambda: True)
    server.hub(f"timm/{B0}", tensors_of(b0_reference))
    load_model(B0)
    err = capsys.readouterr().err
    assert "100%" in err and "B/s" in err


# -- failures: one line naming the checkpoint and what to do, exit 2, nothing half-written --------------------


def fails(cli, caches, *argv):
    code, out, err = cli(*argv)
    assert code == 2 and out == "" and "Traceback" not in err
    assert err.count("\n") == 1, err
    return err


def test_offline_and_not_cached(cli, caches, chelsea):
    err = fails(cli, caches, "predict", str(chelsea), "--weights", B0)
    assert B0 in err and "not in the cache" in err and "run once with network access" in err
    err = fails(cli, caches, "predict", str(chelsea), "--weights", "efficientnet_b0.tv_in1k")
    assert "efficientnet_b0.tv_in1k" in err and "checkpoints" in err
    assert leftovers(caches) == []


def test_effnets_own_offline_switch(monkeypatch, server, caches, b0_reference):
    online(monkeypatch, server)
    monkeypatch.setenv("EFFNET_OFFLINE", "1")
    server.hub(f"timm/{B0}", tensors_of(b0_reference))
    with pytest.raises(UserError, match="not in the cache"):
        load_model(B0)
    assert server.requests == []


def test_no_network(monkeypatch, cli, caches, chelsea):
    online(monkeypatch)  # the Hub at a port nobody listens on
    monkeypatch.setattr("huggingface_hub.utils._http.time.sleep", lambda seconds: None)  # its retries, at once
    err = fails(cli, caches, "predict", str(chelsea), "--weights", B0)
    assert f"cannot download pretrained weights {B0}" in err and "check the network" in err
    monkeypatch.setitem(
        PRETRAINED,
        "efficientnet_b0.tv_in1k",
        replace(
            PRETRAINED["efficientnet_b0.tv_in1k"],
            source=UrlFile("http://127.0.0.1:9/models/efficientnet_b0_rwightman-7f5810bc.pth"),
        ),  # fmt: skip
    )
    err = fails(cli, caches, "predict", str(chelsea), "--weights", "efficientnet_b0.tv_in1k")
    assert "cannot download pretrained weights efficientnet_b0.tv_in1k" in err
    assert [p for p in leftovers(caches) if not p.startswith("hf/hub/.locks")] == []


@pytest.mark.parametrize("cut", [False, True])
def test_hash_mismatch_or_truncated_download_keeps_nothing(server, monkeypatch, cli, caches, chelsea, cut):
    online(monkeypatch, server)
    data = _torch_bytes(randomise(torchvision.models.efficientnet_b0()).state_dict())
    cached = serve_torchvision(server, monkeypatch, data, digest=None if cut else "0" * 64)
    if cut:
        server.cut.update(server.files)
    err = fails(cli, caches, "predict", str(chelsea), "--weights", "efficientnet_b0.tv_in1k")
    assert "efficientnet_b0.tv_in1k" in err and "SHA-256" in err and "nothing was kept" in err
    assert not cached.exists() and list(cached.parent.iterdir()) == []  # no .partial either
    assert not converted_path("efficientnet_b0.tv_in1k").exists()


def test_truncated_hub_download_keeps_nothing_and_a_rerun_completes(
    server, monkeypatch, cli, caches, chelsea, b0_reference
):
    online(monkeypatch, server)
    path = server.hub(f"timm/{B0}", tensors_of(b0_reference))
    server.cut.add(path)
    err = fails(cli, caches, "predict", str(chelsea), "--weights", B0)
    assert B0 in err and "nothing was kept; run again" in err
    repo = hub_cache() / f"models--timm--{B0}"
    assert not (repo / "snapshots" / REVISION / "model.safetensors").exists()
    assert not any(p.is_file() for p in (repo / "blobs").glob("*") if not p.name.endswith(".incomplete"))
    assert not converted_path(B0).exists()
    server.cut.clear()
    code, _, err = cli("predict", str(chelsea), "--weights", B0)
    assert code == 0, err


def test_a_hub_file_of_another_architecture(cli, caches, chelsea):
    put_in_hub_cache(f"timm/{B0}", tensors_of(timm.create_model("tf_efficientnet_b1", pretrained=False)))
    err = fails(cli, caches, "predict", str(chelsea), "--weights", B0)
    assert err.startswith(f"effnet predict: error: {B0} does not fit efficientnet_b0")
    assert "holds another network" in err and f"delete {hub_cache() / f'models--timm--{B0}'}" in err
    assert not converted_path(B0).exists()


def test_a_damaged_cached_file(cli, caches, chelsea, b0_reference):
    path = put_in_hub_cache(f"timm/{B0}", tensors_of(b0_reference))
    path.write_bytes(path.read_bytes()[:1000])
    err = fails(cli, caches, "predict", str(chelsea), "--weights", B0)
    assert f"pretrained weights {B0}" in err and "truncated or corrupt" in err and "delete" in err
    assert not converted_path(B0).exists()


def test_unknown_names_and_tags(cli, caches, chelsea):
    err = fails(cli, caches, "predict", str(chelsea), "--weights", "tf_efficientnet_b0.in1kk")
    assert "no pretrained weights tf_efficientnet_b0.in1kk" in err and "tf_efficientnet_b0.in1k," in err
    err = fails(cli, caches, "predict", str(chelsea), "--weights", "nothing-here.safetensors")
    assert "nothing-here.safetensors does not exist" in err


# -- the library: create_model(pretrained=…), load_weights, names -----------------------------------------


def test_create_model_pretrained(b0_reference, caches):
    put_in_hub_cache(f"timm/{B0}", tensors_of(b0_reference))
    model = effnet.create_model("efficientnet_b0", pretrained="in1k")
    assert model.spec.padding == "same" and model.spec.bn_eps == 1e-3
    assert logits_diff(model, b0_reference, 64) < 1e-4
    info = model.pretrained_info
    assert info.source == B0 and info.class_names[285] == "Egyptian cat" and info.preprocessing.crop_pct == 0.875
    tuned = effnet.create_model(B0, pretrained=True, num_classes=10, drop_path_rate=0.1)
    assert tuned.classifier.out_features == 10 and torch.equal(tuned.head.conv.weight, model.head.conv.weight)
    backbone = effnet.create_model(B0, pretrained=True, features_only=True)
    assert torch.equal(backbone.stages[3][0].project.conv.weight, model.stages[3][0].project.conv.weight)
    assert load_weights(effnet.create_model("efficientnet_b0"), B0).stem.conv.weight.equal(model.stem.conv.weight)
    with pytest.raises(UserError, match="padding 'same', the model .* has 'symmetric'"):
        effnet.create_model(B0, pretrained=True, padding="symmetric")
    with pytest.raises(UserError, match="in_chans must be 3"):
        effnet.create_model(B0, pretrained=True, in_chans=1)
    with pytest.raises(UserError, match="by a model name") as raised:
        effnet.create_model(model.spec, pretrained=True)
    assert raised.value.field == "pretrained"


def test_convert_and_finetune_take_a_checkpoint_name(b0_reference, cli, tmp_path):
    from helpers import make_digit_folder

    put_in_hub_cache(f"timm/{B0}", tensors_of(b0_reference))
    code, out, err = cli("convert", "efficientnet_b0", "--to", str(tmp_path / "b0.safetensors"), "--json")
    assert code == 2 and "efficientnet_b0.ra_in1k are not in the cache" in err  # the bare name: timm's default
    code, out, err = cli("convert", "efficientnet_b0.in1k", "--to", str(tmp_path / "b0.safetensors"), "--json")
    assert code == 0, err
    record = json.loads(out)
    assert (record["format"], record["padding"], record["bn_eps"], record["model"]) == (
        "timm", "same", 1e-3, "efficientnet_b0"
    )  # fmt: skip
    converted, info = load_model(tmp_path / "b0.safetensors")
    assert info.extra["pretrained"] == B0 and logits_diff(converted, b0_reference, 64) < 1e-4
    root = make_digit_folder(tmp_path / "data", per_class=4, val_per_class=2)
    code, out, err = cli(
        "finetune", "--weights", "b0.in1k", "--data", str(root), "--resolution", "32", "--epochs", "1",
        "--batch-size", "8", "--output", str(tmp_path / "run"), "--json",
    )  # fmt: skip
    assert code == 0, err
    assert json.loads(out)["weights"] == "b0.in1k" and json.loads(out)["model"] == "efficientnet_b0"


def test_names_resolve_as_documented():
    name = lambda *query: find_pretrained(*query).name  # noqa: E731
    assert name("tf_efficientnet_b3.ns_jft_in1k") == "tf_efficientnet_b3.ns_jft_in1k"
    assert name("efficientnet_b3") == "efficientnet_b3.ra2_in1k"  # timm's default for its own name
    assert name("tf_efficientnet_b3") == "tf_efficientnet_b3.ns_jft_in1k"
    assert name("efficientnet_b3", "ns_jft_in1k") == name("b3.ns_jft_in1k") == "tf_efficientnet_b3.ns_jft_in1k"
    assert name("b0", "tv_in1k") == name("EfficientNet_B0_Weights.IMAGENET1K_V1") == "efficientnet_b0.tv_in1k"
    assert name("EfficientNet_B1_Weights.DEFAULT") == "efficientnet_b1.tv2_in1k"
    assert name("efficientnet_v2_s") == "efficientnet_v2_s.tv_in1k"  # torchvision's own name
    assert name("v2_s") == name("efficientnetv2_s") == "tf_efficientnetv2_s.in21k_ft_in1k"  # the TF port's
    assert name("l2") == "tf_efficientnet_l2.ns_jft_in1k_475" and name("lite0-imagenet") == "lite0-imagenet"
    assert find_pretrained("run/model.safetensors") is None and find_pretrained("resnet50") is None
    with pytest.raises(UserError, match="no pretrained weights for resnet50"):
        get_pretrained("resnet50")
    with pytest.raises(UserError, match="none of efficientnet_b3's checkpoints"):
        find_pretrained("efficientnet_b3", "in21k")


def test_pretrained_command_lists_every_checkpoint(cli, caches, b0_reference):
    put_in_hub_cache(f"timm/{B0}", tensors_of(b0_reference))
    load_model(B0)
    code, out, err = cli("pretrained", "--json")
    assert code == 0, err
    rows = {row["name"]: row for row in json.loads(out)}
    assert list(rows) == list(PRETRAINED) and rows[B0]["cached"] and not rows["tf_efficientnet_b0.aa_in1k"]["cached"]
    assert rows["tf_efficientnet_b3.ns_jft_in1k"]["resolution"] == 300 and rows[B0]["source"] == f"hf-hub:timm/{B0}"
    assert {row["license"] for row in rows.values()} == {"Apache-2.0", "BSD-3-Clause"}
    code, out, err = cli("pretrained", "lite0")
    assert code == 0 and "lite0-imagenet" in out and "tf_efficientnet_lite0.in1k *" in out and "b3" not in out


def test_a_package_checkpoint_is_read_in_place():
    model, info = load_model("lite0-imagenet")
    assert info.extra["pretrained"] == "lite0-imagenet" and not converted_path("lite0-imagenet").exists()


def test_a_header_whose_length_starts_with_0x80_is_safetensors(tmp_path):
    """safetensors' first byte is its header length's lowest byte; 0x80 is also a pickle's first byte."""
    from effnet.weights.files import file_kind

    for size in range(64):
        path = tmp_path / "w.safetensors"
        save_file({"x": torch.zeros(1)}, path, metadata={"pad": "x" * size})
        if path.read_bytes()[0] == 0x80:
            assert file_kind(path) == "safetensors"
            return
    raise AssertionError("no header length ending in 0x80 tried")
