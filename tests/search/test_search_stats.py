"""How sure the search and the study are: t-intervals, Welch differences, equal-cost interpolation
checked by hand on synthetic curves, ties and margins of the grid search."""

import math

import pytest
from scipy.stats import t as student

from effnet.search import stats
from effnet.search.grid import choose
from effnet.search.record import TrialRecord, point_row
from effnet.search.stats import Estimate, combine, difference, estimate, interpolation_weights, learning_threshold
from effnet.search.study import compare_curves


def test_t_interval_over_seeds_and_one_seed_is_unknown_not_zero():
    e = estimate([0.6, 0.7, 0.8])
    assert e.mean == pytest.approx(0.7) and e.std == pytest.approx(0.1) and e.n == 3
    assert e.ci95 == pytest.approx(4.302652729911275 * 0.1 / math.sqrt(3))  # t(0.975, 2)
    one = estimate([0.42])
    assert one.mean == 0.42 and one.ci95 is None and one.std is None and one.low is None
    assert estimate([]) is None


def test_welch_difference():
    a, b = estimate([0.80, 0.82]), estimate([0.70, 0.74, 0.72])
    d = difference(a, b)
    va, vb = 0.0002 / 2, 0.0004 / 3  # s² / n
    df = (va + vb) ** 2 / (va**2 / 1 + vb**2 / 2)
    assert d.mean == pytest.approx(0.09)
    assert d.ci95 == pytest.approx(student.ppf(0.975, df) * math.sqrt(va + vb))
    assert difference(a, estimate([0.7])).ci95 is None  # one seed on either side: unknown


def test_interpolation_weights_in_log_cost_never_extrapolate():
    assert interpolation_weights([100, 400], 200) == pytest.approx({0: 0.5, 1: 0.5})  # log 2 / log 4
    assert interpolation_weights([100, 400, 1600], 800) == pytest.approx({1: 0.5, 2: 0.5})
    assert interpolation_weights([100, 400], 400) == pytest.approx({0: 0.0, 1: 1.0})
    assert interpolation_weights([100, 400], 99) is None and interpolation_weights([100, 400], 401) is None
    assert interpolation_weights([100], 100) == {0: 1.0}


def _row(family, value, macs, accuracies, **extra):
    return {
        "family": family,
        "value": value,
        "macs": macs,
        "accuracy": sum(accuracies) / len(accuracies),
        "accuracies": accuracies,
        **extra,
    }


BASE = _row("base", 1.0, 100, [0.50, 0.52], params=1000, train_seconds=10.0)
COMPOUND = _row("compound", 1.0, 400, [0.70, 0.74], params=1500, train_seconds=40.0)


