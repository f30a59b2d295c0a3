"""An output folder holds one run: a record of which run it is, and a lock held while it runs.

``effnet pipeline`` and ``effnet nas`` write into an output folder (their study, figures, reports,
the final model). :func:`run_folder` claims it for the run's life:

- a lock file (``.effnet-run.lock``, an exclusive ``flock``) naming its holder (host, pid): a second
  run on the same folder stops at once with one line naming the holder; the lock dies with its
  process, so a killed run leaves nothing to clean up;
- a record (``effnet-run.json``) of which run the folder holds (the command, its study and storage).
  Rerunning the same run continues it (every step resumes); another run is refused unless
  ``overwrite`` (the files the earlier run wrote are removed first, and that is said in one line).
  ``resume`` insists that the folder already holds this run.

Messages start with the argument they are about (``output``, ``overwrite``, ``resume``), which the
CLI writes as its flag.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import socket
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from effnet.atomic import atomic_write_text
from effnet.errors import UserError

LOCK = ".effnet-run.lock"
RECORD = "effnet-run.json"


def _describe(run: Mapping[str, Any]) -> str:
    return ", ".join(f"{k} {v}" for k, v in run.items())


def _remove(folder: Path, names: Sequence[str]) -> None:
    for name in names:
        path = folder / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()


@contextlib.contextmanager
def run_folder(
    folder: str | Path,
    run: Mapping[str, Any],
    *,
    owned: Sequence[str],
    resume: bool = False,
    overwrite: bool = False,
) -> Iterator[Path]:
    """Hold ``folder`` for the run ``run`` (JSON-friendly: what tells two runs apart) while the block
    runs. ``owned`` names the files and folders such a run writes (removed by ``overwrite``)."""
    if resume and overwrite:
        raise UserError("overwrite and resume exclude each other: continue the run or replace it", field="overwrite")
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        handle = open(folder / LOCK, "a+")  # noqa: SIM115 - held for the run's life
    except OSError as err:
        raise UserError(f"output {folder}: {err.strerror}", field="output") from None
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise UserError(
                f"output {folder} is in use by {holder}; wait for that run to end or give another output",
                field="output",
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{socket.gethostname()} pid {os.getpid()}\n")
        handle.flush()
        try:
            _claim(folder, dict(run), owned, resume=resume, overwrite=overwrite)
            yield folder
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _claim(folder: Path, run: dict[str, Any], owned: Sequence[str], *, resume: bool, overwrite: bool) -> None:
    """Check the folder's record against ``run`` (under the lock) and write this run's."""
    path = folder / RECORD
    held = None
    if path.exists():
        try:
            held = json.loads(path.read_text(encoding="utf-8")).get("run")
        except (OSError, ValueError, AttributeError):
            held = {"record": "unreadable"}
    normalised = json.loads(json.dumps(run, default=str))
    if overwrite and (held is not None or any((folder / name).exists() for name in owned)):
        print(f"effnet: replacing the run in {folder} (overwrite)", file=sys.stderr)
        _remove(folder, [*owned, RECORD])
    elif held is not None and held != normalised:
        raise UserError(
            f"overwrite is needed to replace the other run in output {folder} ({_describe(held)}); "
            "or give another output",
            field="overwrite",
        )
    elif resume and held is None:
        raise UserError(f"resume: output {folder} holds no run to continue", field="resume")
    atomic_write_text(path, json.dumps({"run": normalised}, indent=2) + "\n")
