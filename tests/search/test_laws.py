"""Fitted scaling laws (search/laws.py) on synthetic studies drawn from known laws with seed noise,
written in study-scaling's CSV format."""

import csv
import math

import numpy as np
import pytest

from effnet.errors import UserError
from effnet.search.laws import fit_study, phi_cost, read_study, resample_seeds
from helpers import STUDY_BASE_MACS, STUDY_LAWS, STUDY_RATIOS, synthetic_study

#: Bootstrap resamples in tests (the command's default is larger): enough for stable 95% percentiles.
RESAMPLES = 200


def truth(family: str, ratio: float) -> float:
    e_inf, k, a = STUDY_LAWS[family]
    return 1.0 - (e_inf + k * ratio**-a)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    return synthetic_study(tmp_path_factory.mktemp("study") / "scaling_study.csv", rng=2)


def test_read_study_parses_the_csv_study_scaling_writes(study):
    rows = read_study(study.parent)  # the run folder reads its scaling_study.csv
    assert len(rows) == 4 * 6
    assert [r["family"] for r in rows[:7]] == ["width"] * 6 + ["depth"]
    base, last = rows[0], rows[5]
    assert (base["value"], base["macs"], base["num_classes"], base["activations"]) == (1.0, STUDY_BASE_MACS, 10, 5000)
    assert last["macs"] == 25 * STUDY_BASE_MACS and last["width"] == 6.0
    assert len(last["accuracies"]) == 8 and all(isinstance(a, float) for a in last["accuracies"])
    assert last["accuracy"] == pytest.approx(np.mean(last["accuracies"]), abs=1e-5)
    assert truth("width", 25.0) == pytest.approx(last["accuracy"], abs=0.01)


def test_read_study_takes_old_csvs_and_refuses_what_is_not_one(study, tmp_path):
    with open(study, newline="") as f:
        old = [{k: v for k, v in r.items() if k not in ("num_classes", "activations")} for r in csv.DictReader(f)]
    path = tmp_path / "old.csv"
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(old[0]))
        writer.writeheader()
        writer.writerows(old)
    rows = read_study(path)
    assert rows[1]["num_classes"] is None and rows[1]["activations"] is None and rows[1]["macs"] == 1_960_000
    with pytest.raises(UserError, match="no activations column") as err:
        fit_study(rows, cost="activations", resamples=RESAMPLES)
    assert err.value.field == "cost"
    (tmp_path / "junk.csv").write_text("a,b\n1,2\n")
    with pytest.raises(UserError, match="lacks the column") as err:
        read_study(tmp_path / "junk.csv")
    assert err.value.field == "source"
    with pytest.raises(UserError, match="holds no scaling_study.csv"):
        read_study(tmp_path)


def test_resample_seeds_draws_each_points_own_seeds_and_the_baseline_once(study):
    rows = read_study(study)
    one = resample_seeds(rows, np.random.default_rng(5))
    again = resample_seeds(rows, np.random.default_rng(5))
    assert [r["accuracies"] for r in one] == [r["accuracies"] for r in again]
    for before, after in zip(rows, one):
        assert len(after["accuracies"]) == len(before["accuracies"])
        assert set(after["accuracies"]) <= set(before["accuracies"])
        assert after["accuracy"] == pytest.approx(np.mean(after["accuracies"]))
    bases = [r["accuracies"] for r in one if r["depth"] == r["width"] == r["resolution_multiplier"] == 1.0]
    assert len(bases) == 4 and all(b == bases[0] for b in bases)  # one point, one draw, in every curve
    assert any(a["accuracies"] != b["accuracies"] for a, b in zip(rows, one))


@pytest.mark.parametrize("family", list(STUDY_LAWS))
def test_fit_recovers_each_curves_accuracy_at_4x_its_largest_cost(study, family):
    rows = read_study(study)
    ratio = 4 * STUDY_RATIOS[family][-1]
    report = fit_study(rows, at_cost=ratio * STUDY_BASE_MACS, curves=[family], resamples=RESAMPLES)
    fit = report.curves[family]
    at = fit.at
    assert at["low"] <= truth(family, ratio) <= at["high"]
    assert at["high"] - at["low"] < 0.06  # an interval that says something
    assert at["beyond"] == pytest.approx(4.0)
    assert fit.fit["r2"] > 0.99 and fit.fit["rmse"] < 1.0 and (fit.fit["points"], fit.fit["seeds"]) == (6, 48)
    for name in ("e_inf", "k", "a"):
        p = fit.params[name]
        assert p.low <= p.value <= p.high and math.isfinite(p.low)
    assert report.warnings == []


