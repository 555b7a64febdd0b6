"""One search path: query vectors -> Hamming shortlist (filters inside) -> re-rank -> tie-break -> top k.

* The query becomes a packed code and, where it has one, an int8 descriptor
  (an indexed id: the stored ones; an image: encoded; a bare code: no descriptor,
  so Hamming order only).
* The shortlist comes from faiss (no filter) or from the in-memory table (a label
  filter: exact Hamming over the allowed rows); a radius keeps everything within it.
* :func:`rshash.ranking.two_stage_order` orders it; metadata is read for the final k only.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Iterable, Sequence

import numpy as np

from ..codes import pack_codes, unpack_codes
from ..ranking import DEFAULT_SHORTLIST, DEFAULT_WEIGHT, quantize_descriptors, rerank_scores, two_stage_order
from .backends.base import CodeBackend
from .vectors import VectorTable

if TYPE_CHECKING:
    from .live import LiveCodes
    from .store import Store


@dataclass(frozen=True)
class Hit:
    """One search result, best first."""

    rank: int
    id: int
    distance: int  # Hamming distance to the query's code
    path: str
    label: str | None
    score: float  # the ranking score (lower is better): re-rank blend, or distance / bits without re-rank
    similarity: float | None = None  # descriptor cosine similarity (None without re-rank)


@dataclass(frozen=True)
class QueryVectors:
    """A query already turned into vectors: what every kind of query (id, image, place, examples) becomes."""

    code: np.ndarray  # packed uint8 (bits/8,)
    descriptor: np.ndarray | None  # int8 (dims,); None: Hamming order only
    exclude: tuple[int, ...] = ()  # indexed ids the query is made of (never returned)


def combine_examples(examples: Sequence[QueryVectors], bits: int) -> QueryVectors:
    """Several positive examples as one query: the majority vote of each code bit (a tie takes the first
    example's bit) and the mean of the L2-normalised descriptors, re-quantised (no descriptor if any example
    has none). The examples' own ids are excluded from the results."""
    if not examples:
        raise ValueError("no examples to combine")
    if len(examples) == 1:
        return examples[0]
    codes = unpack_codes(np.stack([np.asarray(e.code, dtype=np.uint8) for e in examples]), bits)
    votes = codes.sum(axis=0, dtype=np.int64) * 2
    code = np.where(votes == len(examples), codes[0], votes > len(examples))
    descriptor = None
    if all(e.descriptor is not None for e in examples):
        d = np.stack([np.asarray(e.descriptor, dtype=np.float32) for e in examples])
        d /= np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-12)
        descriptor = quantize_descriptors(d.mean(axis=0, keepdims=True))[0]
    exclude = tuple(dict.fromkeys(i for e in examples for i in e.exclude))
    return QueryVectors(pack_codes(code[None])[0], descriptor, exclude)


@dataclass(frozen=True)
class SearchParams:
    """How one search ranks; every field is per call (nothing process-wide)."""

    k: int | None = 20  # None: no limit (with a radius)
    radius: int | None = None  # every item within this Hamming distance, inclusive
    rerank: bool = True
    labels: Sequence[str | None] | None = None  # keep only items with one of these labels (None: unlabelled)
    exclude: Sequence[int] = field(default_factory=tuple)  # ids never returned (a query by id: itself)
    prefer: int | None = None  # an id that wins exact ties (a query file's own indexed item)
    shortlist: int = DEFAULT_SHORTLIST
    weight: float = DEFAULT_WEIGHT

    def check(self, bits: int) -> None:
        if self.k is not None and self.k < 1:
            raise ValueError(f"k must be >= 1, got {self.k}")
        if self.radius is not None and not 0 <= self.radius <= bits:
            raise ValueError(f"radius must be in 0..{bits} (the code length), got {self.radius}")
        if self.shortlist < 1:
            raise ValueError(f"shortlist must be >= 1, got {self.shortlist}")


@dataclass(frozen=True)
class Ranked:
    """Ids in result order with their Hamming distance, score and similarity."""

    ids: np.ndarray
    distances: np.ndarray
    scores: np.ndarray
    similarities: np.ndarray | None


