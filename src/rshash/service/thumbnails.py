"""Indexed images as a browser shows them: thumbnails (cached) and originals converted when needed.

Browsers display JPEG, PNG, GIF, WebP and BMP, so those files are served as they are.
Anything else Pillow reads (GeoTIFF, 16-bit single band, ...) is decoded by the same
rule as indexing (:func:`rshash.data.images.to_rgb8`) and re-encoded as PNG on the fly.
"""

from __future__ import annotations

import io
import threading
from collections import OrderedDict
from pathlib import Path

from PIL import Image

from ..data import images as _images
from ..data.images import UnreadableImage, to_rgb8

#: Pillow format name -> media type, for files a browser displays without conversion.
BROWSER_FORMATS = {
    "JPEG": "image/jpeg",
    "PNG": "image/png",
    "GIF": "image/gif",
    "WEBP": "image/webp",
    "BMP": "image/bmp",
}


class LRUCache:
    """A thread-safe least-recently-used mapping bounded by total bytes of its values."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self._items: OrderedDict[object, bytes] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: object) -> bytes | None:
        with self._lock:
            value = self._items.get(key)
            if value is None:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return value

    def put(self, key: object, value: bytes) -> None:
        if len(value) > self.max_bytes:
            return
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._bytes -= len(old)
            self._items[key] = value
            self._bytes += len(value)
            while self._bytes > self.max_bytes:
                _, evicted = self._items.popitem(last=False)
                self._bytes -= len(evicted)

    def __len__(self) -> int:
        return len(self._items)

    @property
    def nbytes(self) -> int:
        return self._bytes


def _open_checked(path: Path) -> Image.Image:
    """Open an image file lazily (header only), refusing absurd pixel counts before decoding."""
    try:  # (no warnings.catch_warnings: it swaps process-global state, unsafe across threads)
        img = Image.open(path)
    except FileNotFoundError as exc:  # messages name the file only: never the server's directories
        raise UnreadableImage(f"{path.name}: file not found on the server") from exc
    except Image.DecompressionBombError as exc:
        raise UnreadableImage(f"{path.name}: too many pixels") from exc
    except Exception as exc:  # not an image, permissions, Pillow's assorted parser errors
        raise UnreadableImage(f"{path.name}: cannot open image ({type(exc).__name__})") from exc
    if img.width * img.height > _images.MAX_PIXELS:
        img.close()
        raise UnreadableImage(f"{path.name}: too many pixels ({img.width}x{img.height})")
    return img


def _rgb(img: Image.Image, name: str):
    try:
        img.load()
        return to_rgb8(img)
    except Exception as exc:  # truncated or corrupt data
        raise UnreadableImage(f"{name}: cannot decode image ({type(exc).__name__})") from exc


def make_thumbnail(path: str | Path, size: int = 128, quality: int = 85) -> bytes:
    """A JPEG no larger than ``size`` x ``size`` (aspect kept) of an image file."""
    path = Path(path)
    with _open_checked(path) as img:
        if img.format == "JPEG":
            img.draft("RGB", (2 * size, 2 * size))  # decode at reduced scale: much faster for big JPEGs
        thumb = Image.fromarray(_rgb(img, path.name))
    thumb.thumbnail((size, size), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    thumb.save(out, format="JPEG", quality=quality)
    return out.getvalue()


def browser_image(path: str | Path) -> tuple[bytes | None, str]:
    """``(None, media_type)`` if the file displays as it is, else ``(PNG bytes, "image/png")``."""
    path = Path(path)
    with _open_checked(path) as img:
        media_type = BROWSER_FORMATS.get(img.format or "")
        if media_type is not None:
            return None, media_type
        rgb = _rgb(img, path.name)
    out = io.BytesIO()
    Image.fromarray(rgb).save(out, format="PNG", compress_level=1)
    return out.getvalue(), "image/png"
