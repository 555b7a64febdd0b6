"""One search path: query vectors -> Hamming shortlist (filters inside) -> re-rank -> tie-break -> top k.

* The query becomes a packed code and, where it has one, an int8 descriptor
  (an indexed id: the stored ones; an image: encoded; a bare code: no descriptor,
  so Hamming order only).
* The shortlist comes from faiss (no filter) or from the in-memory table (a label
  filter: exact Hamming over the allowed rows); a radius keeps everything within it.
* :func:`rshash.ranking.two_stage_order` orders it; metadata is read for the final k only.
* Several examples (at most :data:`MAX_EXAMPLES`): the union of each example's shortlist (filters applied),
  re-ranked against all of them (score: the mean over examples of the two-stage score; distance shown: the
  smallest over examples). With one example this is the single-query path above, unchanged.

Bounds: a radius keeps everything within it, but only the ``max(shortlist, offset + k)`` nearest (Hamming,
then id) are re-ranked (with ``k`` given, the rest is cut before); similarities are computed in chunks of
:data:`SIMILARITY_CHUNK` rows; ``offset`` pages through the re-ranked window (``offset + k <= shortlist``), so
the order is the same on every page.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Iterable, Sequence

import numpy as np

from ..ranking import DEFAULT_SHORTLIST, DEFAULT_WEIGHT, cosine_similarity, descriptor_norms, rerank_scores, two_stage_order
from ..codes import hamming_matrix
from ..diffusion import DEFAULT_DIFFUSION, Diffusion, best_positions, diffused_scores
from ..feedback import FEEDBACK_BACKGROUND, FEEDBACK_BACKGROUND_WEIGHT, FEEDBACK_HALF, FEEDBACK_WEIGHT, Feedback, blend, classifier_weight, features, fit_classifier, positive_scores
from ..feedback import decision as decide
from .backends.base import CodeBackend
from .vectors import VectorTable

#: The most examples one search takes (each adds its own shortlist to the candidates).
MAX_EXAMPLES = 100
#: Rows whose descriptor similarity (or Hamming distance, for several examples) is computed at once.
SIMILARITY_CHUNK = 16384
#: An index of at most this many items is searched by an exact Hamming scan of its in-memory vector table
#: (numpy popcounts: ~0.05 ms at 2100 items, where a faiss call for the 1000-item shortlist cost 0.4 ms): every
#: kind's answer there is the exact one or an approximation of it (an IVF search for the default shortlist probes
#: every list up to 10^6 items).
TABLE_SCAN_ROWS = 1 << 16
#: A search asking a backend for more codes than it returns per search (``CodeBackend.max_k``: Milvus 16 384; a
#: deep page, many ties) scans the vector table too, instead of streaming the whole collection out of Milvus.
#: A search with negative examples scores every item of an index up to this size (every allowed item, e.g. an
#: area of interest, up to :data:`EXHAUSTIVE_ALLOWED`), besides the union of the positives' shortlists.
EXHAUSTIVE_ITEMS = 100_000
EXHAUSTIVE_ALLOWED = 1_000_000

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


def as_examples(vectors: "QueryVectors | Sequence[QueryVectors]") -> tuple[QueryVectors, ...]:
    """One query or several examples as a checked tuple of examples (1 to :data:`MAX_EXAMPLES`)."""
    examples = (vectors,) if isinstance(vectors, QueryVectors) else tuple(vectors)
    check_examples(len(examples))
    return examples


def check_examples(n: int) -> None:
    """Refuse no examples or more than :data:`MAX_EXAMPLES` (checked before any example is read or encoded)."""
    if n < 1:
        raise ValueError("no examples given")
    if n > MAX_EXAMPLES:
        raise ValueError(f"at most {MAX_EXAMPLES} examples per search, got {n}")


@dataclass(frozen=True)
class SearchParams:
    """How one search ranks; every field is per call (nothing process-wide)."""

    k: int | None = 20  # None: no limit (only with a radius)
    radius: int | None = None  # every item within this Hamming distance, inclusive
    rerank: bool = True
    labels: Sequence[str | None] | None = None  # keep only items with one of these labels (None: unlabelled)
    exclude: Sequence[int] = field(default_factory=tuple)  # ids never returned (a query by id: itself)
    prefer: int | None = None  # an id that wins exact ties (a query file's own indexed item)
    shortlist: int = DEFAULT_SHORTLIST
    weight: float | None = None  # descriptor weight of the re-rank (None: the searcher's, i.e. the model's)
    offset: int = 0  # results skipped (a page: offset + k within the re-ranked window)
    ties: int = 0  # also re-rank up to this many more candidates tied at the shortlist's last distance

    @property
    def rerank_weight(self) -> float:
        """The weight the re-rank uses: the one given, else a labelled model's default (a searcher fills in its
        model's before ranking)."""
        return DEFAULT_WEIGHT if self.weight is None else self.weight

    @property
    def window(self) -> int:
        """How many candidates are re-ranked: the shortlist, or more when ``offset + k`` asks for more."""
        return max(self.shortlist, self.offset + (self.k or 0))

    def check(self, bits: int) -> None:
        if self.k is not None and self.k < 1:
            raise ValueError(f"k must be >= 1, got {self.k}")
        if self.k is None and self.radius is None:
            raise ValueError("k=None (no limit) needs a radius; give k")
        if self.offset < 0:
            raise ValueError(f"offset must be >= 0, got {self.offset}")
        if self.ties < 0:
            raise ValueError(f"ties must be >= 0, got {self.ties}")
        if self.offset and (self.k is None or self.offset + self.k > self.shortlist):
            raise ValueError(f"offset + k must be within the re-ranked window of {self.shortlist} results, "
                             f"got offset {self.offset} and k {self.k}")
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

    The shortlist is the ``max(shortlist, offset + k)`` smallest ``(distance, id)`` pairs left after the
    exclusions, nearest first, on every path (a backend returns exactly those of what it scans; see
    :mod:`.backends.base`); with a radius and a ``k``, those of the items within it (``k=None``: all within it)."""
    excluded = np.asarray(params.exclude, dtype=np.int64)
    size = params.window
    ties = params.ties if params.radius is None else 0
    asked = size + ties + len(excluded)
    beyond = codes.max_k is not None and asked > codes.max_k  # more than the backend returns per search
    scan = allowed is None and params.radius is None and (len(table) <= TABLE_SCAN_ROWS or beyond)
    if allowed is not None:  # filtered: exact Hamming over the allowed rows of the table
        pos = table.positions(allowed)
        ids, dist = table.ids[pos], table.hamming(code, pos)
    elif scan:  # a small index or a large ask: every kind's exact answer, from the vector table
        ids, dist = table.ids, table.hamming(code)
    elif params.radius is not None:
        dist, ids = codes.range_search(code, params.radius)
    else:
        dist, ids = codes.search(code, asked)
    keep = ~np.isin(ids, excluded)
    if params.radius is not None:
        keep &= dist <= params.radius
    ids, dist = ids[keep], dist[keep]
    if (params.radius is None or params.k is not None) and len(ids) > size:  # a radius: cut before re-ranking
        near = np.flatnonzero(dist <= np.partition(dist, size - 1)[size - 1])  # the size nearest and their ties
        first = near[np.lexsort((ids[near], dist[near]))]
        first = first[: _tied_window(dist[first], size, ties)]
        ids, dist = ids[first], dist[first]
    elif scan or allowed is not None:  # nearest first, ties by id, as a backend returns them
        first = np.lexsort((ids, dist))
        ids, dist = ids[first], dist[first]
    return ids.astype(np.int64), dist.astype(np.int32)


def _tied_window(sorted_dist: np.ndarray, size: int, ties: int) -> int:
    """How many of the candidates (sorted by distance) are re-ranked: ``size``, plus up to ``ties`` more at the
    ``size``-th one's distance."""
    if not ties or len(sorted_dist) <= size:
        return min(size, len(sorted_dist))
    bound = sorted_dist[size - 1]
    return min(size + ties, int(np.searchsorted(sorted_dist, bound, side="right")))


