"""What effnet's functions return: small frozen dataclasses with :meth:`Result.to_dict` (what
``--json`` prints)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any


class Result:
    """Mixin for result dataclasses."""

    def to_dict(self) -> dict[str, Any]:
        """The result as JSON-friendly data (nested results and dataclasses become dicts)."""
        return asdict(self)  # type: ignore[call-overload]
