"""Output folders that belong to one run: a lock held for the run's life, and no mixing with another run.

:func:`claim_folder` locks ``DIR/.effnet.lock`` (``fcntl.flock``, released by the kernel when the process
ends, however it ends) and records the holder's host and pid in it, so that a second run on the folder
stops at once naming the first. A folder that already holds a run's files is refused unless the caller
continues that run (``resume``) or replaces it (``overwrite``: the files are removed, said in one line).
Training uses it, and so do ``effnet pipeline`` and ``effnet nas``, whose folders also keep a record
(``DIR/effnet-run.json``: the command, its study and storage) of which run they hold: the same run
again continues it (each of its steps resumes), another is refused unless ``overwrite``. A folder that
holds another command's run (a record of another command, or training's files where there is no record)
is refused whatever the options (:func:`check_other_run`); ``search-scaling`` and ``study-scaling``, whose
workers share a folder, check and record it without a lock.

The lock file is the one file effnet writes in place rather than through :mod:`effnet.atomic`: a lock
lives on the file's inode, which a rename would replace. It stays after the run (removed, a waiting
process could lock the old inode while a new one locks a new file)."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import socket
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from effnet.atomic import atomic_write_text, make_folder, remove_stale_temporaries
from effnet.errors import UserError

LOCK_NAME = ".effnet.lock"
#: Which run a folder holds, where the caller gives a record (:func:`claim_folder`).
RECORD_NAME = "effnet-run.json"


@dataclass(frozen=True)
class ClaimedFolder:
    """A folder this process holds; ``found``: the run files it held when claimed (after ``overwrite``
    removed them: none)."""

    path: Path
    found: tuple[str, ...]


def _holder(lock: Path) -> str:
    """``host H, pid P`` from the lock file (the holder writes it just after locking: wait a moment)."""
    for _ in range(20):
        try:
            record = json.loads(lock.read_text(encoding="utf-8") or "null")
        except (OSError, ValueError):
            record = None
        if isinstance(record, dict):
            return f"host {record.get('host', '?')}, pid {record.get('pid', '?')}"
        time.sleep(0.05)
    return "host ?, pid ?"


@contextmanager
def folder_lock(folder: Path, *, field: str = "output") -> Iterator[None]:
    """Hold ``folder``'s lock for the block; a folder another process holds is a UserError naming it
    (host and pid) and ``field``."""
    lock = folder / LOCK_NAME
    try:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as err:
        raise UserError(f"{field} {folder} cannot be locked: {err.strerror or err}", field=field) from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError(
                f"{field} {folder} is in use by another run ({_holder(lock)}); wait for it to end or choose "
                "another folder",
                field=field,
            ) from None
        record = json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "started": time.time()})
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, (record + "\n").encode("utf-8"), 0)
        except OSError as err:
            raise UserError(f"{field} {folder} cannot be locked: {err.strerror or err}", field=field) from None
        yield
    finally:
        os.close(fd)  # releases the lock


def _say(message: str) -> None:
    print(f"effnet: {message}", file=sys.stderr)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def _held_record(path: Path) -> dict[str, Any] | None:
    """The run record ``path`` holds: None where there is none, a placeholder where it is unreadable."""
    try:
        held = json.loads((path / RECORD_NAME).read_text(encoding="utf-8")).get("run")
    except FileNotFoundError:
        return None
    except (OSError, ValueError, AttributeError):
        return {"record": "unreadable"}
    return held if isinstance(held, dict) else {"record": "unreadable"}


def _present(path: Path, names: Sequence[str]) -> list[str]:
    """The ``names`` that exist in ``path``, folders shown with a slash."""
    found = [name for name in names if (path / name).exists() or (path / name).is_symlink()]
    return [name + "/" if (path / name).is_dir() else name for name in found]


def check_other_run(
    folder: str | os.PathLike[str],
    *,
    commands: Sequence[str] | None = (),
    others: Sequence[str] = (),
    field: str = "output",
) -> None:
    """A UserError naming ``field`` where ``folder`` holds another command's run: a run record
    (:data:`RECORD_NAME`) of a command not in ``commands`` (None: any record is accepted), or, where it has
    no record, any of ``others`` (what a command that keeps no record leaves: training's files). Overwrite
    does not replace another command's run: its files are not this command's to remove."""
    path = Path(folder)
    if not path.is_dir():
        return
    held = _held_record(path)
    if held is not None and commands is not None and held.get("command") not in commands:
        shown = ", ".join(f"{k} {v}" for k, v in held.items())
        raise UserError(f"{field} {path} holds another command's run ({shown}); choose another folder", field=field)
    found = _present(path, others) if held is None else []
    if found:
        raise UserError(
            f"{field} {path} holds another command's run ({', '.join(found)}); choose another folder", field=field
        )


def write_record(folder: str | os.PathLike[str], record: Mapping[str, Any]) -> None:
    """Record ``record`` as the run ``folder`` holds, where it holds none yet (workers sharing a folder
    write the same record; see :func:`check_other_run`)."""
    path = make_folder(folder)
    if _held_record(path) is None:
        atomic_write_text(
            path / RECORD_NAME, json.dumps({"run": json.loads(json.dumps(dict(record), default=str))}, indent=2) + "\n"
        )


@contextmanager
def claim_folder(
    folder: str | os.PathLike[str],
    *,
    run_files: Sequence[str],
    resume: bool = False,
    overwrite: bool = False,
    record: Mapping[str, Any] | None = None,
    others: Sequence[str] = (),
    field: str = "output",
    say: Callable[[str], None] = _say,
) -> Iterator[ClaimedFolder]:
    """Create and lock ``folder`` for a run whose files (and folders) are named ``run_files``. Where some
    exist already: ``resume`` keeps them for the caller to continue, ``overwrite`` removes them (said in
    one line through ``say``), and neither is a UserError naming ``field``. Stale temporary files are
    removed (no other writer can be at work while the lock is held).

    With ``record`` (JSON-friendly: what tells two runs apart), the folder's :data:`RECORD_NAME` decides
    instead: the same run continues (as ``resume``), another one needs ``overwrite``, ``resume`` needs
    one there; the record is then written. A folder that holds another command's run is refused whatever
    the options (:func:`check_other_run`): without ``record``, any run record; with it, any of ``others``
    where the folder has no record."""
    if resume and overwrite:
        raise UserError("overwrite replaces a run and resume continues it: give one of the two", field="overwrite")
    path = make_folder(folder)
    with folder_lock(path, field=field):
        check_other_run(path, commands=() if record is None else None, others=others, field=field)
        names = (*run_files, RECORD_NAME) if record is not None else tuple(run_files)
        found = tuple(name for name in names if (path / name).exists() or (path / name).is_symlink())
        shown = ", ".join(name + "/" if (path / name).is_dir() else name for name in found)
        held = _held_record(path) if record is not None else None
        wanted = json.loads(json.dumps(dict(record), default=str)) if record is not None else None
        if found and overwrite:
            say(f"overwrite: removing the run in {path} ({shown})")
            for name in found:
                try:
                    _remove(path / name)
                except OSError as err:
                    raise UserError(
                        f"{field} {path}: cannot remove {name}: {err.strerror or err}", field=field
                    ) from None
            found = ()
        elif held is not None and held != wanted:
            shown = ", ".join(f"{k} {v}" for k, v in held.items())
            raise UserError(
                f"overwrite is needed to replace the other run in {field} {path} ({shown}); or choose another folder",
                field="overwrite",
            )
        elif record is not None and resume and held is None:
            raise UserError(f"resume: {field} {path} holds no run to continue", field="resume")
        elif found and not resume and record is None:
            raise UserError(
                f"{field} {path} holds another run ({shown}): resume continues it, overwrite replaces it, "
                "or choose another folder",
                field=field,
            )
        remove_stale_temporaries(path)
        if wanted is not None:
            atomic_write_text(path / RECORD_NAME, json.dumps({"run": wanted}, indent=2) + "\n")
        yield ClaimedFolder(path, found)
