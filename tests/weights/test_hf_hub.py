"""Sharing on the Hub without the network: ``effnet push`` to a loopback Hub server (tests/hub_server.py) and
``hf-hub:OWNER/NAME`` back from it, for a compound-scaled model no published checkpoint has; the cache, the
offline switches, every refusal one line, and the model card's contents."""

import json
import os
import pickle

import huggingface_hub.constants  # noqa: F401 (reads HF_HUB_OFFLINE once: before the fixtures set it)
import pytest
import torch
from PIL import Image
from safetensors.torch import save, save_file

import effnet
from effnet.errors import UserError
from effnet.models.profile import profile
from effnet.weights.hub import hub_cache
from helpers import INT8_RUN_BLOCKS, make_digit_folder, random_bn_stats
from hub_server import Server, isolate_caches, online

REPO = "alice/b0-phi-minus-1"
TOKEN = "hf_loopback"
CLASSES = ["cat", "dog", "fox"]


@pytest.fixture(autouse=True)
def caches(tmp_path, monkeypatch):
    isolate_caches(tmp_path, monkeypatch)
    monkeypatch.setattr("huggingface_hub.constants.HF_TOKEN_PATH", str(tmp_path / "no-token"))
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    return tmp_path


@pytest.fixture
def server(monkeypatch):
    """The loopback Hub, online, with the token it accepts in HF_TOKEN."""
    srv = Server(token=TOKEN)
    online(monkeypatch, srv)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    yield srv
    srv.close()


@pytest.fixture(scope="module")
def scaled(tmp_path_factory):
    """B0 at 64 px compound-scaled to φ = −1 (no published checkpoint has it), three named classes, seeded
    weights and BatchNorm statistics, in an effnet file."""
    spec = effnet.scale_compound(effnet.get_description("efficientnet_b0").with_(resolution=64), -1)
    torch.manual_seed(0)
    model = random_bn_stats(effnet.create_model(spec, num_classes=3))
    path = tmp_path_factory.mktemp("scaled") / "model.safetensors"
    effnet.save_weights(model, path, class_names=CLASSES)
    return model, path


@pytest.fixture(scope="module")
def images():
    return torch.randn(2, 3, 56, 56, generator=torch.Generator().manual_seed(1))


def logits(model, x):
    with torch.no_grad():
        return model.eval()(x)


def push(cli, path, *more):
    code, out, err = cli("push", "--weights", str(path), "--repo", REPO, "--json", *more)
    assert code == 0, err
    return json.loads(out)


def fails(cli, *argv):
    """A refusal: exit 2, one line on stderr, nothing on stdout."""
    code, out, err = cli(*argv)
    assert code == 2 and out == "" and "Traceback" not in err, err
    assert err.count("\n") == 1, err
    return err


# -- push, then load back ---------------------------------------------------------------------------------


def test_push_then_load_back_the_same_logits(server, cli, scaled, images, tmp_path):
    model, path = scaled
    record = push(cli, path, "--license", "Apache-2.0")
    assert [request for request in server.requests] == [
        ("POST", "/api/repos/create"),
        ("POST", "/api/validate-yaml"),
        ("POST", f"/api/models/{REPO}/preupload/main"),
        ("POST", f"/api/models/{REPO}/commit/main"),
    ]
    assert server.uploaded(REPO, "model.safetensors") == path.read_bytes()  # the file as it is
    assert record["files"] == ["model.safetensors", "README.md"] and record["load"] == f"hf-hub:{REPO}"
    assert record["model"] == "efficientnet_b0-phi-1" and record["commit"] in record["url"]
    assert record["params"] == profile(model).params and record["license"] == "Apache-2.0"
    expected = logits(model, images)

    loaded, info = effnet.load_model(f"hf-hub:{REPO}")
    assert loaded.spec == model.spec and info.class_names == CLASSES and info.source == f"hf-hub:{REPO}"
    assert (logits(loaded, images) - expected).abs().max() <= 1e-6
    created = effnet.create_model(f"hf-hub:{REPO}", pretrained=True)
    assert (logits(created, images) - expected).abs().max() <= 1e-6
    assert created.pretrained_info.class_names == CLASSES
    described = effnet.create_model(model.spec, pretrained=f"hf-hub:{REPO}")  # a description, checked against it
    assert (logits(described, images) - expected).abs().max() <= 1e-6
    tuned = effnet.create_model(f"hf-hub:{REPO}", pretrained=True, num_classes=7, features_only=False)
    assert tuned.classifier.out_features == 7 and torch.equal(tuned.stem.conv.weight, model.stem.conv.weight)

    code, out, err = cli("convert", f"hf-hub:{REPO}", "--to", str(tmp_path / "back.safetensors"), "--json")
    assert code == 0, err  # a command taking weights by name: the same resolver as every --weights
    back, back_info = effnet.load_model(tmp_path / "back.safetensors")
    assert (logits(back, images) - expected).abs().max() <= 1e-6
    assert back_info.extra["converted_from"] == f"hf-hub:{REPO}"
    assert (hub_cache() / f"models--{REPO.replace('/', '--')}").is_dir()  # huggingface_hub's cache