def similarities(table: VectorTable, descriptors: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """``(E, n)`` cosine similarity of ``E`` int8 descriptors to the rows at ``positions``, in chunks of
    :data:`SIMILARITY_CHUNK` rows (the float copy of the rows is bounded whatever ``n`` is)."""
    descriptors = np.atleast_2d(descriptors)
    out = np.empty((len(descriptors), len(positions)), dtype=np.float32)
    for start in range(0, len(positions), SIMILARITY_CHUNK):
        pos = positions[start : start + SIMILARITY_CHUNK]
        if len(descriptors) == 1:  # the single-query path: the same arithmetic as before chunking
            out[0, start : start + len(pos)] = table.similarity(descriptors[0], pos)
        else:
            out[:, start : start + len(pos)] = cosine_similarity(descriptors, table.descriptors[pos], table.norms[pos])
    return out


def _page(params: SearchParams, n: int) -> slice:
    return slice(params.offset, None if params.k is None else min(n, params.offset + params.k))


def rank(
    ids: np.ndarray, dist: np.ndarray, descriptor: np.ndarray | None, params: SearchParams, table: VectorTable,
    bits: int,
) -> Ranked:
    """Order candidates by :func:`two_stage_order` (the ``window`` nearest re-ranked) and cut to the page."""
    rerank = params.rerank and descriptor is not None
    if rerank and len(ids):
        known = table.contains(ids)  # a row removed between the shortlist and now
        ids, dist = ids[known], dist[known]
    sim = None
    window = params.window
    if rerank and len(ids):  # similarities for the re-ranked window only
        other = ids != params.prefer if params.prefer is not None else np.zeros(len(ids), dtype=bool)
        head = np.lexsort((ids, other, dist))
        if params.ties and params.radius is None:
            window = _tied_window(dist[head], window, params.ties)
        head = head[:window]
        sim = np.zeros(len(ids), dtype=np.float32)
        sim[head] = similarities(table, descriptor, table.positions(ids[head]))[0]
    order = two_stage_order(dist[None], ids, bits, None if sim is None else sim[None], rerank=rerank,
                            shortlist=window, weight=params.rerank_weight, prefer=params.prefer)[0]
    order = order[_page(params, len(order))]
    ids, dist = ids[order], dist[order]
    if sim is None:
        return Ranked(ids, dist, dist / bits, None)
    sim = sim[order]
    if len(order) > window:  # past the window (a radius without k): similarities of these results only
        sim[window :] = similarities(table, descriptor, table.positions(ids[window :]))[0]
    return Ranked(ids, dist, rerank_scores(dist, sim, bits, params.rerank_weight), sim)


def rank_feedback(
    positives: Sequence[QueryVectors], negatives: Sequence[QueryVectors], params: SearchParams, codes: CodeBackend,
    table: VectorTable, allowed: np.ndarray | None, bits: int, *, half: int = FEEDBACK_HALF,
    background: int = FEEDBACK_BACKGROUND, background_weight: float = FEEDBACK_BACKGROUND_WEIGHT,
    diffusion: Diffusion | None = DEFAULT_DIFFUSION,
) -> tuple[Ranked, Feedback]:
    """Positive and negative examples (relevance feedback, :mod:`rshash.feedback`).

    Candidates: the union of the positives' shortlists, and every item when the index holds at most
    :data:`EXHAUSTIVE_ITEMS` (every allowed one, up to :data:`EXHAUSTIVE_ALLOWED`); the examples' own ids never.
    Score (lower is better, standardised over the candidates: 0 is the mean candidate, -2 two standard
    deviations better): the positives' mean two-stage score, blended with a logistic regression fitted on the
    examples' codes and descriptors when there are negatives (the descriptor block left out when an example
    has none or re-rank is off);
    distance: the smallest to a positive; similarity: the mean to the positives. Ties by score, then
    distance, then id. A radius keeps the candidates within it of some positive. ``half``: see
    :func:`rshash.feedback.classifier_weight`. ``diffusion`` (None: off): the best ``diffusion.items``
    candidates by the positives' score are scored with that score replaced by their relevance diffused over
    the candidates' neighbour graph (:mod:`rshash.diffusion`; descriptors, else codes), blended with the
    classifier as above and standardised over them; the other candidates follow them, in the positives'
    order."""
    whole = allowed is None and len(table) <= EXHAUSTIVE_ITEMS
    if whole:
        ids = table.ids  # every item: the shortlists are in it
    elif allowed is not None and len(allowed) <= EXHAUSTIVE_ALLOWED:
        ids = np.unique(np.asarray(allowed, dtype=np.int64))
        ids = ids[table.contains(ids)]
    else:
        found = [candidates(e.code, params, codes, table, allowed)[0] for e in positives]
        ids = np.unique(np.concatenate(found))
        ids = ids[table.contains(ids)]
    ids = ids[~np.isin(ids, np.asarray(params.exclude, dtype=np.int64))]
    if not len(ids):  # nothing to rank (an empty area, every item an example)
        empty = np.zeros(0, np.int64)
        return Ranked(empty, empty.astype(np.int32), empty.astype(np.float64), None), Feedback(len(positives),
                                                                                               len(negatives), 0.0)
    examples = list(positives) + list(negatives)
    with_desc = params.rerank and all(e.descriptor is not None for e in examples)
    mark_desc = (lambda es: np.stack([np.asarray(e.descriptor) for e in es])) if with_desc else (lambda es: None)
    mark_codes = lambda es: np.stack([np.asarray(e.code, dtype=np.uint8) for e in es])  # noqa: E731
    pos = table.positions(ids)
    weights = None
    if negatives:
        rows = np.random.default_rng(0).choice(pos, size=min(background, len(pos)), replace=False)
        weights = fit_classifier(features(mark_codes(positives), mark_desc(positives), bits),
                                 features(mark_codes(negatives), mark_desc(negatives), bits),
                                 features(table.codes[rows], table.descriptors[rows] if with_desc else None, bits),
                                 background_weight)
    query_codes = mark_codes(positives)
    pos_desc = mark_desc(positives)
    # With diffusion the classifier scores the diffused candidates only (chosen by the positives' score): at 10^5
    # candidates its pass over every code costs as much as the diffusion itself.
    every_decision = weights is not None and diffusion is None
    queries = mean_norm = None
    if with_desc:
        # The mean over positives of the two-stage score is linear in each positive's similarity, and the mean of
        # the cosines to x is (the mean of the unit positive descriptors) . x / |x|: one row for all positives
        # (cosine_similarity divides that row by its norm: multiplied back below). The classifier's descriptor
        # block rides along as a second row: one conversion of each chunk of stored descriptors.
        unit = pos_desc.astype(np.float32) / descriptor_norms(pos_desc)[:, None]
        mean_unit = unit.mean(axis=0)
        mean_norm = float(np.linalg.norm(mean_unit))
        queries = np.vstack([mean_unit, weights[0][: pos_desc.shape[1]]]) if every_decision else mean_unit[None]
    dist = np.empty(len(ids), dtype=np.int32)
    base = np.empty(len(ids), dtype=np.float64)
    decision = np.zeros(len(ids), dtype=np.float64)
    sim = np.empty(len(ids), dtype=np.float32) if with_desc else None
    # a table scored whole: every row's similarities in one product with its cached unit descriptors
    every = (table.unit_descriptors @ (queries / descriptor_norms(queries)[:, None]).T).T if with_desc and whole \
        else None
    for start in range(0, len(ids), SIMILARITY_CHUNK):
        chunk = slice(start, start + SIMILARITY_CHUNK)
        rows = table.codes[pos[chunk]]
        d = hamming_matrix(query_codes, rows)  # (P, n)
        dist[chunk] = d.min(axis=0)
        if not with_desc:
            s_all = None
        elif every is not None:
            s_all = every[:, pos[chunk]]
        else:
            s_all = cosine_similarity(queries, table.descriptors[pos[chunk]], table.norms[pos[chunk]])
        s = None if s_all is None else s_all[:1] * mean_norm  # (1, n): the mean similarity to the positives
        base[chunk] = positive_scores(d, s, bits, params.rerank_weight)
        if s is not None:
            sim[chunk] = s[0]
        if every_decision:
            decision[chunk] = decide(rows, bits, *weights, None if s_all is None else s_all[1])
    if params.radius is not None:
        inside = dist <= params.radius
        ids, dist, base, decision, pos = ids[inside], dist[inside], base[inside], decision[inside], pos[inside]
        sim = None if sim is None else sim[inside]
    n_marks = 0 if weights is None else len(examples)
    used = Feedback(len(positives), len(negatives), 0.0 if weights is None else classifier_weight(n_marks, half))
    if diffusion is None or len(ids) < 2:
        if weights is not None and not every_decision:  # the few candidates diffusion would have scored
            decision = _decisions(table, pos, bits, weights, with_desc)
        score, _ = blend(base, decision, n_marks, half)  # standardised too: one find-all threshold fits all
    else:
        to_unit = lambda d: d.astype(np.float32) / descriptor_norms(d)[:, None]  # noqa: E731
        head = best_positions(base, diffusion.items)
        if with_desc:
            rows = table.unit_descriptors[pos[head]] if whole else to_unit(table.descriptors[pos[head]])
            marks = [unit] + ([to_unit(mark_desc(negatives))] if negatives else [])  # the positives' from above
        else:  # the codes' +-1 rows: their cosine is 1 - 2 Hamming / bits
            rows = features(table.codes[pos[head]], None, bits)
            marks = [features(mark_codes(es), None, bits) for es in (positives, negatives) if es]
        head_decision = np.zeros(len(head)) if weights is None else _decisions(table, pos[head], bits, weights,
                                                                               with_desc)
        score = diffused_scores(base, head_decision, head, rows, np.vstack(marks), len(positives), n_marks,
                                half, diffusion)
    wanted = len(ids) if params.k is None else min(len(ids), params.offset + params.k)
    head = np.arange(len(ids))
    if 0 < wanted < len(ids):  # only the page is ordered: every candidate scoring at most the wanted-th one
        head = np.flatnonzero(score <= np.partition(score, wanted - 1)[wanted - 1])
    order = head[np.lexsort((ids[head], dist[head], score[head]))][_page(params, len(head))]
    return Ranked(ids[order], dist[order], score[order], None if sim is None else sim[order]), used


def _decisions(table: VectorTable, pos: np.ndarray, bits: int, weights: tuple[np.ndarray, float],
               with_desc: bool) -> np.ndarray:
    """The classifier's decision values for the table rows at ``pos``."""
    w, b = weights
    cosine = None
    if with_desc:
        dims = table.descriptors.shape[1]
        cosine = cosine_similarity(w[None, :dims], table.descriptors[pos], table.norms[pos])[0]
    return decide(table.codes[pos], bits, w, b, cosine)


class Searcher:
    """Searches over an index's live structures: vectors -> candidates -> re-rank -> hits.

    Filters (labels, allowed ids) are applied inside the candidate step; metadata is read for the final
    results only. Shared by the :class:`~.archive.Index` facade and :mod:`rshash.geo.search`.
    """

    def __init__(self, store: "Store", live: "LiveCodes", bits: int, weight: float = DEFAULT_WEIGHT):
        self._store = store
        self._live = live
        self.bits = bits
        self.weight = weight  # the re-rank weight of searches that give none

    def search(self, vectors: QueryVectors | Sequence[QueryVectors], params: SearchParams, *,
               ids: Iterable[int] | None = None, prefer: int | None = None,
               negatives: Sequence[QueryVectors] = (), feedback: bool = False) -> list[Hit]:
        """The results of ``params`` for ``vectors`` (checked), only among ``ids`` if given.

        A sequence of several examples (at most :data:`MAX_EXAMPLES`) is an examples search
        (:func:`rank_feedback`); the ids they are made of are excluded. ``prefer`` (one example only) wins
        exact ties. ``negatives``: examples of what is not wanted (positives and negatives together at most
        :data:`MAX_EXAMPLES`); ``feedback``: an examples search also for one example without negatives. An
        examples search without a weight uses :data:`rshash.feedback.FEEDBACK_WEIGHT`."""
        examples = as_examples(vectors)
        negatives = tuple(negatives)
        check_examples(len(examples) + len(negatives))
        params.check(self.bits)
        exclude = tuple(dict.fromkeys(i for e in examples + negatives for i in e.exclude))
        default = FEEDBACK_WEIGHT if negatives or feedback or len(examples) > 1 else self.weight
        params = replace(params, exclude=exclude, prefer=prefer if len(examples) == 1 else None,
                         weight=default if params.weight is None else params.weight)
        allowed = self._store.ids_with_labels(params.labels) if params.labels is not None else None
        if ids is not None:
            chosen = np.unique(np.fromiter((int(i) for i in ids), dtype=np.int64))
            allowed = chosen if allowed is None else np.intersect1d(allowed, chosen)
        with self._live.reading() as (codes, table):  # shared with other searches; parameters are per call
            if negatives or feedback or len(examples) > 1:
                ranked, _ = rank_feedback(examples, negatives, params, codes, table, allowed, self.bits)
                return self.hits(ranked, params.offset)
            found, dist = candidates(examples[0].code, params, codes, table, allowed)
        return self.hits(rank(found, dist, examples[0].descriptor, params, table, self.bits), params.offset)

    def hits(self, ranked: Ranked, offset: int = 0) -> list[Hit]:
        """Attach paths and labels to the final results only (a row removed meanwhile is dropped); ranks
        count from ``offset + 1``."""
        metas = self._store.get(ranked.ids.tolist())
        hits = []
        for i, (id_, d, score) in enumerate(zip(ranked.ids.tolist(), ranked.distances.tolist(), ranked.scores.tolist())):
            if id_ in metas:
                sim = None if ranked.similarities is None else float(ranked.similarities[i])
                m = metas[id_]
                hits.append(Hit(offset + len(hits) + 1, id_, int(d), m.path, m.label, float(score), sim))
        return hits
