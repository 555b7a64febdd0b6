"""Items to add, and image files as an item source.

An item source plans *work* (small, picklable: a file and its known checksum, a raster window) and gives a
*loader*, a picklable callable that turns a batch of work into :class:`Loaded` items (pixels ready for the
encoder and the row they become) or :class:`Outcome` s (why an item was not loaded). The engines run loaders
(in a thread here, or in Ray tasks), so the per-item rule is written once for every engine.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, NamedTuple, Protocol, Sequence

import numpy as np

from ..data.datasets import ImageRecord, load_records
from ..data.images import UnreadableImage, decode_rgb, resize_rgb
from .report import UNCHANGED, UNREADABLE, AddReport, Outcome

if TYPE_CHECKING:
    import sqlite3

    from ..index.store import Store

@dataclass
class Loaded:
    """An item read for encoding: the row it becomes (but its code and descriptor) and its pixels."""

    path: str  # the item path: a file, or a raster chip's ``RASTER#col,row,width,height``
    sha256: str  # of the file (of the raster, for a chip)
    width: int
    height: int
    pixels: np.ndarray | None  # uint8 (size, size, 3); None once encoded elsewhere (a Ray actor)
    label: str | None = None
    extra: Any = None  # what the source's commit hook needs (a chip's ChipMeta)


Loader = Callable[[Sequence[Any]], "list[Loaded | Outcome]"]


class CommitHook(Protocol):
    """A source's own rows beside its items, written in the items' transaction (raster and chip rows)."""

    def replace_ids(self) -> Sequence[int]:
        """Ids of items to remove with the next commit (e.g. chips of an older version of a raster)."""

    def on_insert(self, conn: "sqlite3.Connection", ids: list[int], items: Sequence[Loaded]) -> None:
        """Write the source's rows for the items just inserted under ``ids``."""

    def committed(self) -> None:
        """The transaction of the last :meth:`on_insert` committed."""


class ItemSource(Protocol):
    """What :func:`rshash.encoding.commit.ingest` drives through an engine."""

    desc: str  # progress bar label
    unit: str
    hook: CommitHook | None

    def plan(self, store: "Store", report: AddReport) -> Sequence[Any]:
        """The work to load, in order (what is already known to be done is counted in ``report``)."""

    def loader(self) -> Loader:
        """A picklable callable loading a batch of work."""


# --------------------------------------------------------------------------- image files


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


class LoadedFile(NamedTuple):
    """One file read for encoding: its checksum, original size and resized pixels (None: unchanged)."""

    sha256: str
    height: int
    width: int
    pixels: np.ndarray | None  # uint8 (size, size, 3)


def load_file(path: str, known_sha256: str | None, size: int) -> LoadedFile:
    """Read, checksum and (unless its checksum is ``known_sha256``) decode and resize one file.

    The one per-file rule of every engine; raises :class:`UnreadableImage`.
    """
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise UnreadableImage(f"{path}: cannot read file ({exc})") from exc
    sha = hashlib.sha256(data).hexdigest()
    if sha == known_sha256:
        return LoadedFile(sha, 0, 0, None)
    rgb = decode_rgb(data, path)
    return LoadedFile(sha, rgb.shape[0], rgb.shape[1], resize_rgb(rgb, size))


class FileWork(NamedTuple):
    path: str
    label: str | None
    known_sha256: str | None  # the checksum it is indexed with, if it is


@dataclass(frozen=True)
class FileLoader:
    """Loads image files at the encoder's input size (picklable: shipped to Ray tasks)."""

    size: int

    def __call__(self, work: Sequence[FileWork]) -> list[Loaded | Outcome]:
        out: list[Loaded | Outcome] = []
        for w in work:
            try:
                f = load_file(w.path, w.known_sha256, self.size)
            except UnreadableImage as exc:
                out.append(Outcome(w.path, UNREADABLE, str(exc)))
                continue
            if f.pixels is None:
                out.append(Outcome(w.path, UNCHANGED))
            else:
                out.append(Loaded(w.path, f.sha256, f.width, f.height, f.pixels, w.label))
        return out


class ImageFiles:
    """Image files (paths, :class:`ImageRecord` s, or a folder / CSV manifest) as an item source."""

    desc, unit, hook = "index", "img", None

    def __init__(self, items: Iterable[str | Path | ImageRecord] | str | Path, size: int):
        self.records = as_records(items)
        self.size = int(size)

    def plan(self, store: "Store", report: AddReport) -> list[FileWork]:
        known = store.checksums([r.path for r in self.records])
        return [FileWork(r.path, r.label, known[r.path][1] if r.path in known else None) for r in self.records]

    def loader(self) -> FileLoader:
        return FileLoader(self.size)
