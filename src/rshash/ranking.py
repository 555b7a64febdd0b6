"""Two-stage ranking: a Hamming shortlist, re-ranked by descriptor similarity, then a tie-break by id.

One implementation, used by the index for one query and by the evaluation suite
for a matrix of queries, so the numbers reported are the order users get.

1. **Shortlist**: the ``shortlist`` items nearest by Hamming distance (ties by id).
2. **Re-rank** the shortlist by ``score = (1 - weight) * hamming / bits + weight * (1 - cosine) / 2``
   where ``cosine`` is the similarity of the stored descriptors (int8, see
   :func:`quantize_descriptors`); items past the shortlist follow in Hamming order.
3. **Tie-break**: equal scores by higher similarity, then by smaller id, so the order is
   the same on every path (flat or IVF, before or after a rebuild).

``rerank=False`` is the Hamming-only order: distance, then id. Defaults are chosen on
validation (``benchmarks/select_defaults.py``), never on test.
"""

from __future__ import annotations

import numpy as np

#: Items re-ranked per query: 1000 covers the relevant items of every UCMD protocol and costs
#: well under 1 ms (benchmarks/results/ucmd_hashing.json, ``rerank_ms_per_query_1000``).
DEFAULT_SHORTLIST = 1000
#: Weight of the descriptor in the re-rank score (0 = Hamming with descriptor tie-break) for a model trained on
#: labels: issue 15's rule on the validation folds (benchmarks/results/select_gate.json, ``constrained``): of the
#: settings whose mAP is not below the Hamming order by more than one seed std on any fold (seen-class and
#: validation-unseen), the best mean. 0.9 scores a higher mean but costs seen classes 0.029 (std 0.0009).
LABELLED_WEIGHT = 0.25
#: The same rule for a labelled model with the default recipe's learned-whitening head (its descriptor is the
#: whitened vector its bits are cut from), on the weights 0-0.9 (benchmarks/results/select_whitening.json,
#: ``weight``): 0.6 is the best mean that keeps seen classes within one seed std of the Hamming order (0.75 and 0.9
#: do not).
WHITENED_LABELLED_WEIGHT = 0.6
#: The same for a self-supervised model (no labels): on the same-place folds the two-stage order at 0.9 is at or
#: above the Hamming order on every fold of every place (benchmarks/results/archive_learning.json).
SELF_SUPERVISED_WEIGHT = 0.9
#: The weight used where no model says otherwise (a model trained on labels).
DEFAULT_WEIGHT = LABELLED_WEIGHT
#: Re-rank gate (experimental, off by default): with ``gate`` set, a query re-ranks at ``weight`` only when its
#: ``GATE_RANK``-th Hamming neighbour is at least ``gate * bits`` away (the codes do not place it in a tight cluster,
#: e.g. content of no trained class); otherwise at weight 0 (Hamming order, descriptor tie-break).
GATE_RANK = 10


def default_weight(labelled: bool, whitened: bool = False) -> float:
    """The re-rank weight of a model trained with labels (``labelled``; ``whitened``: with the learned-whitening
    head) or self-supervised."""
    if not labelled:
        return SELF_SUPERVISED_WEIGHT
    return WHITENED_LABELLED_WEIGHT if whitened else LABELLED_WEIGHT


def quantize_descriptors(descriptors: np.ndarray) -> np.ndarray:
    """``float (N, D)`` -> ``int8 (N, D)``: each row scaled so its largest component is +-127.

    Cosine similarity does not depend on a row's scale, so no scale is stored; a
    query quantised the same way as its stored copy has similarity exactly 1 with it.
    """
    d = np.asarray(descriptors, dtype=np.float32)
    if d.ndim != 2:
        raise ValueError(f"expected (N, D) descriptors, got shape {d.shape}")
    peak = np.abs(d).max(axis=1, keepdims=True)
    return np.round(d / np.where(peak > 0, peak, 1.0) * 127).astype(np.int8)


