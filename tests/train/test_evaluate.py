"""Evaluation of a model on a labelled folder: the metrics on crafted arrays, then a real evaluation checked
against a hand count of the model's own predictions, the class mapping and the report folder."""

from __future__ import annotations

import json
import math
import re
import warnings

import numpy as np
import pytest
import torch

import effnet
from effnet.data import DataWarning
from effnet.errors import UserError
from effnet.train.evaluate import (
    calibration_bins,
    confusion_matrix,
    evaluate,
    expected_calibration_error,
    summarize,
    wilson_interval,
)
from effnet.weights import save_weights
from helpers import make_digit_folder

CLASSES = ["digit0", "digit1", "digit2"]


def test_wilson_interval_known_values():
    # 50 of 100: the textbook 0.4038–0.5962; 0 of 10 and 10 of 10: z²/(n + z²) = 0.2775 from the bound
    assert wilson_interval(50, 100) == pytest.approx((0.403832, 0.596168), abs=1e-6)
    z2 = 1.959963984540054**2
    assert wilson_interval(0, 10) == pytest.approx((0.0, z2 / (10 + z2)), abs=1e-12)
    assert wilson_interval(10, 10) == pytest.approx((1 - z2 / (10 + z2), 1.0), abs=1e-12)
    assert wilson_interval(0, 10)[1] == pytest.approx(0.277533, abs=1e-6)
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_expected_calibration_error_by_hand():
    # bins of width 1/15: 0.9 → (0.867, 0.933], 0.58 → (0.533, 0.6], 0.3 → (0.267, 0.333], 0.99 → (0.933, 1]
    conf = np.array([0.9, 0.9, 0.9, 0.9, 0.58, 0.58, 0.3, 0.3, 0.3, 0.99])
    hits = np.array([1, 1, 1, 0, 1, 0, 0, 0, 1, 1], dtype=bool)
    # 0.4·|0.75 − 0.9| + 0.2·|0.5 − 0.58| + 0.3·|1/3 − 0.3| + 0.1·|1 − 0.99|
    expected = 0.4 * 0.15 + 0.2 * 0.08 + 0.3 * (1 / 3 - 0.3) + 0.1 * 0.01
    assert expected_calibration_error(conf, hits) == pytest.approx(expected, abs=1e-12)
    assert expected == pytest.approx(0.087, abs=1e-12)
    bins = calibration_bins(conf, hits)
    assert len(bins) == 15 and sum(b["count"] for b in bins) == 10
    assert [b["count"] for b in bins if b["count"]] == [3, 2, 4, 1]
    assert bins[13] == {"low": 13 / 15, "high": 14 / 15, "count": 4, "confidence": pytest.approx(0.9),
                        "accuracy": 0.75}  # fmt: skip
    assert bins[0]["accuracy"] is None and bins[0]["confidence"] is None
    # perfectly calibrated: each bin's accuracy equals its confidence
    assert expected_calibration_error(np.array([0.5, 0.5, 1.0]), np.array([1, 0, 1])) == pytest.approx(0.0)
    assert math.isnan(expected_calibration_error(np.array([]), np.array([])))


def test_confusion_matrix_counts():
    matrix = confusion_matrix(np.array([0, 0, 1, 2, 2, 2]), np.array([0, 1, 1, 2, 0, 2]), 3)
    assert matrix.tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 2]]


def test_summarize_crafted_predictions():
    probs = torch.tensor(
        [
            [0.7, 0.2, 0.1, 0.0],  # true 0, right
            [0.1, 0.6, 0.3, 0.0],  # true 1, right
            [0.05, 0.9, 0.05, 0.0],  # true 2, wrong at 0.9
            [0.4, 0.0, 0.6, 0.0],  # true 0, wrong at 0.6
            [0.2, 0.1, 0.7, 0.0],  # true 2, right
        ]
    )
    targets = [0, 1, 2, 0, 2]
    report = summarize(probs, targets, ["a", "b", "c", "d"], names=[f"img{i}" for i in range(5)], top=2)
    assert report.images == 5 and report.top1 == 3 / 5 and report.top_k == 4 and report.top5 == 1.0
    assert report.top1_ci95 == pytest.approx(list(wilson_interval(3, 5)))
    assert report.confusion_classes == ["a", "b", "c"]  # "d": no images, never predicted
    assert report.confusion == [[1, 0, 1], [0, 1, 0], [0, 1, 1]]
    per = {r["class"]: r for r in report.per_class}
    assert per["a"]["accuracy"] == 0.5 and per["a"]["precision"] == 1.0 and per["a"]["support"] == 2
    assert per["b"]["accuracy"] == 1.0 and per["b"]["precision"] == 0.5
    assert per["c"]["accuracy"] == 0.5 and per["c"]["precision"] == 0.5 and per["c"]["predicted"] == 2
    assert [(w["image"], w["true"], w["predicted"]) for w in report.confidently_wrong] == [
        ("img2", "c", "b"),
        ("img3", "a", "c"),
    ]
    assert report.confidently_wrong[0]["confidence"] == pytest.approx(0.9)
    expected_loss = -np.mean(np.log([0.7, 0.6, 0.05, 0.4, 0.7]))
    assert report.loss == pytest.approx(expected_loss)
    assert report.summary()["worst_classes"][0]["class"] == "a"  # 50% of 2 images before c's 50% of 2: by name
    assert report.slowest == []  # no times given


