"""The code backends' tie rule at the shortlist boundary: a search for k returns the k smallest (distance, id)
pairs of what it scans, so codes tied at the k-th distance are cut by id on every kind (and on Milvus, in
test_milvus_backend.py), whatever order they were stored in."""

from __future__ import annotations

import numpy as np
import pytest

from rshash.index.backends.base import by_distance_then_id
from rshash.index.backends.faiss import CodeIndex

BITS = 64
L = 50


def tied_codes(same: int = 200, near: int = 0, far: int = 2000, seed: int = 0):
    """``(ids, codes, query)``: ``same`` copies of the query, ``near`` codes 2 bits from it, ``far`` random codes;
    sparse ids in a shuffled order, so faiss's storage order is not the id order."""
    rng = np.random.default_rng(seed)
    query = np.packbits(rng.random(BITS) < 0.5)
    flips = np.zeros((near, BITS), dtype=bool)
    for row in flips:
        row[rng.choice(BITS, 2, replace=False)] = True
    codes = np.concatenate([np.repeat(query[None], same, axis=0), query ^ np.packbits(flips, axis=1),
                            np.packbits(rng.random((far, BITS)) < 0.5, axis=1)])
    ids = rng.permutation(np.arange(1, 5 * len(codes), 5, dtype=np.int64))[: len(codes)]
    return ids, codes, query


def first_pairs(ids: np.ndarray, codes: np.ndarray, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k smallest (distance, id) pairs, computed here."""
    distances = np.bitwise_count(codes ^ query).sum(axis=1)
    distances, ids = by_distance_then_id(distances, ids)
    return distances[:k], ids[:k]


@pytest.mark.parametrize("kind", ["flat", "multihash", "ivf"])
@pytest.mark.parametrize("near", [0, 200])  # ties at distance 0, or at distance 2 after 30 exact copies
def test_ties_at_the_kth_distance_are_cut_by_id(kind, near):
    ids, codes, query = tied_codes(same=200 if near == 0 else 30, near=near)
    index = CodeIndex.build(kind, BITS, ids, codes)
    distances, found = index.search(query, L)
    expected_d, expected = first_pairs(ids, codes, query, L)
    assert found.tolist() == expected.tolist() and distances.tolist() == expected_d.tolist()
    assert distances.dtype == np.int32 and found.dtype == np.int64


def test_ivf_applies_the_rule_to_the_lists_it_probes():
    """One list probed: the 200 copies of the query share its list, so the 50 smallest of their ids come back."""
    ids, codes, query = tied_codes(same=200, far=6000, seed=1)
    index = CodeIndex.build("ivf", BITS, ids, codes)
    assert index.index.nlist > 1
    distances, found = index.search(query, L, nprobe=1)
    assert distances.tolist() == [0] * L and found.tolist() == np.sort(ids[:200])[:L].tolist()


def test_ties_are_cut_by_id_after_replayed_updates():
    """Ids added after a removal sit at the end of faiss's storage: the rule still holds."""
    ids, codes, query = tied_codes(same=200, far=500, seed=2)
    index = CodeIndex.build("flat", BITS, ids[::-1], codes[::-1])
    index.remove(ids[:20])
    index.add(ids[:20], codes[:20])
    assert index.search(query, L)[1].tolist() == first_pairs(ids, codes, query, L)[1].tolist()
