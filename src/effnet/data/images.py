"""Opening image files under a pixel limit, so that a small file declaring a huge image (a
decompression bomb) is refused by its header, before its pixels are decoded.

The limit is PIL's (``Image.MAX_IMAGE_PIXELS``, 89,478,485 pixels by default: a quarter GiB of 24-bit
pixels, 9459² or so), set from ``EFFNET_MAX_IMAGE_PIXELS`` where that is given."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

from PIL import Image

from effnet.errors import UserError, check_whole_number

PIXELS_VARIABLE = "EFFNET_MAX_IMAGE_PIXELS"
#: PIL's default limit (PIL.Image.MAX_IMAGE_PIXELS as PIL ships it).
DEFAULT_MAX_PIXELS = 89_478_485


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


def open_image(path: str | Path) -> Image.Image:
    """The image file opened lazily (its header read, its pixels not yet decoded); one with more pixels
    than :func:`max_image_pixels` is an :class:`ImageTooLarge` naming the file and the limit. PIL's own
    errors for unreadable files (OSError, ValueError, SyntaxError) pass through."""
    limit = max_image_pixels()
    Image.MAX_IMAGE_PIXELS = limit  # PIL checks it on opening: a warning above it, an error above twice it
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # said below, in one line
        try:
            image = Image.open(path)
        except Image.DecompressionBombError:
            image = None
    if image is None or image.width * image.height > limit:
        if image is not None:
            image.close()
        raise ImageTooLarge(
            f"{path} has more pixels than the limit of {limit:,} (a decompression bomb?); {PIXELS_VARIABLE} "
            "sets the limit"
        )
    return image
