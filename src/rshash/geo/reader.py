"""Reading indexed rasters again after ingestion: a box drawn on the map, a chip's thumbnail, an overlay.

Each raster is opened as it was indexed: the bands and the one stretch recorded in the ``rasters`` table,
so a window read now has the pixels its chip had. A raster whose file changed since (another checksum) is
refused. Open rasters are kept (a few, least recently used closed) with one lock each: rasterio datasets
are not safe to share between threads.
"""

from __future__ import annotations

import threading
import warnings
from collections import OrderedDict
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import rasterio
from rasterio.errors import NotGeoreferencedWarning

from ..index.store import Store
from . import tables
from .source import RasterError, RasterSource


class RasterReaders:
    """Open indexed rasters by id, at a given chip size (``out_size``), one thread at a time each."""

    def __init__(self, store: Store, max_open: int = 8):
        self._store = store
        self._max_open = max(1, int(max_open))
        self._open: OrderedDict[tuple[int, int], tuple[RasterSource, threading.Lock]] = OrderedDict()
        self._lock = threading.Lock()

    def row(self, raster_id: int) -> dict:
        """The raster's row (JSON columns decoded); RasterError if it is not in the index."""
        row = self._store.run(lambda conn: tables.get_raster(conn, raster_id))
        if row is None:
            raise RasterError(f"no raster with id {raster_id} in the index")
        return row

    def _open_source(self, raster_id: int, out_size: int) -> RasterSource:
        row = self.row(raster_id)
        if not Path(row["path"]).is_file():
            raise RasterError(f"raster {raster_id} ({Path(row['path']).name}) is missing on this machine")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            ds = rasterio.open(row["path"])
        try:
            source = RasterSource(ds, bands=row["bands"], gsd="native", out_size=out_size, max_nodata=1.0,
                                  stretch=row["stretch"])
        except BaseException:
            ds.close()
            raise
        if source.info.sha256 != row["sha256"]:
            source.close()
            raise RasterError(f"raster {raster_id} ({Path(row['path']).name}) changed on disk since it was "
                              "indexed: index it again")
        return source

    @contextmanager
    def source(self, raster_id: int, out_size: int) -> Iterator[RasterSource]:
        """The open raster, held for this thread while the block runs."""
        key = (int(raster_id), int(out_size))
        with self._lock:
            entry = self._open.get(key)
            if entry is not None:
                self._open.move_to_end(key)
        if entry is None:
            entry = (self._open_source(raster_id, out_size), threading.Lock())
            with self._lock:
                if key in self._open:  # opened meanwhile by another thread: use that one
                    entry[0].close()
                    entry = self._open[key]
                else:
                    self._open[key] = entry
                    while len(self._open) > self._max_open:
                        _, (old, old_lock) = self._open.popitem(last=False)
                        with old_lock:
                            old.close()
        source, lock = entry
        with lock:
            if source.closed:  # evicted between the lookup and now
                with self.source(raster_id, out_size) as fresh:
                    yield fresh
                return
            yield source

    def close(self) -> None:
        with self._lock:
            entries = list(self._open.values())
            self._open.clear()
        for source, lock in entries:
            with lock:
                source.close()
