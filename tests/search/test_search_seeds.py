"""Seeds in the grid search and the study: every seed's accuracy kept, mean and interval reported,
more seeds later train only the new ones; the budget modes."""

import csv
import json
import math

import optuna
import pytest
from optuna.trial import TrialState

TINY = "r1_k3_s11_e1_i32_o16_se0.25,r2_k3_s22_e4_i16_o24_se0.25"
STUDY = ["study-scaling", "--blocks", TINY, "--resolution", "16", "--epochs", "1", "--batch-size", "32",
         "--max-steps-per-epoch", "3", "--limit", "2", "--families", "width,compound", "--json"]  # fmt: skip


def _trials(db, name):
    study = optuna.load_study(study_name=name, storage=f"sqlite:///{db}")
    return [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]


def test_two_seed_study_then_a_third_seed_trains_only_the_third(cli, tmp_path):
    code, out, err = cli(*STUDY, "--output", str(tmp_path), "--seeds", "2")
    assert code == 0, err
    result = json.loads(out)
    assert result["seeds"] == 2 and result["points"] == 3  # base, width=1.4, compound=1
    for rows in result["curves"].values():
        for row in rows:
            assert row["state"] == "COMPLETE" and row["seeds"] == 2 and len(row["accuracies"]) == 2
            assert row["accuracy"] == pytest.approx(sum(row["accuracies"]) / 2)
            assert row["accuracy_ci95"] is not None and row["accuracy_ci95"] >= 0
    with open(result["csv"]) as handle:
        table = list(csv.DictReader(handle))
    assert {"accuracy", "accuracy_ci95", "accuracies", "seeds"} <= set(table[0])
    first = table[0]
    assert len(first["accuracies"].split(";")) == 2 and first["seeds"] == "2" and float(first["accuracy_ci95"]) >= 0
    assert result["comparison"]["width"]["verdict"]
    before = {t.number: (t.user_attrs["point"], t.value) for t in _trials(tmp_path / "study.db", "study-scaling")}
    assert len(before) == 6

    code, out, err = cli(*STUDY, "--output", str(tmp_path), "--seeds", "3")
    assert code == 0, err
    after = _trials(tmp_path / "study.db", "study-scaling")
    new = [t for t in after if t.number not in before]
    assert len(after) == 9 and sorted(t.user_attrs["point"].rsplit("/", 1)[1] for t in new) == ["seed2"] * 3
    assert {t.number: (t.user_attrs["point"], t.value) for t in after if t.number in before} == before
    rows = [r for rows in json.loads(out)["curves"].values() for r in rows]
    assert all(len(r["accuracies"]) == 3 and r["seeds"] == 3 for r in rows)


def test_grid_search_with_seeds_reports_the_best_with_its_interval(cli, tmp_path):
    grid = ["search-scaling", "--blocks", TINY, "--resolution", "16", "--epochs", "3", "--batch-size", "32",
            "--max-steps-per-epoch", "10", "--grid-step", "0.1", "--max-points", "2", "--seeds", "2"]  # fmt: skip
    code, out, err = cli(*grid, "--output", str(tmp_path), "--json")
    assert code == 0, err
    result = json.loads(out)
    best, choice = result["best"], result["choice"]
    assert best["accuracy_ci95"] is not None and len(best["accuracies"]) == 2 and best["trials"][0] == best["trial"]
    assert choice["best"] == best["point"] and choice["verdict"].startswith(f"α={best['alpha']:g}")
    assert choice["margin"] is not None and choice["tied"] is not None
    assert len(result["trials"]) == 2 and result["seeds"] == 2
    code, text, err = cli(*grid, "--output", str(tmp_path))  # the same again: a table, nothing trained
    assert code == 0 and "±95%" in text and "verdict: " in text and "budget: 3 epoch(s) of at most 10 steps" in text


def test_macs_budget_gives_steps_in_inverse_proportion_to_multiply_adds(cli, tmp_path):
    code, out, err = cli(*STUDY, "--epochs", "2", "--max-steps-per-epoch", "4", "--budget-mode", "macs",
                         "--output", str(tmp_path))  # fmt: skip
    assert code == 0, err
    result = json.loads(out)
    assert result["budget"].startswith("equal training compute")
    rows = [r for rows in result["curves"].values() for r in rows]
    base = next(r for r in rows if r["family"] == "base")
    assert base["steps"] == 8  # the baseline's 2 epochs of 4 steps
    for row in rows:
        wanted = max(1, round(8 * base["macs"] / row["macs"]))
        epochs = math.ceil(wanted / 4)
        assert row["steps"] == epochs * math.ceil(wanted / epochs)  # whole epochs of equal length, ≈ wanted
        assert row["steps"] < 8 or row["family"] == "base"
    code, _, err = cli(*STUDY, "--epochs", "2", "--max-steps-per-epoch", "4", "--output", str(tmp_path))
    assert code == 2 and "other settings" in err  # an epochs budget is another study


def test_plateau_and_time_budgets_record_what_they_took(cli, tmp_path):
    one = [*STUDY[:-5], "--limit", "1", "--families", "width", "--json"]  # the baseline alone
    code, out, err = cli(*one, "--epochs", "3", "--budget-mode", "plateau", "--patience", "1",
                         "--output", str(tmp_path / "plateau"))  # fmt: skip
    assert code == 0, err
    (row,) = json.loads(out)["curves"]["width"]
    assert 1 <= row["epochs_trained"] <= 3 and row["state"] == "COMPLETE"
    code, out, err = cli(*one, "--budget-mode", "time", "--time-per-point", "1", "--output", str(tmp_path / "time"))
    assert code == 0, err
    result = json.loads(out)
    (row,) = result["curves"]["width"]
    assert row["steps"] >= 1 and row["train_seconds"] > 0 and "1 s of training per point" in result["budget"]
    code, _, err = cli(*one, "--budget-mode", "time", "--output", str(tmp_path / "t2"))
    assert code == 2 and err.startswith("effnet study-scaling: error: --time-per-point") and err.count("\n") == 1
