"""``effnet study-scaling``: width / depth / resolution / compound curves, CSV, figure, resuming."""

import csv
import json

import pytest

from effnet.search.study import Sweeps, compare_curves

TINY = "r1_k3_s11_e1_i32_o16_se0.25,r2_k3_s22_e4_i16_o24_se0.25"
ARGS = [
    "study-scaling",
    "--blocks",
    TINY,
    "--resolution",
    "16",
    "--epochs",
    "1",
    "--batch-size",
    "32",
    "--max-steps-per-epoch",
    "3",
    "--limit",
    "2",
    "--json",
]


def test_sweeps_are_the_papers_and_truncatable():
    sweeps = Sweeps()
    assert sweeps.values("width") == [1.0, 1.4, 1.8, 2.6, 3.8, 5.0]
    assert sweeps.values("depth") == [1, 2, 3, 4, 6, 8]
    assert sweeps.values("resolution") == [1.0, 1.3, 1.5, 1.7, 1.9, 2.2, 2.5]
    assert Sweeps(limit=3).values("resolution") == [1.0, 1.3, 1.5]
    assert sweeps.multipliers("compound", 2) == pytest.approx((1.44, 1.21, 1.3225))


def test_compare_curves_interpolates_on_log_macs():
    curves = {
        "compound": [
            {"family": "base", "macs": 100, "accuracy": 0.5},
            {"family": "compound", "macs": 400, "accuracy": 0.7},
        ],
        "width": [
            {"family": "base", "macs": 100, "accuracy": 0.5},
            {"family": "width", "macs": 200, "accuracy": 0.55},  # compound there: 0.6
            {"family": "width", "macs": 800, "accuracy": 0.9},  # beyond compound's range: not compared
        ],
    }
    out = compare_curves(curves, "macs")
    assert {k: out["width"][k] for k in ("points", "compound_ahead", "mean_gain")} == {
        "points": 1,
        "compound_ahead": 1,
        "mean_gain": pytest.approx(0.05),
    }


def test_study_scaling_on_digits_then_resume(cli, tmp_path):
    code, out, err = cli(*ARGS, "--output", str(tmp_path))
    assert code == 0, err
    result = json.loads(out)
    curves = result["curves"]
    assert list(curves) == ["width", "depth", "resolution", "compound"]
    assert result["points"] == 5  # the baseline (trained once) and one more point per curve
    base = curves["width"][0]
    for rows in curves.values():
        assert len(rows) == 2 and rows[0]["family"] == "base"
        assert (rows[0]["macs"], rows[0]["accuracy"]) == (base["macs"], base["accuracy"])
        assert all(r["state"] == "COMPLETE" and 0 <= r["accuracy"] <= 1 for r in rows)
        assert rows[1]["macs"] > base["macs"]
    assert curves["width"][1]["width"] == 1.4 and curves["depth"][1]["depth"] == 2
    assert curves["resolution"][1]["resolution"] == 21  # round(16 × 1.3)
    assert curves["compound"][1]["depth"] == 1.2 and curves["compound"][1]["resolution"] == 18
    with open(result["csv"]) as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 8 and {r["family"] for r in rows} == {"width", "depth", "resolution", "compound"}
    assert open(result["plot"], "rb").read(4) == b"\x89PNG"

    code, out, err = cli(*ARGS, "--output", str(tmp_path))  # the same command: nothing trains again
    assert code == 0, err
    again = json.loads(out)["curves"]
    assert [r["seconds"] for r in again["depth"]] == [r["seconds"] for r in curves["depth"]]
    # Truncated sweeps reuse the trained points; other proxy settings are refused.
    code, out, err = cli(*ARGS, "--output", str(tmp_path), "--families", "width,compound", "--limit", "1")
    assert code == 0, err
    assert json.loads(out)["curves"]["compound"][0]["seconds"] == base["seconds"]
    code, _, err = cli(*ARGS, "--output", str(tmp_path), "--epochs", "2")
    assert code == 2 and "other settings" in err
