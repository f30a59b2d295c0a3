"""``effnet nas`` end to end with the real trainer on the built-in digits: kill, resume, use the best."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import optuna
import pytest

from effnet import NetworkSpec, get_description, parse_blocks, profile

ARGS = ["--data", "digits", "--strategy", "rl", "--n-trials", "3", "--epochs", "1", "--resolution", "32",
        "--batch-size", "32", "--max-steps-per-epoch", "2", "--seed", "0"]  # fmt: skip


def _wait_for_running_trial(db, proc, timeout=240.0):
    """Block until the study has a finished trial and another one being trained."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read().decode()
        if db.exists():
            try:
                trials = optuna.load_study(study_name="nas-rl", storage=f"sqlite:///{db}").get_trials()
            except Exception:  # the schema is being created
                trials = []
            states = [t.state for t in trials]
            running = [t for t in trials if t.state.name == "RUNNING" and "blocks" in t.user_attrs]
            if states.count(optuna.trial.TrialState.COMPLETE) >= 1 and running:
                return running[0]
        time.sleep(0.2)
    raise AssertionError("no trial started in time")


@pytest.fixture(scope="module")
def killed_and_resumed(tmp_path_factory):
    """Start a search in a subprocess, SIGKILL it during its second trial, then resume it in-process."""
    from effnet.cli.main import main

    out = tmp_path_factory.mktemp("nas")
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "effnet", "nas", *ARGS, "--output", str(out), "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    try:
        killed = _wait_for_running_trial(out / "study.db", proc)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    import contextlib
    import io

    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        code = main(["nas", *ARGS, "--output", str(out), "--json"])
    assert code == 0
    return out, killed, json.loads(buffer.getvalue())


def test_killed_search_resumes_with_no_trial_lost_or_repeated(killed_and_resumed):
    out, killed, report = killed_and_resumed
    trials = {t["number"]: t for t in report["trials"]}
    done = [t for t in report["trials"] if t["state"] == "COMPLETE"]
    assert len(done) == 3
    assert trials[killed.number]["state"] == "FAIL"
    retry = [t for t in done if t.get("retry_of") == killed.number]
    assert len(retry) == 1 and retry[0]["blocks"] == killed.user_attrs["blocks"]  # the same architecture again
    assert len({json.dumps(t["blocks"]) for t in done if t.get("cached_from") is None}) == len(
        [t for t in done if t.get("cached_from") is None]
    )
    assert report["objective"] == "soft" and report["w"] == -0.07
    assert report["target_macs"] == pytest.approx(400e6 * (32 / 224) ** 2)
    for t in done:
        assert 0 <= t["accuracy"] <= 1 and t["params"] > 0
        trained = get_description("efficientnet_b0").with_(blocks=parse_blocks(t["blocks"]), resolution=32)
        assert t["macs"] == profile(trained, num_classes=10).macs  # as trained: proxy resolution, 10 digits
        assert t["reward"] == pytest.approx(t["accuracy"] * (t["macs"] / report["target_macs"]) ** report["w"])
    assert report["best"]["reward"] == max(t["reward"] for t in done)
    assert (out / "pareto.png").stat().st_size > 1000 and (out / "trials.csv").exists()


def test_best_architecture_builds_trains_and_scales(killed_and_resumed, cli):
    out, _, report = killed_and_resumed
    best_file = out / "best.json"
    spec = NetworkSpec.load(best_file)
    assert spec.block_strings == report["best"]["blocks"]

    code, text, _ = cli("info", "--description", str(best_file), "--json")
    assert code == 0 and json.loads(text)["macs"] == report["best"]["macs_at_reference_resolution"]
    code, text, _ = cli("info", "--blocks", ",".join(report["best"]["blocks"]), "--json")
    assert code == 0 and json.loads(text)["macs"] == report["best"]["macs_at_reference_resolution"]
    code, text, _ = cli("scale", "--description", str(best_file), "--phi", "1", "--json")
    scaled = json.loads(text)
    assert code == 0 and 1.5 < scaled["macs_ratio"] < 2.6 and scaled["resolution"] == 256
    code, text, _ = cli("scale", "--blocks", ",".join(report["best"]["blocks"]), "--phi", "1", "--json")
    assert code == 0 and json.loads(text)["macs"] == scaled["macs"]

    code, text, _ = cli("train", "--description", str(best_file), "--data", "digits", "--epochs", "1",
                        "--resolution", "32", "--batch-size", "32", "--recipe", "small",
                        "--max-steps-per-epoch", "1", "--json")  # fmt: skip
    trained = json.loads(text)
    assert code == 0 and 0 <= trained["top1"] <= 1 and trained["blocks"] == report["best"]["blocks"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--latency"], "--target-latency-ms"),
        (["--ops", "mb6,zz"], "unknown conv op"),
        (["--target-latency-ms", "5"], "needs --latency"),
        (["--resolution", "16"], "total stride"),
        (["--data", "/no/such/folder", "--max-steps-per-epoch", "1"], "/no/such/folder"),
    ],
)
def test_user_mistakes_are_one_line(cli, tmp_path, argv, message):
    code, _, err = cli("nas", "--n-trials", "1", "--output", str(tmp_path), *argv)
    assert code == 2 and message in err and err.count("\n") == 1 and "Traceback" not in err


def test_help_names_the_strategies(cli):
    code, out, _ = cli("nas", "--help")
    assert code == 0
    for name in ("rl", "evolution", "tpe", "nsga2"):
        assert name in out


def test_two_workers_share_one_study_without_duplicates(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    argv = [sys.executable, "-m", "effnet", "nas", *ARGS, "--storage", str(tmp_path / "shared.db"),
            "--study-name", "shared", "--json"]  # fmt: skip
    workers = [
        subprocess.Popen(
            [*argv, "--output", str(tmp_path / name)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
        )
        for name in ("a", "b")
    ]
    reports = []
    for proc in workers:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err.decode()
        reports.append(json.loads(out))
    finished = [{t["number"] for t in r["trials"] if t["state"] == "COMPLETE"} for r in reports]
    assert len(finished[0]) == 3 and finished[0] == finished[1]  # the study holds exactly the trials asked for
    blocks = [json.dumps(t["blocks"]) for t in reports[0]["trials"] if t["state"] == "COMPLETE"]
    assert len(set(blocks)) == 3  # no architecture proposed twice
    study = optuna.load_study(study_name="shared", storage=f"sqlite:///{tmp_path / 'shared.db'}")
    owners = {t.user_attrs["worker"] for t in study.get_trials() if t.state.name == "COMPLETE"}
    assert len(owners) == 2  # both worked
