"""Image folders: layout, corrupt and non-image files skipped with a warning naming them."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from effnet import NetworkSpec, UserError
from effnet.data import load_digits_splits, load_folder_splits
from effnet.train import DataWarning, train_model
from helpers import make_digit_folder

TINY = NetworkSpec(name="tiny", blocks="r1_k3_s22_e1_i8_o16_se0.25", stem_channels=8, head_channels=32, resolution=16)


def test_digits_split_is_fixed_and_stratified():
    first, second = load_digits_splits(), load_digits_splits()
    assert len(first.train) + len(first.val) == 1797 and len(first.val) == 360
    assert first.val.targets == second.val.targets
    counts = np.bincount(first.val.targets)
    assert counts.min() >= 35 and counts.max() <= 37


def test_corrupt_and_non_image_files_are_skipped_with_a_warning(tmp_path):
    root = make_digit_folder(tmp_path / "data")
    (root / "train" / "digit0" / "broken.jpg").write_bytes(b"this is not a jpeg")
    (root / "train" / "digit1" / "notes.txt").write_text("hello")
    good = next((root / "train" / "digit2").glob("*.png"))
    truncated = root / "train" / "digit2" / "truncated.png"
    truncated.write_bytes(good.read_bytes()[:60])  # a valid header, no image data
    with pytest.warns(DataWarning, match=r"skipped 2 file\(s\).*broken\.jpg.*notes\.txt"):
        splits = load_folder_splits(root)
    assert splits.class_names == ["digit0", "digit1", "digit2"]
    assert len(splits.train) == 37 and len(splits.val) == 12  # 36 good + the truncated one (header passes)
    bad = [i for i, f in enumerate(splits.train.files) if f.name == "truncated.png"][0]
    with pytest.warns(DataWarning, match="truncated.png"):
        image, target = splits.train.load(bad)
    assert target == splits.train.targets[(bad + 1) % len(splits.train)] and image.size == (16, 16)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        report = train_model(TINY, root, epochs=1, batch_size=37, recipe="small", progress=False, workers=0)
    messages = [str(w.message) for w in caught if issubclass(w.category, DataWarning)]
    assert any("truncated.png" in m for m in messages)
    assert report.num_classes == 3 and report.steps == 1


def test_test_folder_is_accepted_as_validation(tmp_path):
    root = make_digit_folder(tmp_path / "data", val_name="test")
    assert len(load_folder_splits(root).val) == 12


@pytest.mark.parametrize(
    "layout, message",
    [
        ("missing", "does not exist"),
        ("no_train", "no train/"),
        ("no_val", "no val/ or test/"),
        ("one_class", "at least two class folders"),
        ("extra_val_class", "does not have"),
    ],
)
def test_folder_mistakes(tmp_path, layout, message):
    root = tmp_path / "data"
    if layout != "missing":
        make_digit_folder(root, classes=(0,) if layout == "one_class" else (0, 1))
    if layout == "no_train":
        (root / "train").rename(root / "training")
    if layout == "no_val":
        (root / "val").rename(root / "other")
    if layout == "extra_val_class":
        (root / "val" / "digit9").mkdir()
    with pytest.raises(UserError, match=message):
        load_folder_splits(root)


def test_cli_train_on_folder_json(tmp_path, cli):
    import json

    root = make_digit_folder(tmp_path / "data")
    out = tmp_path / "run"
    code, stdout, err = cli(
        "train", "--blocks", "r1_k3_s22_e1_i8_o16_se0.25", "--resolution", "16", "--data", str(root),
        "--epochs", "1", "--batch-size", "8", "--recipe", "small", "--output", str(out), "--json",
    )  # fmt: skip
    assert code == 0, err
    report = json.loads(stdout)
    assert report["num_classes"] == 3 and report["class_names"] == ["digit0", "digit1", "digit2"]
    for key in ("top1", "top5", "loss", "params", "macs", "seconds", "images_per_second"):
        assert key in report
    assert json.loads((out / "report.json").read_text())["top1"] == report["top1"]
    assert (out / "metrics.csv").read_text().startswith("epoch,step,lr,train_loss,val_loss,top1,top5")
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))
    assert (out / "checkpoints" / "last.pt").exists() and (out / "model.safetensors").exists()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--data", "/no/such/dir"], "does not exist"),
        (["--epochs", "-3"], "must be ≥ 1"),
        (["--recipe", "fancy"], "unknown recipe"),
        (["--model", "efficientnet_b99"], "efficientnet_b99"),
        (["--set", "nonsense=1"], "unknown recipe setting"),
        (["--augment", "mixup"], "augment"),
    ],
)
def test_cli_user_mistakes_are_one_line_exit_2(cli, argv, message):
    code, out, err = cli("train", "--epochs", "1", "--max-steps-per-epoch", "1", *argv)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and message in err


def test_same_numbers_with_any_number_of_loader_workers(tmp_path):
    root = make_digit_folder(tmp_path / "data", per_class=8, val_per_class=2)
    kwargs = dict(epochs=2, batch_size=8, recipe="small", progress=False, augment="randaugment")
    with_workers = train_model(TINY, root, workers=2, **kwargs)
    in_process = train_model(TINY, root, workers=0, **kwargs)
    for key in ("top1", "loss", "train_loss"):
        assert getattr(with_workers, key) == getattr(in_process, key)