@pytest.fixture(scope="module")
def folder_and_weights(tmp_path_factory):
    """A folder of real digits (3 classes, 10 validation images each) and a tiny model with a random, large
    classifier (so that it predicts several classes) saved with those class names."""
    root = tmp_path_factory.mktemp("evaluate")
    make_digit_folder(root / "data", per_class=2, val_per_class=10)
    torch.manual_seed(0)
    spec = effnet.NetworkSpec(
        name="tiny", blocks=effnet.parse_blocks("r1_k3_s22_e1_i8_o16_se0.25"), stem_channels=8, head_channels=32,
        resolution=16,
    )  # fmt: skip
    model = effnet.create_model(spec, num_classes=3)
    with torch.no_grad():
        model.classifier.weight.normal_(0, 3.0)
    save_weights(model.eval(), root / "w.safetensors", class_names=CLASSES)
    return root


def _hand_predictions(weights, files):
    """The model's top-1 class of each file, computed here from the file, its preprocessing and the model."""
    from effnet.data.images import read_rgb
    from effnet.factory import load_model

    model, info = load_model(weights)
    transform = info.preprocessing.eval_transform()
    with torch.no_grad():
        batch = torch.stack([transform(read_rgb(f)) for f in files])
        return model.eval()(batch).argmax(1).tolist()


def test_evaluate_matches_a_hand_count(folder_and_weights):
    root = folder_and_weights
    report = evaluate(root / "w.safetensors", root / "data", batch_size=7, workers=0, top=3)
    assert report.data == str(root / "data" / "val") and report.images == 30 and report.num_classes == 3
    files = sorted((root / "data" / "val").glob("*/*.png"))
    truth = [CLASSES.index(f.parent.name) for f in files]
    predicted = _hand_predictions(root / "w.safetensors", files)
    right = sum(p == t for p, t in zip(predicted, truth))
    assert len(set(predicted)) > 1  # the crafted classifier predicts several classes
    assert report.top1 == right / 30 and report.top1_ci95 == pytest.approx(list(wilson_interval(right, 30)))
    assert report.top5 == 1.0 and report.top_k == 3
    assert sum(map(sum, report.confusion)) == 30
    assert [sum(row) for row in report.confusion] == [10, 10, 10]
    expected = confusion_matrix(np.array(truth), np.array(predicted), 3).tolist()
    assert report.confusion == expected
    assert len(report.slowest) == 3 and all(r["ms"] >= r["load_ms"] > 0 for r in report.slowest)
    assert report.slowest[0]["ms"] >= report.slowest[-1]["ms"]
    wrong = [str(f) for f, p, t in zip(files, predicted, truth) if p != t]
    assert len(report.confidently_wrong) == min(3, len(wrong))
    assert all(w["image"] in wrong for w in report.confidently_wrong)
    assert report.images_per_second > 0


