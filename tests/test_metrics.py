"""Retrieval metrics on hand-worked examples."""

import numpy as np
import pytest

from rshash.codes import hamming_matrix, pack_codes, unpack_codes
from rshash.evaluation.metrics import average_precision, pr_curve_by_radius, precision_at_k, recall_at_k, tie_aware_ap
from rshash.evaluation.protocols import RetrievalTask, evaluate


def test_average_precision_hand_worked():
    rel = np.array([[1, 0, 1, 0, 0, 1]], dtype=bool)
    # precisions at hits: 1/1, 2/3, 3/6 -> AP@all = (1 + 2/3 + 1/2) / 3
    assert average_precision(rel)[0] == pytest.approx((1 + 2 / 3 + 0.5) / 3)
    # top 3, normalised by found (2): (1 + 2/3) / 2; by min(3, total=3): (1 + 2/3) / 3
    assert average_precision(rel, 3, "found")[0] == pytest.approx((1 + 2 / 3) / 2)
    assert average_precision(rel, 3, "min", np.array([3]))[0] == pytest.approx((1 + 2 / 3) / 3)
    assert precision_at_k(rel, 3)[0] == pytest.approx(2 / 3)
    assert recall_at_k(rel, 3)[0] == pytest.approx(2 / 3)


def test_no_relevant_items_gives_zero():
    assert average_precision(np.zeros((1, 4), bool))[0] == 0.0


def test_pack_unpack_and_hamming():
    rng = np.random.default_rng(0)
    bits = rng.random((5, 16)) > 0.5
    packed = pack_codes(bits)
    assert packed.shape == (5, 2) and np.array_equal(unpack_codes(packed, 16), bits)
    expected = (bits[:, None, :] != bits[None, :, :]).sum(-1)
    assert np.array_equal(hamming_matrix(packed, packed), expected)


def test_tie_aware_ap_hand_worked():
    # all items tied: relevant r=1 of n=2 -> expected AP = 1/2 * (1/1) + 1/2 * (1/2) = 0.75
    dist = np.array([[3, 3]])
    rel = np.array([[True, False]])
    assert tie_aware_ap(dist, rel)[0] == pytest.approx(0.75)
    # no ties: equals ordinary AP
    dist = np.array([[0, 1, 2]])
    rel = np.array([[False, True, True]])
    assert tie_aware_ap(dist, rel)[0] == pytest.approx((1 / 2 + 2 / 3) / 2)


def test_tie_aware_matches_average_over_permutations():
    rng = np.random.default_rng(1)
    dist = rng.integers(0, 3, size=(1, 7))
    rel = rng.random((1, 7)) > 0.5
    rel[0, 0] = True
    aps = []
    for _ in range(4000):
        perm = rng.permutation(7)
        order = perm[np.argsort(dist[0, perm], kind="stable")]
        aps.append(average_precision(rel[:, order])[0])
    assert tie_aware_ap(dist, rel)[0] == pytest.approx(np.mean(aps), abs=0.01)


def test_evaluate_perfect_and_exclude_self():
    codes = np.array([[0] * 8, [0] * 8, [1] * 8, [1] * 8], dtype=bool)
    labels = np.array([0, 0, 1, 1])
    everyone = RetrievalTask("all", "all vs all", np.arange(4), np.arange(4), exclude_self=True, ks=(1,))
    rep = evaluate(codes, labels, everyone, rerank=False)
    assert rep["map_all"] == 1.0 and rep["p_at_1"] == 1.0
    mixed = np.array([0, 1, 0, 1])  # each item's nearest (same code) is of the other class
    assert evaluate(codes, mixed, everyone, rerank=False)["map_all"] == pytest.approx(5 / 12)  # ties by id


def test_precision_at_k_counts_missing_ranks_as_misses():
    rel = np.array([[True, True]])  # a database of 2 items
    assert precision_at_k(rel, 10)[0] == pytest.approx(0.2)


def test_pr_curve_precision_is_undefined_where_nothing_is_retrieved():
    curve = pr_curve_by_radius(np.array([[3, 4]]), np.array([[True, False]]), bits=4)
    assert curve["precision"][0] is None and curve["precision"][3] == 1.0


def test_pr_curve_monotone_recall():
    dist = np.array([[0, 1, 2, 3]])
    rel = np.array([[True, False, True, False]])
    curve = pr_curve_by_radius(dist, rel, bits=3)
    assert curve["recall"] == [0.5, 0.5, 1.0, 1.0]
    assert curve["precision"][0] == 1.0 and curve["precision"][-1] == 0.5
