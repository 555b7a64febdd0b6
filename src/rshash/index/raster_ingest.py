"""Adding georeferenced rasters to an index: tile, encode, commit chips — one SQLite transaction per batch.

A chip is an ordinary item (a row of ``images`` with its code and descriptor; path
``RASTER_PATH#col,row,width,height``, no label) plus its geo row in ``chips`` (window, bounds, lon/lat
footprint, centroid) and an R*Tree entry; the raster row (path, checksum, CRS, transform, bands, the one
stretch, ground resolution) is written with the raster's first batch. Each batch's items, chip rows and
(for the first) the raster row are committed in one transaction, so a run killed at any moment leaves
whole batches, and a rerun skips the windows already indexed (same path and checksum) and resumes.

Reading runs one batch ahead of encoding in a thread (rasterio releases the GIL), so ingestion is bound
by the encoder, not by the reads; memory stays at about two batches of chips whatever the raster's size.
"""

from __future__ import annotations

import logging
import queue
import sqlite3
import threading
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Sequence

import numpy as np

from ..codes import pack_codes
from ..data.rasters import MODEL_GSD_M, Chip, RasterError, RasterSource, open_raster
from ..progress import progress_bar
from ..ranking import quantize_descriptors
from . import geo_tables
from .ingest import AddReport, now
from .store import NewImage, Store

if TYPE_CHECKING:  # the encoder imports onnxruntime
    from ..encoder import Encoder

log = logging.getLogger(__name__)

#: File name endings taken from a folder given as a raster source.
RASTER_SUFFIXES = (".tif", ".tiff", ".vrt", ".jp2", ".img")
#: Index meta key: the ground resolution (metres) the model was trained at, which ``gsd="auto"`` tiles to.
MODEL_GSD_KEY = "model_gsd"


@dataclass(frozen=True)
class TilingOptions:
    """How rasters are cut into chips (see :mod:`rshash.data.rasters`)."""

    tile: int = 256
    gsd: str | float = "auto"
    overlap: float = 0.5
    bands: Sequence[int] | None = None
    max_nodata: float = 0.5

    def source_options(self, model_gsd: float, out_size: int) -> dict[str, Any]:
        return {"tile": int(self.tile), "gsd": self.gsd, "overlap": float(self.overlap), "bands": self.bands,
                "max_nodata": float(self.max_nodata), "model_gsd": float(model_gsd), "out_size": int(out_size)}


@dataclass
class RasterAddReport(AddReport):
    """What :meth:`Index.add_rasters` did: chips ``added``, chips already indexed (``unchanged``), chips
    skipped by reason (``chips_skipped``: nodata, flat), rasters that could not be read (``skipped``), and
    one entry per raster (``rasters``)."""

    chips_skipped: Counter = field(default_factory=Counter)
    rasters: list[dict] = field(default_factory=list)
    limited: bool = False  # stopped at max_chips

    def summary(self) -> str:
        skipped = ", ".join(f"{n} {reason}" for reason, n in sorted(self.chips_skipped.items())) or "none"
        return (f"{len(self.rasters)} raster(s): {self.added} chips added, {self.unchanged} already indexed, "
                f"chips skipped: {skipped}; {len(self.skipped)} unreadable raster(s)"
                + (" (stopped at --max-chips)" if self.limited else ""))

    def to_dict(self) -> dict:
        return super().to_dict() | {"chips_skipped": dict(self.chips_skipped), "rasters": self.rasters,
                                    "limited": self.limited}


def chip_path(raster_path: str, window: Sequence[int]) -> str:
    """The item path of a chip: ``RASTER_PATH#col,row,width,height`` (stable and readable)."""
    return f"{raster_path}#{','.join(str(int(v)) for v in window)}"


def parse_chip_path(path: str) -> tuple[str, tuple[int, int, int, int]] | None:
    """``(raster path, window)`` of a chip's item path; None for an ordinary image path."""
    raster, sep, window = path.rpartition("#")
    parts = window.split(",")
    if not sep or len(parts) != 4 or not all(p.lstrip("-").isdigit() for p in parts):
        return None
    c, r, w, h = (int(p) for p in parts)
    return raster, (c, r, w, h)


def raster_paths(items: Iterable[str | Path] | str | Path) -> list[Path]:
    """Absolute raster paths: files as given, folders searched recursively for GeoTIFF-like files (sorted);
    duplicates dropped. A missing path is an error."""
    if isinstance(items, (str, Path)):
        items = [items]
    out: dict[Path, None] = {}
    for item in items:
        path = Path(item).absolute()
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in RASTER_SUFFIXES)
            out.update(dict.fromkeys(found))
        elif path.is_file():
            out[path] = None
        else:
            raise FileNotFoundError(f"no such raster file or folder: {item}")
    return list(out)


def model_gsd(store: Store, default: float | None = None) -> float:
    """The model's ground resolution recorded in the index (recorded now, from ``default`` or UCMD's 0.3 m,
    if the index has none yet)."""
    meta = store.meta()
    if MODEL_GSD_KEY in meta:
        return float(meta[MODEL_GSD_KEY])
    value = float(default if default is not None else MODEL_GSD_M)
    store.set_meta(MODEL_GSD_KEY, value)
    return value


