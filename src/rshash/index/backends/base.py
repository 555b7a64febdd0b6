"""What every code backend answers: :class:`CodeBackend` (one index of codes) and :class:`CodeBackends` (the source
that builds, reloads, persists and closes them), plus the IVF probe rule both IVF implementations share.

The array contract follows faiss's (one contract, so the kinds and backends can replace one another):

* codes are packed ``uint8`` arrays, ``bits / 8`` bytes per code, the first bit in the high bit of byte 0
  (:func:`rshash.codes.pack_codes`); a query is one such code;
* ids are ``int64`` (the SQLite row ids), distances ``int32`` Hamming distances;
* results are 1-D ``(distances, ids)``, nearest first, ties by id, with faiss's ``-1`` padding removed.

The tie rule at the shortlist boundary is part of the contract: a search for ``k`` returns the ``k`` smallest
``(distance, id)`` pairs of the codes it scans (every code for an exact kind, the lists or buckets probed for an
approximate one), so codes tied at the ``k``-th distance are cut by id on every kind and backend, whatever order
they were stored in (:func:`k_smallest`).

Implementations: :mod:`.faiss` (``flat``, ``multihash``, ``ivf``; cached beside ``meta.sqlite``) and :mod:`.milvus`
(``flat``, ``ivf``; a Milvus collection). Both derive their codes from SQLite, the source of truth.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Protocol

import numpy as np
from numpy.typing import NDArray

if TYPE_CHECKING:
    from ..vectors import VectorTable

Ids = NDArray[np.int64]
Codes = NDArray[np.uint8]
Distances = NDArray[np.int32]

#: Fewest lists probed per IVF query, and codes scanned per requested result: on clustered
#: 64-bit codes these give recall@20 >= 0.99 from 100k (where ~20k codes must be scanned)
#: to 10M (where 16 lists of ~2.4k codes suffice); see benchmarks/search_speed.py.
IVF_NPROBE = 16
IVF_CANDIDATES_PER_RESULT = 1000
#: Codes per IVF list aimed for, and the most lists (k-means training time grows with lists^2).
IVF_CODES_PER_LIST = 128
IVF_MAX_LISTS = 4096
#: A search for k first asks for ``2k + TIE_MARGIN`` codes: on clustered 64-bit codes (10^6, k = 20 to 1000) that
#: holds every code tied at the k-th distance, so the tie rule rarely needs a second call.
TIE_MARGIN = 256


class CodeBackend(Protocol):
    """One index of packed codes under int64 ids (faiss :class:`~.faiss.CodeIndex` and its kinds,
    :class:`~.milvus.MilvusCodes`).

    Searches may run from many threads at once and set nothing on the index (per-call settings are arguments);
    :meth:`add` and :meth:`remove` must not overlap searches.
    """

    bits: int
    #: The most results one search returns (None: no limit); asking for more is answered by a scan of the
    #: vector table (:func:`rshash.index.search.candidates`).
    max_k: int | None

    @property
    def ntotal(self) -> int:
        """Codes held."""
        ...

    def add(self, ids: Ids, codes: Codes) -> None:
        """Add ``codes`` (``uint8 (N, bits/8)``) under ``ids``."""
        ...

    def remove(self, ids: Ids) -> bool:
        """Remove ``ids``; ``False`` when this kind cannot (the caller rebuilds instead)."""
        ...

    def search(self, query: Codes, k: int, nprobe: int | None = None) -> tuple[Distances, Ids]:
        """The ``k`` smallest ``(distance, id)`` pairs of the codes scanned for one packed code:
        ``(distances int32, ids int64)``, nearest first, ties by id (every code tied at the ``k``-th distance with a
        smaller id than one returned is returned too).

        ``nprobe``: IVF lists probed by this call only (``None``: chosen by :func:`ivf_probes`; other kinds
        ignore it). Falls back to an exact scan when the lists probed hold fewer than ``k`` codes.
        """
        ...

    def range_search(self, query: Codes, radius: int) -> tuple[Distances, Ids]:
        """Every code within Hamming distance ``radius`` (inclusive), exactly, nearest first, ties by id."""
        ...

    def matches(self, ids: Ids, codes: Codes) -> bool:
        """Whether this index holds exactly ``codes`` under ``ids`` (sorted ids): validates a reloaded index."""
        ...

    def can_update(self, removing: int, total: int) -> bool:
        """Whether removing ``removing`` codes and adding up to ``total`` in place keeps this structure complete
        and suited (else the caller rebuilds it)."""
        ...

    def needs_rebuild(self) -> bool:
        """Whether the structure no longer suits the number of codes it holds."""
        ...

    def save(self, path: str | Path) -> None:
        """Write the index to ``path`` atomically (a backend that persists itself writes nothing)."""
        ...


class CodeBackends(Protocol):
    """Where the :class:`CodeBackend` of one index directory comes from (:class:`~.faiss.FaissBackends`,
    :class:`~.milvus.MilvusBackend`); used by :class:`~..live.LiveCodes`."""

    name: str
    #: The index lives outside this process, shared by every process of the index (Milvus): only a writer
    #: changes it; a searching process replays SQLite's changes into its own vector table only.
    shared: bool

    def build(self, kind: str, bits: int, ids: Ids, codes: Codes) -> CodeBackend:
        """An index of ``kind`` holding exactly ``codes`` under ``ids``."""
        ...

    def load(self, kind: str, bits: int, generation: int) -> CodeBackend | None:
        """The persisted index of ``kind`` for ``generation``, if any (the caller checks it with ``matches``)."""
        ...

    def save(self, codes: CodeBackend, kind: str, generation: int, table: "VectorTable | None" = None) -> None:
        """Persist ``codes``, the index of ``kind`` at ``generation``, and drop older ones (best effort); ``table``:
        the ids and codes it holds (a shared backend records what it holds from them)."""
        ...

    def close(self) -> None:
        """Release connections (the indexes built stay usable until then)."""
        ...


def ivf_lists(n: int) -> int:
    """A power-of-two list count for ``n`` codes (1 for tiny indexes)."""
    target = max(1, min(IVF_MAX_LISTS, n // IVF_CODES_PER_LIST))
    return 1 << (target.bit_length() - 1)


def ivf_probes(ntotal: int, nlist: int, k: int, nprobe: int | None = None) -> int:
    """IVF lists to probe for ``k`` results among ``ntotal`` codes in ``nlist`` lists: ``nprobe`` if given (within
    ``1..nlist``), else enough lists to scan ``IVF_CANDIDATES_PER_RESULT * k`` codes, at least ``IVF_NPROBE``."""
    if nprobe is not None:
        return max(1, min(nprobe, nlist))
    per_list = max(1.0, ntotal / nlist)
    return int(min(nlist, max(IVF_NPROBE, math.ceil(IVF_CANDIDATES_PER_RESULT * k / per_list))))


def empty_result() -> tuple[Distances, Ids]:
    return np.zeros(0, dtype=np.int32), np.zeros(0, dtype=np.int64)


def by_distance_then_id(distances: np.ndarray, ids: np.ndarray) -> tuple[Distances, Ids]:
    """``(distances, ids)`` sorted by distance, then id, as ``int32`` / ``int64``."""
    order = np.lexsort((ids, distances))
    return distances[order].astype(np.int32), ids[order].astype(np.int64)


def k_smallest(fetch: Callable[[int], tuple[np.ndarray, np.ndarray]], k: int,
               most: int | None = None) -> tuple[Distances, Ids] | None:
    """The ``k`` smallest ``(distance, id)`` pairs of what one search scans: the tie rule of :class:`CodeBackend`.

    ``fetch(n)`` returns the ``n`` nearest of the codes the search scans, ties in any order (as faiss and Milvus
    do), padding removed, fewer once it has returned them all. It is asked for ``2k + TIE_MARGIN``, then for twice
    as many while the farthest it returned is at the ``k``-th distance (a code tied there may be missing);
    ``most``: the most it may be asked for. ``None`` when ``fetch(most)`` still ends at the ``k``-th distance (the
    caller scans exactly instead); never without ``most``.
    """
    n = 2 * k + TIE_MARGIN if most is None else min(most, 2 * k + TIE_MARGIN)
    while True:
        distances, ids = fetch(n)
        if len(ids) < n:  # everything scanned is in
            break
        if len(ids) > k and distances.max() > np.partition(distances, k - 1)[k - 1]:  # every tie of the k-th is in
            break
        if most is not None and n >= most:
            return None
        n = 2 * n if most is None else min(most, 2 * n)
    distances, ids = by_distance_then_id(distances, ids)
    return distances[:k], ids[:k]
