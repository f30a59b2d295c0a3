"""Every use of Optuna's storage: where studies live, how workers share them, one worker loop.

A SQLite file needs no server and suits one machine; a PostgreSQL URL
(``postgresql://user:password@host:5432/db``) lets worker processes on many machines share one
study. Both are Optuna ``RDBStorage`` with heartbeats. The grid search, the scaling study, the
pipeline and NAS all run trials through :func:`work`:

- work is claimed under :func:`study_lock` (a file lock beside a SQLite file, an advisory lock on
  PostgreSQL) by ``study.ask()``, which starts the oldest WAITING trial or a new one;
- a claimed trial records its worker (``host:pid``) and beats every ``heartbeat`` seconds;
- before each claim :func:`recover` fails the trials whose worker is gone and queues each again
  with its parameters (Optuna's ``RetryHeartbeatStaleTrialCallback``): at once when the worker was
  a process of this machine that no longer exists, after ``2 × heartbeat`` seconds of silence
  otherwise (``optuna.storages.fail_stale_trials``);
- a result that arrives after its trial was declared stale is dropped, never counted twice.

Optuna runs heartbeats only inside ``Study.optimize`` and keeps a study's storage private, so
:func:`backend` is the one place that reads it (see there why); everything else is public API.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import math
import os
import random
import socket
import sys
import threading
import time
import warnings
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy.exc
from optuna.storages import BaseStorage, RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, TrialState

from effnet.errors import UserError, check_whole_number

#: The SQLite file created in the output folder when no storage is given.
DEFAULT_DB = "study.db"
#: Seconds between heartbeats of a running trial; stale after twice this.
DEFAULT_HEARTBEAT = 10
#: The study's user attribute that records what its trials are trained with.
SETTINGS_ATTR = "effnet_settings"

#: Seconds to wait for a database server to accept a connection and for one of its statements
#: (PostgreSQL's ``connect_timeout`` and ``statement_timeout``; a URL's own ``connect_timeout`` or
#: ``options`` win), and for another process's lock on a SQLite file (SQLite's ``timeout``).
CONNECT_TIMEOUT = 10
STATEMENT_TIMEOUT = 120
SQLITE_TIMEOUT = 60

_OPEN_ATTEMPTS = 6
_SCHEMES = ("sqlite", "postgresql", "postgres", "mysql")

#: Trains a started trial; returns its value, or one value per direction of a multi-objective study.
TrialFunction = Callable[[optuna.Trial], float | Sequence[float]]


# -- where studies live -----------------------------------------------------------------------------
def storage_url(storage: str | Path | None, output: str | Path | None = None) -> str:
    """The SQLAlchemy URL of a storage: a URL as given, a file path as SQLite, or
    ``<output>/study.db`` when none is given."""
    if storage is None or str(storage) == "":
        if output is None:
            raise UserError(
                "storage is needed (a SQLite file or a PostgreSQL URL) without an output folder", field="storage"
            )
        path = Path(output) / DEFAULT_DB
    else:
        text = str(storage)
        scheme = text.split(":", 1)[0].split("+", 1)[0].lower() if "://" in text else ""
        if scheme:
            if scheme not in _SCHEMES:
                raise UserError(
                    f"storage URL scheme {scheme!r} is not supported (use sqlite:/// or postgresql://)", field="storage"
                )
            if scheme == "postgres":  # SQLAlchemy 2 spells it postgresql
                text = "postgresql" + text[len("postgres") :]
            if text.startswith("postgresql://"):
                text = f"postgresql+{_postgres_driver()}://" + text[len("postgresql://") :]
            return text
        path = Path(text)
    path = path.expanduser().resolve()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"cannot create the folder for storage {path}: {err.strerror}") from None
    return f"sqlite:///{path}"


def _postgres_driver() -> str:
    """psycopg2 (the ``postgres`` extra) when installed, else psycopg 3 (newer SQLAlchemy's default)."""
    import importlib.util

    return "psycopg2" if importlib.util.find_spec("psycopg2") is not None else "psycopg"


def sqlite_path(url: str) -> Path | None:
    """The database file of a SQLite URL, None for a server."""
    return Path(url[len("sqlite:///") :]) if url.startswith("sqlite:///") else None


def redact_url(url: str) -> str:
    """A storage URL without its password, for messages and reports."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url


def open_rdb(storage: str | Path | None, *, output: str | Path | None = None, heartbeat: int = DEFAULT_HEARTBEAT):
    """An Optuna ``RDBStorage`` whose trials beat every ``heartbeat`` seconds, are stale after twice
    that, and are queued again with their parameters once failed as stale."""
    url = storage_url(storage, output)
    check_whole_number("heartbeat", heartbeat, 1, " of seconds")
    engine: dict[str, Any] = {}
    if url.startswith("sqlite"):
        # Several processes on one file: wait for the lock instead of failing at once.
        engine["connect_args"] = {"timeout": SQLITE_TIMEOUT}
    else:
        engine["pool_pre_ping"] = True
        if url.startswith("postgresql"):  # a server that accepts and never answers must not hang us
            query = url.partition("?")[2]
            engine["connect_args"] = {
                **({} if "connect_timeout=" in query else {"connect_timeout": CONNECT_TIMEOUT}),
                **({} if "options=" in query else {"options": f"-c statement_timeout={STATEMENT_TIMEOUT * 1000}"}),
            }
    path = sqlite_path(url)
    for attempt in range(_OPEN_ATTEMPTS):
        try:
            # Processes sharing a new SQLite file create its tables one at a time.
            with warnings.catch_warnings(), _file_lock(path):  # heartbeats are "experimental" in Optuna
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return RDBStorage(
                    url,
                    engine_kwargs=engine,
                    heartbeat_interval=heartbeat,
                    grace_period=2 * heartbeat,
                    heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=None),
                )
        except ImportError as err:
            raise UserError(
                f"storage {url.split('://')[0]} needs a driver: {err} (pip install 'effnet[postgres]')", field="storage"
            ) from None
        except Exception as err:  # sqlalchemy's errors: a server not reachable, a bad URL, …
            # Workers starting together on an empty database (a server, or a SQLite file opened by a
            # program that does not take our lock) race to create the tables: try again.
            text = str(err)
            racing = isinstance(err, sqlalchemy.exc.IntegrityError) or "already exists" in text or "locked" in text
            if racing and attempt + 1 < _OPEN_ATTEMPTS:
                time.sleep(0.5 + random.random())
                continue
            first = text.strip().splitlines()[0] if text.strip() else type(err).__name__
            waited = f" (after {CONNECT_TIMEOUT} s)" if "timeout" in first.lower() and "connect_args" in engine else ""
            raise UserError(f"storage {redact_url(url)} cannot be opened: {first}{waited}", field="storage") from None
    raise AssertionError("unreachable")


def open_study(
    storage: str | Path | BaseStorage | None,
    study_name: str,
    *,
    output: str | Path | None = None,
    direction: str = "maximize",
    directions: Sequence[str] | None = None,
    sampler: optuna.samplers.BaseSampler | None = None,
    pruner: optuna.pruners.BasePruner | None = None,
    heartbeat: int = DEFAULT_HEARTBEAT,
) -> optuna.Study:
    """Create or load the study ``study_name`` (safe when many workers start at once).

    ``storage`` is a SQLite file path, a SQLAlchemy URL (``sqlite:///…``, ``postgresql://…``), an
    Optuna storage (e.g. ``InMemoryStorage()`` for one process), or None for ``<output>/study.db``.
    """
    if not study_name or not isinstance(study_name, str):
        raise UserError("study_name must be a non-empty name", field="study_name")
    optuna.logging.set_verbosity(logging.WARNING)
    opened = storage if isinstance(storage, BaseStorage) else open_rdb(storage, output=output, heartbeat=heartbeat)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.create_study(
            storage=opened,
            study_name=study_name,
            sampler=sampler,
            pruner=pruner,
            load_if_exists=True,
            **({"directions": list(directions)} if directions else {"direction": direction}),
        )


def backend(study: optuna.Study) -> BaseStorage:
    """The storage behind ``study``: the one place effnet reads Optuna's private ``Study._storage``
    (an ``RDBStorage`` wrapped in a private cache).

    Optuna has no public accessor for it, and does what needs it only inside ``Study.optimize``,
    which cannot claim the fixed points of a queue nor stop at a study-wide trial count. effnet
    needs it for four things: recording heartbeats of trials started by ``ask()``, the heartbeat
    interval, the callback that queues a failed trial again, and the URL (reports, the SQLite
    file lock) and engine (the PostgreSQL advisory lock). Everything else goes through the study.
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


# -- one study, many workers ------------------------------------------------------------------------
@contextlib.contextmanager
def study_lock(study: optuna.Study) -> Iterator[None]:
    """Exclusive access to the study's bookkeeping across processes and machines: a file lock
    beside a SQLite file, an advisory lock on PostgreSQL, nothing for other storages."""
    storage = backend(study)
    url = storage.url if isinstance(storage, RDBStorage) else ""
    if not url.startswith("postgresql"):
        with _file_lock(sqlite_path(url)):
            yield
        return
    key = zlib.crc32(f"effnet:{study.study_name}".encode())
    with storage.engine.connect() as conn:
        conn.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"), {"k": key})
        conn.commit()
        try:
            yield
        finally:
            conn.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), {"k": key})
            conn.commit()


@contextlib.contextmanager
def _file_lock(path: Path | None) -> Iterator[None]:
    """An exclusive lock on ``<path>.lock`` between processes; nothing when ``path`` is None."""
    if path is None:
        yield
        return
    with open(f"{path}.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


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
    """Record what the study's trials are trained with; refuse to mix in trials trained otherwise."""
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
    Call under :func:`study_lock`."""
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
    heartbeat. Call under :func:`study_lock`, once the caller knows which trial ``ask()`` will start."""
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