def test_overlapping_predictions_get_no_verdict_and_distinct_ones_do(tmp_path):
    same = dict(STUDY_LAWS, width=STUDY_LAWS["compound"])  # width follows compound's law on its own costs
    rows = read_study(synthetic_study(tmp_path / "s.csv", laws=same, rng=3))
    report = fit_study(rows, at_cost=64 * STUDY_BASE_MACS, resamples=RESAMPLES)
    width, depth = report.verdicts["width"], report.verdicts["depth"]
    assert width["verdict"] == "tie" and width["difference"]["low"] <= 0 <= width["difference"]["high"]
    assert "tied" in width["text"]
    w, c = report.curves["width"].at, report.curves["compound"].at
    assert w["low"] <= c["high"] and c["low"] <= w["high"]  # the predicted intervals overlap
    expected = truth("compound", 64) - truth("depth", 64)
    assert depth["verdict"] == "ahead" and depth["difference"]["low"] > 0
    assert depth["difference"]["low"] <= expected <= depth["difference"]["high"]
    assert depth["text"].startswith("compound ahead of depth by")


def _edit_point(family, value, change):
    def edit(curves):
        for i, row in enumerate(curves[family]):
            if row["value"] == value:
                curves[family][i] = change(dict(row))

    return edit


def test_holdout_flags_a_largest_point_off_its_law(tmp_path):
    def off(row):  # 6 points above what width's law predicts at 25×
        row["accuracies"] = [a + 0.06 for a in row["accuracies"]]
        return row

    rows = read_study(synthetic_study(tmp_path / "s.csv", rng=2, edit=_edit_point("width", 6.0, off)))
    report = fit_study(rows, holdout=True, resamples=RESAMPLES)
    width = report.curves["width"].holdout
    assert width["point"] == "width=6" and width["cost"] == 25 * STUDY_BASE_MACS
    assert not width["inside"] and not width["agrees"] and width["difference"]["high"] < 0
    assert width["measured"]["value"] == pytest.approx(truth("width", 25) + 0.06, abs=0.01)
    for family in ("depth", "resolution", "compound"):
        held = report.curves[family].holdout
        assert held["agrees"], (family, held)
        assert held["difference"]["low"] <= 0 <= held["difference"]["high"]
    assert report.curves["depth"].holdout["inside"]  # the literal check, where the measurement lands inside


def test_at_phi_places_phi_on_the_compound_cost_axis(study):
    rows = read_study(study)
    assert phi_cost(rows, 7) == pytest.approx(128 * STUDY_BASE_MACS, rel=1e-6)  # cost 2^φ in this study
    report = fit_study(rows, at_phi=3, resamples=RESAMPLES)
    assert report.target["phi"] == 3 and report.curves["compound"].at["beyond"] == pytest.approx(0.25)
    assert report.curves["compound"].at["predicted"] == pytest.approx(truth("compound", 8), abs=0.01)


def test_far_targets_are_flagged(study):
    report = fit_study(read_study(study), at_cost=500 * STUDY_BASE_MACS, curves=["compound"], resamples=RESAMPLES)
    assert report.curves["compound"].at["beyond"] == pytest.approx(500 / 32)
    assert len(report.warnings) == 1 and "past 10×" in report.warnings[0]


def test_other_costs_fit_the_same_law(study):
    rows = read_study(study)
    for cost in ("params", "activations", "time"):  # each proportional to macs in this study: the same law
        fit = fit_study(rows, cost=cost, curves=["compound"], resamples=RESAMPLES).curves["compound"]
        assert fit.params["a"].low <= STUDY_LAWS["compound"][2] <= fit.params["a"].high


def _set(family, field, value):
    def edit(curves):
        for name in [family] if family else list(curves):
            curves[name] = [dict(r, **{field: value(r)}) for r in curves[name]]

    return edit


