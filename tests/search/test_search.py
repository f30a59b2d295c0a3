"""The α/β/γ grid search: the constraint, exactly-once trials, resuming after SIGKILL."""

import contextlib
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time
import warnings
from collections import Counter

import optuna
import pytest
from optuna.trial import TrialState

from effnet.errors import UserError
from effnet.search import Point, PointQueue, open_study
from effnet.search.grid import GridConfig, constraint, scaling_grid
from effnet.search.storage import storage_url

# A tiny baseline (stem 32 → two stages) at 16 px, so that a trial takes about a second on a CPU.
TINY = "r1_k3_s11_e1_i32_o16_se0.25,r2_k3_s22_e4_i16_o24_se0.25"
TINY_ARGS = ["--blocks", TINY, "--resolution", "16", "--epochs", "1", "--batch-size", "32"]


def search_args(tmp_path, *extra):
    return ["search-scaling", *TINY_ARGS, "--output", str(tmp_path), *extra]


def test_grid_points_satisfy_constraint():
    points = scaling_grid()
    assert len(points) == 109  # step 0.05, tolerance 0.1, α ≤ 2, β, γ ≤ 1.5
    assert (1.2, 1.1, 1.15) in points  # the paper's choice: 1.2 · 1.1² · 1.15² = 1.92
    assert all(a >= 1 and b >= 1 and g >= 1 and abs(constraint(a, b, g) - 2) <= 0.1 + 1e-9 for a, b, g in points)
    coarse = scaling_grid(GridConfig(step=0.1, tolerance=0.05, max_points=4))
    assert len(coarse) == 4 and all(abs(constraint(*p) - 2) <= 0.05 + 1e-9 for p in coarse)
    with pytest.raises(UserError, match="no grid point"):
        scaling_grid(GridConfig(step=0.5, tolerance=0.01, target=3.3))


def test_storage_urls(tmp_path):
    assert storage_url(None, tmp_path) == f"sqlite:///{tmp_path.resolve()}/study.db"
    assert storage_url(str(tmp_path / "x.db")) == f"sqlite:///{tmp_path.resolve()}/x.db"
    assert storage_url("postgres://u@h/db") == "postgresql+psycopg2://u@h/db"  # the `postgres` extra's driver
    assert storage_url("postgresql+psycopg://u@h/db") == "postgresql+psycopg://u@h/db"
    with pytest.raises(UserError, match="not supported"):
        storage_url("redis://h")


def _open_together(barrier, db, name):
    barrier.wait()
    try:
        open_study(db, name)
    except UserError as err:
        print(err, file=sys.stderr)
        os._exit(1)
    os._exit(0)


def test_workers_opening_a_new_sqlite_file_at_once_all_succeed(tmp_path):
    # Six workers, and Optuna itself (which takes no lock of ours), create one file's tables at the
    # same moment: each worker opens the study (creating the tables raced to a UNIQUE violation before).
    context = multiprocessing.get_context("fork")
    for round_ in range(3):
        db = tmp_path / f"race{round_}.db"
        barrier = context.Barrier(7)
        workers = [context.Process(target=_open_together, args=(barrier, db, "race")) for _ in range(6)]
        for worker in workers:
            worker.start()
        barrier.wait()
        with contextlib.suppress(Exception):  # Optuna alone may lose the race; ours must not
            optuna.create_study(storage=f"sqlite:///{db}", study_name="race", load_if_exists=True)
        for worker in workers:
            worker.join(60)
        assert [w.exitcode for w in workers] == [0] * 6
        assert [s.study_name for s in optuna.get_all_study_summaries(f"sqlite:///{db}")] == ["race"]


