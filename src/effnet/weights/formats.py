"""The weight formats effnet reads: one registry, in detection order.

Adding a format: define its :class:`~effnet.weights.layout.WeightFormat` in its own module (a
:class:`~effnet.weights.layout.Layout` for its tensor names, a detector, the padding and BatchNorm
eps its source computed with) and add it to :data:`WEIGHT_FORMATS` below; nothing else changes.
Each detector looks for its own stem tensor, so on real files at most one answers and the order
only settles hand-made mixtures.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from effnet.errors import UserError
from effnet.weights.keras import KERAS
from effnet.weights.layout import WeightFormat
from effnet.weights.lukemelas import LUKEMELAS
from effnet.weights.native import NATIVE
from effnet.weights.timm import TIMM
from effnet.weights.torchvision import TORCHVISION

WEIGHT_FORMATS: dict[str, WeightFormat] = {
    fmt.name: fmt
    for fmt in (
        NATIVE,
        TIMM,
        TORCHVISION,
        LUKEMELAS,
        KERAS,
    )
}
#: The names a ``format`` argument takes: "auto" (detect it) and every registered format.
FORMATS = ("auto", *WEIGHT_FORMATS)


def get_format(name: str) -> WeightFormat:
    """The registered format of this name (not "auto")."""
    if name not in WEIGHT_FORMATS:
        raise UserError(f"format: weight format {name!r} is unknown (known: {', '.join(FORMATS)})", field="format")
    return WEIGHT_FORMATS[name]


def detect_format(keys: Iterable[str], metadata: Mapping[str, str] | None = None) -> str | None:
    """The format a state dict's keys (and a file's header metadata) are in, or None."""
    keys, metadata = set(keys), metadata or {}
    return next((name for name, fmt in WEIGHT_FORMATS.items() if fmt.detect(keys, metadata)), None)
