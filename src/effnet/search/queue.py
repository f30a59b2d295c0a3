"""A fixed list of points trained exactly once, shared by any number of worker processes.

Every point is enqueued once as a WAITING Optuna trial (its parameters fixed, its key in the user
attribute ``point``); a worker claims one by the storage's atomic WAITING → RUNNING transition, so
no two workers train the same trial. Bookkeeping (failing stale trials, enqueueing missing points,
claiming) runs under a study-wide lock (a file lock beside a SQLite file, an advisory lock on
PostgreSQL). A worker killed mid-trial leaves a RUNNING trial whose heartbeat stops; any worker
(or the rerun of the same command) fails it once stale and enqueues its point again. Finished
trials (complete or pruned) are kept.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import time
import warnings
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from effnet.errors import UserError
from effnet.search.storage import Heartbeat, backend, sqlite_path, study_lock

#: Trial states that finish a point for good.
DONE = (TrialState.COMPLETE, TrialState.PRUNED)
SETTINGS_ATTR = "effnet_settings"


def worker_id() -> str:
    """Who trains a trial (recorded in its user attribute ``worker``): host:pid."""
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass(frozen=True)
class Point:
    """One point to train: a unique key and the parameters its trial gets."""

    key: str
    params: dict[str, Any] = field(default_factory=dict)


#: An objective: (trial, point) → (value, user attributes to record). Raise optuna.TrialPruned to prune.
Objective = Callable[[optuna.Trial, Point], tuple[float, dict[str, Any]]]


@contextlib.contextmanager
def _advisory_lock(study: optuna.Study) -> Iterator[None]:
    rdb = backend(study)
    engine = rdb.engine if rdb is not None else None
    if engine is None or not rdb.url.startswith("postgresql"):
        yield
        return
    import sqlalchemy

    key = zlib.crc32(f"effnet:{study.study_name}".encode())
    with engine.connect() as conn:
        conn.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"), {"k": key})
        conn.commit()
        try:
            yield
        finally:
            conn.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), {"k": key})
            conn.commit()


@contextlib.contextmanager
def queue_lock(study: optuna.Study) -> Iterator[None]:
    """Exclusive access to the queue's bookkeeping across processes and machines."""
    rdb = backend(study)
    if rdb is not None and sqlite_path(rdb.url) is not None:
        with study_lock(study):
            yield
    else:
        with _advisory_lock(study):
            yield


def check_settings(study: optuna.Study, settings: dict[str, Any]) -> None:
    """Record what the study trains with; refuse to mix trials trained differently."""
    wanted = json.loads(json.dumps(settings, sort_keys=True, default=str))
    with queue_lock(study):
        stored = study.user_attrs.get(SETTINGS_ATTR)
        if stored is None:
            study.set_user_attr(SETTINGS_ATTR, wanted)
            return
    if stored != wanted:
        differ = sorted(k for k in set(stored) | set(wanted) if stored.get(k) != wanted.get(k))
        raise UserError(
            f"study {study.study_name!r} already holds trials made with other settings ({', '.join(differ)}); "
            "rerun with the same options or pick another --study-name"
        )


