"""The chips of georeferenced rasters as an item source: :class:`RasterChips`, and :func:`add_rasters`.

A chip is an ordinary item (a row of ``images`` with its code and descriptor; path
``RASTER_PATH#col,row,width,height``, no label) plus its geo row in ``chips`` (window, bounds, lon/lat
footprint, centroid) and an R*Tree entry; the raster row (path, checksum, CRS, transform, bands, the one
stretch, ground resolution) is written with the raster's first batch. Each batch's items, chip rows and
(for the first) the raster row are committed in one transaction (:func:`~.commit.commit_batch`), so a run
killed at any moment leaves whole batches, and a rerun skips the windows already indexed (same path and
checksum) and resumes. Windows are read by the engine's loaders (a thread here, Ray tasks there), one batch
ahead of encoding; memory stays at about two batches of chips whatever the raster's size.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from pathlib import Path
from typing import Any, Iterable, Sequence

from rasterio.windows import Window

from ..geo import tables
from ..geo.source import RasterError, RasterSource, open_raster, raster_paths
from ..geo.tiling import MODEL_GSD_M, TilingOptions, chip_path, window_key
from ..index.store import Store
from .commit import Engine, ingest
from .items import Loaded
from .report import Outcome, RasterAddReport

log = logging.getLogger(__name__)

#: Index meta key: the ground resolution (metres) the model was trained at, which ``gsd="auto"`` tiles to.
MODEL_GSD_KEY = "model_gsd"
NODATA, FLAT = "nodata", "flat"


def model_gsd(store: Store, default: float | None = None) -> float:
    """The model's ground resolution recorded in the index (recorded now, from ``default`` or UCMD's 0.3 m,
    if the index has none yet)."""
    meta = store.meta()
    if MODEL_GSD_KEY in meta:
        return float(meta[MODEL_GSD_KEY])
    value = float(default if default is not None else MODEL_GSD_M)
    store.set_meta(MODEL_GSD_KEY, value)
    return value


class ChipLoader:
    """Reads windows of one open raster as chips (nodata and flat ones as outcomes).

    Pickled (for Ray tasks) it travels as the raster's path and reading options and reopens there."""

    def __init__(self, source: RasterSource):
        self.source = source

    def __getstate__(self) -> dict:
        s = self.source
        return {"path": s.info.path, "options": {"bands": s.bands, "gsd": "native", "out_size": s.out_size,
                                                 "max_nodata": 1.0 - s.min_valid, "min_std": s.min_std,
                                                 "stretch": s.info.stretch}}

    def __setstate__(self, state: dict) -> None:
        self._state, self.source = state, None  # type: ignore[assignment]

    def _open(self) -> RasterSource:
        if self.source is None:  # in a Ray task: open once per task process and loader
            import rasterio

            self.source = RasterSource(rasterio.open(self._state["path"]), **self._state["options"])
        return self.source

    def __call__(self, windows: Sequence[tuple[int, int, int, int]]) -> list[Loaded | Outcome]:
        source = self._open()
        out: list[Loaded | Outcome] = []
        for key in windows:
            chip, skip = source.load_chip(Window(*key))
            path = chip_path(source.info.path, key)
            if chip is None:
                out.append(Outcome(path, skip))
            else:
                out.append(Loaded(path, source.info.sha256, key[2], key[3], chip.pixels, None, chip.meta))
        return out


class RasterRows:
    """The commit hook of one raster: its raster row (once), its chips' rows and R*Tree boxes, and the removal
    of the chips of an older version of the file (with the first batch)."""

    def __init__(self, info: Any, raster_id: int | None, stale: list[int]):
        self.info, self.raster_id, self.stale = info, raster_id, stale
        self._pending: int | None = None

    def replace_ids(self) -> Sequence[int]:
        return self.stale

    def on_insert(self, conn: sqlite3.Connection, ids: list[int], items: Sequence[Loaded]) -> None:
        raster_id = self.raster_id if self.raster_id is not None else _replace_raster(conn, self.info)
        tables.insert_chips(conn, raster_id, zip(ids, (it.extra for it in items)))
        self._pending = raster_id

    def committed(self) -> None:
        self.raster_id, self.stale = self._pending, []  # only once the transaction committed