def test_predict_takes_hf_hub_weights(server, cli, scaled, tmp_path):
    model, path = scaled
    push(cli, path)
    image = tmp_path / "photo.png"
    Image.new("RGB", (70, 60), (200, 120, 40)).save(image)
    code, out, err = cli("predict", str(image), "--weights", f"hf-hub:{REPO}", "--top", "3", "--json")
    assert code == 0, err
    (result,) = json.loads(out)
    pre = effnet.load_model(path)[1].preprocessing
    x = pre.eval_transform()(Image.open(image).convert("RGB")).unsqueeze(0)
    probs = logits(model, x).softmax(-1)[0]
    assert {entry["label"]: entry["prob"] for entry in result["top"]} == pytest.approx(
        {name: float(p) for name, p in zip(CLASSES, probs)}, abs=1e-4
    )


def test_a_warm_cache_offline_makes_no_request(server, cli, scaled, images, monkeypatch):
    model, path = scaled
    push(cli, path)
    effnet.load_model(f"hf-hub:{REPO}")
    pushed = len(server.requests)
    again, _ = effnet.load_model(f"hf-hub:{REPO}")  # online: one HEAD asks whether main moved, no download
    assert [method for method, _ in server.requests[pushed:]] == ["HEAD"]
    for variable in ("HF_HUB_OFFLINE", "EFFNET_OFFLINE"):
        before = len(server.requests)
        monkeypatch.setenv(variable, "1")
        offline, _ = effnet.load_model(f"hf-hub:{REPO}")
        assert server.requests[before:] == []
        assert (logits(offline, images) - logits(model, images)).abs().max() <= 1e-6
        monkeypatch.delenv(variable)


def test_a_cold_cache_offline_is_one_line(cli, tmp_path):
    err = fails(cli, "predict", str(tmp_path / "x.png"), "--weights", f"hf-hub:{REPO}")
    assert f"hf-hub:{REPO} are not in the cache" in err and "run once with network access" in err


def test_a_branch_and_a_revision(server, cli, scaled, images):
    model, path = scaled
    record = push(cli, path, "--revision", "small", "--private", "--message", "φ = −1 at 56 px")
    assert record["load"] == f"hf-hub:{REPO}@small" and ("POST", f"/api/models/{REPO}/branch/small") in server.requests
    assert server.repos[REPO]["private"] and record["private"]
    header = json.loads(server.bodies[f"/api/models/{REPO}/commit/small"][0].splitlines()[0])
    assert header == {"key": "header", "value": {"summary": "φ = −1 at 56 px", "description": ""}}
    loaded, _ = effnet.load_model(f"hf-hub:{REPO}@small")
    assert (logits(loaded, images) - logits(model, images)).abs().max() <= 1e-6
    by_commit, _ = effnet.load_model(f"hf-hub:{REPO}@{record['commit']}")
    assert torch.equal(by_commit.stem.conv.weight, model.stem.conv.weight)
    with pytest.raises(UserError, match=f"the Hub repository {REPO} has none of model.safetensors"):
        effnet.load_model(f"hf-hub:{REPO}")  # main holds nothing: the push went to the branch


# -- refusals when loading: one line each ------------------------------------------------------------------


