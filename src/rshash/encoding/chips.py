"""The chips of georeferenced rasters as an item source: :class:`RasterChips`, and :func:`add_rasters`.

A chip is an ordinary item (a row of ``images`` with its code and descriptor; path
``RASTER_PATH#col,row,width,height``, no label) plus its geo row in ``chips`` (window, bounds, lon/lat
footprint, centroid) and an R*Tree entry; the raster row (path, checksum, CRS, transform, bands, the one
stretch, ground resolution) is written with the raster's first batch. Each batch's items, chip rows and
(for the first) the raster row are committed in one transaction (:func:`~.commit.commit_batch`), so a run
killed at any moment leaves whole batches, and a rerun skips the windows already indexed (same path and
checksum) and resumes. Windows are read by the engine's loaders (a thread here, Ray tasks there), one batch
ahead of encoding; memory stays at about two batches of chips whatever the raster's size.

No raster stops the run: one that cannot be opened or read at all (a text file named ``.tif``, no CRS without
``gsd="native"``, a truncated header) is a logged skip with its reason in the report; a read error mid-way
(a truncated file whose later blocks fail) keeps the chips already committed and marks the raster
``partial`` with the reason (``rasters.status``), and the next run resumes it. Errors of the engine itself
(the encoder) still stop the run. The tiling options are stored per raster: indexing a raster again with
other options replaces its chips (the report entry says how many). Identical GDAL warnings are logged once
per raster with a count (:class:`~.collapse.CollapsedWarnings`).
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from rasterio._err import CPLE_BaseError
from rasterio.errors import RasterioError
from rasterio.windows import Window

from ..geo import tables
from ..geo.dates import Acquired, acquisition, check_datetime_option
from ..geo.digest import raster_sha256
from ..geo.source import RasterError, RasterSource, open_raster, raster_paths
from ..geo.tiling import MODEL_GSD_M, TilingOptions, chip_path, window_key
from ..index.model_check import MODEL_GSDS_KEY, gsd_meta, recorded_gsds
from ..index.store import Store
from ..progress import progress_bar
from .collapse import CollapsedWarnings
from .commit import Engine, ingest
from .items import Loaded
from .report import LIMITED, Outcome, RasterAddReport

log = logging.getLogger(__name__)

NODATA, FLAT = "nodata", "flat"
#: The outcome of a window whose read failed (a truncated or corrupt file): counted, the raster left partial.
READ_ERROR = "read_error"
#: Errors of reading a raster (GDAL through rasterio): the raster is skipped or left partial, the run goes on.
READ_ERRORS = (RasterioError, CPLE_BaseError)
#: Tiling keys compared to decide whether a raster is indexed again with other options (``gsd`` as given is
#: not: ``auto`` and the model's metres are the same tiling).
TILING_KEYS = ("tile", "target_gsd", "overlap", "bands", "max_nodata")


def model_gsds(store: Store, default: Sequence[float] | None = None) -> list[float]:
    """The model's ground resolutions recorded in the index; for an index that records none (made before they
    were recorded at creation), ``default`` (the model's) or UCMD's 0.3 m, recorded now."""
    recorded = recorded_gsds(store.meta())
    if recorded is not None:
        if MODEL_GSDS_KEY not in store.meta():  # only the older single number: record the list too
            store.set_meta(MODEL_GSDS_KEY, gsd_meta(recorded)[MODEL_GSDS_KEY])
        return recorded
    values = sorted(float(g) for g in (default if default is not None else [MODEL_GSD_M]))
    for key, value in gsd_meta(values).items():
        store.set_meta(key, value)
    return values


class ChipLoader:
    """Reads windows of one open raster as chips (nodata and flat ones as outcomes).

    Pickled (for Ray tasks) it travels as the raster's path and reading options and reopens there."""

    def __init__(self, source: RasterSource):
        self.source = source

    def __getstate__(self) -> dict:
        s = self.source
        return {"path": s.info.path, "sha256": s.info.sha256,
                "options": {"bands": s.bands, "gsd": "native", "out_size": s.out_size,
                            "max_nodata": 1.0 - s.min_valid, "min_std": s.min_std, "stretch": s.info.stretch}}

    def __setstate__(self, state: dict) -> None:
        self._state, self.source = state, None  # type: ignore[assignment]

    def _open(self) -> RasterSource:
        if self.source is None:  # in a Ray task: open once per task process and loader
            import rasterio

            self.source = RasterSource(rasterio.open(self._state["path"]), **self._state["options"])
            self.source.info = info_with_sha(self.source.info, self._state["sha256"])  # as the raster row has it
        return self.source

    def __call__(self, windows: Sequence[tuple[int, int, int, int]]) -> list[Loaded | Outcome]:
        source = self._open()
        out: list[Loaded | Outcome] = []
        for key in windows:
            path = chip_path(source.info.path, key)
            try:
                chip, skip = source.load_chip(Window(*key))
            except READ_ERRORS as exc:  # this window only: the others of the raster are still read
                out.append(Outcome(path, READ_ERROR, f"{type(exc).__name__}: {exc}"))
                continue
            if chip is None:
                out.append(Outcome(path, skip))
            else:
                out.append(Loaded(path, source.info.sha256, key[2], key[3], chip.pixels, None, chip.meta))
        return out


class RasterRows:
    """The commit hook of one raster: its raster row (once, ``partial`` until :meth:`RasterChips.finish`),
    its chips' rows and R*Tree boxes, and the removal of the chips of an older version of the file (with the
    first batch)."""

    def __init__(self, info: Any, raster_id: int | None, stale: list[int], tiling: dict):
        self.info, self.raster_id, self.stale, self.tiling = info, raster_id, stale, tiling
        self._pending: int | None = None

    def replace_ids(self) -> Sequence[int]:
        return self.stale

    def on_insert(self, conn: sqlite3.Connection, ids: list[int], items: Sequence[Loaded]) -> None:
        raster_id = self.raster_id if self.raster_id is not None else _replace_raster(conn, self.info, self.tiling)
        tables.insert_chips(conn, raster_id, zip(ids, (it.extra for it in items)))
        self._pending = raster_id

    def committed(self) -> None:
        self.raster_id, self.stale = self._pending, []  # only once the transaction committed


class RasterChips:
    """The chips of one open raster that are not indexed yet, as an item source."""

    unit = "chip"

    def __init__(self, source: RasterSource, options: TilingOptions | None = None):
        self.source = source
        self.desc = Path(source.info.path).name[:30]
        self.hook: RasterRows | None = None
        self.stale: list[int] = []
        self.tiling = tiling_of(source, options or TilingOptions())
        self.replaced: dict | None = None  # chips of another tiling removed: {"chips": n, "tiling": old}

    def replace_other_tiling(self, store: Store, lock: threading.RLock) -> None:
        """Remove the raster's chips (every version of the file) when they were cut with other tiling options
        (rows whose tiling is unknown, from older indexes, are kept)."""
        path = self.source.info.path

        def other(conn: sqlite3.Connection) -> tuple[list[int], dict | None]:
            rows = [tables.get_raster(conn, i) for i in tables.raster_ids_by_path(conn, path)]
            old = [r for r in rows if r is not None and r["tiling"] is not None
                   and not same_tiling(r["tiling"], self.tiling)]
            return [r["id"] for r in rows if r is not None], (old[0]["tiling"] if old else None)

        with lock:
            ids, old_tiling = store.run(other)
            if old_tiling is None:
                return
            removed = remove_rasters(store, ids)
        self.replaced = {"chips": removed, "tiling": old_tiling}
        log.warning("%s: indexed before with other tiling options (%s, now %s): its %d chip(s) replaced",
                    Path(path).name, _describe(old_tiling), _describe(self.tiling), removed)

    def plan(self, store: Store, report: RasterAddReport) -> list[tuple[int, int, int, int]]:
        info = self.source.info
        raster_id, done, stale = store.run(lambda conn: _known(conn, info.path, info.sha256))
        if raster_id is not None:
            stored = store.run(lambda conn: tables.get_raster(conn, raster_id))
            if stored is not None and stored["stretch"] != info.stretch:  # keep the one stretch it was indexed with
                self.source = self.source.with_stretch(stored["bands"], stored["stretch"])
                self.source.info = info_with_sha(self.source.info, info.sha256)
        self.hook = RasterRows(self.source.info, raster_id, list(stale), self.tiling)
        self.stale = list(stale)
        keys = [window_key(w) for w in self.source.plan.windows()]
        work = [k for k in keys if k not in done]
        report.unchanged += len(keys) - len(work)
        return work

    def loader(self) -> ChipLoader:
        return ChipLoader(self.source)

    def finish(self, store: Store, limited: bool, error: str | None = None) -> int | None:
        """After the last batch (or a read error): record a raster that gave no chip at all (its old chips
        removed), and mark it ``complete``, or ``partial`` with the reason when it stopped early. A raster
        that failed before any chip was committed gets no row (the caller reports it as skipped)."""
        hook = self.hook
        assert hook is not None
        if hook.raster_id is None and not limited and error is None:
            if hook.stale:
                store.remove(hook.stale)
            hook.raster_id = store.run(lambda conn: _replace_raster(conn, self.source.info, self.tiling), write=True)
        if hook.raster_id is not None:
            reason = error or (LIMITED if limited else None)
            status = tables.PARTIAL if reason else tables.COMPLETE
            raster_id = hook.raster_id
            store.run(lambda conn: tables.set_raster_status(conn, raster_id, status, reason), write=True)
        return hook.raster_id


def tiling_of(source: RasterSource, options: TilingOptions) -> dict:
    """The tiling options a raster is cut with, as stored in ``rasters.tiling`` (JSON)."""
    plan = source.plan
    return {"tile": int(plan.tile), "gsd": options.gsd, "target_gsd": plan.target_gsd,
            "overlap": float(plan.overlap), "bands": [int(b) for b in source.bands],
            "max_nodata": float(options.max_nodata)}


def same_tiling(a: dict, b: dict) -> bool:
    """Whether two stored tilings cut the same chips (see :data:`TILING_KEYS`; floats to 1e-9)."""
    def norm(v: Any) -> Any:
        return round(v, 9) if isinstance(v, float) else v
    return all(norm(a.get(k)) == norm(b.get(k)) for k in TILING_KEYS)


def _describe(tiling: dict) -> str:
    return ", ".join(f"{k}={tiling.get(k)}" for k in TILING_KEYS)


def info_with_sha(info: Any, sha256: str) -> Any:
    """``info`` with another checksum (the raster's :func:`~rshash.geo.digest.raster_sha256`)."""
    return replace(info, sha256=sha256)


def remove_rasters(store: Store, raster_ids: Sequence[int]) -> int:
    """Remove rasters by id with all their chips as one committed change; return the chips removed.
    The caller holds the index's write lock."""
    ids = [int(i) for i in raster_ids]
    items = store.run(lambda conn: [i for r in ids for i in tables.raster_item_ids(conn, r)])

    def drop_rows(conn: sqlite3.Connection, _new: list[int]) -> None:
        for raster_id in ids:
            tables.delete_raster(conn, raster_id)

    store.add([], replace_ids=items, on_insert=drop_rows)
    return len(items)


@dataclass(frozen=True)
class RasterOverride:
    """What a catalogue says of one raster file: bands read as R, G, B, and its acquisition time."""

    bands: Sequence[int] | None = None
    acquired: Acquired | None = None
    about: Mapping[str, Any] = field(default_factory=dict)  # added to the raster's report entry (e.g. its Item id)


def add_rasters(store: Store, engine: Engine, paths: Iterable[str | Path] | str | Path, lock: threading.RLock,
                options: TilingOptions, out_size: int, *, batch_size: int = 32, progress: bool = True,
                max_chips: int | None = None, gsd_default: Sequence[float] | None = None,
                datetime: str | None = None, overrides: Mapping[Path, RasterOverride] | None = None) -> RasterAddReport:
    """Tile, encode and commit every raster of ``paths`` batch by batch; return what was done.

    ``datetime``: where each raster's acquisition time comes from (:func:`rshash.geo.dates.acquisition`:
    ``auto``/None = the file name, ``tiff``, ``none``, or one time or interval for all); a time found is
    recorded on the raster row (also for a raster indexed before), none found leaves the row as it was.
    ``overrides``: per raster file, what a catalogue says of it (bands read as R, G, B unless ``options`` give
    bands; its acquisition time, before ``datetime``); see :mod:`rshash.geo.stac`.

    ``max_chips`` stops after that many new chips (benchmarks; the report says ``limited``). ``gsd="auto"``
    tiles each raster at the model resolution nearest its own (:func:`model_gsds`; ``gsd_default`` for an
    index that records none yet) and skips one more than :data:`~rshash.geo.tiling.MAX_GSD_MISMATCH` away,
    with the reason; each report entry says the resolution tiled at and why (``gsd_reason``).
    """
    if batch_size < 1:
        raise ValueError(f"batch size must be >= 1, got {batch_size}")
    check_datetime_option(datetime)
    files = raster_paths(paths)
    store.run(tables.create_tables, write=True)
    target = model_gsds(store, gsd_default)
    report = RasterAddReport()
    with engine, progress_bar(total=len(files), desc="rasters", unit="raster", disable=not progress,
                              mininterval=0.2) as overall:
        for path in files:
            if max_chips is not None and report.added >= max_chips:
                report.limited = True
                break
            overall.set_postfix_str(f"{path.name[:30]}: hashing, sampling stretch")
            override = (overrides or {}).get(path, RasterOverride())
            opts = options if override.bands is None or options.bands is not None else replace(
                options, bands=tuple(override.bands))
            with CollapsedWarnings(path.name) as warned:
                entry = _add_path(store, engine, path, lock, report, opts.source_options(target, out_size),
                                  opts, batch_size, progress, None if max_chips is None else max_chips - report.added,
                                  datetime, override.acquired)
            if entry is not None and override.about:
                entry.update(override.about)
            if entry is not None and warned.counts:
                entry["warnings"] = dict(warned.counts)
            overall.update(1)
    return report


def _add_path(store: Store, engine: Engine, path: Path, lock: threading.RLock, report: RasterAddReport,
              source_options: dict, options: TilingOptions, batch_size: int, progress: bool,
              budget: int | None, datetime: str | None = None, acquired: Acquired | None = None) -> dict | None:
    """Index one raster file and record its acquisition time; a raster that cannot be opened or read (no chip
    committed) is a logged skip (None returned)."""
    try:
        with open_raster(path, **source_options) as source:
            source.info = info_with_sha(source.info, raster_sha256(path))  # a VRT's sources count too
            when = acquired or acquisition(path, datetime, source.ds.tags() if datetime == "tiff" else None)
            entry = _add_one(store, engine, RasterChips(source, options), lock, report, batch_size, progress, budget)
            if entry is not None and entry["raster_id"] is not None and when is not None:
                with lock:
                    store.run(lambda conn: tables.set_raster_time(conn, entry["raster_id"], when.start, when.end),
                              write=True)
            if entry is not None:
                entry |= when.to_dict() if when is not None else {"datetime": None, "datetime_end": None,
                                                                  "datetime_source": None}
            return entry
    except RasterError as exc:
        reason = str(exc)
    except READ_ERRORS as exc:
        reason = f"cannot read {path}: {exc}"
    except OSError as exc:  # hashing: the file went away or is unreadable
        reason = f"cannot read {path}: {exc}"
    report.add(str(path), reason)  # logs the skip
    return None


def _add_one(store: Store, engine: Engine, chips: RasterChips, lock: threading.RLock, report: RasterAddReport,
             batch_size: int, progress: bool, budget: int | None) -> dict | None:
    skipped_before = report.chips_skipped.copy()
    added_before = report.added
    chips.replace_other_tiling(store, lock)
    error = None
    try:
        ingest(store, chips, engine, lock, report, batch_size=batch_size, progress=progress, budget=budget)
    except READ_ERRORS as exc:  # raised by the loader (its thread or task): committed batches stay
        error = f"read error: {exc}"
    added = report.added - added_before
    skipped = report.chips_skipped - skipped_before
    if error is None and skipped[READ_ERROR]:
        error = f"{skipped[READ_ERROR]} window(s) could not be read ({report.chip_reasons.get(READ_ERROR)})"
    raster_id = chips.finish(store, report.limited, error)
    source = chips.source
    if raster_id is None and error is not None:  # nothing of it committed: a skip, retried by the next run
        raise RasterError(f"cannot read {source.info.path}: {error}")
    report.updated += len(chips.stale)
    status = tables.PARTIAL if error or report.limited else tables.COMPLETE
    if error:
        log.warning("%s: %s; %d chip(s) kept, marked partial (a rerun resumes it)", Path(source.info.path).name,
                    error, added)
    entry = {"path": source.info.path, "raster_id": raster_id, "status": status, "reason": error,
             "chips_planned": len(source.plan), "added": added, "skipped": dict(skipped), "gsd": source.info.gsd,
             "target_gsd": source.plan.target_gsd, "gsd_reason": source.gsd_reason, "stretch": source.info.stretch, "tiling": chips.tiling}
    if chips.replaced is not None:
        entry["replaced"] = chips.replaced
    report.rasters.append(entry)
    return entry


def _known(conn: sqlite3.Connection, path: str, sha256: str) -> tuple[int | None, set, list[int]]:
    """``(raster id, windows already indexed, item ids of chips from other versions of the file)``."""
    raster_id = tables.find_raster(conn, path, sha256)
    done = tables.indexed_windows(conn, raster_id) if raster_id is not None else set()
    stale = [int(r[0]) for r in conn.execute(
        "SELECT c.item_id FROM chips c JOIN rasters r ON r.id = c.raster_id WHERE r.path = ? AND r.sha256 != ?",
        (path, sha256))]
    return raster_id, done, stale


def _replace_raster(conn: sqlite3.Connection, info: Any, tiling: dict) -> int:
    """Insert the raster row (``partial`` until finished); rows of older versions of the same file (their chips
    already gone) are dropped."""
    conn.execute("DELETE FROM rasters WHERE path = ? AND sha256 != ? AND id NOT IN (SELECT raster_id FROM chips)",
                 (info.path, info.sha256))
    return tables.insert_raster(conn, info, tiling, status=tables.PARTIAL)