def candidates(
    code: np.ndarray, params: SearchParams, codes: CodeBackend, table: VectorTable, allowed: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """``(ids, Hamming distances)`` of the shortlist (or of everything within the radius).

    The shortlist is the ``max(shortlist, k)`` smallest ``(distance, id)`` pairs left after the exclusions, on
    every path (a backend returns exactly those of what it scans; see :mod:`.backends.base`)."""
    excluded = np.asarray(params.exclude, dtype=np.int64)
    size = max(params.shortlist, params.k or 0)
    if allowed is not None:  # filtered: exact Hamming over the allowed rows of the table
        pos = table.positions(allowed)
        ids, dist = table.ids[pos], table.hamming(code, pos)
    elif params.radius is not None:
        dist, ids = codes.range_search(code, params.radius)
    else:
        dist, ids = codes.search(code, size + len(excluded))
    keep = ~np.isin(ids, excluded)
    if params.radius is not None:
        keep &= dist <= params.radius
    ids, dist = ids[keep], dist[keep]
    if params.radius is None and len(ids) > size:
        first = np.lexsort((ids, dist))[:size]
        ids, dist = ids[first], dist[first]
    return ids.astype(np.int64), dist.astype(np.int32)


def rank(
    ids: np.ndarray, dist: np.ndarray, descriptor: np.ndarray | None, params: SearchParams, table: VectorTable,
    bits: int,
) -> Ranked:
    """Order candidates by :func:`two_stage_order` and cut to k."""
    rerank = params.rerank and descriptor is not None
    sim = table.similarity(descriptor, table.positions(ids)) if rerank and len(ids) else None
    if sim is not None and len(sim) != len(ids):  # a row removed between the shortlist and now
        known = np.isin(ids, table.ids)
        ids, dist = ids[known], dist[known]
    order = two_stage_order(dist[None], ids, bits, None if sim is None else sim[None], rerank=rerank,
                            shortlist=max(params.shortlist, params.k or 0) if params.radius is None else len(ids) or 1,
                            weight=params.weight, prefer=params.prefer)[0]
    order = order[: params.k] if params.k is not None else order
    ids, dist = ids[order], dist[order]
    if sim is None:
        return Ranked(ids, dist, dist / bits, None)
    sim = sim[order]
    return Ranked(ids, dist, rerank_scores(dist, sim, bits, params.weight), sim)


class Searcher:
    """Searches over an index's live structures: vectors -> candidates -> re-rank -> hits.

    Filters (labels, allowed ids) are applied inside the candidate step; metadata is read for the final
    results only. Shared by the :class:`~.archive.Index` facade and :mod:`rshash.geo.search`.
    """

    def __init__(self, store: "Store", live: "LiveCodes", bits: int):
        self._store = store
        self._live = live
        self.bits = bits

    def search(self, vectors: QueryVectors, params: SearchParams, *, ids: Iterable[int] | None = None,
               prefer: int | None = None) -> list[Hit]:
        """The results of ``params`` for ``vectors`` (checked), only among ``ids`` if given."""
        params.check(self.bits)
        params = replace(params, exclude=vectors.exclude, prefer=prefer)
        allowed = self._store.ids_with_labels(params.labels) if params.labels is not None else None
        if ids is not None:
            chosen = np.unique(np.fromiter((int(i) for i in ids), dtype=np.int64))
            allowed = chosen if allowed is None else np.intersect1d(allowed, chosen)
        with self._live.reading() as (codes, table):  # shared with other searches; parameters are per call
            found, dist = candidates(vectors.code, params, codes, table, allowed)
        return self.hits(rank(found, dist, vectors.descriptor, params, table, self.bits))

    def hits(self, ranked: Ranked) -> list[Hit]:
        """Attach paths and labels to the final results only (a row removed meanwhile is dropped)."""
        metas = self._store.get(ranked.ids.tolist())
        hits = []
        for i, (id_, d, score) in enumerate(zip(ranked.ids.tolist(), ranked.distances.tolist(), ranked.scores.tolist())):
            if id_ in metas:
                sim = None if ranked.similarities is None else float(ranked.similarities[i])
                m = metas[id_]
                hits.append(Hit(len(hits) + 1, id_, int(d), m.path, m.label, float(score), sim))
        return hits
