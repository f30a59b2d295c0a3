"""``effnet pipeline``: the whole method end to end on the built-in digits, at a tiny budget."""

import json

import pytest

from effnet import profile

# The pipeline's defaults, cut down: 2 grid points, one short epoch each, one final epoch.
FAST = ["--max-points", "2", "--epochs", "1", "--max-steps-per-epoch", "4", "--final-epochs", "1", "--json"]


def test_pipeline_end_to_end(cli, tmp_path):
    code, out, err = cli("pipeline", "--output", str(tmp_path), *FAST)
    assert code == 0, err
    summary = json.loads(out)
    trials = summary["search"]["trials"]
    assert len(trials) == 2 and all(t["state"] == "COMPLETE" for t in trials)
    assert all(abs(t["alpha"] * t["beta"] ** 2 * t["gamma"] ** 2 - 2) <= 0.1 + 1e-9 for t in trials)
    c = summary["coefficients"]
    best = max(trials, key=lambda t: (t["accuracy"], -t["macs"]))
    assert (c["alpha"], c["beta"], c["gamma"]) == (best["alpha"], best["beta"], best["gamma"])
    assert summary["phi"] == 1.0
    model = summary["model"]
    assert model["depth"] == pytest.approx(c["alpha"]) and model["width"] == pytest.approx(c["beta"])
    assert 0 <= summary["evaluation"]["top1"] <= 1 and summary["search"]["storage"].endswith("study.db")

    from effnet.factory import load_model

    net, info = load_model(summary["files"]["weights"])
    assert net.num_classes == 10 and profile(net).macs == model["macs"]
    report = (tmp_path / "report.md").read_text()
    assert "![accuracy vs multiply-adds" in report and "search_scaling.png" in report
    assert (tmp_path / "search_scaling.png").stat().st_size > 1000
    assert f"{c['alpha']:g}" in report and "top-1" in report

    # The same command again: no grid point is trained twice, the final model is not retrained.
    code, out, err = cli("pipeline", "--output", str(tmp_path), *FAST)
    assert code == 0, err
    again = json.loads(out)
    assert [t["trial"] for t in again["search"]["trials"]] == [t["trial"] for t in trials]
    assert again["evaluation"]["top1"] == pytest.approx(summary["evaluation"]["top1"])


def test_pipeline_to_a_macs_budget(cli, tmp_path):
    code, out, err = cli("pipeline", "--output", str(tmp_path), "--macs", "2.5M", *FAST)
    assert code == 0, err
    summary = json.loads(out)
    assert summary["plan"]["budget"] == {"metric": "macs", "value": 2.5e6}
    assert summary["model"]["macs"] <= 2.5e6 and summary["phi"] == summary["plan"]["phi"] > 0


def test_pipeline_user_mistakes(cli, tmp_path):
    code, _, err = cli("pipeline", "--output", str(tmp_path), "--phi", "2", "--macs", "1e9")
    assert code == 2 and "not both" in err and err.count("\n") == 1
    code, _, err = cli("pipeline", "--output", str(tmp_path), "--resolution", "8")
    assert code == 2 and "total stride" in err