class PointQueue:
    """Train each of ``points`` exactly once in ``study``, from any number of processes."""

    def __init__(self, study: optuna.Study, points: Sequence[Point]) -> None:
        keys = [p.key for p in points]
        if len(set(keys)) != len(keys):
            raise ValueError("point keys must be unique")
        self.study = study
        self.points = list(points)
        self.by_key = {p.key: p for p in points}
        self._errored_here: set[str] = set()

    # -- bookkeeping --------------------------------------------------------------------------
    def _trials(self, states: tuple[TrialState, ...] | None = None) -> list[FrozenTrial]:
        return [
            t
            for t in self.study.get_trials(deepcopy=False, states=states)
            if t.user_attrs.get("point") in self.by_key and not t.user_attrs.get("duplicate")
        ]

    def sync(self) -> None:
        """Fail stale trials of dead workers and enqueue every point with no live or finished trial."""
        with queue_lock(self.study):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                optuna.storages.fail_stale_trials(self.study)
            covered: set[str] = set()
            for trial in self._trials():
                key = trial.user_attrs["point"]
                if trial.state in DONE or trial.state in (TrialState.RUNNING, TrialState.WAITING):
                    covered.add(key)
            for point in self.points:
                if point.key not in covered and point.key not in self._errored_here:
                    self.study.enqueue_trial(point.params, user_attrs={"point": point.key})

    def claim(self) -> optuna.Trial | None:
        """Atomically take one WAITING point (in list order); None when none is left."""
        order = {p.key: i for i, p in enumerate(self.points)}
        with queue_lock(self.study):
            waiting = sorted(self._trials((TrialState.WAITING,)), key=lambda t: order[t.user_attrs["point"]])
            for frozen in waiting:
                try:
                    if not self.study._storage.set_trial_state_values(frozen._trial_id, state=TrialState.RUNNING):
                        continue
                except optuna.exceptions.UpdateFinishedTrialError:
                    continue
                self.study._storage.record_heartbeat(frozen._trial_id)
                if self._is_duplicate(frozen):
                    self.study._storage.set_trial_user_attr(frozen._trial_id, "duplicate", True)
                    self.study._storage.set_trial_state_values(frozen._trial_id, state=TrialState.FAIL)
                    continue
                return optuna.Trial(self.study, frozen._trial_id)
        return None

    def _is_duplicate(self, mine: FrozenTrial) -> bool:
        """Belt and braces: another trial already holds (or finished) this point."""
        me = self.study._storage.get_trial(mine._trial_id)
        for other in self._trials(DONE + (TrialState.RUNNING,)):
            if other._trial_id == me._trial_id or other.user_attrs["point"] != me.user_attrs["point"]:
                continue
            if other.state in DONE:
                return True
            if (other.datetime_start, other.number) < (me.datetime_start, me.number):
                return True
        return False

    def pending(self) -> tuple[int, int]:
        """(waiting, running) trial counts of the queue's points."""
        waiting = len(self._trials((TrialState.WAITING,)))
        running = len(self._trials((TrialState.RUNNING,)))
        return waiting, running

    def results(self) -> dict[str, FrozenTrial | None]:
        """The trial standing for each point: finished if any, else running, waiting, failed, or None."""
        rank = {TrialState.COMPLETE: 0, TrialState.PRUNED: 1, TrialState.RUNNING: 2, TrialState.WAITING: 3}
        best: dict[str, FrozenTrial | None] = {p.key: None for p in self.points}
        for trial in self._trials():
            key = trial.user_attrs["point"]
            held = best[key]
            if held is None or (rank.get(trial.state, 4), -trial.number) < (rank.get(held.state, 4), -held.number):
                best[key] = trial
        return best

    # -- the worker loop ----------------------------------------------------------------------
    def run(
        self,
        objective: Objective,
        *,
        n_trials: int | None = None,
        wait: bool = True,
        poll: float | None = None,
        on_trial: Callable[[FrozenTrial], None] | None = None,
    ) -> int:
        """Claim and train points until none is left or ``n_trials`` ran here; returns how many ran.

        With ``wait`` the loop outlives other workers' running trials, so that a point of a dead
        worker is picked up once its heartbeat goes stale.
        """
        rdb = backend(self.study)
        interval = (rdb.heartbeat_interval if rdb is not None else None) or 10
        poll = poll if poll is not None else max(0.5, interval / 2)
        ran = 0
        while n_trials is None or ran < n_trials:
            self.sync()
            trial = self.claim()
            if trial is None:
                waiting, running = self.pending()
                if (waiting == 0 and running == 0) or not wait:
                    break
                time.sleep(poll)
                continue
            key = trial.user_attrs["point"]
            frozen = self._run_one(objective, trial, self.by_key[key])
            ran += 1
            if on_trial is not None and frozen is not None:
                on_trial(frozen)
        return ran

    def _run_one(self, objective: Objective, trial: optuna.Trial, point: Point) -> FrozenTrial | None:
        trial.set_user_attr("worker", worker_id())
        with Heartbeat(self.study, trial._trial_id):
            try:
                value, attrs = objective(trial, point)
            except optuna.TrialPruned:
                return self.study.tell(trial, state=TrialState.PRUNED)
            except (KeyboardInterrupt, SystemExit):
                self.study.tell(trial, state=TrialState.FAIL)  # rerun the command to train it again
                raise
            except UserError as err:
                trial.set_user_attr("error", str(err))
                self.study.tell(trial, state=TrialState.FAIL)
                raise
            except Exception as err:  # a point that cannot train (memory, numerics): keep going
                message = f"{type(err).__name__}: {err}"
                trial.set_user_attr("error", message)
                self._errored_here.add(point.key)
                print(f"effnet: trial {trial.number} ({point.key}) failed: {message}", file=sys.stderr)
                return self.study.tell(trial, state=TrialState.FAIL)
            try:
                for name, attr in attrs.items():
                    trial.set_user_attr(name, attr)
                return self.study.tell(trial, value)
            except optuna.exceptions.UpdateFinishedTrialError:
                # Another worker saw no heartbeat for too long and failed this trial; its point is
                # queued again, so this result is dropped rather than counted twice.
                print(
                    f"effnet: trial {trial.number} ({point.key}) was declared stale by another worker; "
                    "its result is dropped and the point will be trained again (raise --heartbeat?)",
                    file=sys.stderr,
                )
                return None
