"""Every file effnet writes goes through here: a temporary file in the target folder, fsync, then a
rename over the target. A crash or a full disk leaves the old file or the new one, never a part.

Temporary files are named ``.NAME.<random>.effnet-tmp``; :func:`remove_stale_temporaries` removes
ones a killed process left behind. Files get the user's umask (``mkstemp`` would make them 0600).
Ctrl-C (SIGINT) waits while a file is written (:func:`interrupts_deferred`): the write ends whole, then
the interrupt is raised. A writer's I/O failure is one UserError whoever wrote: effnet, or a library
that reports the OS error its own way (PyTorch's zip writer, safetensors; :func:`os_error`)."""

from __future__ import annotations

import errno
import os
import re
import signal
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from effnet.errors import UserError

TEMP_SUFFIX = ".effnet-tmp"


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def temporary_path(path: str | os.PathLike[str]) -> Path:
    """A new, empty temporary file beside ``path`` (for writers that need a file name)."""
    target = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=TEMP_SUFFIX, dir=target.parent)
    os.close(fd)
    return Path(tmp)


def make_folder(folder: str | os.PathLike[str]) -> Path:
    """Create ``folder`` (and its parents) if it is missing; a folder that cannot be made is a UserError."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise UserError(f"cannot create folder {folder}: a file of that name is in the way") from None
    except OSError as err:
        raise UserError(f"cannot create folder {folder}: {err.strerror or err}") from None
    return folder


def check_target(path: str | os.PathLike[str], *, field: str | None = None) -> Path:
    """``path`` as a Path, or a UserError (naming ``field``) where :func:`atomic_write` could not write it:
    a folder there, or no folder to write it in. Long work checks this first, so that it does not fail
    only at its end."""
    target = Path(path)
    if target.is_dir():
        raise UserError(f"cannot write {target}: it is a folder", field=field)
    if not target.parent.exists():
        raise UserError(f"cannot write {target}: folder {target.parent} does not exist", field=field)
    return target


def prepare_target(path: str | os.PathLike[str], *, field: str | None = None) -> Path:
    """``path`` as a Path, its folder created, or a UserError naming ``field`` where it cannot be written
    (:func:`check_target`): for a file long work writes at its end (a figure, a CSV)."""
    target = Path(path)
    try:
        make_folder(target.parent)
    except UserError as err:
        raise UserError(f"{field}: {err}" if field else str(err), field=field) from None
    return check_target(target, field=field)


def os_error(err: BaseException, folder: str | os.PathLike[str] | None = None) -> OSError | None:
    """The OS error behind a writer's failure, or None where it was not one: ``err`` itself or one in its
    chain (PyTorch's "unexpected pos" RuntimeError has the failed write as its context), one a library names
    only in its message (safetensors' "I/O error: … (os error 28)"), or a full ``folder`` (the disk)."""
    seen: BaseException | None = err
    while seen is not None:
        if isinstance(seen, OSError):
            return seen
        seen = seen.__cause__ or (None if seen.__suppress_context__ else seen.__context__)
    text = str(err)
    if match := re.search(r"os error (\d+)", text):
        code = int(match.group(1))
        return OSError(code, os.strerror(code))
    if folder is not None and re.search(r"I/O error|write failed|unexpected pos", text):
        try:
            full = os.statvfs(folder).f_bavail == 0
        except OSError:
            full = False
        return OSError(errno.ENOSPC if full else errno.EIO, os.strerror(errno.ENOSPC if full else errno.EIO))
    return None


@contextmanager
def interrupts_deferred() -> Iterator[None]:
    """Hold SIGINT (Ctrl-C) until the block ends, then deliver it to the handler that was there (a
    KeyboardInterrupt by default). Only the main thread receives signals; elsewhere this does nothing."""
    previous = signal.getsignal(signal.SIGINT)
    if threading.current_thread() is not threading.main_thread() or previous is None:  # None: set outside Python
        yield
        return
    received: list[int] = []
    signal.signal(signal.SIGINT, lambda signum, _frame: received.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if received:
            signal.raise_signal(signal.SIGINT)


def atomic_write(path: str | os.PathLike[str], write: Callable[[IO[bytes]], Any] | None = None, *,
                 write_path: Callable[[str], Any] | None = None, mkdir: bool = False) -> Path:  # fmt: skip
    """Write ``path`` atomically, either by ``write(binary file object)`` or, for libraries that only
    take a file name, by ``write_path(temporary file name)``. Returns the path written. A Ctrl-C during
    the write is raised once the file is in place."""
    if (write is None) == (write_path is None):
        raise TypeError("give exactly one of write and write_path")
    target = Path(path)
    if mkdir:
        make_folder(target.parent)
    check_target(target)
    with interrupts_deferred():
        try:
            tmp = temporary_path(target)
        except OSError as err:
            raise UserError(f"cannot write {target}: {err.strerror or err}") from None
        try:
            if write is not None:
                with open(tmp, "wb") as handle:
                    write(handle)
                    handle.flush()
                    os.fsync(handle.fileno())
            else:
                write_path(str(tmp))  # type: ignore[misc]
                with open(tmp, "rb") as handle:
                    os.fsync(handle.fileno())
            os.chmod(tmp, 0o666 & ~_umask())
            os.replace(tmp, target)
        except BaseException as err:
            tmp.unlink(missing_ok=True)
            failure = os_error(err, target.parent) if not isinstance(err, (UserError, KeyboardInterrupt)) else None
            if failure is None:
                raise
            raise UserError(f"cannot write {target}: {failure.strerror or failure}") from None
    return target


def atomic_write_text(path: str | os.PathLike[str], text: str, *, mkdir: bool = False) -> Path:
    """Write a text file (UTF-8) atomically."""
    return atomic_write(path, lambda handle: handle.write(text.encode("utf-8")), mkdir=mkdir)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes, *, mkdir: bool = False) -> Path:
    """Write a binary file atomically."""
    return atomic_write(path, lambda handle: handle.write(data), mkdir=mkdir)


def remove_stale_temporaries(folder: str | os.PathLike[str]) -> list[Path]:
    """Remove temporary files a killed writer left in ``folder`` (not recursive); returns them."""
    removed = []
    for path in Path(folder).glob(f".*{TEMP_SUFFIX}"):
        path.unlink(missing_ok=True)
        removed.append(path)
    return removed
