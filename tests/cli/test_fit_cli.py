"""``effnet fit-scaling`` and ``study-scaling --fit``: laws fitted to a study's CSV, predictions,
holdout, figure, and one line with exit status 2 where no law can mean anything."""

import csv
import json

import pytest

from helpers import STUDY_BASE_MACS, STUDY_LAWS, STUDY_RATIOS, synthetic_study

RESAMPLES = "100"


@pytest.fixture
def run(tmp_path):
    """A study-scaling run folder whose CSV comes from known laws."""
    synthetic_study(tmp_path / "scaling_study.csv", rng=2)
    return tmp_path


def test_fit_scaling_json_prediction_holdout_and_figure(cli, run):
    target = 4 * STUDY_RATIOS["compound"][-1] * STUDY_BASE_MACS
    code, out, err = cli(
        "fit-scaling", str(run), "--at-macs", str(target), "--holdout", "--resamples", RESAMPLES, "--json"
    )
    assert code == 0, err
    data = json.loads(out)
    for family, (e_inf, k, a) in STUDY_LAWS.items():
        curve = data[family]
        assert {"e_inf", "k", "a"} == set(curve["params"]) and curve["fit"]["points"] == 6
        at = curve["at"]
        assert at["low"] < at["predicted"] < at["high"] and at["cost"] == target
        if family == "compound":  # 4× its largest measured cost: the truth inside the interval
            assert at["low"] <= 1 - (e_inf + k * 128**-a) <= at["high"] and at["beyond"] == 4
        assert isinstance(curve["holdout"]["inside"], bool) and curve["holdout"]["point"].startswith(family)
    assert {v["verdict"] for v in data["verdicts"].values()} == {"ahead"}  # compound's law is the best here
    assert data["plot"] == str(run / "scaling_study_fit.png") and (run / "scaling_study_fit.png").stat().st_size > 0
    assert any("depth" in w and "past 10×" in w for w in data["warnings"])  # 16× depth's largest cost


def test_fit_scaling_prints_tables_and_verdicts(cli, run, tmp_path):
    figure = tmp_path / "figures" / "fit.png"
    code, out, err = cli("fit-scaling", str(run / "scaling_study.csv"), "--at-macs", "64M", "--resamples", RESAMPLES,
                         "--holdout", "--plot", str(figure))  # fmt: skip
    assert code == 0, err
    assert "e_inf" in out and "at 6.4e+07 multiply-adds:" in out and "compound ahead of depth by" in out
    assert "holdout: each curve's largest-cost point predicted from the others" in out
    assert f"figure: {figure}" in out and figure.stat().st_size > 0


def test_fit_scaling_at_phi_adds_the_joint_choice(cli, run):
    code, out, err = cli("fit-scaling", str(run), "--at-phi", "3", "--resamples", "50", "--no-plot", "--json")
    assert code == 0, err
    data = json.loads(out)
    assert data["target"]["phi"] == 3 and data["target"]["cost"] == pytest.approx(8 * STUDY_BASE_MACS)
    assert data["plot"] is None and not (run / "scaling_study_fit.png").exists()
    assert "choice" in data and ("summary" in data["choice"] or "refused" in data["choice"])


def _edit(field, value, family=None):
    def edit(curves):
        for name in [family] if family else list(curves):
            curves[name] = [dict(r, **{field: value(r)}) for r in curves[name]]

    return edit


@pytest.mark.parametrize(
    "options, curves, message",
    [
        (dict(ratios={f: (2.0,) for f in STUDY_RATIOS}), [], "2 distinct multiply-adds among its learned points"),
        (
            dict(edit=_edit("accuracies", lambda r: [0.1, 0.12, 0.09])),
            [],
            "every point is below the learning threshold",
        ),
        (dict(edit=_edit("accuracies", lambda r: [*r["accuracies"][:-1], None], "width")), ["width"], "NaN"),
        (dict(seeds=1), [], "one seed per point"),
    ],
    ids=["too-few-costs", "all-chance", "nan-in-the-curve-asked-for", "one-seed"],
)
def test_fit_scaling_refuses_in_one_line(cli, tmp_path, options, curves, message):
    path = synthetic_study(tmp_path / "s.csv", rng=3, **options)
    asked = ["--curves", ",".join(curves)] if curves else []
    code, out, err = cli("fit-scaling", str(path), "--resamples", RESAMPLES, "--no-plot", *asked)
    assert code == 2 and out == ""
    assert message in err and len(err.strip().splitlines()) == 1


def test_fit_scaling_refuses_bad_options(cli, run, tmp_path):
    code, _, err = cli("fit-scaling", str(run), "--cost", "params", "--at-macs", "1e8")
    assert code == 2 and "--at-macs is a target in multiply-adds" in err
    code, _, err = cli("fit-scaling", str(tmp_path / "nothing.csv"))
    assert code == 2 and "does not exist" in err and len(err.strip().splitlines()) == 1
    code, _, err = cli("fit-scaling", str(run), "--at-phi", "99")
    assert code == 2 and "--at-phi must be" in err


def test_study_scaling_fit_adds_the_fit_and_the_new_columns(cli, tmp_path):
    tiny = "r1_k3_s11_e1_i32_o16_se0.25,r2_k3_s22_e4_i16_o24_se0.25"
    code, out, err = cli("study-scaling", "--blocks", tiny, "--resolution", "16", "--epochs", "1", "--batch-size", "32",
                         "--max-steps-per-epoch", "2", "--limit", "2", "--seeds", "2", "--output", str(tmp_path),
                         "--fit", "--holdout", "--json")  # fmt: skip
    assert code == 0, err
    data = json.loads(out)
    assert data["fit"]["refused"].startswith("no curve can be fitted")  # two costs per curve at --limit 2
    with open(tmp_path / "scaling_study.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert all(int(r["num_classes"]) == 10 and int(r["activations"]) > 0 for r in rows)
    base = [r["activations"] for r in rows if r["depth"] == r["width"] == r["resolution_multiplier"] == "1.0"]
    assert len(set(base)) == 1  # the baseline: one point, one count
    assert int(next(r for r in rows if r["family"] == "width" and r["value"] == "1.4")["activations"]) > int(base[0])
    code, _, err = cli("study-scaling", "--blocks", tiny, "--holdout", "--output", str(tmp_path / "b"))
    assert code == 2 and "add --fit" in err