def test_queue_runs_each_point_once_and_resumes(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        study = open_study(None, "q", output=tmp_path, heartbeat=1)
        points = [Point(f"p{i}", {"x": float(i)}) for i in range(5)]
        calls = []

        def objective(trial, point):
            calls.append(point.key)
            return trial.suggest_float("x", 0, 10) * 2, {"twice": point.params["x"] * 2}

        assert PointQueue(study, points).run(objective, n_trials=2) == 2
        assert PointQueue(study, points).run(objective) == 3  # a new process resumes with the rest
        assert PointQueue(study, points).run(objective) == 0
    assert sorted(calls) == [f"p{i}" for i in range(5)]
    results = PointQueue(study, points).results()
    assert all(t.state == TrialState.COMPLETE and t.value == 2 * t.params["x"] for t in results.values())


def test_small_grid_search_on_digits(cli, tmp_path):
    code, out, err = cli(
        *search_args(tmp_path, "--grid-step", "0.1", "--max-points", "3", "--max-steps-per-epoch", "3", "--json")
    )
    assert code == 0, err
    result = json.loads(out)
    trials = result["trials"]
    assert len(trials) == 3 and result["grid"]["points"] == 3
    for t in trials:
        assert t["state"] == "COMPLETE"
        assert abs(t["alpha"] * t["beta"] ** 2 * t["gamma"] ** 2 - 2) <= 0.1 + 1e-9
        assert 0 <= t["accuracy"] <= 1 and t["macs"] > 0 and t["params"] > 0 and t["seconds"] > 0
    best = result["best"]
    assert best["accuracy"] == max(t["accuracy"] for t in trials)
    assert {"alpha", "beta", "gamma", "accuracy"} <= set(best)
    assert os.path.getsize(result["plot"]) > 1000
    # Rerunning the same command trains nothing again; other settings on the same study are refused.
    code, out, _ = cli(
        *search_args(tmp_path, "--grid-step", "0.1", "--max-points", "3", "--max-steps-per-epoch", "3", "--json")
    )
    assert [t["trial"] for t in json.loads(out)["trials"]] == [t["trial"] for t in trials]
    code, _, err = cli(*search_args(tmp_path, "--grid-step", "0.1", "--max-points", "3", "--max-steps-per-epoch", "4"))
    assert code == 2 and "other settings" in err and "\n" == err[-1] and err.count("\n") == 1


def _complete_counts(db, name):
    study = optuna.load_study(study_name=name, storage=f"sqlite:///{db}")
    done = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    return study, Counter(t.user_attrs["point"] for t in done)


@pytest.mark.slow
def test_sigkill_mid_trial_then_rerun_loses_and_repeats_nothing(cli, tmp_path):
    args = search_args(
        tmp_path, "--grid-step", "0.1", "--max-points", "4", "--max-steps-per-epoch", "20", "--heartbeat", "1"
    )
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    proc = subprocess.Popen([sys.executable, "-m", "effnet", *args, "--json"], env=env, stdout=subprocess.DEVNULL)
    db = tmp_path / "study.db"
    killed_with = None
    deadline = time.time() + 240
    try:
        while time.time() < deadline and proc.poll() is None:
            time.sleep(0.1)
            if not db.exists():
                continue
            try:
                study, done = _complete_counts(db, "search-scaling")
                running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
            except Exception:  # the study is still being created
                continue
            if sum(done.values()) >= 1 and running:
                os.kill(proc.pid, signal.SIGKILL)
                killed_with = (dict(done), running[0].user_attrs["point"], running[0].number)
                break
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    assert killed_with is not None, "the search finished before it could be killed mid-trial"
    done_before, orphan_point, orphan_number = killed_with
    study, _ = _complete_counts(db, "search-scaling")
    kept = {t.user_attrs["point"]: t.number for t in study.trials if t.state == TrialState.COMPLETE}

    code, out, err = cli(*args, "--json")  # the same command again
    assert code == 0, err
    result = json.loads(out)
    study, done = _complete_counts(db, "search-scaling")
    assert len(result["trials"]) == 4 and all(t["state"] == "COMPLETE" for t in result["trials"])
    assert len(done) == 4
    assert sorted(done.values()) == [1, 1, 1, 1]  # every point trained to completion exactly once
    for point, number in kept.items():  # finished trials are kept, not retrained
        assert {t.user_attrs["point"]: t.number for t in study.trials if t.state == TrialState.COMPLETE}[
            point
        ] == number
    orphan = study.trials[orphan_number]
    assert orphan.state == TrialState.FAIL and done[orphan_point] == 1
    assert sum(done_before.values()) >= 1


def test_median_pruner_stops_hopeless_trials_and_records_their_cost(cli, tmp_path):
    args = ["--grid-step", "0.1", "--max-points", "6", "--epochs", "2", "--max-steps-per-epoch", "2"]
    code, out, err = cli(*search_args(tmp_path, *args, "--pruner", "median", "--json"))
    assert code == 0, err
    trials = json.loads(out)["trials"]
    assert {t["state"] for t in trials} <= {"COMPLETE", "PRUNED"}
    assert all(t["macs"] > 0 and t["params"] > 0 and "constraint" in t for t in trials)
    assert all(t["accuracy"] is None for t in trials if t["state"] == "PRUNED")
