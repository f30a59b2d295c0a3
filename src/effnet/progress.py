"""The one way effnet shows progress: a tqdm bar on standard error."""

from __future__ import annotations

import sys
from typing import Any


def progress_bar(
    total: int | None = None,
    *,
    desc: str,
    unit: str,
    enabled: bool = True,
    initial: int = 0,
    leave: bool = True,
    iterable: Any = None,
    unit_scale: bool = False,
) -> Any:
    """A tqdm bar on stderr (a disabled one when ``enabled`` is false); usable as a context manager.
    ``unit_scale`` shows counts with SI prefixes (downloads: kB, MB)."""
    from tqdm.auto import tqdm

    return tqdm(
        iterable,
        total=total,
        initial=initial,
        desc=desc,
        unit=unit,
        unit_scale=unit_scale,
        file=sys.stderr,
        disable=not enabled,
        dynamic_ncols=True,
        leave=leave,
    )
