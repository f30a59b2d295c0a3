"""The one exception type for user mistakes and the checks most user-facing functions make.

A :class:`UserError` may name the ``field`` (argument or setting) it is about; its message then
starts with that name, so the CLI can print the flag the user typed instead (``grid_step`` →
``--grid-step``, see :func:`effnet.cli.main.main`)."""

from __future__ import annotations

import math
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
    if isinstance(value, bool):
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
