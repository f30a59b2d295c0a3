"""The search's worker: claim a trial of a shared study, keep it alive, recover the trials of dead
workers, and the loop around them.

Any number of worker processes, on one machine or many, share one Optuna study (its storage:
:mod:`effnet.search.storage`). The grid search, the scaling study, the pipeline and NAS all run
trials through :func:`work`:

- :func:`work` holds :func:`study_lock` (a file lock beside a SQLite file, an advisory lock on
  PostgreSQL) while it recovers and claims. A claim (``PointQueue.claim``, NAS's) starts its trial
  with :func:`start_trial` (``study.ask()``: the oldest WAITING trial, else a new one), and
  :func:`require_lock` refuses to start or queue one outside the lock: that rule is what makes a
  trial claimed by one worker only;
- a claimed trial records its worker (``host:pid``) and beats every ``heartbeat`` seconds;
- before each claim :func:`recover` fails the trials whose worker is gone and queues each again
  with its parameters (Optuna's ``RetryHeartbeatStaleTrialCallback``): at once when the worker was
  a process of this machine that no longer exists, after ``2 × heartbeat`` seconds of silence
  otherwise (``optuna.storages.fail_stale_trials``);
- a result that arrives after its trial was declared stale is dropped, never counted twice.

Optuna runs heartbeats only inside ``Study.optimize`` and keeps a study's storage private, so
:func:`backend` here is the one place in effnet that reads it (see there why); everything else is
public API.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import socket
import sys
import threading
import time
import warnings
import zlib
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import optuna
import sqlalchemy
from optuna.storages import BaseStorage, RDBStorage
from optuna.trial import FrozenTrial, TrialState

from effnet.errors import UserError
from effnet.search.storage import DEFAULT_HEARTBEAT, file_lock, redact_url, sqlite_path

#: The study's user attribute that records what its trials are trained with.
SETTINGS_ATTR = "effnet_settings"

#: Trains a started trial; returns its value, or one value per direction of a multi-objective study.
TrialFunction = Callable[[optuna.Trial], float | Sequence[float]]


# -- the study's storage: Optuna's private API ------------------------------------------------------
def backend(study: optuna.Study) -> BaseStorage:
    """The storage behind ``study``: the one place effnet reads Optuna's private ``Study._storage``
    (an ``RDBStorage`` wrapped in a private cache).

    Why: Optuna has no public accessor for it, and does what needs it only inside
    ``Study.optimize``, which cannot claim the fixed points of a queue nor stop at a study-wide
    trial count. The worker needs it for four things: recording heartbeats of trials started by
    ``ask()``, the heartbeat interval, the callback that queues a failed trial again, and the URL
    (reports, the SQLite file lock) and engine (the PostgreSQL advisory lock). Everything else goes
    through the study.
    """
    storage = study._storage
    return getattr(storage, "_backend", storage)


def study_url(study: optuna.Study) -> str:
    """The study's storage URL without its password (the storage's type for a storage with no URL)."""
    storage = backend(study)
    return redact_url(storage.url) if isinstance(storage, RDBStorage) else type(storage).__name__


def heartbeat_interval(study: optuna.Study) -> int:
    """Seconds between the heartbeats of the study's trials (the default without heartbeats)."""
    getter = getattr(backend(study), "get_heartbeat_interval", None)
    return (getter() if getter is not None else None) or DEFAULT_HEARTBEAT


# -- the lock and its rule --------------------------------------------------------------------------
_held = threading.local()  # per thread: Counter of the study locks it holds


def _lock_key(study: optuna.Study) -> tuple[str | int, str]:
    storage = backend(study)
    return (storage.url if isinstance(storage, RDBStorage) else id(storage), study.study_name)


def _held_here() -> Counter:
    if not hasattr(_held, "locks"):
        _held.locks = Counter()
    return _held.locks