def test_a_file_of_another_architecture_is_refused(server, cli, scaled, tmp_path):
    _, path = scaled
    push(cli, path)
    with pytest.raises(UserError, match=f"hf-hub:{REPO} does not fit efficientnet_b0 — file looks like "
                       "efficientnet_b0-phi-1, model is efficientnet_b0"):  # fmt: skip
        effnet.create_model("efficientnet_b0", pretrained=f"hf-hub:{REPO}")
    image = tmp_path / "photo.png"
    Image.new("RGB", (64, 64)).save(image)
    err = fails(cli, "predict", str(image), "--model", "efficientnet_b0", "--weights", f"hf-hub:{REPO}")
    assert "does not fit efficientnet_b0" in err


def test_a_truncated_file_is_refused(server, cli, scaled, tmp_path):
    _, path = scaled
    data = path.read_bytes()
    server.files[f"/{REPO}/resolve/main/model.safetensors"] = data[: len(data) // 2]  # whole on the Hub, half a file
    err = fails(cli, "predict", str(tmp_path / "x.png"), "--weights", f"hf-hub:{REPO}")
    assert err.startswith(f"effnet predict: error: hf-hub:{REPO}: ") and "truncated or corrupt" in err


class _Marker:
    """Unpickling this creates a file: loading must never run code."""

    def __reduce__(self):
        return (os.mknod, (os.environ["EFFNET_TEST_MARKER"],))


def test_a_pickle_is_refused_and_never_run(server, cli, tmp_path, monkeypatch):
    marker = tmp_path / "MARKER"
    monkeypatch.setenv("EFFNET_TEST_MARKER", str(marker))
    server.files[f"/{REPO}/resolve/main/pytorch_model.bin"] = pickle.dumps({"state_dict": _Marker()}, protocol=2)
    err = fails(cli, "predict", str(tmp_path / "x.png"), "--weights", f"hf-hub:{REPO}")
    assert f"hf-hub:{REPO}: " in err and "never runs code" in err and not marker.exists()


def test_plain_tensors_in_pytorch_model_bin_need_the_model_named(server, scaled, images):
    """A plain-tensor torch file passes the safe reader (weights_only), as a local one does; it does not
    describe its network, so the model must be named."""
    import io

    model, _ = scaled
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    server.files[f"/{REPO}/resolve/main/pytorch_model.bin"] = buffer.getvalue()
    with pytest.raises(UserError, match=f"model must be named: hf-hub:{REPO} is not an effnet weight file"):
        effnet.load_model(f"hf-hub:{REPO}")
    loaded, _ = effnet.load_model(f"hf-hub:{REPO}", model=model.spec)
    assert (logits(loaded, images) - logits(model, images)).abs().max() <= 1e-6


def test_a_repo_without_a_model_file_and_bad_names(server, cli, tmp_path):
    server.files[f"/{REPO}/resolve/main/README.md"] = b"# nothing here\n"
    err = fails(cli, "predict", str(tmp_path / "x.png"), "--weights", f"hf-hub:{REPO}")
    assert f"the Hub repository {REPO} has none of model.safetensors, pytorch_model.bin" in err
    for bad in ("hf-hub:no-owner", "hf-hub:a/b/c", "hf-hub:a/b@", "hf-hub:a/--b"):
        with pytest.raises(UserError, match="OWNER/NAME"):
            effnet.load_model(bad)
    with pytest.raises(UserError, match="pass pretrained=True") as raised:
        effnet.create_model(f"hf-hub:{REPO}")
    assert raised.value.field == "pretrained"
    with pytest.raises(UserError, match="pretrained must be True for hf-hub:"):
        effnet.create_model(f"hf-hub:{REPO}", pretrained="in1k")


# -- refusals when pushing ------------------------------------------------------------------------------------


def test_push_refuses_other_files_and_missing_settings(server, cli, scaled, tmp_path, monkeypatch):
    model, path = scaled
    foreign = tmp_path / "timm.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, foreign)  # no effnet header
    err = fails(cli, "push", "--weights", str(foreign), "--repo", REPO)
    assert "is not an effnet weight file (safetensors): convert it first: effnet convert" in err
    torch.save(model.state_dict(), tmp_path / "w.pth")
    err = fails(cli, "push", "--weights", str(tmp_path / "w.pth"), "--repo", REPO)
    assert "(torch): convert it first" in err
    half = tmp_path / "half.safetensors"
    half.write_bytes(path.read_bytes()[:5000])
    assert "truncated or corrupt" in fails(cli, "push", "--weights", str(half), "--repo", REPO)
    assert "--repo must name a Hub repository" in fails(cli, "push", "--weights", str(path), "--repo", "no-owner")
    assert server.requests == []  # each refused before a request
    monkeypatch.setenv("HF_TOKEN", "wrong")
    err = fails(cli, "push", "--weights", str(path), "--repo", REPO)
    assert "refused to let this token write" in err and "HTTP 401" in err
    monkeypatch.delenv("HF_TOKEN")
    assert "no Hugging Face token" in fails(cli, "push", "--weights", str(path), "--repo", REPO)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    monkeypatch.setenv("EFFNET_OFFLINE", "1")
    assert "pushing needs the network" in fails(cli, "push", "--weights", str(path), "--repo", REPO)
    assert REPO not in server.repos


# -- the model card -------------------------------------------------------------------------------------------


def evaluation_folder(root):
    """A report folder as `effnet evaluate` writes it: report.json and its two figures."""
    root.mkdir()
    per_class = [{"class": "cat", "accuracy": 0.75, "precision": 0.8, "support": 120},
                 {"class": "dog", "accuracy": 0.9, "precision": None, "support": 120}]  # fmt: skip
    report = {"images": 360, "top1": 0.8125, "top1_ci95": [0.769, 0.849], "top5": 1.0, "ece": 0.043,
              "per_class": per_class}  # fmt: skip
    (root / "report.json").write_text(json.dumps(report))
    (root / "report.md").write_text("# evaluation\n")
    for name in ("confusion.png", "reliability.png"):
        Image.new("RGB", (8, 8), (255, 0, 0)).save(root / name)
    return root


def test_the_model_card(cli, scaled, tmp_path):
    model, path = scaled
    evaluation = evaluation_folder(tmp_path / "eval")
    staged = tmp_path / "staged"
    code, out, err = cli("push", "--weights", str(path), "--repo", REPO, "--evaluation", str(evaluation),
                         "--dry-run", str(staged), "--json")  # fmt: skip
    assert code == 0, err
    record = json.loads(out)
    assert record["commit"] is None and record["license"] is None and record["url"] == str(staged)
    files = ["model.safetensors", "README.md", "evaluation/report.md", "evaluation/report.json",
             "evaluation/confusion.png", "evaluation/reliability.png"]  # fmt: skip
    assert record["files"] == files and sorted(str(p.relative_to(staged)) for p in staged.rglob("*")) == sorted(
        [*files, "evaluation"]
    )
    assert (staged / "model.safetensors").read_bytes() == path.read_bytes()
    card = (staged / "README.md").read_text()
    counts = profile(model)
    assert card.startswith("---\nlibrary_name: effnet\nlicense: unknown\n")
    assert f"`{model.spec.name}`, with 3 classes" in card and f'create_model("hf-hub:{REPO}", pretrained=True)' in card
    assert f"| parameters | {counts.params:,} |" in card and f"| multiply-adds at 56 px | {counts.macs:,} |" in card
    assert f"| activations (conv and linear outputs) | {counts.activations:,} |" in card
    assert "\n".join(model.spec.block_strings) in card
    assert "center-crop 56 px" in card and "mean [0.485, 0.456, 0.406] and std [0.229, 0.224, 0.225]" in card
    assert "0: cat, 1: dog, 2: fox" in card
    assert "| top1 | 0.8125 |" in card and "| top1_ci95 | [0.769, 0.849] |" in card and "| ece | 0.043 |" in card
    assert "| cat | 0.75 | 0.8 | 120 |\n| dog | 0.9 | — | 120 |" in card
    assert "![confusion](evaluation/confusion.png)" in card and "![reliability](evaluation/reliability.png)" in card
    assert "Of the weights it started from: unknown — set --license." in card
    licensed = tmp_path / "licensed"
    code, out, err = cli("push", "--weights", str(path), "--repo", REPO, "--license", "BSD-3-Clause",
                         "--dry-run", str(licensed))  # fmt: skip
    assert code == 0 and "licence: BSD-3-Clause" in out, err
    card = (licensed / "README.md").read_text()
    assert "license: bsd-3-clause\n" in card and "\nBSD-3-Clause.\n" in card and "## Evaluation" not in card
    err = fails(cli, "push", "--weights", str(path), "--repo", REPO, "--evaluation", str(tmp_path), "--dry-run",
                str(tmp_path / "x"))  # fmt: skip
    assert "--evaluation: " in err and "holds no report.json" in err


def test_a_converted_checkpoint_card_names_its_licence(cli, tmp_path):
    code, _, err = cli("convert", "lite0-imagenet", "--to", str(tmp_path / "lite0.safetensors"))
    assert code == 0, err
    code, out, err = cli("push", "--weights", str(tmp_path / "lite0.safetensors"), "--repo", REPO, "--dry-run",
                         str(tmp_path / "staged"), "--json")  # fmt: skip
    assert code == 0, err
    assert json.loads(out)["license"] == "Apache-2.0"
    card = (tmp_path / "staged" / "README.md").read_text()
    assert (
        "license: apache-2.0\n" in card and "1,000 classes: tench" in card and "| pretrained | lite0-imagenet |" in card
    )


@pytest.mark.slow
def test_a_finetuned_file_card_has_its_run_and_the_starting_licence(cli, tmp_path, server):
    """The run folder's report.json gives the recipe and figures; the licence is the starting file's."""
    torch.manual_seed(0)
    start = random_bn_stats(effnet.create_model("efficientnet_b0", blocks=INT8_RUN_BLOCKS, num_classes=5,
                                                resolution=32))  # fmt: skip
    effnet.save_weights(start, tmp_path / "start.safetensors", extra={"license": "MIT"})
    root = make_digit_folder(tmp_path / "data", per_class=4, val_per_class=2)
    code, out, err = cli(
        "finetune", "--weights", str(tmp_path / "start.safetensors"), "--data", str(root), "--resolution", "32",
        "--epochs", "1", "--batch-size", "8", "--output", str(tmp_path / "run"), "--json",
    )  # fmt: skip
    assert code == 0, err
    run = json.loads(out)
    code, out, err = cli("evaluate", "--weights", str(tmp_path / "run" / "model.safetensors"), "--data", str(root),
                         "--output", str(tmp_path / "eval"), "--json")  # fmt: skip
    assert code == 0, err
    evaluation = json.loads(out)
    record = push(cli, tmp_path / "run" / "model.safetensors", "--evaluation", str(tmp_path / "eval"))
    assert record["license"] == "MIT" and record["num_classes"] == 3
    card = server.uploaded(REPO, "README.md").decode()
    assert "license: mit\n" in card and "Recorded by the run that wrote the file" in card
    assert f"| recipe | {run['recipe']} |" in card and f"| epochs | {run['epochs']} |" in card
    assert f"| top1 | {run['top1']:.4g} |" in card and f"| lr | {run['lr']:.4g} |" in card
    assert "0: digit0, 1: digit1, 2: digit2" in card
    assert "| weights | start.safetensors |" in card and str(tmp_path) not in card  # no local folder on a public card
    low, high = evaluation["top1_ci95"]
    assert f"| images | {evaluation['images']} |" in card and f"| top1_ci95 | [{low:.4g}, {high:.4g}] |" in card
    assert f"| ece | {evaluation['ece']:.4g} |" in card and "![confusion](evaluation/confusion.png)" in card
    assert server.uploaded(REPO, "evaluation/confusion.png") == (tmp_path / "eval" / "confusion.png").read_bytes()
    assert server.uploaded(REPO, "model.safetensors") == (tmp_path / "run" / "model.safetensors").read_bytes()
    loaded, info = effnet.load_model(f"hf-hub:{REPO}")
    assert info.class_names == ["digit0", "digit1", "digit2"] and info.extra["recipe"] == run["recipe"]
    assert save(loaded.state_dict()) == save(effnet.load_model(tmp_path / "run" / "model.safetensors")[0].state_dict())
