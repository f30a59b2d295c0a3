"""Printing results: one JSON document with ``--json``, a readable table without."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any


def print_json(data: Any) -> None:
    """Print one JSON document on standard output."""
    json.dump(data, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")


def human(value: Any) -> str:
    """Numbers readably: 5,288,548 and 0.39B-style counts; floats to 4 significant digits."""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(human(v) for v in value)
    return "" if value is None else str(value)


def billions(value: int) -> str:
    return f"{value / 1e9:.3g}B" if value >= 1e8 else f"{value / 1e6:.3g}M"


def print_table(rows: Sequence[dict[str, Any]], columns: Sequence[str], file: Any = None) -> None:
    """Print rows as an aligned text table with the given columns."""
    out = file or sys.stdout
    cells = [[human(row.get(col)) for col in columns] for row in rows]
    widths = [max([len(col)] + [len(r[i]) for r in cells]) for i, col in enumerate(columns)]
    print("  ".join(col.ljust(w) for col, w in zip(columns, widths)), file=out)
    print("  ".join("-" * w for w in widths), file=out)
    for r in cells:
        print("  ".join(c.rjust(w) if c[:1].isdigit() else c.ljust(w) for c, w in zip(r, widths)), file=out)


def print_record(record: dict[str, Any], file: Any = None) -> None:
    """Print one record as 'key: value' lines (lists one item a line)."""
    out = file or sys.stdout
    width = max(len(k) for k in record)
    for key, value in record.items():
        if isinstance(value, list) and value and isinstance(value[0], str):
            print(f"{key.ljust(width)}:", file=out)
            for item in value:
                print(f"  {item}", file=out)
        else:
            print(f"{key.ljust(width)}: {human(value)}", file=out)
