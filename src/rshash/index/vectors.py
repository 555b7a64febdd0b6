"""The in-memory copy of every row's code and descriptor, by id: what re-ranking and filtered searches read.

SQLite stays the source of truth; this table is rebuilt from it and kept up to
date with the same generation deltas as the faiss cache. It is immutable: an
update returns a new table, so a search can use the one it got without a lock.
Memory: ``bits / 8 + descriptor_dims + 12`` bytes per item (156 for 64-bit codes
and 128-d descriptors).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..ranking import cosine_similarity, descriptor_norms
from .store import CodeDelta


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

    def apply(self, delta: CodeDelta) -> "VectorTable":
        """A new table with ``delta``'s removals and additions (a row re-added under its id replaces it)."""
        gone = np.isin(self.ids, np.concatenate([delta.removed, delta.ids]))
        ids = np.concatenate([self.ids[~gone], delta.ids])
        order = np.argsort(ids, kind="stable")
        codes = np.concatenate([self.codes[~gone], delta.codes])[order]
        descriptors = np.concatenate([self.descriptors[~gone], delta.descriptors])[order]
        norms = np.concatenate([self.norms[~gone], descriptor_norms(delta.descriptors)])[order]
        return VectorTable(ids[order], codes, descriptors, norms)

    def positions(self, ids: np.ndarray) -> np.ndarray:
        """Row positions of those ``ids`` that are in the table (others dropped), in the given order."""
        ids = np.asarray(ids, dtype=np.int64)
        pos = np.searchsorted(self.ids, ids)
        found = (pos < len(self.ids)) & (self.ids[np.minimum(pos, len(self.ids) - 1)] == ids) if len(self.ids) else pos < 0
        return pos[found]

    def hamming(self, code: np.ndarray, positions: np.ndarray) -> np.ndarray:
        """Hamming distances from one packed code to the rows at ``positions``."""
        return np.bitwise_count(self.codes[positions] ^ code[None, :]).sum(axis=1, dtype=np.int32)

    def similarity(self, descriptor: np.ndarray, positions: np.ndarray) -> np.ndarray:
        """Cosine similarity of one int8 descriptor to the rows at ``positions``."""
        return cosine_similarity(descriptor[None, :], self.descriptors[positions], self.norms[positions])[0]