@contextlib.contextmanager
def study_lock(study: optuna.Study) -> Iterator[None]:
    """Exclusive access to the study's bookkeeping across processes and machines: a file lock
    beside a SQLite file, an advisory lock on PostgreSQL, nothing for other storages (one process).
    Not reentrant."""
    storage = backend(study)
    url = storage.url if isinstance(storage, RDBStorage) else ""
    key, held = _lock_key(study), _held_here()
    with contextlib.ExitStack() as stack:
        if url.startswith("postgresql"):
            stack.enter_context(_advisory_lock(storage, study.study_name))
        else:
            stack.enter_context(file_lock(sqlite_path(url)))
        held[key] += 1
        try:
            yield
        finally:
            held[key] -= 1


@contextlib.contextmanager
def _advisory_lock(storage: RDBStorage, study_name: str) -> Iterator[None]:
    key = zlib.crc32(f"effnet:{study_name}".encode())
    with storage.engine.connect() as conn:
        conn.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"), {"k": key})
        conn.commit()
        try:
            yield
        finally:
            conn.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), {"k": key})
            conn.commit()


def require_lock(study: optuna.Study, what: str) -> None:
    """Raise unless this thread holds the study's lock: trials are queued, recovered and started
    (:func:`start_trial`) only under it, i.e. inside :func:`work`'s claim, so that no two workers
    start the same trial and none makes a trial of its own while a queued one waits."""
    if not _held_here()[_lock_key(study)]:
        raise RuntimeError(f"{what} runs only under study_lock (inside work()'s claim)")


# -- one study, many workers ------------------------------------------------------------------------
def _normalised(settings: Mapping[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(settings, sort_keys=True, default=str))


def _differences(old: Mapping[str, Any], new: Mapping[str, Any], prefix: str = "") -> list[str]:
    names = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            names += _differences(a, b, f"{prefix}{key}.")
        elif a != b:
            names.append(prefix + key)
    return names


def check_settings(study: optuna.Study, settings: Mapping[str, Any]) -> None:
    """Record what the study's trials are trained with; refuse to mix in trials trained otherwise
    (a worker joins a study only with the settings of those already in it)."""
    wanted = _normalised(settings)
    with study_lock(study):
        stored = study.user_attrs.get(SETTINGS_ATTR)
        if stored is None:
            study.set_user_attr(SETTINGS_ATTR, wanted)
            return
    if stored != wanted:
        raise UserError(
            f"study_name {study.study_name!r} already holds trials made with other settings "
            f"({', '.join(_differences(stored, wanted))}); rerun with the same options or pick another study name",
            field="study_name",
        )


def worker_id() -> str:
    """Who trains a trial (its user attribute ``worker``): host:pid."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _dead_here(trial: FrozenTrial) -> bool:
    """Whether the trial's worker was a process of this machine (not this one) that no longer exists."""
    host, _, pid = str(trial.user_attrs.get("worker", "")).rpartition(":")
    return host == socket.gethostname() and pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid))


def recover(study: optuna.Study) -> list[int]:
    """Fail the RUNNING trials whose worker is gone and queue each again with its parameters (the
    storage's stale-trial callback); returns the numbers of those whose worker died on this machine.
    Under :func:`study_lock` only."""
    require_lock(study, "recover()")
    retry = getattr(backend(study), "get_heartbeat_stale_trial_callback", lambda: None)()
    dead = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if _dead_here(trial):
            failed = study.tell(trial.number, state=TrialState.FAIL, skip_if_finished=True)
            if retry is not None:
                retry(study, failed)
            dead.append(trial.number)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)  # workers elsewhere that stopped beating
    return dead


def start_trial(study: optuna.Study) -> optuna.Trial:
    """``study.ask()`` (the oldest WAITING trial, else a new one) marked with this worker and a first
    heartbeat. Under :func:`study_lock` only, once the caller knows which trial ``ask()`` will start."""
    require_lock(study, "start_trial()")
    with warnings.catch_warnings():  # the heartbeats are ours (see Heartbeat)
        warnings.filterwarnings("ignore", "Heartbeat of storage is supposed to be used")
        trial = study.ask()
    trial.set_user_attr("worker", worker_id())
    Heartbeat(study, trial).beat()
    return trial