def test_equal_macs_verdicts_against_a_hand_computed_interpolation():
    curves = {
        "compound": [{**BASE, "value": 0.0}, COMPOUND],
        "width": [BASE, _row("width", 1.4, 200, [0.45, 0.47])],  # compound there: ½·0.51 + ½·0.72
        "depth": [BASE, _row("depth", 2.0, 200, [0.60, 0.64])],
        "resolution": [BASE, _row("resolution", 2.5, 800, [0.9, 0.92])],  # beyond compound's range
    }
    out = compare_curves(curves, "macs")
    at = 0.5 * 0.51 + 0.5 * 0.72
    # variance of the mean of each point: s²/n = 0.0002/2 (base, width), 0.0008/2 (compound φ=1)
    width_var = 0.25 * 0.0001 + 0.25 * 0.0004 + 0.0001
    width_df = width_var**2 / ((0.25 * 0.0001) ** 2 + (0.25 * 0.0004) ** 2 + 0.0001**2)
    width = out["width"]
    assert width["points"] == 1 and width["difference"] == pytest.approx(at - 0.46)
    assert width["ci95"] == pytest.approx(student.ppf(0.975, width_df) * math.sqrt(width_var))
    assert width["positions"][0]["compound"] == pytest.approx(at) and width["positions"][0]["cost_ratio"] == 2
    assert (
        width["verdict"].startswith("compound ahead of width by 15.5 ± ")
        and "at 2× the baseline's multiply-adds" in width["verdict"]
    )
    depth_var = 0.25 * 0.0001 + 0.25 * 0.0004 + 0.0004
    depth = out["depth"]
    assert depth["difference"] == pytest.approx(at - 0.62)
    assert depth["ci95"] == pytest.approx(
        student.ppf(0.975, depth_var**2 / ((0.25 * 0.0001) ** 2 + (0.25 * 0.0004) ** 2 + 0.0004**2))
        * math.sqrt(depth_var)
    )
    assert depth["verdict"].startswith("compound and depth tied at 2× the baseline's multiply-adds (difference -0.5 ± ")
    assert depth["verdict"].endswith("points, interval contains 0)")
    assert out["resolution"]["points"] == 0 and out["resolution"]["difference"] is None  # no overlap → no verdict
    assert out["resolution"]["verdict"].startswith("no verdict")
    summary = {f: {k: c[k] for k in ("points", "compound_ahead", "mean_gain")} for f, c in out.items() if c["points"]}
    assert summary == {
        "width": {"points": 1, "compound_ahead": 1, "mean_gain": pytest.approx(round(at - 0.46, 4))},
        "depth": {"points": 1, "compound_ahead": 0, "mean_gain": pytest.approx(round(at - 0.62, 4))},
    }


def test_mean_over_several_positions_weights_each_point_once():
    w200, w400 = _row("width", 1.4, 200, [0.45, 0.47]), _row("width", 1.8, 400, [0.69, 0.75])
    out = compare_curves({"compound": [BASE, COMPOUND], "width": [BASE, w200, w400]}, "macs")["width"]
    # mean of (c(200) − w200) and (c(400) − w400): base ¼, compound ¾, each width point −½
    expected = combine(
        {
            "b": (0.25, estimate([0.50, 0.52])),
            "c": (0.75, estimate([0.70, 0.74])),
            "w2": (-0.5, estimate([0.45, 0.47])),
            "w4": (-0.5, estimate([0.69, 0.75])),
        }
    )
    assert out["points"] == 2 and out["difference"] == pytest.approx(expected.mean)
    assert out["ci95"] == pytest.approx(expected.ci95)
    assert "over 2×–4× the baseline's multiply-adds" in out["verdict"]
    assert [p["difference"] for p in out["positions"]] == pytest.approx([0.615 - 0.46, 0.72 - 0.72])


def test_one_seed_gives_a_difference_but_no_verdict():
    one = {
        "compound": [
            {"family": "base", "macs": 100, "accuracy": 0.5},
            {"family": "compound", "macs": 400, "accuracy": 0.7},
        ]
    }
    one["width"] = [one["compound"][0], {"family": "width", "value": 2, "macs": 200, "accuracy": 0.5}]
    out = compare_curves(one)["width"]
    assert out["difference"] == pytest.approx(0.1) and out["ci95"] is None
    assert "no interval, no verdict" in out["verdict"]


def test_equal_time_and_equal_parameters():
    curves = {
        "compound": [BASE, COMPOUND],
        "width": [BASE, _row("width", 2.0, 300, [0.6, 0.62], params=1200, train_seconds=20.0)],
        "resolution": [BASE, _row("resolution", 1.5, 250, [0.58, 0.60], params=1000, train_seconds=30.0)],
    }
    by_time = compare_curves(curves, "time")
    t20 = math.log(2) / math.log(4)  # 20 s between 10 s and 40 s, in log time
    assert by_time["width"]["difference"] == pytest.approx((1 - t20) * 0.51 + t20 * 0.72 - 0.61)
    assert "training time" in by_time["width"]["verdict"]
    by_params = compare_curves(curves, "params")
    # resolution keeps the baseline's parameters: compound at 1000 parameters is the baseline itself
    assert by_params["resolution"]["difference"] == pytest.approx(0.51 - 0.59)
    assert by_params["resolution"]["positions"][0]["cost_ratio"] == 1


