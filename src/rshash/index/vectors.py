"""The in-memory copy of every row's code and descriptor, by id: what re-ranking and filtered searches read.

SQLite stays the source of truth; this table is rebuilt from it and kept up to
date with the same generation deltas as the faiss cache. It is immutable: an
update returns a new table, so a search can use the one it got without a lock.
Memory: ``bits / 8 + descriptor_dims + 12`` bytes per item (156 for the default 128-bit
codes and 128-d descriptors). A table saved with :meth:`VectorTable.save` opens memory-mapped
(:meth:`VectorTable.open`): its rows are then pages of the files, read on demand and
dropped by the OS under pressure, not the searching process's own (anonymous) memory.
"""

from __future__ import annotations

import logging
import re
import shutil
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from ..io_utils import atomic_directory
from ..ranking import cosine_similarity, descriptor_norms
from .store import CodeDelta

log = logging.getLogger(__name__)

#: A table of at least this many rows is served memory-mapped from its index directory (see :func:`mapped`).
MMAP_MIN_ROWS = 100_000
_SAVED_RE = re.compile(r"vectors-g(?P<generation>\d+)")


@dataclass(frozen=True)
class VectorTable:
    ids: np.ndarray  # int64 (N,), sorted
    codes: np.ndarray  # uint8 (N, bits/8)
    descriptors: np.ndarray  # int8 (N, dims)
    norms: np.ndarray  # float32 (N,) descriptor norms

    @classmethod
    def from_delta(cls, delta: CodeDelta) -> "VectorTable":
        order = np.argsort(delta.ids, kind="stable")
        d = delta.descriptors[order]
        return cls(delta.ids[order], delta.codes[order], d, descriptor_norms(d))

    def __len__(self) -> int:
        return len(self.ids)

    _FILES = ("ids", "codes", "descriptors", "norms")

    def save(self, directory: str | Path) -> None:
        """Write the table as ``.npy`` files of one directory, atomically (a crash leaves the old one or this)."""
        with atomic_directory(directory) as tmp:
            for name in self._FILES:
                np.save(tmp / f"{name}.npy", np.ascontiguousarray(getattr(self, name)))

    @classmethod
    def open(cls, directory: str | Path, mmap: bool = True) -> "VectorTable":
        """A table written by :meth:`save`; ``mmap``: its arrays memory-mapped read-only."""
        arrays = [np.load(Path(directory) / f"{name}.npy", mmap_mode="r" if mmap else None) for name in cls._FILES]
        n = {len(a) for a in arrays}
        if len(n) != 1 or arrays[1].dtype != np.uint8 or arrays[2].dtype != np.int8:
            raise ValueError(f"{directory}: not a vector table (row counts {sorted(n)})")
        return cls(*arrays)

    def apply(self, delta: CodeDelta) -> "VectorTable":
        """A new table with ``delta``'s removals and additions (a row re-added under its id replaces it)."""
        gone = np.isin(self.ids, np.concatenate([delta.removed, delta.ids]))
        ids = np.concatenate([self.ids[~gone], delta.ids])
        order = np.argsort(ids, kind="stable")
        codes = np.concatenate([self.codes[~gone], delta.codes])[order]
        descriptors = np.concatenate([self.descriptors[~gone], delta.descriptors])[order]
        norms = np.concatenate([self.norms[~gone], descriptor_norms(delta.descriptors)])[order]
        return VectorTable(ids[order], codes, descriptors, norms)

    @cached_property
    def unit_descriptors(self) -> np.ndarray:
        """float32 ``(N, dims)``: the descriptors divided by their norms, computed on first use and kept with this
        table (4 bytes per value, in the process's own memory: only for tables scored whole, at most
        :data:`rshash.index.search.EXHAUSTIVE_ITEMS` rows), so that a search scoring every row does one matrix
        product instead of converting every int8 row again."""
        return np.asarray(self.descriptors, dtype=np.float32) / self.norms[:, None]

    def contains(self, ids: np.ndarray) -> np.ndarray:
        """``bool`` per id: is it in the table (a binary search per id: no pass over the table)."""
        ids = np.asarray(ids, dtype=np.int64)
        if not len(self.ids):
            return np.zeros(len(ids), dtype=bool)
        pos = np.minimum(np.searchsorted(self.ids, ids), len(self.ids) - 1)
        return np.asarray(self.ids[pos]) == ids

    def positions(self, ids: np.ndarray) -> np.ndarray:
        """Row positions of those ``ids`` that are in the table (others dropped), in the given order."""
        ids = np.asarray(ids, dtype=np.int64)
        pos = np.searchsorted(self.ids, ids)
        found = (pos < len(self.ids)) & (self.ids[np.minimum(pos, len(self.ids) - 1)] == ids) if len(self.ids) else pos < 0
        return pos[found]

    def hamming(self, code: np.ndarray, positions: np.ndarray | None = None) -> np.ndarray:
        """Hamming distances from one packed code to the rows at ``positions`` (``None``: every row, in order)."""
        rows = self.codes if positions is None else self.codes[positions]
        if rows.shape[1] % 8 == 0 and rows.flags.c_contiguous:  # 64-bit words: a quarter of the work per code
            rows, code = rows.view(np.uint64), np.ascontiguousarray(code).view(np.uint64)
        return np.bitwise_count(rows ^ code[None, :]).sum(axis=1, dtype=np.int32)

    def similarity(self, descriptor: np.ndarray, positions: np.ndarray) -> np.ndarray:
        """Cosine similarity of one int8 descriptor to the rows at ``positions``."""
        return cosine_similarity(descriptor[None, :], self.descriptors[positions], self.norms[positions])[0]


def saved_table(directory: Path | None, generation: int) -> VectorTable | None:
    """The table :func:`mapped` saved for exactly ``generation`` in ``directory``, memory-mapped; None if there is
    none or it cannot be read. (It was written, atomically, from that generation's rows: every commit bumps the
    generation, so its name says what it holds.)"""
    if directory is None:
        return None
    target = directory / f"vectors-g{generation}"
    if not target.is_dir():
        return None
    try:
        return VectorTable.open(target)
    except (OSError, ValueError) as exc:
        log.warning("could not read the saved vector table %s (%s): reading the index instead", target.name, exc)
        return None


def mapped(table: VectorTable, directory: Path | None, generation: int) -> VectorTable:
    """``table`` served from ``directory/vectors-g<generation>`` memory-mapped, when it has at least
    :data:`MMAP_MIN_ROWS` rows: the saved files are reused if they hold exactly its ids and codes, else written
    (atomically); older generations' files are removed. Its rows are then file pages (the OS keeps what
    searches touch), not the process's own memory; the in-memory ``table`` is returned where the files cannot be
    written (a read-only archive) or the table is small. A table updated in place later (``apply``) is in memory
    again until the next full build or open."""
    if directory is None or len(table) < MMAP_MIN_ROWS:
        return table
    target = directory / f"vectors-g{generation}"
    try:
        if target.is_dir():
            try:
                saved = VectorTable.open(target)
                if np.array_equal(saved.ids, table.ids) and np.array_equal(saved.codes, table.codes):
                    return saved
            except (OSError, ValueError):
                pass
        table.save(target)
        for other in directory.glob("vectors-g*"):
            m = _SAVED_RE.fullmatch(other.name)
            if m is not None and int(m["generation"]) < generation:
                shutil.rmtree(other, ignore_errors=True)  # a process that maps them keeps its pages
        return VectorTable.open(target)
    except OSError as exc:
        log.warning("could not save the vector table in %s (%s): it stays in memory", directory, exc)
        return table
