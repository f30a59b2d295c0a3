"""Where studies live: storage URLs, and opening or creating a study in its storage.

A SQLite file needs no server and suits one machine; a PostgreSQL URL
(``postgresql://user:password@host:5432/db``) lets worker processes on many machines share one
study. Both are Optuna ``RDBStorage`` with heartbeats, stale after twice the heartbeat, whose
stale trials are queued again with their parameters. How workers share a study (claims,
heartbeats, recovery, the worker loop) is :mod:`effnet.search.worker`.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import random
import time
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy.exc
from optuna.storages import BaseStorage, RDBStorage, RetryHeartbeatStaleTrialCallback

from effnet.errors import UserError, check_whole_number

#: The SQLite file created in the output folder when no storage is given.
DEFAULT_DB = "study.db"
#: Seconds between heartbeats of a running trial; stale after twice this.
DEFAULT_HEARTBEAT = 10

#: Seconds to wait for a database server to accept a connection and for one of its statements
#: (PostgreSQL's ``connect_timeout`` and ``statement_timeout``; a URL's own ``connect_timeout`` or
#: ``options`` win), and for another process's lock on a SQLite file (SQLite's ``timeout``).
CONNECT_TIMEOUT = 10
STATEMENT_TIMEOUT = 120
SQLITE_TIMEOUT = 60

_OPEN_ATTEMPTS = 6
_SCHEMES = ("sqlite", "postgresql", "postgres", "mysql")


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
            with warnings.catch_warnings(), file_lock(path):  # heartbeats are "experimental" in Optuna
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


@contextlib.contextmanager
def file_lock(path: Path | None) -> Iterator[None]:
    """An exclusive lock on ``<path>.lock`` between processes (beside a SQLite file: creating its
    tables, and the worker's study lock); nothing when ``path`` is None."""
    if path is None:
        yield
        return
    with open(f"{path}.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
