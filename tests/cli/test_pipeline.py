"""``effnet pipeline``: the whole method end to end on the built-in digits, at a tiny budget."""

import json
import shutil

import pytest

from effnet import get_description, profile, scale_compound
from effnet.search.stats import decide, difference, estimate, judge

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

    # Every seed of the proxy trains the scaled model and the baseline (φ = 0 at the final resolution).
    ev, baseline, gain = summary["evaluation"], summary["baseline"], summary["gain"]
    assert ev["seeds"] == baseline["seeds"] == [0, 1, 2] and len(ev["top1s"]) == len(baseline["top1s"]) == 3
    assert ev["top1"] == pytest.approx(sum(ev["top1s"]) / 3) and ev["top1_ci95"] == pytest.approx(
        estimate(ev["top1s"]).ci95
    )
    assert baseline["resolution"] == 32 and baseline["macs"] < model["macs"] and baseline["phi"] == 0
    runs = summary["files"]["seed_runs"]
    assert runs["final"] == [
        str(tmp_path / "final"),
        str(tmp_path / "final" / "seed-1"),
        str(tmp_path / "final" / "seed-2"),
    ]
    assert runs["baseline"] == [str(tmp_path / "baseline"), *(str(tmp_path / "baseline" / f"seed-{s}") for s in (1, 2))]
    small, _ = load_model(tmp_path / "baseline" / "seed-2" / "model.safetensors")
    assert profile(small).macs == baseline["macs"] and summary["files"]["baseline_weights"] == baseline["weights"]
    # The gain by the one rule: Welch's interval of the difference, a tie exactly where it contains 0.
    d = difference(estimate(ev["top1s"]), estimate(baseline["top1s"]))
    assert (gain["mean"], gain["ci95"], gain["low"], gain["high"]) == pytest.approx((d.mean, d.ci95, d.low, d.high))
    assert gain["decision"] == decide(d) == ("tie" if d.low <= 0 <= d.high else "ahead" if d.low > 0 else "behind")
    assert gain["verdict"] == judge(d, "the scaled model (φ = 1)", "the baseline (φ = 0)") and gain["verdict"] in report
    assert "## 4. Does scaling pay? The baseline under the same budget" in report
    assert ("tied" in gain["verdict"]) == (gain["decision"] == "tie")

    # The same command again: no grid point is trained twice, the final model is not retrained.
    code, out, err = cli("pipeline", "--output", str(tmp_path), *FAST)
    assert code == 0, err
    again = json.loads(out)
    assert [t["trial"] for t in again["search"]["trials"]] == [t["trial"] for t in trials]
    assert again["evaluation"]["top1"] == pytest.approx(summary["evaluation"]["top1"])
    assert again["baseline"]["top1s"] == pytest.approx(baseline["top1s"]) and again["gain"] == pytest.approx(gain)

    # A run killed before one seed's baseline started: the rerun trains that seed only.
    shutil.rmtree(tmp_path / "baseline" / "seed-2")
    code, out, err = cli("pipeline", "--output", str(tmp_path), *FAST)
    assert code == 0, err
    resumed = json.loads(out)
    assert resumed["evaluation"]["top1s"] == pytest.approx(ev["top1s"])
    assert resumed["baseline"]["top1s"][:2] == pytest.approx(baseline["top1s"][:2])
    assert (tmp_path / "baseline" / "seed-2" / "model.safetensors").exists() and len(resumed["baseline"]["top1s"]) == 3


def test_pipeline_to_a_macs_budget(cli, tmp_path):
    code, out, err = cli("pipeline", "--output", str(tmp_path), "--macs", "2.5M", *FAST)
    assert code == 0, err
    summary = json.loads(out)
    assert summary["plan"]["budget"] == {"metric": "macs", "value": 2.5e6}
    assert summary["model"]["macs"] <= 2.5e6 and summary["phi"] == summary["plan"]["phi"] > 0


def test_pipeline_scales_below_the_baseline(cli, tmp_path):
    """φ < 0 (as TinyNet): the scaled model is smaller than the baseline it is compared with."""
    args = ["--phi", "-1", "--final-resolution", "64", "--seeds", "2"]
    code, out, err = cli("pipeline", "--output", str(tmp_path), *args, *FAST)
    assert code == 0, err
    summary = json.loads(out)
    c, model, baseline = summary["coefficients"], summary["model"], summary["baseline"]
    assert summary["phi"] == -1 and model["depth"] == pytest.approx(1 / c["alpha"])
    expected = scale_compound(get_description("b0_mini").with_(resolution=64), -1, c["alpha"], c["beta"], c["gamma"])
    assert model["width"] == pytest.approx(1 / c["beta"]) and model["resolution"] == expected.resolution <= 64
    assert model["blocks"] == expected.block_strings
    assert model["macs"] < baseline["macs"] and baseline["resolution"] == 64 and baseline["seeds"] == [0, 1]
    d = difference(estimate(summary["evaluation"]["top1s"]), estimate(baseline["top1s"]))
    assert summary["gain"]["verdict"] == judge(d, "the scaled model (φ = -1)", "the baseline (φ = 0)")


def test_pipeline_user_mistakes(cli, tmp_path):
    code, _, err = cli("pipeline", "--output", str(tmp_path), "--phi", "2", "--macs", "1e9")
    assert code == 2 and "not both" in err and err.count("\n") == 1
    code, _, err = cli("pipeline", "--output", str(tmp_path), "--resolution", "8")
    assert code == 2 and "total stride" in err
    # φ = -1 at the proxy's 32 px would train below b0_mini's total stride: refused before any training
    code, _, err = cli("pipeline", "--output", str(tmp_path), "--phi", "-1")
    assert code == 2 and err.count("\n") == 1 and "phi -1 cannot scale the baseline with grid point" in err
    assert "total stride" in err and not (tmp_path / "study.db").exists()
    code, _, err = cli("pipeline", "--output", str(tmp_path), "--phi", "-17")
    assert code == 2 and err.count("\n") == 1 and "-16" in err
