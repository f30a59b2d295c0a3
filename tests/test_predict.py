"""Real pretrained inference: EfficientNet-Lite0's ImageNet weights on scikit-image's photos."""

import json

import pytest
import skimage.data
from PIL import Image

from effnet.infer.predict import load_predictor

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