def _point(key, accuracies, classes=10, macs=1000):
    return {
        "point": key,
        "alpha": 1.0,
        "beta": 1.0,
        "gamma": float(key[1:]),
        "accuracy": sum(accuracies) / len(accuracies),
        "accuracies": accuracies,
        "num_classes": classes,
        "macs": macs,
    }


def test_grid_choice_margin_ties_and_points_that_did_not_learn():
    rows = [_point("g1", [0.70, 0.71, 0.72]), _point("g2", [0.80, 0.81, 0.82]), _point("g3", [0.15, 0.12, 0.1])]
    choice = choose(rows)  # 95% intervals 0.71 ± 0.025 and 0.81 ± 0.025: apart
    assert choice.best == "g2" and choice.runner_up == "g1" and choice.tied == []
    assert choice.not_learned == ["g3"] and choice.threshold == pytest.approx(0.3)  # 3 × chance of 10 classes
    assert choice.margin.mean == pytest.approx(0.1)
    assert choice.margin.ci95 == pytest.approx(2.7764451051977987 * math.sqrt(2 * 0.0001 / 3))  # Welch, df = 4
    assert "ahead of the runner-up" in choice.verdict and "did not learn" in choice.verdict
    assert choice.decision == "ahead" and stats.show(choice.margin, " points") in choice.verdict

    # two seeds: t(0.975, 1) = 12.7 makes wide intervals; these overlap although the means differ by 4 points
    tied = choose([_point("g1", [0.78, 0.80]), _point("g2", [0.83, 0.85]), _point("g3", [0.5, 0.51])])
    assert tied.best == "g2" and tied.tied == ["g1"] and tied.decision == "tie"
    assert "tied with the runner-up α=1 β=1 γ=1 (difference 5.0 ± " in tied.verdict
    assert "interval contains 0): no winner at this budget" in tied.verdict and "ahead" not in tied.verdict

    single = choose([_point("g1", [0.7]), _point("g2", [0.8])])
    assert single.best == "g2" and single.tied is None and single.margin.ci95 is None
    assert "neither a winner nor a tie can be told" in single.verdict and single.decision == "unknown"

    nothing = choose([_point("g1", [0.11, 0.12]), _point("g2", [0.13, 0.12])])
    assert nothing.best == "g2" and nothing.not_learned == ["g1", "g2"] and "no grid point learned" in nothing.verdict


def test_learning_threshold():
    assert learning_threshold(10) == pytest.approx(0.3)
    assert learning_threshold(1000) == pytest.approx(0.003)
    assert learning_threshold(2) == pytest.approx(0.75)  # 3 × ½ is out of reach: halfway to perfect


def test_point_row_aggregates_seeds():
    def record(number, state, accuracy, seconds):
        return TrialRecord(number=number, state=state, accuracy=accuracy, macs=10, params=5, seconds=seconds)

    row = point_row([record(0, "COMPLETE", 0.6, 1.0), record(3, "COMPLETE", 0.8, 3.0)], {"x": 1}, number="trial")
    assert row["trial"] == 0 and row["trials"] == [0, 3] and row["accuracies"] == [0.6, 0.8]
    assert row["accuracy"] == pytest.approx(0.7) and row["seconds"] == 2.0 and row["state"] == "COMPLETE"
    assert row["accuracy_ci95"] == pytest.approx(estimate([0.6, 0.8]).ci95) and row["seeds"] == 2
    waiting = point_row([record(0, "COMPLETE", 0.6, 1.0), TrialRecord.of(None)], {"x": 1})
    assert waiting["state"] == "MISSING" and waiting["accuracy"] is None and waiting["accuracies"] == [0.6, None]
    assert isinstance(Estimate(mean=0.5, n=1), Estimate)
