"""Retrieval metrics for Hamming ranking.

Conventions (every headline number says which it uses):

* Ranking: by Hamming distance, ties broken by database order (stable sort),
  unless ``tie_aware=True`` (expected AP under a random order within ties).
* ``mAP@all``: AP over the whole ranked database, normalised by all relevant items.
* ``mAP@k`` with ``norm="found"``: AP over the top k normalised by the relevant
  items found in the top k (DeepHash-pytorch, MiLAN); ``norm="min"``: by
  ``min(k, total relevant)``.
* Relevance: same class label.
"""

from __future__ import annotations

import numpy as np

from .codes import hamming_matrix


def rank_by_distance(dist: np.ndarray) -> np.ndarray:
    """Database indices per query, nearest first, ties by database order."""
    return np.argsort(dist, axis=1, kind="stable")


def relevance_matrix(query_labels: np.ndarray, db_labels: np.ndarray, order: np.ndarray) -> np.ndarray:
    return (np.asarray(db_labels)[order] == np.asarray(query_labels)[:, None])


def average_precision(rel: np.ndarray, topk: int | None = None, norm: str = "found", total_relevant: np.ndarray | None = None) -> np.ndarray:
    """AP per query from ranked relevance rows ``(Q, N) bool``."""
    rel = rel[:, :topk] if topk else rel
    hits = np.cumsum(rel, axis=1)
    ranks = np.arange(1, rel.shape[1] + 1)
    prec_sum = (hits / ranks * rel).sum(axis=1)
    if topk is None or norm == "found":
        denom = hits[:, -1]
    elif norm == "min":
        if total_relevant is None:
            raise ValueError("norm='min' needs total_relevant")
        denom = np.minimum(topk, total_relevant)
    else:
        raise ValueError(f"norm must be 'found' or 'min', got {norm!r}")
    return np.where(denom > 0, prec_sum / np.maximum(denom, 1), 0.0)


def tie_aware_ap(dist: np.ndarray, rel: np.ndarray) -> np.ndarray:
    """Expected AP under a uniformly random order within equal distances (McFee & Lanckriet 2010).

    ``dist`` and ``rel`` are per query over the whole database, unsorted.
    """
    out = np.zeros(dist.shape[0])
    for q in range(dist.shape[0]):
        d, r = dist[q], rel[q].astype(float)
        total = r.sum()
        if total == 0:
            continue
        levels, inverse = np.unique(d, return_inverse=True)
        n_per = np.bincount(inverse)
        r_per = np.bincount(inverse, weights=r)
        n_before = np.concatenate([[0], np.cumsum(n_per)[:-1]])
        r_before = np.concatenate([[0], np.cumsum(r_per)[:-1]])
        ap = 0.0
        for n_t, r_t, n0, r0 in zip(n_per, r_per, n_before, r_before):
            if r_t == 0:
                continue
            # expected precision at each relevant item's position, averaged over random orders in the tie block
            positions = np.arange(1, n_t + 1)
            # E[#relevant up to position j | a relevant item is at j] = r0 + 1 + (j-1)(r_t-1)/(n_t-1)
            extra = (positions - 1) * (r_t - 1) / max(n_t - 1, 1)
            ap += r_t / n_t * np.sum((r0 + 1 + extra) / (n0 + positions))
        out[q] = ap / total
    return out


def precision_at_k(rel: np.ndarray, k: int) -> np.ndarray:
    return rel[:, :k].mean(axis=1)


def recall_at_k(rel: np.ndarray, k: int) -> np.ndarray:
    total = rel.sum(axis=1)
    return np.where(total > 0, rel[:, :k].sum(axis=1) / np.maximum(total, 1), 0.0)


def pr_curve_by_radius(dist: np.ndarray, rel_unsorted: np.ndarray, bits: int) -> dict[str, list[float]]:
    """Mean precision and recall of "everything within radius r", r = 0..bits."""
    precision, recall = [], []
    total = rel_unsorted.sum(axis=1)
    for r in range(bits + 1):
        within = dist <= r
        n = within.sum(axis=1)
        tp = (within & rel_unsorted).sum(axis=1)
        precision.append(float(np.mean(np.where(n > 0, tp / np.maximum(n, 1), 1.0))))
        recall.append(float(np.mean(np.where(total > 0, tp / np.maximum(total, 1), 0.0))))
    return {"radius": list(range(bits + 1)), "precision": precision, "recall": recall}


def retrieval_report(
    query_codes: np.ndarray,
    query_labels: np.ndarray,
    db_codes: np.ndarray,
    db_labels: np.ndarray,
    exclude_self: bool = False,
    ks: tuple[int, ...] = (10, 20),
) -> dict[str, float]:
    """Headline metrics from packed codes: map_all, map_at_k (found and min norm), p_at_k, r_at_k."""
    dist = hamming_matrix(query_codes, db_codes).astype(np.int64)
    query_labels, db_labels = np.asarray(query_labels), np.asarray(db_labels)
    if exclude_self:
        # queries are the database itself: push each item's own entry to the end, then drop it
        np.fill_diagonal(dist, np.iinfo(np.int32).max)
    order = rank_by_distance(dist)
    if exclude_self:
        order = order[:, :-1]
    return report_from_relevance(relevance_matrix(query_labels, db_labels, order), ks)


def report_from_relevance(rel: np.ndarray, ks: tuple[int, ...] = (10, 20)) -> dict[str, float]:
    """map_all, map_at_k (found and min norm), p_at_k, r_at_k from ranked relevance rows ``(Q, N)``."""
    total = rel.sum(axis=1)
    out = {"map_all": float(average_precision(rel).mean())}
    for k in ks:
        out[f"map_at_{k}"] = float(average_precision(rel, k, "found").mean())
        out[f"map_at_{k}_min_norm"] = float(average_precision(rel, k, "min", total).mean())
        out[f"p_at_{k}"] = float(precision_at_k(rel, k).mean())
        out[f"r_at_{k}"] = float(recall_at_k(rel, k).mean())
    return out
