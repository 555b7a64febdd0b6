"""Ties at the shortlist boundary: ``SearchParams.ties`` re-ranks the candidates tied at its last distance."""

from __future__ import annotations

import numpy as np
import pytest

from rshash.index.backends.faiss import CodeIndex
from rshash.index.search import SearchParams, candidates, rank
from rshash.index.vectors import VectorTable
from rshash.ranking import descriptor_norms


@pytest.fixture()
def tied():
    """40 items with the query's code (distance 0) and 10 at distance 1; the item most like the query's
    descriptor is the last of the tied ones (id 39), so the id order leaves it out of a 5-item shortlist."""
    rng = np.random.default_rng(0)
    codes = np.zeros((50, 8), dtype=np.uint8)
    codes[40:, 0] = 1
    descriptors = rng.integers(-127, 128, (50, 16)).astype(np.int8)
    query = rng.integers(-127, 128, 16).astype(np.int8)
    descriptors[39] = query
    ids = np.arange(50, dtype=np.int64)
    table = VectorTable(ids, codes, descriptors, descriptor_norms(descriptors))
    return CodeIndex.build("flat", 64, ids, codes), table, np.zeros(8, dtype=np.uint8), query


def search(tied, **params):
    index, table, code, query = tied
    p = SearchParams(k=3, shortlist=5, weight=0.5, **params)
    ids, dist = candidates(code, p, index, table, None)
    return ids, rank(ids, dist, query, p, table, 64)


def test_without_ties_the_shortlist_is_the_first_ids(tied):
    ids, ranked = search(tied)
    assert sorted(ids) == [0, 1, 2, 3, 4] and 39 not in ranked.ids


def test_ties_bring_every_tied_candidate_into_the_rerank_and_no_farther_one(tied):
    ids, ranked = search(tied, ties=100)
    assert sorted(ids) == list(range(40))  # all at distance 0, none of those at distance 1
    assert ranked.ids[0] == 39 and ranked.similarities[0] == pytest.approx(1.0)


def test_ties_are_capped(tied):
    ids, _ = search(tied, ties=10)
    assert sorted(ids) == list(range(15))


def test_negative_ties_are_refused():
    with pytest.raises(ValueError, match="ties"):
        SearchParams(ties=-1).check(64)


@pytest.mark.parametrize("kind", ["flat", "ivf"])
@pytest.mark.parametrize("exclude, ties, shortlist", [((), 0, 30), ((3, 77, 150), 0, 30), ((), 40, 30),
                                                      ((5,), 0, 500)])
def test_a_small_index_scanned_from_memory_finds_what_the_backend_finds(monkeypatch, kind, exclude, ties, shortlist):
    """Up to TABLE_SCAN_ROWS items the shortlist comes from a scan of the in-memory table, not from faiss: the
    same candidates (the smallest (distance, id) pairs, ties at the boundary included) and the same results."""
    import rshash.index.search as search_module

    rng = np.random.default_rng(1)
    n = 300
    codes = (rng.random((n, 8)) < 0.1).astype(np.uint8) * 255  # few distinct codes: ties everywhere
    ids = np.sort(rng.choice(10_000, n, replace=False)).astype(np.int64)
    descriptors = rng.integers(-127, 128, (n, 16)).astype(np.int8)
    table = VectorTable(ids, codes, descriptors, descriptor_norms(descriptors))
    backend = CodeIndex.build(kind, 64, ids, codes)
    code, query = codes[10], descriptors[10]
    params = SearchParams(k=20, shortlist=shortlist, weight=0.5, exclude=tuple(int(ids[i]) for i in exclude),
                          ties=ties)

    def run():
        found, dist = candidates(code, params, backend, table, None)
        return found, dist, rank(found, dist, query, params, table, 64)

    assert n <= search_module.TABLE_SCAN_ROWS
    scanned = run()
    monkeypatch.setattr(search_module, "TABLE_SCAN_ROWS", 0)  # the backend's path
    searched = run()
    for a, b in zip(scanned[:2], searched[:2]):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(scanned[2].ids, searched[2].ids)
    np.testing.assert_array_equal(scanned[2].scores, searched[2].scores)


def test_asking_a_backend_for_more_than_it_returns_scans_the_table(monkeypatch):
    """A backend that returns at most max_k per search (Milvus: 16 384) is not asked for more: the table is
    scanned instead, with the same candidates as an unbounded backend gives."""
    import rshash.index.search as search_module

    rng = np.random.default_rng(2)
    ids = np.arange(200, dtype=np.int64) * 3
    codes = rng.integers(0, 256, (200, 8), dtype=np.uint8)
    descriptors = rng.integers(-127, 128, (200, 16)).astype(np.int8)
    table = VectorTable(ids, codes, descriptors, descriptor_norms(descriptors))
    backend = CodeIndex.build("flat", 64, ids, codes)
    monkeypatch.setattr(search_module, "TABLE_SCAN_ROWS", 0)  # a "large" index
    params = SearchParams(k=20, shortlist=60, exclude=(9,))
    unbounded = candidates(codes[3], params, backend, table, None)
    asked = []
    original = CodeIndex.search
    monkeypatch.setattr(CodeIndex, "search", lambda self, *a, **kw: asked.append(a[1]) or original(self, *a, **kw))
    monkeypatch.setattr(backend, "max_k", 40, raising=False)
    bounded = candidates(codes[3], params, backend, table, None)
    assert asked == []  # never asked for 61 codes
    for a, b in zip(unbounded, bounded):
        np.testing.assert_array_equal(a, b)
    monkeypatch.setattr(backend, "max_k", 100, raising=False)
    candidates(codes[3], params, backend, table, None)
    assert asked == [61]  # within its limit: asked
