"""The one exception type for user mistakes (the CLI prints its message on one line and exits 2), and
the whole-number check most user-facing functions make."""

from __future__ import annotations

from typing import Any


class UserError(ValueError):
    """A mistake in what the user asked for (a name, a number, a file), not a bug in effnet."""


def check_whole_number(name: str, value: Any, low: int, unit: str = "") -> None:
    """A UserError unless ``value`` is an int (not a bool) ≥ ``low``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise UserError(f"{name} must be a whole number{unit} ≥ {low}, got {value!r}")
