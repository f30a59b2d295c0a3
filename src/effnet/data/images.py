"""Opening image files under a pixel limit, so that a small file declaring a huge image (a
decompression bomb) is refused by its header, before its pixels are decoded.

The limit is PIL's default (89,478,485 pixels: a quarter GiB of 24-bit pixels, 9459² or so) unless
``EFFNET_MAX_IMAGE_PIXELS`` gives another; effnet checks it itself (PIL's own check, which only warns up
to twice its limit, is off while effnet opens a file; ``PIL.Image.MAX_IMAGE_PIXELS`` is left as it was)."""

from __future__ import annotations

import os
import threading
from pathlib import Path

from PIL import Image

from effnet.errors import UserError, check_whole_number

PIXELS_VARIABLE = "EFFNET_MAX_IMAGE_PIXELS"
#: PIL's default limit (PIL.Image.MAX_IMAGE_PIXELS as PIL ships it).
DEFAULT_MAX_PIXELS = 89_478_485
#: Held while PIL's global limit is lifted for one header read: threads opening images at once (the
#: in-memory proxy decodes in a pool) must not see, and then restore, each other's setting.
_PIL_LIMIT = threading.Lock()


class ImageTooLarge(UserError):
    """An image with more pixels than the limit: skipped, never decoded."""


def max_image_pixels() -> int:
    """The pixel limit: ``EFFNET_MAX_IMAGE_PIXELS`` (a whole number ≥ 1) or PIL's default."""
    raw = os.environ.get(PIXELS_VARIABLE)
    if raw is None:
        return DEFAULT_MAX_PIXELS
    try:
        value: object = int(raw)
    except ValueError:
        value = raw
    check_whole_number(PIXELS_VARIABLE, value, 1)
    return int(raw)


def open_image(path: str | Path, limit: int | None = None) -> Image.Image:
    """The image file opened lazily (its header read, its pixels not yet decoded); one with more pixels
    than ``limit`` (default :func:`max_image_pixels`; 0: no limit) is an :class:`ImageTooLarge` naming the
    file and the limit. PIL's own errors for unreadable files (OSError, ValueError, SyntaxError) pass through."""
    limit = max_image_pixels() if limit is None else limit
    with _PIL_LIMIT:  # only the header is read here; decoding happens later, outside the lock
        previous = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None  # PIL's check (a warning, then an error at twice its limit) is made below
        try:
            image = Image.open(path)
        finally:
            Image.MAX_IMAGE_PIXELS = previous
    if limit and image.width * image.height > limit:
        image.close()
        raise ImageTooLarge(
            f"{path} has {image.width}×{image.height} pixels, more than the limit of {limit:,} (a decompression "
            f"bomb?); {PIXELS_VARIABLE} or --max-pixels sets the limit"
        )
    return image