class RasterChips:
    """The chips of one open raster that are not indexed yet, as an item source."""

    unit = "chip"

    def __init__(self, source: RasterSource):
        self.source = source
        self.desc = Path(source.info.path).name[:30]
        self.hook: RasterRows | None = None
        self.stale: list[int] = []

    def plan(self, store: Store, report: RasterAddReport) -> list[tuple[int, int, int, int]]:
        info = self.source.info
        raster_id, done, stale = store.run(lambda conn: _known(conn, info.path, info.sha256))
        if raster_id is not None:
            stored = store.run(lambda conn: tables.get_raster(conn, raster_id))
            if stored is not None and stored["stretch"] != info.stretch:  # keep the one stretch it was indexed with
                self.source = self.source.with_stretch(stored["bands"], stored["stretch"])
        self.hook, self.stale = RasterRows(self.source.info, raster_id, list(stale)), list(stale)
        keys = [window_key(w) for w in self.source.plan.windows()]
        work = [k for k in keys if k not in done]
        report.unchanged += len(keys) - len(work)
        return work

    def loader(self) -> ChipLoader:
        return ChipLoader(self.source)

    def finish(self, store: Store, limited: bool) -> int | None:
        """After the last batch: record a raster that gave no chip at all (its old chips removed)."""
        hook = self.hook
        assert hook is not None
        if hook.raster_id is None and not limited:
            if hook.stale:
                store.remove(hook.stale)
            hook.raster_id = store.run(lambda conn: _replace_raster(conn, self.source.info), write=True)
        return hook.raster_id


def add_rasters(store: Store, engine: Engine, paths: Iterable[str | Path] | str | Path, lock: threading.RLock,
                options: TilingOptions, out_size: int, *, batch_size: int = 32, progress: bool = True,
                max_chips: int | None = None, gsd_default: float | None = None) -> RasterAddReport:
    """Tile, encode and commit every raster of ``paths`` batch by batch; return what was done.

    ``max_chips`` stops after that many new chips (benchmarks; the report says ``limited``).
    """
    if batch_size < 1:
        raise ValueError(f"batch size must be >= 1, got {batch_size}")
    files = raster_paths(paths)
    store.run(tables.create_tables, write=True)
    target = model_gsd(store, gsd_default)
    report = RasterAddReport()
    with engine:
        for path in files:
            if max_chips is not None and report.added >= max_chips:
                report.limited = True
                break
            try:
                with open_raster(path, **options.source_options(target, out_size)) as source:
                    _add_one(store, engine, RasterChips(source), lock, report, batch_size, progress,
                             None if max_chips is None else max_chips - report.added)
            except RasterError as exc:
                log.warning("%s", exc)
                report.add(str(path), str(exc))
    return report


def _add_one(store: Store, engine: Engine, chips: RasterChips, lock: threading.RLock, report: RasterAddReport,
             batch_size: int, progress: bool, budget: int | None) -> None:
    skipped_before = report.chips_skipped.copy()
    added = ingest(store, chips, engine, lock, report, batch_size=batch_size, progress=progress, budget=budget)
    raster_id = chips.finish(store, report.limited)
    report.updated += len(chips.stale)
    skipped = report.chips_skipped - skipped_before
    source = chips.source
    report.rasters.append({"path": source.info.path, "raster_id": raster_id, "chips_planned": len(source.plan),
                           "added": added, "skipped": dict(skipped), "gsd": source.info.gsd,
                           "target_gsd": source.plan.target_gsd, "stretch": source.info.stretch})


def _known(conn: sqlite3.Connection, path: str, sha256: str) -> tuple[int | None, set, list[int]]:
    """``(raster id, windows already indexed, item ids of chips from other versions of the file)``."""
    raster_id = tables.find_raster(conn, path, sha256)
    done = tables.indexed_windows(conn, raster_id) if raster_id is not None else set()
    stale = [int(r[0]) for r in conn.execute(
        "SELECT c.item_id FROM chips c JOIN rasters r ON r.id = c.raster_id WHERE r.path = ? AND r.sha256 != ?",
        (path, sha256))]
    return raster_id, done, stale


def _replace_raster(conn: sqlite3.Connection, info: Any) -> int:
    """Insert the raster row; rows of older versions of the same file (their chips already gone) are dropped."""
    conn.execute("DELETE FROM rasters WHERE path = ? AND sha256 != ? AND id NOT IN (SELECT raster_id FROM chips)",
                 (info.path, info.sha256))
    return tables.insert_raster(conn, info)
