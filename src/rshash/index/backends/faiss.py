"""faiss binary indexes over packed codes, keyed by the SQLite row ids, and their cache files.

Three kinds, one interface (:class:`CodeIndex`, a :class:`~.base.CodeBackend`):

* ``flat``: exact brute-force Hamming scan (``IndexBinaryFlat`` in an ``IndexBinaryIDMap``).
* ``multihash``: ``IndexBinaryMultiHash`` (pigeonhole lookup on code substrings);
  sub-linear while buckets stay small, which for 64-bit codes means up to ~1M images.
* ``ivf``: ``IndexBinaryIVF`` with k-means lists, the sub-linear kind that scales
  to 10M; lists probed per query are chosen from the index size and ``k``
  (:func:`~.base.ivf_probes`; see ``benchmarks/search_speed.py`` for the measurements behind the defaults).

k-NN search is approximate only for ``multihash``/``ivf``, and falls back to an
exact scan for a query that would otherwise get fewer than ``k`` hits;
:meth:`CodeIndex.range_search` is always exact. Every kind returns the ``k`` smallest
``(distance, id)`` pairs of what it scans (:func:`~.base.k_smallest`): faiss cuts ties
at the ``k``-th distance in storage order, so it is asked for more and cut here.

Searching never changes the faiss index: search parameters (IVF probes) are passed
per call, so any number of threads may search one index at once. Updates
(:meth:`CodeIndex.add`, :meth:`CodeIndex.remove`) must not overlap searches.

:class:`FaissBackends` (a :class:`~.base.CodeBackends`) builds them and keeps the one of the current generation
as ``cache-<kind>-g<generation>.faiss`` in the index directory, reused by the next process only if it holds
exactly the ids and codes of that generation.
"""

from __future__ import annotations

import logging
import re
import time
from pathlib import Path

logging.getLogger("faiss.loader").setLevel(logging.WARNING)  # its INFO lines about CPU features are noise
import faiss  # noqa: E402
import numpy as np

from ...io_utils import atomic_write_bytes
from .base import CodeBackend, by_distance_then_id, empty_result, ivf_lists, ivf_probes, k_smallest

log = logging.getLogger(__name__)

KINDS = ("flat", "multihash", "ivf")

#: k-means iterations and training points per list (faiss warns below 39).
IVF_TRAIN_ITERATIONS = 10
IVF_TRAIN_PER_LIST = 40
#: MultiHash: substrings of this many bits, probed with up to ``MULTIHASH_FLIPS`` flipped bits.
MULTIHASH_SUBSTRING_BITS = 16
MULTIHASH_FLIPS = 1

_CACHE_RE = re.compile(r"cache-(?P<kind>[a-z]+)-g(?P<generation>\d+)\.faiss")
#: Temp files of cache writes killed midway are removed once this old (seconds).
_STALE_TMP_AGE = 3600


