"""A fixed list of points trained exactly once, shared by any number of worker processes.

Every point is enqueued as a WAITING Optuna trial (its parameters fixed, its key in the user
attribute ``point``) and started by ``study.ask()`` through the worker loop of
:mod:`effnet.search.worker`, whose claim is :meth:`PointQueue.claim`. Exactly once holds because,
under the study's lock (the worker refuses both outside it), a point is enqueued only while it has
no waiting, running or finished trial, ``ask()`` is called only while a point of the queue waits
(so it never makes a trial of its own), and a trial of a dead worker is failed before its copy is
queued again. Finished trials (complete or pruned) are kept.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from effnet.progress import progress_bar
from effnet.search.worker import heartbeat_interval, require_lock, start_trial, work

#: Trial states that finish a point for good.
DONE = (TrialState.COMPLETE, TrialState.PRUNED)
_LIVE = DONE + (TrialState.RUNNING, TrialState.WAITING)


@dataclass(frozen=True)
class Point:
    """One point to train: a unique key and the parameters its trial gets."""

    key: str
    params: dict[str, Any] = field(default_factory=dict)


def seed_key(key: str, seed: int) -> str:
    """The key of ``key``'s trial with ``seed``."""
    return f"{key}/seed{seed}"


def seeded(points: Sequence[Point], seeds: Sequence[int]) -> list[Point]:
    """Each point once per seed, seed by seed (every point's first seed first): a trial is a (point,
    seed) pair, keyed :func:`seed_key`, with ``seed`` among its parameters; more seeds later add
    trials and keep the finished ones."""
    return [Point(seed_key(p.key, s), {**p.params, "seed": s}) for s in seeds for p in points]


#: An objective: (trial, point) → (value, user attributes to record). Raise optuna.TrialPruned to prune.
Objective = Callable[[optuna.Trial, Point], tuple[float, dict[str, Any]]]


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
        self._started: dict[int, Point] = {}

    def _trials(self, states: tuple[TrialState, ...] | None = None) -> list[FrozenTrial]:
        return [
            t for t in self.study.get_trials(deepcopy=False, states=states) if t.user_attrs.get("point") in self.by_key
        ]

    def sync(self) -> None:
        """Enqueue every point with no waiting, running or finished trial (under the study's lock),
        except those that failed in this process (rerun to try them again)."""
        require_lock(self.study, "PointQueue.sync()")
        covered = {t.user_attrs["point"] for t in self._trials(_LIVE)}
        tried = {t.user_attrs["point"] for t in self._trials()}
        for point in self.points:
            if point.key not in covered and point.key not in self._errored_here:
                # Optuna counts failed trials as existing, so a point tried before is enqueued again regardless.
                skip = point.key not in tried
                self.study.enqueue_trial(point.params, user_attrs={"point": point.key}, skip_if_exists=skip)

    def claim(self) -> optuna.Trial | None:
        """Start the oldest waiting point, None when none of the queue's points waits: :func:`work`'s
        claim, under the study's lock."""
        self.sync()
        waiting = {t.number: t for t in self.study.get_trials(deepcopy=False, states=(TrialState.WAITING,))}
        while any(t.user_attrs.get("point") in self.by_key for t in waiting.values()):
            trial = start_trial(self.study)
            frozen = waiting.pop(trial.number, None)
            key = frozen.user_attrs.get("point") if frozen is not None else None
            if key is None:  # enqueued by something else than a queue: never trained here
                trial.set_user_attr("error", "not a point of a queue")
                self.study.tell(trial, state=TrialState.FAIL)
                continue
            # A point of a longer list given to another worker of the study (same settings) trains here too.
            params = frozen.system_attrs.get("fixed_params", frozen.params)
            self._started[trial.number] = self.by_key.get(key) or Point(key, dict(params))
            return trial
        return None

    def pending(self) -> tuple[int, int]:
        """(waiting, running) trial counts of the queue's points."""
        waiting = len(self._trials((TrialState.WAITING,)))
        running = len(self._trials((TrialState.RUNNING,)))
        return waiting, running

    def finished(self) -> int:
        """How many of the points are finished (complete or pruned)."""
        return len({t.user_attrs["point"] for t in self._trials(DONE)})

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

    def run(
        self,
        objective: Objective,
        *,
        n_trials: int | None = None,
        wait: bool = True,
        poll: float | None = None,
        on_trial: Callable[[FrozenTrial], None] | None = None,
        say: Callable[[str], None] | None = None,
    ) -> int:
        """Claim and train points until none is left or ``n_trials`` ran here; returns how many ran.

        With ``wait`` the loop outlives other workers' running trials, so that a point of a dead
        worker is picked up once its heartbeat goes stale. ``say`` prints notes (default: stderr).
        """

        def train(trial: optuna.Trial) -> float:
            value, attrs = objective(trial, self._started.pop(trial.number))
            for name, attr in attrs.items():
                trial.set_user_attr(name, attr)
            return value

        def finished(trial: FrozenTrial) -> None:
            if trial.state == TrialState.FAIL:
                self._errored_here.add(trial.user_attrs["point"])
            if on_trial is not None:
                on_trial(trial)

        return work(
            self.study,
            self.claim,
            train,
            more=lambda: wait and any(self.pending()),
            poll=poll if poll is not None else max(0.5, heartbeat_interval(self.study) / 2),
            n_trials=n_trials,
            on_trial=finished,
            say=say,
        )


def train_points(
    study: optuna.Study,
    points: Sequence[Point],
    objective: Objective,
    *,
    desc: str,
    n_trials: int | None = None,
    progress: bool = False,
) -> dict[str, FrozenTrial | None]:
    """Train the points of ``study`` not trained yet (at most ``n_trials`` here), with a progress
    bar; returns the trial standing for each point (see :meth:`PointQueue.results`)."""
    queue = PointQueue(study, points)
    with progress_bar(len(points), desc=desc, unit="trial", enabled=progress, initial=queue.finished()) as bar:
        queue.run(
            objective,
            n_trials=n_trials,
            on_trial=lambda _trial: bar.update(1),
            say=lambda message: bar.write(message, file=sys.stderr),
        )
    return queue.results()
