"""Opening images for the service: only the served formats, pixel counts checked before decoding.

Pillow knows dozens of formats, each its own parser; the service lets through only the
image formats it serves (:data:`ALLOWED_FORMATS`), for uploads and for indexed files alike.
Decoding follows the indexing rule (:func:`rshash.data.images.to_rgb8`).
"""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..data import images as _images
from ..data.images import UnreadableImage, to_rgb8

#: Pillow format names the service opens; anything else is refused before a parser runs.
ALLOWED_FORMATS = ("JPEG", "PNG", "TIFF", "WEBP", "BMP", "GIF")
ACCEPTED = "JPEG, PNG, TIFF, WebP, BMP or GIF"


class FormatNotAllowed(UnreadableImage):
    """Not an image in one of :data:`ALLOWED_FORMATS` (or not an image at all)."""


class TooManyPixels(UnreadableImage):
    """More pixels than the limit: refused from the header, before decoding."""


def pixel_limit(max_pixels: int | None = None) -> int:
    """The effective limit: ``max_pixels`` and the decoder's own bomb guard, whichever is lower."""
    return _images.MAX_PIXELS if max_pixels is None else min(max_pixels, _images.MAX_PIXELS)


def open_image(source: str | Path | BinaryIO, name: str, max_pixels: int | None = None) -> Image.Image:
    """Open an image lazily (header only) if its format is allowed and its size within ``max_pixels``.

    Messages name the file by ``name`` only, never by the server's directories.
    (No warnings.catch_warnings here: it swaps process-global state, unsafe across threads.)
    """
    try:
        img = Image.open(source, formats=ALLOWED_FORMATS)
    except FileNotFoundError as exc:
        raise UnreadableImage(f"{name}: file not found on the server") from exc
    except Image.DecompressionBombError as exc:
        raise TooManyPixels(f"{name}: too many pixels for this server ({exc})") from exc
    except UnidentifiedImageError as exc:
        raise FormatNotAllowed(f"{name} is not an image this server can read (it reads {ACCEPTED})") from exc
    except Exception as exc:  # permissions, Pillow's assorted parser errors
        raise UnreadableImage(f"{name}: cannot open image ({type(exc).__name__})") from exc
    width, height = img.size
    limit = pixel_limit(max_pixels)
    if width * height > limit:
        img.close()
        raise TooManyPixels(f"{name} is {width}x{height} = {width * height:,} pixels; the limit is {limit:,} pixels")
    return img


def decode(img: Image.Image, name: str) -> np.ndarray:
    """The pixels of an opened image as ``uint8 (H, W, 3)`` RGB."""
    try:
        img.load()
        return to_rgb8(img)
    except Exception as exc:  # truncated or corrupt data
        raise UnreadableImage(f"{name}: cannot decode image ({type(exc).__name__}: {str(exc)[:200]})") from exc
