"""Diffusion over the candidates' neighbour graph (rshash.diffusion) and its place in the feedback ranking."""

from __future__ import annotations

import numpy as np
import pytest

from rshash.diffusion import Diffusion, diffuse, neighbour_graph
from rshash.index.search import QueryVectors, SearchParams, rank_feedback
from rshash.index.vectors import VectorTable
from rshash.ranking import descriptor_norms, quantize_descriptors


def _arcs():
    """Unit vectors on a circle: a dense arc (0..90 degrees, one per degree: one kind of place) and a short arc
    beyond a gap (100..120 degrees: another kind), closer to the arc's 80-degree end than its 0-degree end is."""
    angles = np.deg2rad(np.r_[np.arange(0, 91), np.arange(100, 121)])
    return np.c_[np.cos(angles), np.sin(angles)].astype(np.float32), np.r_[np.ones(91, bool), np.zeros(21, bool)]


def test_diffusion_follows_the_chain_beyond_the_examples_neighbourhood():
    x, same = _arcs()
    seeds = np.zeros(len(x))
    seeds[80] = 1.0  # one example, at 80 degrees
    cosine = x @ x[80]
    assert cosine[~same].max() > cosine[same].min()  # by similarity alone the other arc comes before the far end
    f = diffuse(x, seeds, k=4, alpha=0.99)
    assert f[same].min() > f[~same].max()  # diffused, the whole arc comes first
    s = neighbour_graph(x, 4)
    assert abs(s - s.T).max() < 1e-12 and s[90, 91] == 0  # symmetric; no edge across the gap (mutual neighbours only)
    negative = seeds.copy()
    negative[110] = -1.0  # a "no" on the other arc pushes it below the unseeded
    assert diffuse(x, negative, 4, 0.99)[~same].max() < 0


def test_diffusion_settings_are_checked():
    for bad in ({"k": 0}, {"alpha": 1.0}, {"alpha": -0.1}, {"items": 0}):
        with pytest.raises(ValueError):
            Diffusion(**bad)
    assert np.array_equal(diffuse(np.eye(3, dtype=np.float32), np.zeros(3), 2, 0.9), np.zeros(3))


def _arc_table(bits: int = 64):
    x, same = _arcs()
    desc = quantize_descriptors(np.c_[x, np.zeros((len(x), 6), np.float32)])
    codes = np.packbits(np.c_[x[:, :1] > 0.7, np.zeros((len(x), bits - 1), bool)], axis=1)
    ids = np.arange(1, len(x) + 1, dtype=np.int64)
    example = lambda i: QueryVectors(codes[i], desc[i], (int(ids[i]),))  # noqa: E731
    return VectorTable(ids, codes, desc, descriptor_norms(desc)), example, same


def test_feedback_ranking_diffuses_the_best_candidates_and_ranks_the_rest_after():
    table, example, same = _arc_table()
    params = SearchParams(k=len(table), weight=1.0, exclude=(81,))
    plain, _ = rank_feedback([example(80)], [], params, None, table, None, 64, diffusion=None)
    full, _ = rank_feedback([example(80)], [], params, None, table, None, 64, diffusion=Diffusion(4, 0.99))
    assert not np.all(same[plain.ids - 1][:90])  # the positives' similarity mixes the other arc in
    assert np.all(same[full.ids - 1][:90])  # diffused: the whole arc first
    assert np.all(np.diff(full.scores) >= 0)
    few, _ = rank_feedback([example(80)], [], params, None, table, None, 64, diffusion=Diffusion(4, 0.99, items=30))
    assert set(few.ids[:30]) == set(plain.ids[:30])  # only the best 30 are re-ranked ...
    np.testing.assert_array_equal(few.ids[30:], plain.ids[30:])  # ... the rest follow in their own order
    assert few.scores[30] > few.scores[29]
    codes_only, _ = rank_feedback([example(80)], [example(110)], SearchParams(k=5, rerank=False, exclude=(81, 111)),
                                  None, table, None, 64)  # no descriptors: the graph of the codes
    assert len(codes_only.ids) == 5 and codes_only.similarities is None


def test_degenerate_candidates_rank_without_error():
    """Identical descriptors (a flat, featureless archive), zero descriptors and a two-item index: finite scores."""
    bits = 64
    for desc in (np.full((50, 8), 7, np.int8), np.zeros((50, 8), np.int8)):
        codes = np.zeros((50, bits // 8), np.uint8)
        ids = np.arange(1, 51, dtype=np.int64)
        table = VectorTable(ids, codes, desc, descriptor_norms(desc))
        example = lambda i: QueryVectors(codes[i], desc[i], (int(ids[i]),))  # noqa: E731
        ranked, _ = rank_feedback([example(0), example(1)], [example(2)], SearchParams(k=10, exclude=(1, 2, 3)),
                                  None, table, None, bits)
        assert len(ranked.ids) == 10 and np.all(np.isfinite(ranked.scores))
        tiny = VectorTable(ids[:3], codes[:3], desc[:3], descriptor_norms(desc[:3]))
        ranked, _ = rank_feedback([example(0)], [], SearchParams(k=5, exclude=(1,)), None, tiny, None, bits)
        assert ranked.ids.tolist() == [2, 3] and np.all(np.isfinite(ranked.scores))