def test_class_mapping_and_refusals(folder_and_weights, tmp_path):
    root = folder_and_weights
    weights = root / "w.safetensors"
    unknown = make_digit_folder(tmp_path / "unknown", classes=(0, 7), per_class=1, val_per_class=1)
    with pytest.raises(UserError, match="class folder 'digit7' that the weights do not have") as err:
        evaluate(weights, unknown / "val", workers=0)
    assert err.value.field == "data"
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no class folders") as err:
        evaluate(weights, tmp_path / "empty", workers=0)
    assert err.value.field == "data"
    (tmp_path / "hollow" / "digit0").mkdir(parents=True)
    (tmp_path / "hollow" / "digit0" / "notes.txt").write_text("not an image")
    with pytest.raises(UserError, match="holds no readable images .skipped 1 file") as err:
        evaluate(weights, tmp_path / "hollow", workers=0)
    # a subset of the classes, and a non-image file: skipped with a warning naming it
    subset = make_digit_folder(tmp_path / "subset", classes=(1,), per_class=1, val_per_class=4) / "val"
    (subset / "digit1" / "notes.txt").write_text("not an image")
    with pytest.warns(DataWarning, match="notes.txt"):
        report = evaluate(weights, subset, workers=0)
    assert report.images == 4 and report.skipped == [str(subset / "digit1" / "notes.txt")]
    assert [r["class"] for r in report.per_class if r["support"]] == ["digit1"]
    # a file whose header reads but whose pixels do not: left out and named, never replaced by another image
    whole = next((subset / "digit1").glob("*.png"))
    (subset / "digit1" / "cut.png").write_bytes(whole.read_bytes()[:60])
    with pytest.warns(DataWarning) as caught:  # notes.txt again, and cut.png
        report = evaluate(weights, subset, workers=0)
    assert re.search(r"skipped 1 image.* that did not load: .*cut.png", str(caught[-1].message))
    assert report.images == 4 and report.skipped[-1] == str(subset / "digit1" / "cut.png")
    assert all(not r["image"].endswith("cut.png") for r in report.slowest)


def test_weights_without_class_names(folder_and_weights, tmp_path):
    from effnet.factory import load_model

    model, _ = load_model(folder_and_weights / "w.safetensors")
    save_weights(model, tmp_path / "nameless.safetensors")
    with pytest.warns(DataWarning, match="no class names: the 3 class folders .* classes 0–2 in sorted order"):
        named_by_order = evaluate(tmp_path / "nameless.safetensors", folder_and_weights / "data", workers=0)
    named = evaluate(folder_and_weights / "w.safetensors", folder_and_weights / "data", workers=0)
    assert named_by_order.top1 == named.top1 and named_by_order.confusion == named.confusion
    indexed = make_digit_folder(tmp_path / "indexed", classes=(0, 2), per_class=1, val_per_class=3) / "val"
    for c in (0, 2):
        (indexed / f"digit{c}").rename(indexed / str(c))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # class folders named by index need no warning
        by_index = evaluate(tmp_path / "nameless.safetensors", indexed, workers=0)
    assert by_index.images == 6 and [r["support"] for r in by_index.per_class if r["class"] in "02"] == [3, 3]
    with pytest.raises(UserError, match="digits has 10 class folders, the weights only 3 classes"):
        evaluate(tmp_path / "nameless.safetensors", "digits", workers=0)
    four = make_digit_folder(tmp_path / "four", classes=(0, 1, 2, 3), per_class=1, val_per_class=1)
    with pytest.raises(UserError, match="4 class folders, the weights only 3 classes"):
        evaluate(tmp_path / "nameless.safetensors", four / "val", workers=0)


def test_report_folder(folder_and_weights, tmp_path):
    root = folder_and_weights
    out = tmp_path / "eval"
    report = evaluate(root / "w.safetensors", root / "data", output=out, workers=0)
    assert report.output == str(out)
    assert {"report.md", "report.json", "confusion.png", "reliability.png"} <= {p.name for p in out.iterdir()}
    saved = json.loads((out / "report.json").read_text())
    assert saved["top1"] == report.top1 and saved["confusion"] == report.confusion
    assert f"{100 * report.top1:.1f}%" in (out / "report.md").read_text()
    assert (out / "confusion.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    again = evaluate(root / "w.safetensors", root / "data", output=out, workers=0)  # the same evaluation: replaced
    assert again.top1 == report.top1
    with pytest.raises(UserError, match="overwrite is needed to replace the other run"):
        evaluate(root / "w.safetensors", root / "data" / "train", output=out, workers=0)
    other = evaluate(root / "w.safetensors", root / "data" / "train", output=out, workers=0, overwrite=True)
    assert json.loads((out / "report.json").read_text())["images"] == other.images == 6
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "model.safetensors").write_bytes(b"")
    with pytest.raises(UserError, match="another command's run"):
        evaluate(root / "w.safetensors", root / "data", output=tmp_path / "run", workers=0)