REFUSALS = {
    "too few costs": (dict(ratios={**STUDY_RATIOS, "depth": (2.0,)}), "depth", "2 distinct multiply-adds"),
    "all at chance": (
        dict(edit=_set("depth", "accuracies", lambda r: [0.1, 0.12, 0.09])),
        "depth",
        "below the learning",
    ),
    "NaN accuracy": (dict(edit=_set("depth", "accuracies", lambda r: [*r["accuracies"][:-1], None])), "depth", "NaN"),
    "one seed": (dict(seeds=1), None, "one seed per point"),
    "seeds agree": (dict(noise=0.0), None, "agree exactly"),
    "falls with cost": (dict(laws={**STUDY_LAWS, "depth": (0.6, -0.2, 0.5)}), "depth", "does not rise with cost"),
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_a_curve_no_law_can_describe_is_refused_in_one_line(tmp_path, case):
    options, family, message = REFUSALS[case]
    rows = read_study(synthetic_study(tmp_path / "s.csv", rng=3, **options))
    if family is None:  # every curve: nothing can be fitted
        with pytest.raises(UserError, match=message) as err:
            fit_study(rows, resamples=RESAMPLES)
        assert str(err.value).startswith("no curve can be fitted") and "\n" not in str(err.value)
        return
    report = fit_study(rows, at_cost=64 * STUDY_BASE_MACS, resamples=RESAMPLES)
    assert message in report.curves[family].refused and report.curves["width"].refused is None
    assert report.verdicts[family] == {
        "verdict": "unknown",
        "text": f"no verdict: the {family} curve could not be fitted",
    }
    assert report.to_dict()[family] == {"refused": report.curves[family].refused}
    with pytest.raises(UserError, match=message) as err:  # a curve asked for by name must fit
        fit_study(rows, curves=[family], resamples=RESAMPLES)
    assert "\n" not in str(err.value)


def test_points_below_the_learning_threshold_are_left_out(tmp_path):
    edit = _set("width", "accuracies", lambda r: [0.1, 0.11, 0.12] if r["value"] == 2.0 else r["accuracies"])
    rows = read_study(synthetic_study(tmp_path / "s.csv", rng=3, edit=edit))
    fit = fit_study(rows, curves=["width"], resamples=RESAMPLES).curves["width"]
    assert fit.fit["left_out"] == ["width=2"] and fit.fit["points"] == 5


def test_json_holds_each_curve_under_its_name_with_real_numbers(study):
    data = fit_study(read_study(study), at_cost=100 * STUDY_BASE_MACS, holdout=True, resamples=RESAMPLES).to_dict()
    for family in STUDY_LAWS:
        curve = data[family]
        for name in ("e_inf", "k", "a"):
            assert set(curve["params"][name]) == {"value", "low", "high"}
            assert all(math.isfinite(v) for v in curve["params"][name].values())
        assert {"r2", "rmse", "points", "seeds"} <= set(curve["fit"])
        at = curve["at"]
        assert at["cost"] == 100 * STUDY_BASE_MACS and 0 < at["low"] <= at["predicted"] <= at["high"] < 1
        assert at["beyond"] == pytest.approx(100 / (STUDY_RATIOS[family][-1]))
        assert {"predicted", "measured", "inside", "agrees", "difference"} <= set(curve["holdout"])
    assert set(data["verdicts"]) == {"width", "depth", "resolution"}
    assert data["target"]["cost"] == 100 * STUDY_BASE_MACS and data["resamples"] == RESAMPLES


def test_bad_arguments_name_themselves(study):
    rows = read_study(study)
    for kwargs, field in (
        (dict(cost="flops"), "cost"),
        (dict(at_cost=-1.0), "at_cost"),
        (dict(at_phi=99.0), "at_phi"),
        (dict(resamples=3), "resamples"),
        (dict(curves=["height"]), "curves"),
    ):
        with pytest.raises(UserError) as err:
            fit_study(rows, **kwargs)
        assert err.value.field == field, kwargs


def test_the_study_compares_curves_at_equal_activations(study):
    from effnet.search.study import compare_curves, cost_field

    assert cost_field("activations") == "activations"
    rows = read_study(study)
    as_run = [
        dict(r, family="base") if r["depth"] == r["width"] == r["resolution_multiplier"] == 1 else r for r in rows
    ]
    curves = {f: [r for r, raw in zip(as_run, rows) if raw["family"] == f] for f in ("width", "compound")}
    out = compare_curves(curves, "activations")["width"]
    assert out["by"] == "activations" and out["points"] == 5 and out["difference"] > 0  # compound's law is ahead
    assert "activations" in out["verdict"]
