"""One rule for every verdict (stats.decide): a difference whose 95% interval contains 0 is a tie, otherwise
a winner with its margin. Checked over many synthetic row sets: no sentence states a winner when the
interval contains 0, none states a tie when it excludes 0, and a Choice's fields agree with its sentence."""

import random

import pytest

from effnet.search import stats
from effnet.search.grid import choose
from effnet.search.record import row_estimate
from effnet.search.stats import Estimate, decide, difference, estimate, judge
from effnet.search.study import verdict


def test_decide_at_the_interval_edges():
    assert decide(Estimate(mean=0.10, n=3, std=0.01, ci95=0.05)) == "ahead"
    assert decide(Estimate(mean=-0.10, n=3, std=0.01, ci95=0.05)) == "behind"
    assert decide(Estimate(mean=0.05, n=3, std=0.01, ci95=0.05)) == "tie"  # low = 0: the interval holds 0
    assert decide(Estimate(mean=-0.05, n=3, std=0.01, ci95=0.05)) == "tie"
    assert decide(Estimate(mean=0.0, n=3, std=0.0, ci95=0.0)) == "tie"
    assert decide(Estimate(mean=0.001, n=3, std=0.0, ci95=0.0)) == "ahead"  # no spread: any margin wins
    assert decide(Estimate(mean=0.3, n=1)) == "unknown"  # one seed: no interval


def test_judge_words_each_verdict():
    assert judge(difference(estimate([0.8, 0.81, 0.82]), estimate([0.7, 0.71, 0.72])), "a", "b") == (
        "a ahead of b by 10.0 ± 2.3 points"
    )
    assert judge(difference(estimate([0.7, 0.71, 0.72]), estimate([0.8, 0.81, 0.82])), "a", "b", "at 2×").startswith(
        "b ahead of a by 10.0 ± 2.3 points at 2×"
    )
    tie = judge(difference(estimate([0.78, 0.80]), estimate([0.83, 0.85])), "a", "b")
    assert tie.startswith("a and b tied (difference -5.0 ± ") and tie.endswith(" points, interval contains 0)")
    assert "no interval, no verdict" in judge(difference(estimate([0.8]), estimate([0.7, 0.72])), "a", "b")


def _rows(rng: random.Random) -> list[dict]:
    """2–5 grid points, each with 1–4 seeds (mostly the same count), means and spreads at random."""
    seeds = rng.choice([1, 2, 3, 3, 4])
    rows = []
    for i in range(rng.randint(2, 5)):
        n = seeds if rng.random() < 0.85 else rng.randint(1, 4)
        mean, spread = rng.uniform(0.05, 0.95), rng.choice([0.0, 0.005, 0.02, 0.08])
        accuracies = [min(1.0, max(0.0, rng.gauss(mean, spread))) for _ in range(n)]
        if rng.random() < 0.1:  # a tie of means
            accuracies = list(rows[0]["accuracies"]) if rows else accuracies
        rows.append(
            {
                "point": f"g{i}",
                "alpha": 1.0,
                "beta": 1.0,
                "gamma": 1.0 + i / 10,
                "accuracy": sum(accuracies) / len(accuracies),
                "accuracies": accuracies,
                "num_classes": 10,
                "macs": 1000 + i,
            }
        )
    return rows


def _contains_zero(d: Estimate) -> bool:
    return d.low <= 0 <= d.high