def ingest_rasters(
    store: Store, encoder: "Encoder", paths: Iterable[str | Path] | str | Path, lock: threading.RLock,
    options: TilingOptions = TilingOptions(), *, batch_size: int = 32, progress: bool = True,
    max_chips: int | None = None, gsd_default: float | None = None,
) -> RasterAddReport:
    """Tile, encode and commit every raster of ``paths`` batch by batch; return what was done.

    ``max_chips`` stops after that many new chips (benchmarks; the report says ``limited``).
    """
    if batch_size < 1:
        raise ValueError(f"batch size must be >= 1, got {batch_size}")
    files = raster_paths(paths)
    store.run(geo_tables.create_tables, write=True)
    target = model_gsd(store, gsd_default)
    report = RasterAddReport()
    for path in files:
        if max_chips is not None and report.added >= max_chips:
            report.limited = True
            break
        try:
            with open_raster(path, **options.source_options(target, encoder.input_size)) as source:
                _ingest_one(store, encoder, source, lock, report, batch_size, progress,
                            None if max_chips is None else max_chips - report.added)
        except RasterError as exc:
            log.warning("%s", exc)
            report.add(str(path), str(exc))
    return report


def _ingest_one(store: Store, encoder: "Encoder", source: RasterSource, lock: threading.RLock,
                report: RasterAddReport, batch_size: int, progress: bool, budget: int | None) -> None:
    """One raster: resume from what is committed, then encode and commit its chips batch by batch."""
    info = source.info
    raster_id, done, stale = store.run(lambda conn: _known(conn, info.path, info.sha256))
    if raster_id is not None:
        stored = store.run(lambda conn: geo_tables.get_raster(conn, raster_id))
        if stored is not None and stored["stretch"] != info.stretch:  # keep the one stretch it was indexed with
            source = RasterSource(source.ds, bands=stored["bands"], gsd=source.plan.target_gsd or "native",
                                  tile=source.plan.tile, overlap=source.plan.overlap, out_size=source.out_size,
                                  max_nodata=1.0 - source.min_valid, stretch=stored["stretch"])
    state = {"raster_id": raster_id, "stale": stale}  # stale: chips of an older version of this file
    added = 0
    name = Path(info.path).name
    with progress_bar(total=len(source.plan), desc=name[:30], unit="chip", disable=not progress) as bar:
        for batch in _prefetch(source.iter_chips(batch_size, skip=done)):
            if budget is not None and added + len(batch) > budget:
                batch = batch[: budget - added]
                report.limited = True
            if batch:
                with lock:
                    _commit(store, encoder, info, batch, state)
                added += len(batch)
            bar.update(max(0, added + sum(source.skipped.values()) - bar.n))  # skips counted by the reader
            if report.limited:
                break
    if state["raster_id"] is None and not report.limited:  # no chip at all: record the raster still
        if state["stale"]:
            store.remove(state["stale"])
        state["raster_id"] = store.run(lambda conn: _replace_raster(conn, info), write=True)
    report.added += added
    report.unchanged += source.skipped.pop("already_indexed", 0)
    report.updated += len(stale)
    report.chips_skipped.update(source.skipped)
    report.rasters.append({"path": info.path, "raster_id": state["raster_id"], "chips_planned": len(source.plan),
                           "added": added, "skipped": dict(source.skipped), "gsd": info.gsd,
                           "target_gsd": source.plan.target_gsd, "stretch": info.stretch})


def _known(conn: sqlite3.Connection, path: str, sha256: str) -> tuple[int | None, set, list[int]]:
    """``(raster id, windows already indexed, item ids of chips from other versions of the file)``."""
    raster_id = geo_tables.find_raster(conn, path, sha256)
    done = geo_tables.indexed_windows(conn, raster_id) if raster_id is not None else set()
    stale = [int(r[0]) for r in conn.execute(
        "SELECT c.item_id FROM chips c JOIN rasters r ON r.id = c.raster_id WHERE r.path = ? AND r.sha256 != ?",
        (path, sha256))]
    return raster_id, done, stale


def _replace_raster(conn: sqlite3.Connection, info: Any) -> int:
    """Insert the raster row; rows of older versions of the same file (their chips already gone) are dropped."""
    conn.execute("DELETE FROM rasters WHERE path = ? AND sha256 != ? AND id NOT IN (SELECT raster_id FROM chips)",
                 (info.path, info.sha256))
    return geo_tables.insert_raster(conn, info)


def _commit(store: Store, encoder: "Encoder", info: Any, batch: list[Chip], state: dict) -> None:
    """Encode a batch and commit its items, chip rows (and, the first time, the raster row) together."""
    encoded = encoder.encode(np.stack([c.pixels for c in batch]))
    codes = pack_codes(encoded.codes)
    descriptors = quantize_descriptors(encoded.descriptors)
    added_at = now()
    rows = [NewImage(chip_path(info.path, c.meta.window), None, int(c.meta.window[2]), int(c.meta.window[3]),
                     info.sha256, added_at, code.tobytes(), desc.tobytes())
            for c, code, desc in zip(batch, codes, descriptors)]
    pending: dict[str, int | None] = {}

    def on_insert(conn: sqlite3.Connection, ids: list[int]) -> None:
        raster_id = state["raster_id"]
        if raster_id is None:
            raster_id = _replace_raster(conn, info)
        geo_tables.insert_chips(conn, raster_id, zip(ids, (c.meta for c in batch)))
        pending["raster_id"] = raster_id

    store.add(rows, replace_ids=state["stale"], on_insert=on_insert)
    state["raster_id"], state["stale"] = pending["raster_id"], []  # only once the transaction committed


def _prefetch(batches: Iterator[list[Chip]], depth: int = 1) -> Iterator[list[Chip]]:
    """Iterate ``batches`` in a reader thread, ``depth`` batches ahead of the consumer.

    The raster is read only in that thread; an exception there is raised here; when the consumer
    stops early the reader is told to stop and joined.
    """
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    end = object()

    def put(item: Any) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def read() -> None:
        try:
            for batch in batches:
                if not put(batch):
                    return
            put(end)
        except BaseException as exc:  # handed to the consumer
            put(exc)

    thread = threading.Thread(target=read, name="rshash-raster-read", daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is end:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join()
