"""Adding images to an index: read, checksum, decode, encode, commit — one SQLite transaction per batch.

Each batch's codes and descriptors are committed together, so an interrupted run
keeps its finished batches and a rerun skips them (same path, same checksum).
"""

from __future__ import annotations

import hashlib
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Iterator, NamedTuple, Sequence

import numpy as np

from ..codes import pack_codes
from ..data.datasets import ImageRecord, SkipReport, load_records
from ..data.images import UnreadableImage, decode_rgb, resize_rgb
from ..progress import progress_bar
from ..ranking import quantize_descriptors
from .store import NewImage, Store

if TYPE_CHECKING:  # the encoder imports onnxruntime; searching by id or code never needs it
    from ..encoder import Encoder


@dataclass
class AddReport(SkipReport):
    """What :meth:`Index.add_paths` did; ``skipped`` lists ``(path, reason)`` of unreadable files."""

    added: int = 0
    unchanged: int = 0  # already indexed with the same content checksum: nothing done
    updated: int = 0  # indexed path whose content changed: re-encoded under a new id

    def summary(self) -> str:
        return (
            f"{self.added} added, {self.updated} updated, {self.unchanged} unchanged, "
            f"{len(self.skipped)} unreadable skipped"
        )

    def to_dict(self) -> dict:
        return {
            "added": self.added,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "skipped": [{"path": p, "reason": r} for p, r in self.skipped],
        }


@dataclass
class _Pending:
    """A decoded image waiting for its batch to be encoded and committed."""

    record: ImageRecord
    sha256: str
    height: int
    width: int
    pixels: np.ndarray | None  # None once encoded elsewhere (e.g. by a Ray actor)
    replaces: int | None  # id of the stale row for this path, if its content changed


Pending = _Pending  # the name other engines (rshash.encoding.ray_engine) use


def as_records(items: Iterable[str | Path | ImageRecord] | str | Path) -> list[ImageRecord]:
    """Absolute-path records, duplicates dropped; a single str/Path is a folder or manifest."""
    if isinstance(items, (str, Path)):
        items = load_records(items)
    seen: dict[str, ImageRecord] = {}
    for item in items:
        record = item if isinstance(item, ImageRecord) else ImageRecord(str(item))
        path = os.path.abspath(record.path)
        seen.setdefault(path, ImageRecord(path, record.label, record.split, record.labels))
    return list(seen.values())


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _read_bytes(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise UnreadableImage(f"{path}: cannot read file ({exc})") from exc


def ingest(
    store: Store, encoder: "Encoder", records: list[ImageRecord], lock: threading.RLock,
    batch_size: int = 32, progress: bool = True,
) -> AddReport:
    """Encode and commit ``records`` batch by batch; return what was done."""
    if batch_size < 1:
        raise ValueError(f"batch size must be >= 1, got {batch_size}")
    report = AddReport()
    with progress_bar(total=len(records), desc="index", unit="img", disable=not progress) as bar:
        for batch, pending in _prepared_batches(store, records, batch_size, encoder.input_size, report):
            with lock:
                _commit(store, pending, encoder, report)
            bar.update(len(batch))
    return report


def _prepared_batches(
    store: Store, records: list[ImageRecord], batch_size: int, size: int, report: AddReport
) -> Iterator[tuple[list[ImageRecord], list[_Pending]]]:
    """Batches with their decoded images, the next one decoded in a thread while this one encodes.

    Decoding and resizing release the GIL, so this overlaps ~25% of the per-image
    time with the encoder. Only reads happen in the thread; commits stay in the caller.
    """
    batches = [records[start : start + batch_size] for start in range(0, len(records), batch_size)]
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="rshash-decode") as pool:
        upcoming = pool.submit(_prepare, store, batches[0], size, report) if batches else None
        for i, batch in enumerate(batches):
            pending = upcoming.result()
            if i + 1 < len(batches):
                upcoming = pool.submit(_prepare, store, batches[i + 1], size, report)
            yield batch, pending


def _prepare(store: Store, batch: list[ImageRecord], size: int, report: AddReport) -> list[_Pending]:
    """Read, checksum and decode a batch; count unchanged files and skip unreadable ones."""
    known = store.checksums([r.path for r in batch])
    pending = []
    for record in batch:
        old = known.get(record.path)
        try:
            loaded = load_item(record.path, old[1] if old is not None else None, size)
        except UnreadableImage as exc:
            report.add(record.path, str(exc))
            continue
        if loaded.pixels is None:
            report.unchanged += 1
            continue
        replaces = old[0] if old is not None else None
        pending.append(_Pending(record, loaded.sha256, loaded.height, loaded.width, loaded.pixels, replaces))
    return pending


class LoadedItem(NamedTuple):
    """One file read for encoding: its checksum, original size and resized pixels (None: unchanged)."""

    sha256: str
    height: int
    width: int
    pixels: np.ndarray | None  # uint8 (size, size, 3)


def load_item(path: str, known_sha256: str | None, size: int) -> LoadedItem:
    """Read, checksum and (unless its checksum is ``known_sha256``) decode and resize one file.

    The one per-file rule of every engine (local threads, Ray tasks); raises :class:`UnreadableImage`.
    """
    data = _read_bytes(path)
    sha = hashlib.sha256(data).hexdigest()
    if sha == known_sha256:
        return LoadedItem(sha, 0, 0, None)
    rgb = decode_rgb(data, path)
    return LoadedItem(sha, rgb.shape[0], rgb.shape[1], resize_rgb(rgb, size))


def _commit(store: Store, pending: list[_Pending], encoder: "Encoder", report: AddReport) -> None:
    """Encode a batch and commit its codes and descriptors to SQLite in one transaction."""
    if not pending:
        return
    encoded = encoder.encode(np.stack([p.pixels for p in pending]))
    commit_encoded(store, pending, encoded.codes, encoded.descriptors, report)


def commit_encoded(
    store: Store, pending: Sequence[_Pending], codes: np.ndarray, descriptors: np.ndarray, report: AddReport
) -> None:
    """Commit a batch's ``bool`` codes and ``float32`` descriptors (rows of ``pending``) in one transaction.

    Shared by every engine, so what is stored and how (packing, quantisation, replacing) is the same.
    """
    if not pending:
        return
    codes = pack_codes(codes)
    descriptors = quantize_descriptors(descriptors)
    added_at = now()
    rows = [
        NewImage(p.record.path, p.record.label, p.width, p.height, p.sha256, added_at, code.tobytes(), desc.tobytes())
        for p, code, desc in zip(pending, codes, descriptors)
    ]
    replaced = [p.replaces for p in pending if p.replaces is not None]
    store.add(rows, replace_ids=replaced)
    report.updated += len(replaced)
    report.added += len(rows) - len(replaced)
