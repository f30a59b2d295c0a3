"""The one exception type for user mistakes and the checks most user-facing functions make.

A :class:`UserError` may name the ``field`` (argument or setting) it is about; its message then
starts with that name, so the CLI can print the flag the user typed instead (``grid_step`` →
``--grid-step``, see :func:`effnet.cli.main.main`)."""

from __future__ import annotations

import math
import os
import stat
from pathlib import Path
from typing import Any


class UserError(ValueError):
    """A mistake in what the user asked for (a name, a number, a file), not a bug in effnet."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        #: The argument or setting the message is about (its first word), or None.
        self.field = field


def check_whole_number(name: str, value: Any, low: int, unit: str = "", high: int | None = None) -> None:
    """A UserError naming ``name`` unless ``value`` is an int (not a bool) within [low, high]."""
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise UserError(f"{name} must be a whole number{unit} ≥ {low}, got {value!r}", field=name)
    if high is not None and value > high:
        raise UserError(f"{name} must be a whole number{unit} ≤ {high}, got {value!r}", field=name)


def check_number(
    name: str, value: Any, *, low: float | None = None, high: float | None = None, strict_low: bool = False
) -> float:
    """``value`` as a finite float within the bounds, else a UserError naming ``name``."""
    if isinstance(value, (bool, str, bytes)):  # text is not a number: the CLI converts its flags itself
        raise UserError(f"{name} must be a number, got {value!r}", field=name)
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise UserError(f"{name} must be a number, got {value!r}", field=name) from None
    if not math.isfinite(number):
        raise UserError(f"{name} must be a finite number, got {value!r}", field=name)
    if low is not None and (number <= low if strict_low else number < low):
        raise UserError(f"{name} must be {'>' if strict_low else '≥'} {low:g}, got {value!r}", field=name)
    if high is not None and number > high:
        raise UserError(f"{name} must be ≤ {high:g}, got {value!r}", field=name)
    return number


def check_bool(name: str, value: Any) -> bool:
    """``value`` if it is a bool, else a UserError naming ``name`` (``"no"`` is not False)."""
    if not isinstance(value, bool):
        raise UserError(f"{name} must be True or False, got {value!r}", field=name)
    return value


_KINDS = ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
          (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a folder"))  # fmt: skip


def check_regular_file(path: str | os.PathLike[str], what: str = "file", *, field: str | None = None) -> Path:
    """``path`` as a Path if it names a regular file, else a UserError naming it: reading a FIFO, a
    device or a socket could block forever or never end (``/dev/zero``), so effnet reads only files."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise UserError(f"{what} {os.fsdecode(path)} does not exist", field=field) from None
    except OSError as err:
        raise UserError(f"cannot read {what} {os.fsdecode(path)}: {err.strerror}", field=field) from None
    if not stat.S_ISREG(mode):
        kind = next((name for test, name in _KINDS if test(mode)), "something else")
        plain = "file" if stat.S_ISDIR(mode) else "regular file"
        raise UserError(f"{what} {os.fsdecode(path)} is {kind}, not a {plain}", field=field)
    return Path(path)


def read_bounded(path: str | os.PathLike[str], limit: int, what: str = "file", *, field: str | None = None) -> bytes:
    """A regular file's bytes (:func:`check_regular_file`), refused when it holds more than ``limit``
    bytes before more than that is read."""
    check_regular_file(path, what, field=field)
    try:
        with open(path, "rb") as f:
            data = f.read(limit + 1)
    except OSError as err:
        raise UserError(f"cannot read {what} {os.fsdecode(path)}: {err.strerror}", field=field) from None
    if len(data) > limit:
        raise UserError(f"{what} {os.fsdecode(path)} is over {limit:,} bytes", field=field)
    return data


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity where the system has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def check_threads(name: str, value: Any) -> None:
    """A UserError naming ``name`` unless ``value`` is a whole number of threads from 1 to the usable CPUs."""
    check_whole_number(name, value, 1, high=usable_cpus())
