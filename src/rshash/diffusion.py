"""Diffusion: the examples' relevance spread over the nearest-neighbour graph of the candidates.

A search by examples scores each candidate by its similarity to the examples alone; but the items of one kind
of place form a chain of near neighbours in descriptor space that reaches far beyond any example's own
neighbourhood. Diffusion (manifold ranking: Zhou et al., "Ranking on data manifolds", NIPS 2003; as a re-rank
of image retrieval: Iscen et al., CVPR 2017) follows that chain: a graph of each candidate's ``k`` nearest
neighbours (faiss; mutual edges weighted by cosine similarity cubed, symmetrically normalised ``S``) and the
relevance ``f`` solving ``(I - alpha S) f = y`` (conjugate gradient, scipy), where ``y`` puts the positives'
unit mass on them and, optionally, the negatives' on them with a minus sign.

Used by :func:`rshash.index.search.rank_feedback` on the best :data:`DIFFUSION_ITEMS` candidates (the cost is
that of a ``k``-nearest-neighbour graph over them); defaults chosen on the validation-unseen fold
(``benchmarks/examples_search.py``, ``user.validation``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .feedback import blend

#: How many candidates (the best by the examples' score) are re-ranked by diffusion; the rest follow them. The
#: cost is the neighbour graph's: about 10 ms for 1024 on one core, 31 ms for 2048 (128-d descriptors); on the
#: validation fold 2048 ranked within 0.002 mAP@all of 1024 (benchmarks/examples_search.py).
DIFFUSION_ITEMS = 1024


@dataclass(frozen=True)
class Diffusion:
    """One diffusion setting: ``k`` neighbours per node, ``alpha`` how far relevance spreads (0: not at all,
    towards 1: along ever longer chains), ``negative_weight`` the mass of the negatives (0: they seed nothing),
    ``items`` the candidates re-ranked."""

    k: int = 30
    alpha: float = 0.9
    negative_weight: float = 0.0
    items: int = DIFFUSION_ITEMS

    def __post_init__(self):
        if self.k < 1:
            raise ValueError(f"diffusion k must be >= 1, got {self.k}")
        if not 0.0 <= self.alpha < 1.0:
            raise ValueError(f"diffusion alpha must be in [0, 1), got {self.alpha}")
        if self.items < 1:
            raise ValueError(f"diffusion items must be >= 1, got {self.items}")

    @property
    def label(self) -> str:
        return f"k {self.k} alpha {self.alpha} negative_weight {self.negative_weight}"


#: The default of examples searches (chosen on validation: see the module's docstring).
DEFAULT_DIFFUSION = Diffusion()


def neighbour_graph(unit: np.ndarray, k: int):
    """The symmetrically normalised affinity ``D^-1/2 A D^-1/2`` (scipy CSR) of ``(n, d)`` unit rows: ``A`` keeps
    an edge when each end is among the other's ``k`` nearest (cosine), weighted by the cosine cubed (0 below 0)."""
    import faiss
    from scipy.sparse import csr_matrix, diags

    x = np.ascontiguousarray(unit, dtype=np.float32)
    n = len(x)
    k = min(k, n - 1)
    if k < 1:
        return csr_matrix((n, n), dtype=np.float64)
    # One thread: a thousand rows are too little work for OpenMP's start-up on a busy machine (36 ms instead of
    # 10 for 1024 rows on 2 cores), as in the faiss backend's searches; the setting is per calling thread.
    faiss.omp_set_num_threads(1)
    sim, nn = faiss.knn(x, x, k + 1, metric=faiss.METRIC_INNER_PRODUCT)
    rows = np.repeat(np.arange(n), k + 1)
    keep = (nn.ravel() >= 0) & (nn.ravel() != rows)  # itself (and faiss's -1 padding) out
    weights = np.maximum(sim.ravel()[keep], 0.0).astype(np.float64) ** 3
    a = csr_matrix((weights, (rows[keep], nn.ravel()[keep])), shape=(n, n))
    a = a.minimum(a.T).tocsr()  # mutual neighbours only: hubs do not spread relevance to everything
    degree = np.asarray(a.sum(axis=1)).ravel()
    scale = diags(1.0 / np.sqrt(np.where(degree > 0, degree, 1.0)))
    return (scale @ a @ scale).tocsr()


def diffuse(unit: np.ndarray, seeds: np.ndarray, k: int, alpha: float, iterations: int = 50) -> np.ndarray:
    """``(n,)`` relevance of ``(n, d)`` unit rows given ``seeds`` ``(n,)`` (the examples' mass, 0 elsewhere):
    ``f = (I - alpha S)^-1 seeds`` over :func:`neighbour_graph` (conjugate gradient; higher is more relevant)."""
    from scipy.sparse import identity
    from scipy.sparse.linalg import cg

    seeds = np.asarray(seeds, dtype=np.float64)
    if not np.any(seeds) or alpha == 0.0:
        return seeds.copy()
    s = neighbour_graph(unit, k)
    f, _ = cg(identity(len(seeds), format="csr") - alpha * s, seeds, maxiter=iterations)
    return f


def best_positions(score: np.ndarray, n: int) -> np.ndarray:
    """Positions of the ``n`` lowest scores (every position when there are no more), in position order."""
    if len(score) <= n:
        return np.arange(len(score))
    return np.sort(np.argpartition(score, n - 1)[:n])


def diffused_scores(base: np.ndarray, decision: np.ndarray, head: np.ndarray, rows: np.ndarray, marks: np.ndarray,
                    positives: int, n_marks: int, half: int, diffusion: Diffusion) -> np.ndarray:
    """Feedback scores with diffusion (see :func:`rshash.index.search.rank_feedback`): ``base`` the positives'
    score of every candidate (lower is better), ``head`` the positions diffused (:func:`best_positions`),
    ``decision`` the classifier's values there, ``rows`` their unit vectors, ``marks`` those of the positives
    then the negatives; ``n_marks`` 0 without a classifier (its decision values are then ignored). The diffused
    candidates get :func:`rshash.feedback.blend` of their relevance and the classifier (standardised over them);
    the other candidates follow them in ``base`` order."""
    seeds = np.zeros(len(rows) + len(marks))
    seeds[len(rows):len(rows) + positives] = 1.0 / positives
    if len(marks) > positives:
        seeds[len(rows) + positives:] = -diffusion.negative_weight / (len(marks) - positives)
    relevance = diffuse(np.vstack([rows, marks]), seeds, diffusion.k, diffusion.alpha)[:len(rows)]
    new, _ = blend(-relevance, decision, n_marks, half)
    out = np.asarray(base, dtype=np.float64).copy()
    rest = np.ones(len(base), bool)
    rest[head] = False
    if rest.any():  # after every diffused candidate, in their own order
        out[rest] = new.max() + 1e-9 + (out[rest] - out[rest].min())
    out[head] = new
    return out
