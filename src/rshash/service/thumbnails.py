"""Indexed images as a browser shows them: thumbnails (cached) and originals converted when needed.

Browsers display JPEG, PNG, GIF, WebP and BMP, so those files are served as they are.
TIFF (GeoTIFF, 16-bit single band, ...) is decoded by the same rule as indexing
(:func:`rshash.data.images.to_rgb8`) and re-encoded as PNG on the fly. Other formats are
refused (:class:`~rshash.service.decoding.FormatNotAllowed`): see :mod:`rshash.service.decoding`.
"""

from __future__ import annotations

import io
import threading
from collections import OrderedDict
from pathlib import Path

from PIL import Image

from .decoding import decode, open_image

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


def make_thumbnail(path: str | Path, size: int = 128, quality: int = 85) -> bytes:
    """A JPEG no larger than ``size`` x ``size`` (aspect kept) of an image file."""
    path = Path(path)
    with open_image(path, path.name) as img:
        if img.format == "JPEG":
            img.draft("RGB", (2 * size, 2 * size))  # decode at reduced scale: much faster for big JPEGs
        thumb = Image.fromarray(decode(img, path.name))
    thumb.thumbnail((size, size), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    thumb.save(out, format="JPEG", quality=quality)
    return out.getvalue()


def browser_image(path: str | Path) -> tuple[bytes | None, str]:
    """``(None, media_type)`` if the file displays as it is, else ``(PNG bytes, "image/png")``."""
    path = Path(path)
    with open_image(path, path.name) as img:
        media_type = BROWSER_FORMATS.get(img.format or "")
        if media_type is not None:
            return None, media_type
        rgb = decode(img, path.name)
    out = io.BytesIO()
    Image.fromarray(rgb).save(out, format="PNG", compress_level=1)
    return out.getvalue(), "image/png"