def descriptor_norms(quantized: np.ndarray) -> np.ndarray:
    """L2 norms of int8 descriptors (float32), zero rows given norm 1."""
    norms = np.linalg.norm(np.asarray(quantized, dtype=np.float32), axis=1)
    return np.where(norms > 0, norms, 1.0).astype(np.float32)


def cosine_similarity(queries: np.ndarray, database: np.ndarray, db_norms: np.ndarray | None = None) -> np.ndarray:
    """``(Q, N)`` cosine similarity of int8 descriptors."""
    q = np.asarray(queries, dtype=np.float32)
    d = np.asarray(database, dtype=np.float32)
    norms = descriptor_norms(database) if db_norms is None else db_norms
    return (q @ d.T) / descriptor_norms(queries)[:, None] / norms[None, :]


def rerank_scores(hamming: np.ndarray, similarity: np.ndarray, bits: int, weight: float | np.ndarray) -> np.ndarray:
    """Lower is better: the blend of normalised Hamming distance and descriptor distance (``weight``: one number,
    or ``(Q, 1)`` per query)."""
    if not (0.0 <= weight <= 1.0 if isinstance(weight, float) else np.all((0.0 <= weight) & (weight <= 1.0))):
        raise ValueError(f"re-rank weight must be in [0, 1], got {weight}")
    return (1.0 - weight) * np.asarray(hamming, dtype=np.float64) / bits + weight * (1.0 - similarity) / 2.0


def two_stage_order(
    hamming: np.ndarray,
    ids: np.ndarray,
    bits: int,
    similarity: np.ndarray | None = None,
    *,
    rerank: bool = True,
    shortlist: int = DEFAULT_SHORTLIST,
    weight: float = DEFAULT_WEIGHT,
    prefer: int | None = None,
    gate: float | None = None,
) -> np.ndarray:
    """Column order per query for ``(Q, M)`` candidate distances; ``ids`` are ``(M,)`` or ``(Q, M)``.

    With ``rerank`` and a ``similarity`` matrix, the first ``shortlist`` columns of the
    Hamming order are re-ranked by :func:`rerank_scores`; otherwise the Hamming order alone.
    ``prefer``: an id that wins exact ties before the id order (the query's own indexed item,
    so a file that is indexed twice under two paths finds the path it was asked with first).
    ``gate``: see :data:`GATE_RANK` (None: every query re-ranks at ``weight``).
    """
    hamming = np.atleast_2d(np.asarray(hamming))
    ids = np.broadcast_to(np.asarray(ids), hamming.shape)
    other = ids != prefer if prefer is not None else np.zeros(hamming.shape, dtype=bool)
    first = np.lexsort((ids, other, hamming), axis=-1)
    if not rerank or similarity is None or hamming.shape[1] == 0:
        return first
    if shortlist < 1:
        raise ValueError(f"shortlist must be >= 1, got {shortlist}")
    sims = np.broadcast_to(np.atleast_2d(similarity), hamming.shape)
    return np.stack([_rerank_one(first[q], hamming[q], ids[q], other[q], sims[q], bits, shortlist, weight, gate)
                     for q in range(hamming.shape[0])])


def _rerank_one(first: np.ndarray, hamming: np.ndarray, ids: np.ndarray, other: np.ndarray, similarity: np.ndarray,
                bits: int, shortlist: int, weight: float, gate: float | None) -> np.ndarray:
    """:func:`two_stage_order` of one query (a row), given its Hamming order ``first``: the first ``shortlist``
    re-ranked by :func:`rerank_scores` (at weight 0 when the gate says the query sits in a tight cluster), ties by
    higher similarity, the preferred id, then id; the rest in Hamming order."""
    head = first[: min(shortlist, len(first))]
    sim = np.broadcast_to(similarity, hamming.shape)[head]
    near = hamming[head]
    if gate is not None and near[min(GATE_RANK, len(near)) - 1] < gate * bits:
        weight = 0.0
    score = rerank_scores(near, sim, bits, weight)
    head = head[np.lexsort((ids[head], other[head], -sim, score))]
    return np.concatenate([head, first[len(head) :]])
