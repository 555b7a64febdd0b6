"""A raster's checksum, computed once per change of the file: :func:`raster_sha256`.

The checksum of a file is cached by ``(path, size, mtime_ns)``, so opening a raster again (a rerun, a map
overlay, a thumbnail) does not read the whole file again unless it changed. A ``.vrt`` is only XML naming
other files: its checksum covers the XML and the checksum of every source file it names (recursively, for
a VRT of VRTs), so a changed source is seen as a changed raster.
"""

from __future__ import annotations

import hashlib
import os
import threading
import xml.etree.ElementTree as ET
from collections import OrderedDict
from pathlib import Path

from ..data.download import file_sha256

#: Checksums kept (least recently used dropped beyond this).
CACHE_SIZE = 4096
#: Nesting of VRTs followed (a VRT naming itself would loop).
MAX_VRT_DEPTH = 8

_cache: OrderedDict[tuple[str, int, int], str] = OrderedDict()
_lock = threading.Lock()


def _stat_key(path: str) -> tuple[str, int, int]:
    st = os.stat(path)
    return path, st.st_size, st.st_mtime_ns


def _cached_file_sha256(path: str) -> str:
    """The file's SHA-256, hashed only when its (size, mtime_ns) is new."""
    key = _stat_key(path)
    with _lock:
        if key in _cache:
            _cache.move_to_end(key)
            return _cache[key]
    digest = file_sha256(path)  # outside the lock: hashing a large file must not stall other threads
    with _lock:
        _cache[key] = digest
        while len(_cache) > CACHE_SIZE:
            _cache.popitem(last=False)
    return digest


def vrt_sources(path: str | Path) -> list[str]:
    """Absolute paths of the local files a VRT names (``SourceFilename``), in document order, once each.

    Names relative to the VRT (``relativeToVRT="1"``, or any relative name) are resolved against its
    folder; GDAL virtual paths (``/vsicurl/...``) are left out: they cannot be hashed here."""
    root = ET.parse(path).getroot()
    folder = Path(path).absolute().parent
    out: dict[str, None] = {}
    for node in root.iter("SourceFilename"):
        name = (node.text or "").strip()
        if not name or name.startswith("/vsi"):
            continue
        out[str(Path(name) if Path(name).is_absolute() else (folder / name).absolute())] = None
    return list(out)


def raster_sha256(path: str | Path, _depth: int = 0) -> str:
    """SHA-256 of a raster file; for a ``.vrt``, of its XML and each source's checksum (a missing source
    counts as ``missing``). Cached per (path, size, mtime_ns)."""
    path = os.path.abspath(path)
    own = _cached_file_sha256(path)
    if not path.lower().endswith(".vrt") or _depth >= MAX_VRT_DEPTH:
        return own
    try:
        sources = vrt_sources(path)
    except (ET.ParseError, OSError):
        return own  # not XML after all: GDAL will say what is wrong with it
    digest = hashlib.sha256(own.encode())
    for source in sources:
        try:
            part = raster_sha256(source, _depth + 1)
        except OSError:
            part = "missing"
        digest.update(f"\n{source}\t{part}".encode())
    return digest.hexdigest()


def clear_cache() -> None:
    """Forget every cached checksum (tests)."""
    with _lock:
        _cache.clear()
