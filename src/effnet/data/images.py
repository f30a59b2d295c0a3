"""Opening image files under a pixel limit, so that a small file declaring a huge image (a
decompression bomb) is refused by its header, before its pixels are decoded.

The limit is PIL's default (89,478,485 pixels: a quarter GiB of 24-bit pixels, 9459² or so) unless
``EFFNET_MAX_IMAGE_PIXELS`` gives another; effnet checks it itself (PIL's own check, which only warns up
to twice its limit, is off while effnet opens a file; ``PIL.Image.MAX_IMAGE_PIXELS`` is left as it was)."""

from __future__ import annotations

import os
import threading
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from effnet.errors import UserError, check_regular_file, check_whole_number

PIXELS_VARIABLE = "EFFNET_MAX_IMAGE_PIXELS"
#: PIL's default limit (PIL.Image.MAX_IMAGE_PIXELS as PIL ships it).
DEFAULT_MAX_PIXELS = 89_478_485
#: Held while PIL's global limit is lifted for one header read: threads opening images at once (the
#: in-memory proxy decodes in a pool) must not see, and then restore, each other's setting.
_PIL_LIMIT = threading.Lock()
#: The most elongated image accepted, long side over short side: resizing the short side of a 1 × 10⁶
#: image to a model's resolution would expand it to billions of pixels.
MAX_ASPECT = 100


class ImageTooLarge(UserError):
    """An image with more pixels than the limit: skipped, never decoded."""


class ImageTooNarrow(UserError):
    """An image more elongated than :data:`MAX_ASPECT`: skipped, never decoded or resized."""


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
    file and the limit, one more elongated than :data:`MAX_ASPECT` an :class:`ImageTooNarrow`, anything but a
    regular file a :class:`UserError`. PIL's own errors for unreadable files (OSError, ValueError,
    SyntaxError) pass through."""
    limit = max_image_pixels() if limit is None else limit
    if os.path.exists(path):  # a missing file is PIL's FileNotFoundError, as before
        check_regular_file(path, "image")  # a FIFO would block the read, a device never end it
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
    if max(image.size) > MAX_ASPECT * max(1, min(image.size)):
        image.close()
        raise ImageTooNarrow(
            f"{path} has {image.width}×{image.height} pixels, more elongated than {MAX_ASPECT}:1 (resizing it "
            "for a model would expand it beyond any memory)"
        )
    return image


def check_resized(path: str | Path, size: tuple[int, int], limit: int | None = None) -> None:
    """An :class:`ImageTooLarge` naming the file when resizing it for a model (to ``size``, e.g.
    :meth:`effnet.preprocess.Preprocessing.resized_size`) would make more pixels than ``limit`` (default
    :func:`max_image_pixels`; 0: no limit): an elongated image is never expanded beyond the limit."""
    limit = max_image_pixels() if limit is None else limit
    if limit and size[0] * size[1] > limit:
        raise ImageTooLarge(
            f"{path} would be resized to {size[0]}×{size[1]} pixels for the model, more than the limit of "
            f"{limit:,}; {PIXELS_VARIABLE} or --max-pixels sets the limit"
        )


def read_rgb(path: str | Path, max_pixels: int | None = None) -> Image.Image:
    """An RGB image decoded from a file; anything unreadable is a UserError naming the file, and so is an
    image of more pixels than ``max_pixels`` (:func:`open_image`: a decompression bomb is refused before it
    is decoded)."""
    try:
        with open_image(path, max_pixels) as image:
            return image.convert("RGB")
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except UserError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as err:
        reason = "not a readable image" if isinstance(err, UnidentifiedImageError) else str(err)
        raise UserError(f"{path}: {reason}") from None
