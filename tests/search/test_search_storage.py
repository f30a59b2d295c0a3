"""The one worker: dead local workers recovered at once (grid and NAS alike), no trial made when
nothing waits, claims only under the study's lock, one settings check, one trial record, errors that
name their field."""

import socket
import subprocess
import sys
import warnings

import optuna
import pytest
from optuna.trial import TrialState, create_trial

from effnet import get_description, profile
from effnet.errors import UserError
from effnet.nas import SearchSpace, search_architectures
from effnet.search import GridConfig, Point, PointQueue, Proxy, Sweeps, TrialRecord, check_settings, open_study
from effnet.search.plan import PHI_MAX, plan
from effnet.search.worker import recover, start_trial, study_lock
from effnet.zoo import description_from_blocks


def _dead_pid() -> int:
    """The pid of a process of this machine that has exited."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _orphan(study, fill=lambda trial: None):
    """A RUNNING trial left by a worker of this machine that died (as after SIGKILL)."""
    with study_lock(study):
        trial = start_trial(study)
    fill(trial)
    trial.set_user_attr("worker", f"{socket.gethostname()}:{_dead_pid()}")
    return trial.number


@pytest.fixture
def study(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield open_study(None, "s", output=tmp_path, heartbeat=60)


def test_a_dead_local_workers_point_is_trained_again_at_once(study):
    points = [Point(f"p{i}", {"x": float(i)}) for i in range(3)]
    queue = PointQueue(study, points)
    with study_lock(study):
        queue.sync()
    orphan = _orphan(study, lambda trial: trial.suggest_float("x", 0, 10))  # takes p0, then its worker dies
    trained = []

    def objective(trial, point):
        trained.append(point.key)
        return trial.suggest_float("x", 0, 10), {}

    # The heartbeat grace is two minutes: only the dead pid lets the point be taken again now.
    assert PointQueue(study, points).run(objective, wait=False) == 3
    assert sorted(trained) == ["p0", "p1", "p2"]
    trials = study.get_trials()
    assert trials[orphan].state == TrialState.FAIL
    retry = [t for t in trials if t.system_attrs.get("failed_trial") == orphan]
    assert len(retry) == 1 and retry[0].state == TrialState.COMPLETE and retry[0].user_attrs["point"] == "p0"
    assert {k: t.state for k, t in PointQueue(study, points).results().items()} == dict.fromkeys(
        ["p0", "p1", "p2"], TrialState.COMPLETE
    )


def test_a_dead_local_workers_architecture_is_evaluated_again_at_once(tmp_path):
    space = SearchSpace()
    db = tmp_path / "nas.db"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        study = open_study(db, "nas-random")
    params = space.reference_params()
    study.enqueue_trial(params)  # the orphan's architecture: the reference

    def fill(trial):
        for name, dist in space.distributions().items():
            trial.suggest_categorical(name, dist.choices)

    orphan = _orphan(study, fill)
    seen = []

    def evaluate(spec, number):
        seen.append(spec.block_strings)
        return {"accuracy": 0.5}

    result = search_architectures(
        strategy="random", n_trials=2, resolution=32, evaluate=evaluate, storage=str(db), output=tmp_path,
        progress=False, plot=False,
    )  # fmt: skip
    trials = {t["number"]: t for t in result.trials}
    assert trials[orphan]["state"] == "FAIL"
    retry = [t for t in result.trials if t.get("retry_of") == orphan]
    assert len(retry) == 1 and retry[0]["state"] == "COMPLETE"
    assert seen[0] == space.network(params).with_(resolution=32).block_strings  # the same architecture, first


def test_recover_leaves_live_workers_alone(study):
    with study_lock(study):
        trial = start_trial(study)  # this process: alive
        assert recover(study) == []
    assert study.get_trials()[trial.number].state == TrialState.RUNNING


def test_trials_are_queued_recovered_and_started_only_under_the_lock(study):
    queue = PointQueue(study, [Point("p0", {"x": 0.0})])
    for call in (queue.sync, queue.claim, lambda: recover(study), lambda: start_trial(study)):
        with pytest.raises(RuntimeError, match="only under study_lock"):
            call()
    assert study.get_trials() == []  # nothing was queued or started
    with study_lock(study):
        trial = queue.claim()
    assert trial is not None and study.get_trials()[trial.number].user_attrs["point"] == "p0"
    with pytest.raises(RuntimeError, match="only under study_lock"):
        start_trial(study)  # the lock was released with its block


def test_no_trial_is_made_when_no_point_of_the_queue_waits(study):
    points = [Point(f"p{i}", {"x": float(i)}) for i in range(4)]
    with study_lock(study):
        PointQueue(study, points).sync()  # another worker's longer list: four points waiting
    mine = PointQueue(study, points[:2])

    def objective(trial, point):
        return trial.suggest_float("x", 0, 10), {}

    assert mine.run(objective) == 2
    assert len(study.trials) == 4  # p2 and p3 still wait for their worker; ask() made nothing
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 2 + [TrialState.WAITING] * 2
    with study_lock(study):
        assert mine.claim() is None
    assert mine.run(objective) == 0 and len(study.trials) == 4


def test_settings_of_a_study_are_checked_once_for_every_kind(study):
    check_settings(study, {"kind": "search-scaling", "proxy": {"epochs": 1, "seed": 0}})
    check_settings(study, {"kind": "search-scaling", "proxy": {"epochs": 1, "seed": 0}})  # the same: fine
    with pytest.raises(UserError, match="other settings") as caught:
        check_settings(study, {"kind": "search-scaling", "proxy": {"epochs": 2, "seed": 0}})
    assert caught.value.field == "study_name" and "proxy.epochs" in str(caught.value)
    with pytest.raises(UserError, match=r"other settings \(kind, proxy.epochs, strategy\)"):
        check_settings(study, {"kind": "nas", "proxy": {"epochs": 2, "seed": 0}, "strategy": "rl"})


def test_one_trial_record_for_every_kind_of_search():
    done = create_trial(
        value=0.8,
        params={"alpha": 1.2},
        distributions={"alpha": optuna.distributions.FloatDistribution(1, 2)},
        user_attrs={"point": "a1.2", "accuracy": 0.8, "macs": 10, "params": 5, "seconds": 1.5, "worker": "h:1"},
    )
    record = TrialRecord.of(done, present=("constraint",))
    assert (record.state, record.point, record.accuracy, record.macs, record.worker) == (
        "COMPLETE",
        "a1.2",
        0.8,
        10,
        "h:1",
    )
    assert record.to_dict()["accuracy"] == 0.8 and record.macs == 10
    row = record.row({"alpha": 1.2}, number="trial")
    assert row == {
        "alpha": 1.2, "trial": done.number, "state": "COMPLETE", "accuracy": 0.8, "macs": 10, "params": 5, "seconds": 1.5,
        "worker": "h:1",
    }  # fmt: skip
    pruned = create_trial(state=TrialState.PRUNED, value=0.3, user_attrs={"error": "x", "reward": 0.1})
    row = TrialRecord.of(pruned, always=("blocks", "reward"), present=("cached_from",)).row()
    assert row["accuracy"] is None and row["accuracy_at_prune"] == 0.3 and row["error"] == "x"
    assert row["blocks"] is None and row["reward"] == 0.1 and "cached_from" not in row
    retried = create_trial(state=TrialState.WAITING, system_attrs={"failed_trial": 4})
    assert TrialRecord.of(retried, present=("retry_of",)).extras == {"retry_of": 4}
    missing = TrialRecord.of(None, always=("resolution",)).row(number=None)
    assert missing == {"state": "MISSING", "accuracy": None, "macs": None, "params": None, "seconds": None,
                       "resolution": None}  # fmt: skip


@pytest.mark.parametrize(
    ("make", "field"),
    [
        (lambda: GridConfig(step=0), "grid_step"),
        (lambda: GridConfig(alpha=(0.5, 1.0)), "alpha_range"),
        (lambda: GridConfig(max_points=0), "max_points"),
        (lambda: Sweeps(limit=0), "limit"),
        (lambda: Sweeps(widths=(-1.0,)), "widths"),
        (lambda: Sweeps(families=("height",)), "families"),
        (lambda: Proxy(epochs=0), "epochs"),
        (lambda: SearchSpace(ops=("zz",)), "ops"),
        (lambda: plan(get_description("b0"), macs=-1.0), "macs"),
    ],
)
def test_library_errors_name_their_argument(make, field):
    with pytest.raises(UserError) as caught:
        make()
    assert caught.value.field == field and str(caught.value).startswith(field) and "--" not in str(caught.value)


def test_the_cli_turns_the_field_into_its_flag(cli, tmp_path):
    code, _, err = cli("search-scaling", "--alpha-range", "0.5,1", "--output", str(tmp_path))
    assert code == 2 and "error: --alpha-range must be LOW,HIGH" in err
    code, _, err = cli("nas", "--se", "0,2", "--output", str(tmp_path))  # library field se_ratios
    assert code == 2 and "error: --se must be within [0, 1]" in err and err.count("\n") == 1


def test_plan_reports_the_phi_cap():
    tiny = description_from_blocks("r1_k3_s11_e1_i32_o16", resolution=32)
    record = plan(tiny, params=1e15, num_classes=10)
    assert record.capped and record.phi == PHI_MAX and record.next is None and record.to_dict()["capped"]
    below = plan(tiny, params=1.5 * profile(tiny, num_classes=10).params, num_classes=10)
    assert not below.capped and below.next is not None
