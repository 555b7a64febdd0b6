"""Retrieval metrics from ranked relevance: the only metric code (the CLI, the evaluation suite, training and
the benchmarks all report through :func:`report_from_relevance`).

Conventions (every headline number says which it uses):

* Ranking: by Hamming distance, ties broken by database order (stable sort),
  unless ``tie_aware=True`` (expected AP under a random order within ties).
* ``mAP@all``: AP over the whole ranked database, normalised by all relevant items.
* ``mAP@k`` with ``norm="found"``: AP over the top k normalised by the relevant
  items found in the top k (DeepHash-pytorch, MiLAN); ``norm="min"``: by
  ``min(k, total relevant)``.
* Relevance: same class label; for multi-label data, at least one shared label.
"""

from __future__ import annotations

import numpy as np



def rank_by_distance(dist: np.ndarray) -> np.ndarray:
    """Database indices per query, nearest first, ties by database order."""
    return np.argsort(dist, axis=1, kind="stable")


def relevance_matrix(query_labels: np.ndarray, db_labels: np.ndarray, order: np.ndarray) -> np.ndarray:
    """Relevance of the ranked database items per query.

    Labels are either ``(N,)`` class ids (relevant: same class) or ``(N, L)`` bool
    multi-hot rows (multi-label data: relevant when query and item share a label).
    """
    q, d = np.asarray(query_labels), np.asarray(db_labels)
    if q.ndim == 2:
        shared = (q.astype(np.float32) @ d.T.astype(np.float32)) > 0
        return np.take_along_axis(shared, order, axis=1)
    return d[order] == q[:, None]


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
    """Relevant items in the top k divided by k (a database smaller than k cannot fill the top k)."""
    return rel[:, :k].sum(axis=1) / k


def recall_at_k(rel: np.ndarray, k: int) -> np.ndarray:
    total = rel.sum(axis=1)
    return np.where(total > 0, rel[:, :k].sum(axis=1) / np.maximum(total, 1), 0.0)


def pr_curve_by_radius(dist: np.ndarray, rel_unsorted: np.ndarray, bits: int) -> dict[str, list]:
    """Mean precision and recall of "everything within radius r", r = 0..bits.

    Precision at a radius is averaged over the queries that retrieve something there
    (``None`` where no query does); recall over all queries.
    """
    precision, recall = [], []
    total = rel_unsorted.sum(axis=1)
    for r in range(bits + 1):
        within = dist <= r
        n = within.sum(axis=1)
        tp = (within & rel_unsorted).sum(axis=1)
        # Precision is undefined for a query that retrieves nothing: averaged over those that retrieve something.
        precision.append(float(np.mean(tp[n > 0] / n[n > 0])) if (n > 0).any() else None)
        recall.append(float(np.mean(np.where(total > 0, tp / np.maximum(total, 1), 0.0))))
    return {"radius": list(range(bits + 1)), "precision": precision, "recall": recall}


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