class Heartbeat:
    """Record a trial's heartbeat every interval in a background thread (a context manager)."""

    def __init__(self, study: optuna.Study, trial: optuna.Trial) -> None:
        storage = backend(study)
        self._record = getattr(storage, "record_heartbeat", None)
        if self._record is not None:  # storages without heartbeats have no such method
            study_id = storage.get_study_id_from_name(study.study_name)
            self._id = storage.get_trial_id_from_study_id_trial_number(study_id, trial.number)
        self.number = trial.number
        self.interval = heartbeat_interval(study)
        self._warned = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name=f"heartbeat-{trial.number}")

    def beat(self) -> None:
        if self._record is None:
            return
        try:
            self._record(self._id)
        except Exception as err:  # a missed beat is retried; never kill the trial for it
            if not self._warned:
                self._warned = True
                print(f"effnet: heartbeat of trial {self.number} failed: {err}", file=sys.stderr)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.beat()

    def __enter__(self) -> Heartbeat:
        self.beat()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _stderr(message: str) -> None:
    print(message, file=sys.stderr)


def run_trial(
    study: optuna.Study, trial: optuna.Trial, objective: TrialFunction, say: Callable[[str], None] | None = None
) -> FrozenTrial | None:
    """Evaluate a started trial with heartbeats and record its outcome; None when another worker
    declared it stale meanwhile (it is queued again, so this result is dropped, not counted twice).

    ``optuna.TrialPruned`` prunes it. A mistake of the user's (:class:`UserError`) or an interrupt
    fails it and stops the worker; rerunning trains it again. Any other exception (memory,
    numerics) fails it with the error recorded, and the worker goes on.
    """
    say = say or _stderr
    stale = (
        f"effnet: trial {trial.number} was declared stale by another worker; its result is dropped and it "
        "is queued again (raise the heartbeat?)"
    )
    state, value = TrialState.COMPLETE, None
    with Heartbeat(study, trial):
        try:
            value = objective(trial)
        except optuna.TrialPruned:
            state = TrialState.PRUNED
        except optuna.exceptions.UpdateFinishedTrialError:
            say(stale)
            return None
        except (KeyboardInterrupt, SystemExit, UserError) as err:
            with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):
                if isinstance(err, UserError):
                    trial.set_user_attr("error", str(err))
                study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
            raise
        except Exception as err:
            message = f"{type(err).__name__}: {err}"[:500]
            try:
                trial.set_user_attr("error", message)
            except optuna.exceptions.UpdateFinishedTrialError:
                say(stale)
                return None
            say(f"effnet: trial {trial.number} failed: {message}")
            state = TrialState.FAIL
        else:
            values = value if isinstance(value, Sequence) else [value]
            if any(math.isnan(float(v)) for v in values):  # Optuna would fail it; say why
                with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):
                    trial.set_user_attr("error", "the objective's value is NaN")
                state = TrialState.FAIL
    told = study.tell(trial, value if state == TrialState.COMPLETE else None, state=state, skip_if_finished=True)
    if told.state != state:  # finished by another worker first
        say(stale)
        return None
    return told


def work(
    study: optuna.Study,
    claim: Callable[[], optuna.Trial | None],
    objective: TrialFunction,
    *,
    more: Callable[[], bool],
    poll: float,
    n_trials: int | None = None,
    on_trial: Callable[[FrozenTrial], None] | None = None,
    say: Callable[[str], None] | None = None,
) -> int:
    """The worker loop: recover trials of dead workers and ``claim`` one (both under the study's
    lock), run it, repeat; returns how many trials ran here.

    ``claim`` returns a trial from :func:`start_trial`, or None when there is nothing to start; the
    loop then ends unless ``more()`` (e.g. other workers' trials are still running, and may die),
    in which case it looks again every ``poll`` seconds. ``n_trials`` caps the trials run here.
    """
    say = say or _stderr
    ran = 0
    while n_trials is None or ran < n_trials:
        with study_lock(study):
            for number in recover(study):
                say(f"effnet: trial {number}: its worker died; queued again")
            trial = claim()
        if trial is None:
            if not more():
                break
            time.sleep(poll)
            continue
        finished = run_trial(study, trial, objective, say)
        ran += 1
        if on_trial is not None and finished is not None:
            on_trial(finished)
    return ran