@pytest.mark.parametrize("seed", range(4))
def test_no_grid_sentence_contradicts_its_numbers(seed):
    rng = random.Random(seed)
    seen = set()
    for _ in range(150):
        rows = _rows(rng)
        choice = choose(rows)
        text = choice.verdict
        learned = [r for r in rows if r["accuracy"] >= choice.threshold]
        ranked = sorted(learned, key=lambda r: (-r["accuracy"], r["macs"]))
        seen.add(choice.decision)
        if len(ranked) < 2:  # nothing to compare: no verdict either way
            assert choice.decision is None and not choice.tied and choice.margin is None
            assert "ahead of" not in text and "tied" not in text and "no winner" not in text
            continue
        lead = row_estimate(ranked[0])
        diffs = {r["point"]: difference(lead, row_estimate(r)) for r in ranked[1:]}
        assert choice.best == ranked[0]["point"] and choice.runner_up == ranked[1]["point"]
        assert choice.margin == diffs[choice.runner_up]
        if any(d.ci95 is None for d in diffs.values()):
            assert choice.decision == "unknown" and choice.tied is None
            assert "ahead of" not in text and "tied" not in text and "can be told" in text
            continue
        tied = [k for k, d in diffs.items() if _contains_zero(d)]
        assert choice.tied == tied
        if tied:  # at least one difference's interval contains 0: no winner is stated
            assert choice.decision == "tie"
            assert "no winner at this budget" in text and "ahead of" not in text
            assert f"(difference {stats.show(diffs[tied[0]], ' points')}, interval contains 0)" in text
        else:  # every difference excludes 0: the winner with its margin over the runner-up
            assert choice.decision == "ahead" and all(d.low > 0 for d in diffs.values())
            label = f"α=1 β=1 γ={ranked[1]['gamma']:g}"
            assert f"ahead of the runner-up {label} by {stats.show(choice.margin, ' points')}" in text
            assert "tied" not in text and "no winner" not in text
    assert {"ahead", "tie"} <= seen  # the loop reaches both verdicts


def test_no_study_sentence_contradicts_its_numbers():
    rng = random.Random(7)
    for _ in range(400):
        n_a, n_b = rng.choice([1, 2, 3, 5]), rng.choice([1, 2, 3, 5])
        mean_a, mean_b, spread = rng.uniform(0.3, 0.9), rng.uniform(0.3, 0.9), rng.choice([0.0, 0.01, 0.05])
        a = estimate(rng.gauss(mean_a, spread) for _ in range(n_a))
        b = estimate(rng.gauss(mean_b, spread) for _ in range(n_b))
        d = difference(a, b)
        text = verdict("width", d, "at 2× the baseline's multiply-adds")
        if d.ci95 is None:
            assert "no verdict" in text and "ahead of" not in text and "tied" not in text
        elif _contains_zero(d):
            assert text.startswith("compound and width tied") and "ahead of" not in text
        elif d.mean > 0:
            assert text.startswith(f"compound ahead of width by {stats.show(d, ' points')}")
        else:
            assert text.startswith("width ahead of compound by ") and "tied" not in text


# ------------------------------------------------------------------ the pipeline's report (issue 39 item 7)
def _summary(rows: list[dict], choice, gain: dict, scaled: list[float], baseline: list[float]) -> dict:
    """The fields of a pipeline summary that markdown_report reads, around a grid choice and a gain."""
    from effnet.search.pipeline import top1_summary

    best = next(r for r in rows if r["point"] == choice.best)
    trial = {"constraint": 2.0, "resolution": 32, "params": 10, "seconds": 1.0, "state": "COMPLETE"}
    return {
        "base": "b0_mini",
        "data": "digits",
        "coefficients": {
            "alpha": best["alpha"],
            "beta": best["beta"],
            "gamma": best["gamma"],
            "constraint": 2.0,
            "proxy_accuracy": best["accuracy"],
        },
        "phi": 1.0,
        "plan": None,
        "model": {"depth": 1.0, "width": 1.0, "resolution": 32, "params": 10, "macs": 20, "blocks": ["r1"]},
        "evaluation": {**top1_summary(scaled), "top5": 1.0, "loss": 0.1, "epochs": 6, "split": "validation"},
        "baseline": {"resolution": 32, "params": 5, "macs": 10, **top1_summary(baseline), "weights": "b"},
        "gain": gain,
        "search": {
            "trials": [{**trial, **r, "trial": i} for i, r in enumerate(rows)],
            "best": {**best, "trial": rows.index(best)},
            "grid": {"points": len(rows), "step": 0.1, "target": 2.0, "tolerance": 0.1},
            "proxy": {"seed": 0, "resolution": 32, "recipe": "small", "batch_size": 32},
            "study": "pipeline",
            "storage": "study.db",
            "seeds": 3,
        },
        "choice": choice.to_dict(),
        "files": {"weights": "w", "description": "d", "summary": "s"},
        "seconds": {"total": 1.0},
    }


