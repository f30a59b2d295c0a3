"""Real pretrained inference: EfficientNet-Lite0's ImageNet weights on scikit-image's photos."""

import json
import os
import struct
import zlib

import pytest
import skimage.data
import torch
from PIL import Image

from effnet.deploy.predict import load_predictor

CATS = {"tabby", "tiger cat", "Egyptian cat"}


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("photos")
    paths = {}
    for name in ("chelsea", "coffee"):
        paths[name] = folder / f"{name}.png"
        Image.fromarray(getattr(skimage.data, name)()).save(paths[name])
    paths["broken"] = folder / "broken.jpg"
    paths["broken"].write_bytes(b"\xff\xd8 not really a jpeg")
    return paths


def test_lite0_labels_photos(photos, cli):
    code, out, err = cli(
        "predict", str(photos["chelsea"]), str(photos["coffee"]), "--weights", "lite0-imagenet", "--top", "3", "--json"
    )
    assert code == 0, err
    results = json.loads(out)
    assert [r["image"] for r in results] == [str(photos["chelsea"]), str(photos["coffee"])]
    cat, coffee = (r["top"] for r in results)
    assert cat[0]["label"] in CATS and sum(t["prob"] for t in cat if t["label"] in CATS) > 0.8
    assert coffee[0]["label"] == "espresso" and coffee[0]["index"] == 967 and coffee[0]["prob"] > 0.8
    assert len(cat) == 3 and cat[0]["prob"] >= cat[1]["prob"] >= cat[2]["prob"]


def test_unreadable_image_is_reported_and_others_classified(photos, cli):
    code, out, err = cli(
        "predict", str(photos["broken"]), str(photos["coffee"]), "--weights", "lite0-imagenet", "--model", "lite0"
    )
    assert code == 1
    assert err.count("\n") == 1 and str(photos["broken"]) in err and "Traceback" not in err
    assert out.splitlines()[0] == str(photos["coffee"]) and "espresso (967)" in out.splitlines()[1]
    code, out, err = cli("predict", str(photos["broken"]), "missing.png", "--weights", "lite0-imagenet")
    assert code == 2 and out == "" and err.count("\n") == 2 and "missing.png: no such file" in err


def test_predictor_api_batches(photos):
    predictor = load_predictor("lite0-imagenet")
    results = list(predictor.predict_files([str(photos["coffee"])] * 3, top_k=1, batch_size=2))
    assert len(results) == 3 and {r.top[0]["label"] for r in results} == {"espresso"}
    # the same image in a batch of two and alone: same label, probabilities equal to float rounding
    # (oneDNN may block a batch of one differently)
    assert [t["index"] for t in results[0].top] == [t["index"] for t in results[2].top]
    assert results[0].top[0]["prob"] == pytest.approx(results[2].top[0]["prob"], abs=1e-6)


# ------------------------------------------------------------------------------------- hardening


def _bomb(path, side=40_000):
    """A PNG whose header says side × side pixels (grey, 1 bit): PIL refuses it before decoding."""

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    data = (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    )
    path.write_bytes(data)


def test_predict_refuses_decompression_bombs_and_classifies_the_rest(int8_run, tmp_path, cli):
    bomb, good = tmp_path / "bomb.png", int8_run / "labelled" / "green" / "0.png"
    _bomb(bomb)
    code, out, err = cli("predict", str(bomb), str(good), "--weights", str(int8_run / "int8_run.safetensors"))
    assert code == 1 and err.count("\n") == 1 and str(bomb) in err and "Traceback" not in err
    assert out.splitlines()[0] == str(good)
    # the limit is configurable: 40 × 47 pixels are over a limit of 1000
    code, out, err = cli(
        "predict", str(good), "--weights", str(int8_run / "int8_run.safetensors"), "--max-pixels", "1000"
    )
    assert code == 2 and err.count("\n") == 1 and "more than the limit of 1,000" in err
    assert Image.MAX_IMAGE_PIXELS == 1024 * 1024 * 1024 // 4 // 3  # PIL's own limit untouched


def test_unavailable_devices_are_one_line(int8_run, tmp_path, cli):
    weights, image = str(int8_run / "int8_run.safetensors"), str(int8_run / "labelled" / "red" / "0.png")
    devices = ["bogus", "tpu"] + ([] if torch.cuda.is_available() else ["cuda"])
    for device in devices:
        code, _, err = cli("predict", image, "--weights", weights, "--device", device)
        assert code == 2 and err.count("\n") == 1 and err.startswith("effnet predict: error: --device"), err
        out = str(tmp_path / "x.pt")
        code, _, err = cli("export", "--weights", weights, "--format", "torchscript", "-o", out, "--device", device)
        assert code == 2 and err.count("\n") == 1 and err.startswith("effnet export: error: --device"), err


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this system")
def test_predict_on_a_fifo_named_like_an_image_is_one_line_not_a_hang(int8_run, tmp_path):
    from bounded import effnet_cli

    fifo = tmp_path / "f.jpg"
    os.mkfifo(fifo)
    code, out, err = effnet_cli("predict", str(fifo), "--weights", str(int8_run / "int8_run.safetensors"), timeout=60)
    assert code == 2 and out == "" and err.count("\n") == 1 and "f.jpg is a FIFO, not a regular file" in err, err


def test_predict_refuses_a_1_by_1000000_image_and_classifies_the_rest(int8_run, tmp_path):
    from bounded import effnet_cli

    thin, good = tmp_path / "thin.png", int8_run / "labelled" / "green" / "0.png"
    Image.new("RGB", (1, 1_000_000)).save(thin)
    code, out, err = effnet_cli("predict", str(thin), str(good), "--weights", str(int8_run / "int8_run.safetensors"))
    assert code == 1 and err.count("\n") == 1 and "thin.png has 1×1000000 pixels, more elongated" in err, err
    assert out.splitlines()[0] == str(good)


def test_predict_never_expands_an_image_past_the_pixel_limit(int8_run, tmp_path, cli):
    """900 × 10 pixels are within the limit; resized to the model's short side (64 px) they are 5760 × 64."""
    wide, good = tmp_path / "wide.png", int8_run / "labelled" / "green" / "0.png"
    Image.new("RGB", (900, 10)).save(wide)
    weights = str(int8_run / "int8_run.safetensors")
    code, out, err = cli("predict", str(wide), str(good), "--weights", weights, "--max-pixels", "100000")
    assert code == 1 and err.count("\n") == 1 and "wide.png would be resized to 5760×64 pixels" in err, err
    assert out.splitlines()[0] == str(good)
    code, out, err = cli("predict", str(wide), "--weights", weights)  # within the default limit: classified
    assert code == 0 and out.splitlines()[0] == str(wide), err
