"""``effnet evaluate`` end to end, and the evaluation summary ``train`` and ``finetune`` print at their end."""

from __future__ import annotations

import json

import pytest
import torch

import effnet
from effnet.data import DataWarning
from effnet.weights import save_weights
from helpers import make_digit_folder

BLOCKS = "r1_k3_s22_e1_i8_o16_se0.25"
KEYS = {
    "weights", "data", "model", "resolution", "images", "num_classes", "top1", "top1_ci95", "top5", "top5_ci95",
    "top_k", "ece", "loss", "per_class", "confusion_classes", "confusion", "calibration", "slowest",
    "confidently_wrong", "images_per_second", "skipped", "output",
}  # fmt: skip


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    root = tmp_path_factory.mktemp("evaluate_cli")
    torch.manual_seed(0)
    spec = effnet.NetworkSpec(
        name="tiny", blocks=effnet.parse_blocks(BLOCKS), stem_channels=8, head_channels=32, resolution=16
    )
    save_weights(
        effnet.create_model(spec, num_classes=3), root / "w.safetensors", class_names=["digit0", "digit1", "digit2"]
    )
    return root / "w.safetensors"


def test_cli_evaluate_json_and_report_folder(weights, tmp_path, cli):
    root = make_digit_folder(tmp_path / "data", per_class=1, val_per_class=5)
    (root / "val" / "digit2" / "readme.txt").write_text("not an image")
    with pytest.warns(DataWarning, match="skipped 1 file.* not readable images: .*readme.txt"):  # named, skipped
        code, out, err = cli(
            "evaluate", "--weights", str(weights), "--data", str(root), "--json", "--workers", "0", "--top", "2",
            "--output", str(tmp_path / "eval"),
        )  # fmt: skip
    assert code == 0, err
    report = json.loads(out)
    assert set(report) == KEYS
    assert report["images"] == 15 and sum(map(sum, report["confusion"])) == 15
    assert report["top1"] == sum(report["confusion"][i][i] for i in range(3)) / 15
    assert report["top1_ci95"][0] <= report["top1"] <= report["top1_ci95"][1]
    assert len(report["slowest"]) == 2 and report["data"] == str(root / "val")
    assert report["skipped"] == [str(root / "val" / "digit2" / "readme.txt")]
    assert {p.name for p in (tmp_path / "eval").iterdir()} >= {
        "report.md",
        "report.json",
        "confusion.png",
        "reliability.png",
    }
    with pytest.warns(DataWarning, match="readme.txt"):
        code, out, err = cli("evaluate", "--weights", str(weights), "--data", str(root), "--workers", "0")
    assert code == 0, err
    assert "top-1" in out and "95% interval" in out and "ECE" in out and "digit0" in out


def test_cli_evaluate_refusals_are_one_line(weights, tmp_path, cli):
    unknown = make_digit_folder(tmp_path / "unknown", classes=(0, 5), per_class=1, val_per_class=1) / "val"
    code, out, err = cli("evaluate", "--weights", str(weights), "--data", str(unknown))
    assert code == 2 and err.count("\n") == 1 and not out
    assert err.startswith("effnet evaluate: error: --data ") and "'digit5' that the weights do not have" in err
    (tmp_path / "empty").mkdir()
    code, out, err = cli("evaluate", "--weights", str(weights), "--data", str(tmp_path / "empty"))
    assert code == 2 and err.count("\n") == 1 and "--data" in err and "no class folders" in err
    (tmp_path / "hollow" / "digit1").mkdir(parents=True)
    code, out, err = cli("evaluate", "--weights", str(weights), "--data", str(tmp_path / "hollow"))
    assert code == 2 and err.count("\n") == 1 and "holds no readable images" in err
    code, out, err = cli("evaluate", "--weights", str(tmp_path / "missing.safetensors"), "--data", str(unknown))
    assert code == 2 and err.count("\n") == 1
    code, out, err = cli("evaluate", "--weights", str(weights), "--data", str(unknown), "--top", "0")
    assert code == 2 and "--top" in err


def test_train_and_finetune_end_with_the_evaluation_summary(weights, tmp_path, cli):
    common = ("--resolution", "16", "--epochs", "1", "--batch-size", "16", "--max-steps-per-epoch", "2",
              "--recipe", "small", "--no-progress")  # fmt: skip
    code, out, err = cli("train", "--blocks", BLOCKS, "--data", "digits", *common, "--json")
    assert code == 0, err
    report = json.loads(out)
    summary = report["evaluation"]
    assert set(summary) == {"images", "top1", "top1_ci95", "top5", "top_k", "ece", "worst_classes"}
    assert summary["images"] == 360 and summary["top_k"] == 5 and len(summary["worst_classes"]) == 3
    assert summary["top1_ci95"][0] <= summary["top1"] <= summary["top1_ci95"][1]
    assert "output" not in report  # evaluated from a temporary folder, removed
    root = make_digit_folder(tmp_path / "data", per_class=6, val_per_class=3)
    code, out, err = cli("finetune", "--weights", str(weights), "--data", str(root), *common, "--output",
                         str(tmp_path / "run"))  # fmt: skip
    assert code == 0, err
    line = next(line for line in out.splitlines() if line.startswith("evaluation on 9 images: top-1 "))
    assert "95% interval" in line and "ECE" in line and "worst classes: digit" in line
    assert (tmp_path / "run" / "model.safetensors").is_file()