@pytest.mark.parametrize("seed", range(2))
def test_no_report_sentence_contradicts_the_reports_numbers(seed):
    """The pipeline's report.md over synthetic grids and final trainings: the grid's sentence and the gain's
    sentence state a winner only where the difference's interval excludes 0 and a tie only where it holds 0."""
    from effnet.search.pipeline import gain_record, markdown_report

    rng = random.Random(100 + seed)
    decisions = set()
    for _ in range(60):
        rows = _rows(rng)
        choice = choose(rows)
        n = rng.choice([2, 3, 5])
        base_mean, lift, spread = rng.uniform(0.3, 0.8), rng.choice([0.0, 0.02, 0.1, -0.05]), rng.uniform(0.001, 0.05)
        scaled = [min(1.0, rng.gauss(base_mean + lift, spread)) for _ in range(n)]
        baseline = [min(1.0, rng.gauss(base_mean, spread)) for _ in range(n)]
        gain = gain_record(scaled, baseline, 1.0)
        d = difference(estimate(scaled), estimate(baseline))
        assert (gain["mean"], gain["ci95"], gain["low"], gain["high"]) == pytest.approx((d.mean, d.ci95, d.low, d.high))
        assert gain["decision"] == decide(d)
        decisions.add(gain["decision"])
        report = markdown_report(_summary(rows, choice, gain, scaled, baseline))
        (sure,) = [line for line in report.splitlines() if line.startswith("How sure")]
        (said,) = [line for line in report.splitlines() if line.startswith("Gain of the scaled model")]
        assert choice.verdict in sure
        if choice.decision == "tie":
            assert "no winner" in sure and "ahead of" not in sure
        elif choice.decision == "ahead":
            assert "ahead of the runner-up" in sure and "tied" not in sure
        if _contains_zero(d):
            assert " tied (difference " in said and "interval contains 0" in said and "ahead of" not in said
        elif d.mean > 0:
            assert f"the scaled model (φ = 1) ahead of the baseline (φ = 0) by {stats.show(d, ' points')}" in said
        else:
            assert "the baseline (φ = 0) ahead of the scaled model (φ = 1) by " in said and "tied" not in said
        assert f"**{stats.show(d, ' points')}** (95% interval {100 * d.low:+.1f} to {100 * d.high:+.1f})" in said
    assert {"ahead", "tie", "behind"} <= decisions


# ------------------------------------------------------------------ φ < 0 in a study (issue 39 item 5)
def test_study_points_below_the_baseline_are_realised_or_refused():
    from effnet.errors import UserError
    from effnet.search.proxy import Proxy
    from effnet.search.study import Sweeps, study_points
    from effnet.zoo import get_description

    base = get_description("b0_mini")
    with pytest.raises(UserError, match=r"phis must be numbers within \[-16, 16\]"):
        Sweeps(phis=(-17.0, 0.0))
    sweeps = Sweeps(phis=(-1.0, 0.0, 1.0), families=("compound",))
    points, curves = study_points(base, Proxy(resolution=64), sweeps, base_macs=1)
    assert [p.key for p in points] == ["compound=-1", "base", "compound=1"]
    assert curves["compound"] == [("compound=-1", -1.0), ("base", 0.0), ("compound=1", 1.0)]
    # at 32 px, γ^-1 asks 27.8 px: below b0_mini's total stride 32, so the point could not be the one labelled
    with pytest.raises(UserError) as caught:
        study_points(base, Proxy(resolution=32), sweeps, base_macs=1)
    assert caught.value.field == "phis"
    assert str(caught.value).startswith("phis value -1 gives 27.8 px at the proxy's 32 px, below the network's total")
    assert "the smallest φ there is about 0" in str(caught.value)
    deep = Sweeps(phis=(-12.0,), families=("compound",))  # 64·1.15^-12 = 12 px: refused the same way
    with pytest.raises(UserError, match="phis value -12 gives 12 px"):
        study_points(base, Proxy(resolution=64), deep, base_macs=1)


def test_study_cli_takes_negative_phis(cli, tmp_path):
    code, out, err = cli("study-scaling", "--base", "b0_mini", "--phis=-1,0", "--output", str(tmp_path))
    assert code == 2 and out == "" and err.count("\n") == 1 and "phis value -1 gives 27.8 px" in err
    code, out, err = cli("study-scaling", "--base", "b0_mini", "--phis=-17", "--output", str(tmp_path))
    assert code == 2 and err.count("\n") == 1 and "phis must be numbers within [-16, 16]" in err
