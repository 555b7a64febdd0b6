"""Decode any image Pillow reads into 8-bit RGB, by one documented rule.

Conversion rule (applied by :func:`to_rgb8`):

* 8-bit RGB: unchanged.
* grayscale (``L``, ``1``), palette (``P``), ``LA``, ``CMYK``, ``YCbCr``: Pillow's
  conversion to RGB (gray is replicated to three channels).
* RGBA / LA: alpha is composited over black (transparent pixels carry no scene content).
* 16-bit or 32-bit integer / float single-band (``I;16``, ``I``, ``F``): a per-image
  2-98 percentile linear stretch to 0..255, then replicated to RGB. This is what
  GIS viewers do for display and keeps a handful of outlier pixels from
  flattening the contrast.

Anything that cannot be decoded (zero bytes, truncated, corrupt, not an image,
decompression bomb) raises :class:`UnreadableImage` with a message naming the file.
"""

from __future__ import annotations

import io
import re
import warnings
from pathlib import Path

import numpy as np
from PIL import Image

#: Images larger than this many pixels are refused (decompression-bomb guard).
MAX_PIXELS = 20_000 * 20_000
Image.MAX_IMAGE_PIXELS = MAX_PIXELS

IMAGE_SUFFIXES = {".tif", ".tiff", ".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif"}


class UnreadableImage(ValueError):
    """An input file could not be decoded as an image."""


def _stretch_to_uint8(arr: np.ndarray) -> np.ndarray:
    arr = arr.astype(np.float64)
    lo, hi = np.percentile(arr, [2.0, 98.0])
    if hi <= lo:  # constant image
        return np.zeros(arr.shape, dtype=np.uint8)
    out = (arr - lo) / (hi - lo) * 255.0
    return np.clip(out, 0, 255).round().astype(np.uint8)


def to_rgb8(img: Image.Image) -> np.ndarray:
    """Convert a decoded Pillow image to an ``(H, W, 3) uint8`` array (see module doc)."""
    mode = img.mode
    if mode == "RGB":
        return np.asarray(img, dtype=np.uint8).copy()
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        band = _stretch_to_uint8(np.asarray(img))
        return np.repeat(band[:, :, None], 3, axis=2)
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        black = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        return np.asarray(Image.alpha_composite(black, rgba).convert("RGB"), dtype=np.uint8).copy()
    return np.asarray(img.convert("RGB"), dtype=np.uint8).copy()


def decode_rgb(data: bytes, name: str = "<bytes>") -> np.ndarray:
    """Decode image bytes to 8-bit RGB; raise :class:`UnreadableImage` on any failure."""
    if not data:
        raise UnreadableImage(f"{name}: empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                # Enforce our own limit too: Pillow's global may be changed by other code.
                if img.width * img.height > MAX_PIXELS:
                    raise UnreadableImage(f"{name}: too many pixels ({img.width}x{img.height} > {MAX_PIXELS})")
                img.load()
                return to_rgb8(img)
    except Image.DecompressionBombError as exc:
        raise UnreadableImage(f"{name}: too many pixels ({exc})") from exc
    except Image.DecompressionBombWarning as exc:
        raise UnreadableImage(f"{name}: too many pixels ({exc})") from exc
    except UnreadableImage:
        raise
    except Exception as exc:  # PIL raises many types for bad data
        detail = re.sub(r"<_io\.BytesIO object at 0x[0-9a-f]+>", "data", str(exc))
        raise UnreadableImage(f"{name}: cannot decode image ({type(exc).__name__}: {detail})") from exc


def load_rgb(path: str | Path) -> np.ndarray:
    """Read and decode one image file to ``(H, W, 3) uint8``."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UnreadableImage(f"{path}: cannot read file ({exc})") from exc
    return decode_rgb(data, str(path))


def resize_rgb(arr: np.ndarray, size: int) -> np.ndarray:
    """Resize an RGB array to ``size x size`` (bilinear with antialiasing).

    UCMD has 44 images that are not 256x256, and archives mix sizes, so every
    image goes through here rather than assuming a shape.
    """
    if arr.shape[0] == size and arr.shape[1] == size:
        return arr
    img = Image.fromarray(arr)
    return np.asarray(img.resize((size, size), Image.Resampling.BILINEAR), dtype=np.uint8)


def dihedral(arr: np.ndarray, k: int) -> np.ndarray:
    """The k-th (0..7) of the 8 rotations/flips of a square ``(..., H, W, C)`` image.

    Aerial scenes have no "up", so all eight are equally valid views.
    """
    if not 0 <= k < 8:
        raise ValueError(f"dihedral view must be in 0..7, got {k}")
    out = np.rot90(arr, k % 4, axes=(-3, -2))
    if k >= 4:
        out = out[..., :, ::-1, :]
    return np.ascontiguousarray(out)
