"""What effnet's functions return: small frozen dataclasses with :meth:`Result.to_dict` (what
``--json`` prints). Reading a result like the dict it used to be (``report["top1"]``) still works
for one release."""

from __future__ import annotations

from dataclasses import asdict, fields
from typing import Any


class Result:
    """Mixin for result dataclasses."""

    def to_dict(self) -> dict[str, Any]:
        """The result as JSON-friendly data (nested results and dataclasses become dicts)."""
        return asdict(self)  # type: ignore[call-overload]

    # -- read like a dict (kept for one release) ---------------------------------------------
    def __getitem__(self, key: str) -> Any:
        return self.to_dict()[key]

    def __contains__(self, key: object) -> bool:
        return key in self.to_dict()

    def get(self, key: str, default: Any = None) -> Any:
        return self.to_dict().get(key, default)

    def keys(self) -> list[str]:
        return list(self.to_dict())

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in fields(cls)]  # type: ignore[arg-type]
