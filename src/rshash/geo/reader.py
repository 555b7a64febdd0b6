"""Reading indexed rasters again after ingestion: a box drawn on the map, a chip's thumbnail, an overlay.

Each raster is opened as it was indexed: the bands and the one stretch recorded in the ``rasters`` table,
so a window read now has the pixels its chip had. A raster whose file changed since (another checksum) is
refused; the checksum is computed once per change of the file (:func:`~rshash.geo.digest.raster_sha256`).
Open rasters are kept per raster id, whatever output size a caller reads at (a thumbnail, an overlay, a box
share one open dataset), at most ``max_open`` of them, least recently used closed first; each has its
own lock (rasterio datasets are not safe to share between threads). The global lock guards the cache's
bookkeeping only: opening, hashing and closing happen outside it.
"""

from __future__ import annotations

import copy
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
from .digest import raster_sha256
from .source import RasterError, RasterSource

#: Open rasters kept by default.
MAX_OPEN = 32


class RasterReaders:
    """Open indexed rasters by id (at most ``max_open``), read at any chip size, one thread at a time each."""

    def __init__(self, store: Store, max_open: int = MAX_OPEN):
        self._store = store
        self._max_open = max(1, int(max_open))
        self._open: OrderedDict[int, tuple[RasterSource, threading.Lock]] = OrderedDict()
        self._lock = threading.Lock()
        self.opened = 0  # datasets opened so far (tests, diagnostics)

    def row(self, raster_id: int) -> dict:
        """The raster's row (JSON columns decoded); RasterError if it is not in the index."""
        row = self._store.run(lambda conn: tables.get_raster(conn, raster_id))
        if row is None:
            raise RasterError(f"no raster with id {raster_id} in the index")
        return row

    def _open_source(self, raster_id: int) -> RasterSource:
        row = self.row(raster_id)
        name = Path(row["path"]).name
        if not Path(row["path"]).is_file():
            raise RasterError(f"raster {raster_id} ({name}) is missing on this machine")
        if raster_sha256(row["path"]) != row["sha256"]:
            raise RasterError(f"raster {raster_id} ({name}) changed on disk since it was indexed: index it again")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            ds = rasterio.open(row["path"])
        self.opened += 1
        try:
            return RasterSource(ds, bands=row["bands"], gsd="native", max_nodata=1.0, stretch=row["stretch"])
        except BaseException:
            ds.close()
            raise

    def _entry(self, raster_id: int) -> tuple[RasterSource, threading.Lock]:
        """The cached open raster, opened (outside the global lock) when it is not; evicted ones closed."""
        with self._lock:
            entry = self._open.get(raster_id)
            if entry is not None:
                self._open.move_to_end(raster_id)
                return entry
        entry = (self._open_source(raster_id), threading.Lock())
        evicted = []
        with self._lock:
            if raster_id in self._open:  # opened meanwhile by another thread: use that one
                evicted.append(entry)
                entry = self._open[raster_id]
            else:
                self._open[raster_id] = entry
                while len(self._open) > self._max_open:
                    evicted.append(self._open.popitem(last=False)[1])
        for old, old_lock in evicted:  # outside the global lock: a reader of it finishes first
            with old_lock:
                old.close()
        return entry

    @contextmanager
    def source(self, raster_id: int, out_size: int) -> Iterator[RasterSource]:
        """The open raster reading chips of ``out_size`` pixels, held for this thread while the block runs."""
        for _ in range(3):  # evicted between the lookup and taking its lock: look again
            source, lock = self._entry(int(raster_id))
            with lock:
                if source.closed:
                    continue
                view = source if source.out_size == int(out_size) else _at_size(source, int(out_size))
                yield view
                return
        raise RasterError(f"raster {raster_id} could not be held open (too many rasters read at once)")

    def forget(self, raster_id: int) -> None:
        """Close and drop a raster (removed from the index, or indexed again)."""
        with self._lock:
            entry = self._open.pop(int(raster_id), None)
        if entry is not None:
            with entry[1]:
                entry[0].close()

    def close(self) -> None:
        with self._lock:
            entries = list(self._open.values())
            self._open.clear()
        for source, lock in entries:
            with lock:
                source.close()


def _at_size(source: RasterSource, out_size: int) -> RasterSource:
    """The same open raster (dataset, bands, stretch, plan) reading chips of ``out_size`` pixels; it shares
    the dataset, so it is never closed itself."""
    view = copy.copy(source)
    view.out_size = out_size
    return view
