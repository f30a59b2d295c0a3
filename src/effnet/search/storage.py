"""Where studies live: Optuna storage on a SQLite file (default) or a PostgreSQL server.

A SQLite file needs no server and suits one machine; a PostgreSQL URL
(``postgresql://user:password@host:5432/db``) lets worker processes on many machines share one
study. Both are Optuna ``RDBStorage`` with heartbeats, so a trial whose process died (even by
SIGKILL) is detected as stale after ``2 × heartbeat`` seconds and can be run again.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import random
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy.exc
from optuna.storages import RDBStorage

from effnet.errors import UserError, check_whole_number

#: The SQLite file created in the output folder when no ``--storage`` is given.
DEFAULT_DB = "study.db"
#: Seconds between heartbeats of a running trial; stale after twice this.
DEFAULT_HEARTBEAT = 10

_OPEN_ATTEMPTS = 6
_SCHEMES = ("sqlite", "postgresql", "postgres", "mysql")


def storage_url(storage: str | Path | None, output: str | Path | None = None) -> str:
    """The SQLAlchemy URL of a storage: a URL as given, a file path as SQLite, or
    ``<output>/study.db`` when none is given."""
    if storage is None or str(storage) == "":
        if output is None:
            raise UserError("give --storage (a SQLite file or a PostgreSQL URL) or an output folder")
        path = Path(output) / DEFAULT_DB
    else:
        text = str(storage)
        scheme = text.split(":", 1)[0].split("+", 1)[0].lower() if "://" in text else ""
        if scheme:
            if scheme not in _SCHEMES:
                raise UserError(f"storage URL scheme {scheme!r} is not supported (use sqlite:/// or postgresql://)")
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


def open_storage(storage: str | Path | None, *, output: str | Path | None = None, heartbeat: int = DEFAULT_HEARTBEAT):
    """An Optuna ``RDBStorage`` with heartbeats (``heartbeat`` seconds; stale after twice that)."""
    url = storage_url(storage, output)
    check_whole_number("heartbeat", heartbeat, 1, " of seconds")
    engine: dict[str, Any] = {}
    if url.startswith("sqlite"):
        # Several processes on one file: wait for the lock instead of failing at once.
        engine["connect_args"] = {"timeout": 60}
    else:
        engine["pool_pre_ping"] = True
    path = sqlite_path(url)
    for attempt in range(_OPEN_ATTEMPTS):
        try:
            # Processes sharing a new SQLite file create its tables one at a time.
            with warnings.catch_warnings(), _file_lock(path):  # heartbeats are "experimental" in Optuna
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return RDBStorage(url, engine_kwargs=engine, heartbeat_interval=heartbeat, grace_period=2 * heartbeat)
        except ImportError as err:
            raise UserError(
                f"storage {url.split('://')[0]} needs a driver: {err} (pip install 'effnet[postgres]')"
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
            raise UserError(f"cannot open storage {redact_url(url)}: {first}") from None
    raise AssertionError("unreachable")


def redact_url(url: str) -> str:
    """A storage URL without its password, for messages and reports."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url


def open_study(
    storage: str | Path | RDBStorage | None,
    study_name: str,
    *,
    output: str | Path | None = None,
    direction: str = "maximize",
    sampler: optuna.samplers.BaseSampler | None = None,
    pruner: optuna.pruners.BasePruner | None = None,
    heartbeat: int = DEFAULT_HEARTBEAT,
) -> optuna.Study:
    """Create or load the study ``study_name`` (safe when many workers start at once).

    ``storage`` is a SQLite file path, a SQLAlchemy URL (``sqlite:///…``, ``postgresql://…``),
    an existing ``RDBStorage``, or None for ``<output>/study.db``.
    """
    if not study_name or not isinstance(study_name, str):
        raise UserError("a study needs a name (--study-name)")
    optuna.logging.set_verbosity(logging.WARNING)
    rdb = storage if isinstance(storage, RDBStorage) else open_storage(storage, output=output, heartbeat=heartbeat)
    return optuna.create_study(
        storage=rdb,
        study_name=study_name,
        direction=direction,
        sampler=sampler,
        pruner=pruner,
        load_if_exists=True,
    )


def backend(study: optuna.Study) -> RDBStorage | None:
    """The study's ``RDBStorage`` (Optuna wraps it in a cache), or None for other storages."""
    storage = getattr(study._storage, "_backend", study._storage)
    return storage if isinstance(storage, RDBStorage) else None


def study_url(study: optuna.Study) -> str:
    """The study's storage URL without its password ('' for in-memory storage)."""
    rdb = backend(study)
    return redact_url(rdb.url) if rdb is not None else ""


@contextlib.contextmanager
def study_lock(study: optuna.Study) -> Iterator[None]:
    """Serialise queue bookkeeping between processes sharing a SQLite file (a file lock beside it).

    A PostgreSQL server serialises with row locks itself, so there this does nothing.
    """
    rdb = backend(study)
    with _file_lock(sqlite_path(rdb.url) if rdb is not None else None):
        yield


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


class Heartbeat:
    """Record a trial's heartbeat every ``interval`` seconds in a background thread (context manager)."""

    def __init__(self, study: optuna.Study, trial_id: int) -> None:
        self.storage = study._storage
        self.trial_id = trial_id
        rdb = backend(study)
        self.interval = (rdb.heartbeat_interval if rdb is not None else None) or DEFAULT_HEARTBEAT
        self._warned = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name=f"heartbeat-{trial_id}")

    def _beat(self) -> None:
        record = getattr(self.storage, "record_heartbeat", None)
        if record is None:
            return
        try:
            record(self.trial_id)
        except Exception as err:  # a missed beat is retried; never kill the trial for it
            if not self._warned:
                self._warned = True
                print(f"effnet: heartbeat of trial id {self.trial_id} failed: {err}", file=sys.stderr)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._beat()

    def __enter__(self) -> Heartbeat:
        self._beat()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
