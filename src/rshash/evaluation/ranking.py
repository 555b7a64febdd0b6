"""Retrieval metrics from any distance matrix (Hamming, cosine, ...), with self-matches excluded per pair.

Binary codes are ranked by :func:`rshash.evaluation.protocols.ranked_positions` (the index's
two-stage order); real-valued baselines (cosine k-NN) need the same numbers from a distance matrix, so this module ranks any
``(Q, N)`` distances with the same conventions (stable sort: ties by database
order; relevance = same label) and the same metric functions.
"""

from __future__ import annotations

import numpy as np

from .metrics import rank_by_distance, relevance_matrix, report_from_relevance


def ranked_relevance(
    dist: np.ndarray, query_labels: np.ndarray, db_labels: np.ndarray, exclude: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Ranked database indices ``(Q, N')`` and their relevance.

    ``exclude`` is a ``(Q, N)`` bool mask of pairs to drop (each query itself when
    it is in the database); every query must drop the same number of items.
    """
    dist = np.asarray(dist, dtype=np.float64)
    if exclude is None or not exclude.any():
        order = rank_by_distance(dist)
    else:
        per_query = exclude.sum(axis=1)
        if (per_query != per_query[0]).any():
            raise ValueError("every query must exclude the same number of database items")
        order = rank_by_distance(np.where(exclude, np.inf, dist))[:, : dist.shape[1] - per_query[0]]
    return order, relevance_matrix(query_labels, db_labels, order)


def ranking_report(
    dist: np.ndarray,
    query_labels: np.ndarray,
    db_labels: np.ndarray,
    exclude: np.ndarray | None = None,
    ks: tuple[int, ...] = (10, 20),
) -> dict[str, float]:
    """map_all, map_at_k (found and min norm), p_at_k, r_at_k of a ``(Q, N)`` distance matrix."""
    _, rel = ranked_relevance(dist, query_labels, db_labels, exclude)
    return report_from_relevance(rel, ks)