def _valid(distances: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The one query's row of a faiss search, without its ``-1`` padding."""
    keep = ids[0] >= 0
    return distances[0][keep], ids[0][keep]


class CodeIndex:
    """A faiss binary index whose ids are the index's SQLite row ids."""

    max_k: int | None = None  # faiss returns as many as asked

    def __init__(self, index: faiss.IndexBinary, bits: int):
        self.index = index
        self.bits = bits

    # ------------------------------------------------------------------ construction

    @classmethod
    def build(cls, kind: str, bits: int, ids: np.ndarray, codes: np.ndarray) -> "CodeIndex":
        """A new index of ``kind`` holding ``codes`` (``uint8 (N, bits/8)``) under ``ids``."""
        impl = _KIND_CLASSES[check_kind(kind)]
        index = impl(impl._new_index(bits, codes), bits)
        index.add(ids, codes)
        return index

    @classmethod
    def _new_index(cls, bits: int, train: np.ndarray) -> faiss.IndexBinary:
        return faiss.IndexBinaryIDMap(faiss.IndexBinaryFlat(bits))

    @staticmethod
    def load(kind: str, path: str | Path) -> "CodeIndex":
        impl = _KIND_CLASSES[check_kind(kind)]
        index = faiss.read_index_binary(str(path))
        return impl(index, index.d)

    def save(self, path: str | Path) -> None:
        """Write atomically: a crash leaves the previous file or the new one."""
        atomic_write_bytes(path, faiss.serialize_index_binary(self.index).tobytes())

    # ------------------------------------------------------------------ updates

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    def add(self, ids: np.ndarray, codes: np.ndarray) -> None:
        if len(ids):
            self.index.add_with_ids(np.ascontiguousarray(codes, dtype=np.uint8), np.asarray(ids, dtype=np.int64))

    def remove(self, ids: np.ndarray) -> bool:
        """Remove ``ids``; ``False`` when this kind cannot (the caller rebuilds instead)."""
        if len(ids):
            self.index.remove_ids(np.asarray(ids, dtype=np.int64))
        return True

    def needs_rebuild(self) -> bool:
        """Whether the structure no longer suits the number of codes (IVF lists)."""
        return False

    def can_update(self, removing: int, total: int) -> bool:
        """Whether removing ``removing`` codes and adding up to ``total`` in place keeps this structure
        complete and suited (else the caller rebuilds it)."""
        return True

    def matches(self, ids: np.ndarray, codes: np.ndarray) -> bool:
        """Whether this index holds exactly ``codes`` under ``ids`` (sorted ids; used to validate a loaded cache)."""
        if self.index.d != self.bits or self.ntotal != len(ids):
            return False
        stored_ids, stored = self._stored()
        if stored_ids is None:  # this kind cannot list its content cheaply: count and dimension only
            return True
        order = np.argsort(stored_ids, kind="stable")
        return bool(np.array_equal(stored_ids[order], ids) and np.array_equal(stored[order], codes))

    def _stored(self) -> tuple[np.ndarray | None, np.ndarray | None]:
        """``(ids, codes)`` as held by faiss, in storage order."""
        flat = faiss.downcast_IndexBinary(self.index.index)
        codes = faiss.vector_to_array(flat.xb).reshape(-1, self.bits // 8)
        return faiss.vector_to_array(self.index.id_map), codes

    # ------------------------------------------------------------------ search

    def search(self, query: np.ndarray, k: int, nprobe: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` smallest ``(distance, id)`` pairs of what this kind scans for one packed code:
        ``(distances int32, ids int64)``, nearest first, ties by id.

        ``nprobe``: IVF lists to probe for this call only (``None``: chosen from ``k``; other kinds ignore it).
        """
        if self.ntotal == 0 or k <= 0:
            return empty_result()
        # One query is far too little work for OpenMP: its thread start-up cost ~47 ms per search on
        # a busy 2-core machine vs 0.2 ms single-threaded. The setting is per calling thread.
        faiss.omp_set_num_threads(1)
        query = query.reshape(1, -1)
        found = k_smallest(lambda n: _valid(*self._search(query, n, k, nprobe)), k)
        assert found is not None  # no limit on what faiss is asked for
        if len(found[1]) < min(k, self.ntotal):  # too few codes where it looked: scan them all
            found = k_smallest(lambda n: _valid(*self._exact_search(query, n)), k)
            assert found is not None
        return found

    def range_search(self, query: np.ndarray, radius: int) -> tuple[np.ndarray, np.ndarray]:
        """All codes within Hamming distance ``radius`` (inclusive), nearest first, exactly."""
        if self.ntotal == 0 or radius < 0:
            return empty_result()
        # faiss's binary range search is strict (< radius).
        _, distances, ids = self._exact_range(query.reshape(1, -1), radius + 1)
        return by_distance_then_id(distances, ids)

    def _search(self, query: np.ndarray, n: int, k: int, nprobe: int | None) -> tuple[np.ndarray, np.ndarray]:
        """faiss's ``n`` nearest (ties in storage order) of what a search for ``k`` scans."""
        return self.index.search(query, n)

    def _exact_search(self, query: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        return self.index.search(query, n)

    def _exact_range(self, query: np.ndarray, radius: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self.index.range_search(query, radius)


class MultiHashIndex(CodeIndex):
    """``IndexBinaryMultiHash``: look up code substrings within ``nflip`` bits, then rank exactly."""


    def __init__(self, index: faiss.IndexBinary, bits: int):
        super().__init__(index, bits)
        # A non-owning view of the IDMap's sub-index: self.index keeps it alive.
        self._hash = faiss.downcast_IndexBinary(index.index)
        self._hash.nflip = MULTIHASH_FLIPS

    @classmethod
    def _new_index(cls, bits: int, train: np.ndarray) -> faiss.IndexBinary:
        nhash = max(1, bits // MULTIHASH_SUBSTRING_BITS)
        return faiss.IndexBinaryIDMap(faiss.IndexBinaryMultiHash(bits, nhash, bits // nhash))

    def remove(self, ids: np.ndarray) -> bool:
        return len(ids) == 0  # faiss's hash tables do not support removal

    def can_update(self, removing: int, total: int) -> bool:
        return removing == 0

    def _stored(self) -> tuple[np.ndarray | None, np.ndarray | None]:
        codes = faiss.vector_to_array(self._hash.storage.xb).reshape(-1, self.bits // 8)
        return faiss.vector_to_array(self.index.id_map), codes

    def _exact_search(self, query: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        distances, positions = self._hash.storage.search(query, n)
        return distances, self._to_ids(positions)

    def _exact_range(self, query: np.ndarray, radius: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        lims, distances, positions = self._hash.storage.range_search(query, radius)
        return lims, distances, self._to_ids(positions)

    def _to_ids(self, positions: np.ndarray) -> np.ndarray:
        """Storage positions -> row ids (the IDMap's table), keeping ``-1`` padding."""
        id_map = faiss.vector_to_array(self.index.id_map)
        return np.where(positions >= 0, id_map[np.maximum(positions, 0)], -1)


class IVFIndex(CodeIndex):
    """``IndexBinaryIVF``: k-means lists over the codes; probe some lists per query.

    The lists probed by a k-NN search are passed per call (``SearchParametersIVF``);
    the index's own ``nprobe`` is fixed at every list, which makes range search (no
    per-call parameters in faiss's binary IVF) an exact scan.
    """


    def __init__(self, index: faiss.IndexBinary, bits: int):
        super().__init__(index, bits)
        self.nprobe: int | None = None  # default lists per query for this object; None: chosen by probes()
        self.index.nprobe = self.index.nlist  # set once, before the index is shared; never changed by a search

    def probes(self, k: int, nprobe: int | None = None) -> int:
        """Lists to probe for ``k`` results (:func:`~.base.ivf_probes`; ``nprobe``, else :attr:`nprobe`, if given)."""
        return ivf_probes(self.ntotal, self.index.nlist, k, self.nprobe if nprobe is None else nprobe)

    @classmethod
    def _new_index(cls, bits: int, train: np.ndarray) -> faiss.IndexBinary:
        nlist = ivf_lists(len(train))
        index = faiss.IndexBinaryIVF(faiss.IndexBinaryFlat(bits), bits, nlist)
        index.cp.niter = IVF_TRAIN_ITERATIONS
        index.cp.seed = 1234
        index.cp.min_points_per_centroid = 1  # tiny indexes get one list; no faiss warning about it
        sample = train
        if len(train) > nlist * IVF_TRAIN_PER_LIST:
            rows = np.random.default_rng(0).choice(len(train), nlist * IVF_TRAIN_PER_LIST, replace=False)
            sample = train[np.sort(rows)]
        if len(sample):
            index.train(np.ascontiguousarray(sample))
        return index

    def _stored(self) -> tuple[np.ndarray | None, np.ndarray | None]:
        return None, None

    def needs_rebuild(self) -> bool:
        """Untrained, or grown to 4x the codes its lists were sized for."""
        return not self._suits(self.ntotal)

    def can_update(self, removing: int, total: int) -> bool:
        return self._suits(total)

    def _suits(self, total: int) -> bool:
        return bool(self.index.is_trained) and ivf_lists(total) < 4 * self.index.nlist

    def add(self, ids: np.ndarray, codes: np.ndarray) -> None:
        """Add, unless untrained (empty when built): then :meth:`needs_rebuild` asks for a rebuild."""
        if len(ids) and self.index.is_trained:
            super().add(ids, codes)

    def _search(self, query: np.ndarray, n: int, k: int, nprobe: int | None) -> tuple[np.ndarray, np.ndarray]:
        return self.index.search(query, n, params=_probing(self.probes(k, nprobe)))  # the lists probed for k

    def _exact_search(self, query: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        return self.index.search(query, n, params=_probing(self.index.nlist))  # every list: an exact scan

    def _exact_range(self, query: np.ndarray, radius: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self.index.range_search(query, radius)  # the index's nprobe is every list


def _probing(nprobe: int) -> faiss.SearchParametersIVF:
    """Search parameters of one IVF call."""
    params = faiss.SearchParametersIVF()
    params.nprobe = int(nprobe)
    return params


_KIND_CLASSES: dict[str, type[CodeIndex]] = {"flat": CodeIndex, "multihash": MultiHashIndex, "ivf": IVFIndex}


def check_kind(kind: str) -> str:
    if kind not in _KIND_CLASSES:
        raise ValueError(f"unknown index kind {kind!r}: expected one of {', '.join(KINDS)}")
    return kind


class FaissBackends:
    """Builds faiss :class:`CodeIndex` es for one index directory and keeps the current one as its cache file."""

    name = "faiss"
    shared = False  # each process holds its own copy (the cache file is only a faster start)

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def build(self, kind: str, bits: int, ids: np.ndarray, codes: np.ndarray) -> CodeIndex:
        return CodeIndex.build(kind, bits, ids, codes)

    def cache_path(self, kind: str, generation: int) -> Path:
        return self.path / f"cache-{kind}-g{generation}.faiss"

    def load(self, kind: str, bits: int, generation: int) -> CodeIndex | None:
        """The saved cache of ``kind`` for exactly ``generation``, if it loads (the caller checks its content)."""
        path = self.cache_path(kind, generation)
        if not path.is_file():
            return None
        try:
            return CodeIndex.load(kind, path)
        except RuntimeError as exc:  # truncated or corrupt: rebuild instead
            log.warning("ignoring unreadable search cache %s: %s", path, exc)
            return None

    def save(self, codes: CodeBackend, kind: str, generation: int, table: object = None) -> None:
        """Write the cache of ``generation`` (atomically, once) and delete older ones (best effort); ``table``
        is not needed (the file is the codes)."""
        target = self.cache_path(kind, generation)
        try:
            if not target.exists():
                codes.save(target)
            self._remove_old_caches(kind, generation)
        except OSError as exc:  # e.g. a read-only archive: searching still works from memory
            log.warning("could not save the search cache in %s: %s", self.path, exc)

    def close(self) -> None:
        """Nothing held open."""

    def _remove_old_caches(self, kind: str, generation: int) -> None:
        """Caches of other kinds or older generations (a newer one, saved by another process, is kept)."""
        for f in self.path.glob("cache-*.faiss"):
            m = _CACHE_RE.fullmatch(f.name)
            if m is None or m["kind"] != kind or int(m["generation"]) < generation:
                f.unlink(missing_ok=True)
        for f in self.path.glob(".cache-*.tmp"):  # from writes killed midway
            if time.time() - f.stat().st_mtime > _STALE_TMP_AGE:
                f.unlink(missing_ok=True)
