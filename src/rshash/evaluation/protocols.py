"""Who queries whom: the evaluation protocols, as index sets into one array of codes or features.

* **A** (this project's headline): the seeded 80/20 split of training; queries =
  the test split (420 UCMD images), database = train + val (the 1680 training images).
* **B** (MiLAN's): a stratified 60/40 split; each image of the 40 % queries the
  other 40 % images (itself excluded); mAP@20 normalised by the relevant items
  found in the top 20.
* **unseen classes**: train on the seen classes only, then index and query
  images of the held-out classes (per unseen class 80 % database, 20 % queries).
* **all vs all** (cross-dataset): every image queries all the others.

Relevance is always "same class label"; ties in Hamming distance are broken by
database order (see :mod:`rshash.metrics`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Protocol, Sequence

import numpy as np

from ..codes import hamming_matrix, pack_codes
from ..data.datasets import ImageRecord
from ..data.splits import stratified_split
from .metrics import relevance_matrix, report_from_relevance
from ..ranking import DEFAULT_SHORTLIST, DEFAULT_WEIGHT, cosine_similarity, quantize_descriptors, two_stage_order

#: How each metric key is normalised (stated next to every reported number).
METRIC_NOTES = {
    "map_all": "AP over the full ranking of the database, normalised by all relevant database items",
    "map_at_k": "AP over the top k, normalised by the relevant items found in the top k (DeepHash-pytorch, MiLAN)",
    "map_at_k_min_norm": "AP over the top k, normalised by min(k, relevant items in the database)",
    "p_at_k": "fraction of the top k that is relevant",
    "r_at_k": "relevant items in the top k / all relevant database items",
}


@dataclass(frozen=True, eq=False)
class RetrievalTask:
    """Index sets into one item array: who queries, what is searched, what a model may train on."""

    name: str
    description: str
    queries: np.ndarray
    database: np.ndarray
    exclude_self: bool = False  # a query in the database never retrieves itself
    train: np.ndarray | None = None  # items a model may learn from (None: not prescribed by the protocol)
    ks: tuple[int, ...] = (10, 20)

    def exclude_self_mask(self) -> np.ndarray | None:
        """``(Q, N)`` mask of (query, itself) pairs, or None."""
        return self.queries[:, None] == self.database[None, :] if self.exclude_self else None

    def summary(self) -> dict:
        return {"name": self.name, "description": self.description, "queries": len(self.queries),
                "database": len(self.database), "exclude_self": self.exclude_self}


class SplitData(Protocol):
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray


def _indices(idx: np.ndarray | Sequence[int]) -> np.ndarray:
    return np.sort(np.asarray(idx, dtype=np.int64))


def protocol_a(data: SplitData, description: str | None = None) -> RetrievalTask:
    """Queries = test split, database = train + val (``Prepared`` from the training pipeline fits)."""
    if not len(data.test):
        raise ValueError("protocol A needs a test split, but it is empty")
    return RetrievalTask(
        "A", description or "queries = test split (seeded stratified 80/20), database = train+val split "
        "(all training images)",
        _indices(data.test), _indices(np.concatenate([data.train, data.val])),
        train=_indices(np.concatenate([data.train, data.val])),
    )


def stratified_indices(labels: np.ndarray, fractions: Mapping[str, float], seed: int) -> dict[str, np.ndarray]:
    """Per-class seeded split of item indices (the training pipeline's :func:`stratified_split`)."""
    width = len(str(len(labels)))
    records = [ImageRecord(f"{i:0{width}d}", str(lab)) for i, lab in enumerate(labels)]
    assignment = stratified_split(records, fractions, seed)
    return {name: _indices([int(p) for p, s in assignment.items() if s == name]) for name in fractions}


def protocol_b(labels: np.ndarray, seed: int = 0, test_fraction: float = 0.4) -> RetrievalTask:
    """MiLAN's protocol: train on 60 %, the other 40 % query each other (self excluded)."""
    parts = stratified_indices(labels, {"train": 1 - test_fraction, "test": test_fraction}, seed)
    return RetrievalTask(
        "B", f"stratified {1 - test_fraction:.0%}/{test_fraction:.0%} split (seed {seed}); each test image queries "
        "the other test images (itself excluded); report mAP@20 normalised by relevant found in the top 20",
        parts["test"], parts["test"], exclude_self=True, train=parts["train"], ks=(10, 20),
    )


def all_vs_all(n: int, description: str = "every image queries all the other images (itself excluded)") -> RetrievalTask:
    """Cross-dataset protocol: no split, every item is a query and the database."""
    idx = np.arange(n, dtype=np.int64)
    return RetrievalTask("all_vs_all", description, idx, idx, exclude_self=True)


def unseen_classes(class_names: Sequence[str], count: int = 5, seed: int = 0) -> list[str]:
    """A fixed, seeded choice of held-out classes (sorted), the same for every training seed."""
    if not 0 < count < len(class_names) - 1:
        raise ValueError(f"need 0 < unseen classes < {len(class_names) - 1} (>= 2 seen), got {count}")
    return sorted(np.random.default_rng(seed).choice(sorted(class_names), size=count, replace=False).tolist())


def unseen_assignment(
    records: Sequence[ImageRecord], unseen: Sequence[str], seed: int, val_fraction: float = 0.1
) -> dict[str, str]:
    """Split assignment for training on seen classes only: seen -> train/val, unseen -> "test".

    The training pipeline fine-tunes and trains the head on "train" (choosing
    epochs on "val") and never learns from "test", so no unseen image is seen.
    """
    unseen_set = set(unseen)
    seen = [r for r in records if r.label not in unseen_set]
    assignment = stratified_split(seen, {"train": 1 - val_fraction, "val": val_fraction}, seed)
    return assignment | {r.path: "test" for r in records if r.label in unseen_set}


def validation_unseen_assignment(
    records: Sequence[ImageRecord], test_unseen: Sequence[str], count: int = 4, seed: int = 0, val_fraction: float = 0.1
) -> tuple[dict[str, str], list[str]]:
    """The fold that selects defaults for generalisation without touching the test-unseen classes.

    From the seen classes (all but ``test_unseen``), ``count`` seeded classes become *validation-unseen*
    ("test" in the returned assignment); the other seen classes are split train/val as in
    :func:`unseen_assignment`; the test-unseen classes are marked "unused" and take no part at all.
    Returns the assignment and the validation-unseen classes.
    """
    test_set = set(test_unseen)
    seen_names = sorted({r.label for r in records if r.label not in test_set})
    val_unseen = unseen_classes(seen_names, count, seed)
    seen = [r for r in records if r.label not in test_set]
    assignment = unseen_assignment(seen, val_unseen, seed, val_fraction)
    return assignment | {r.path: "unused" for r in records if r.label in test_set}, val_unseen


def unseen_task(
    labels: np.ndarray, unseen_ids: Sequence[int], seed: int, query_fraction: float = 0.2,
    train: np.ndarray | None = None,
) -> RetrievalTask:
    """Per unseen class a seeded ``1 - query_fraction`` database / ``query_fraction`` queries draw."""
    items = np.flatnonzero(np.isin(labels, list(unseen_ids)))
    if not len(items):
        raise ValueError("no items of the unseen classes")
    parts = stratified_indices(labels[items], {"database": 1 - query_fraction, "queries": query_fraction}, seed)
    return RetrievalTask(
        "unseen_classes", f"{len(unseen_ids)} classes never seen in training; per class {1 - query_fraction:.0%} "
        f"database / {query_fraction:.0%} queries (seed {seed})",
        items[parts["queries"]], items[parts["database"]], train=train,
    )


def unseen_all_task(labels: np.ndarray, unseen_ids: Sequence[int], seed: int, query_fraction: float = 0.2) -> RetrievalTask:
    """Unseen@all: the unseen classes' queries against their database images plus *every* seen-class image.

    With one code per seen class, unseen queries whose codes collide with a seen
    class's code rank that whole class first: this protocol shows it, unseen@unseen hides it.
    """
    base = unseen_task(labels, unseen_ids, seed, query_fraction)
    seen = np.flatnonzero(~np.isin(labels, list(unseen_ids)))
    return RetrievalTask(
        "unseen_all", f"{base.description}; the database also holds all {len(seen)} seen-class images",
        base.queries, np.sort(np.concatenate([base.database, seen])),
    )


def ranked_positions(
    codes: np.ndarray, task: RetrievalTask, descriptors: np.ndarray | None = None, *, rerank: bool = True,
    shortlist: int = DEFAULT_SHORTLIST, weight: float = DEFAULT_WEIGHT, gate: float | None = None,
) -> np.ndarray:
    """``(Q, N')`` positions into ``task.database`` in the order the index returns them.

    The same two-stage order as :meth:`rshash.index.Index.search` (Hamming shortlist,
    descriptor re-rank, ties by database position = id); ``descriptors=None`` or
    ``rerank=False``: Hamming order. Excluded pairs (a query itself) are dropped.
    """
    packed = pack_codes(codes)
    bits = codes.shape[1]
    ham = hamming_matrix(packed[task.queries], packed[task.database]).astype(np.int64)
    sim = None
    if rerank and descriptors is not None:
        q8 = quantize_descriptors(descriptors[task.queries])
        sim = cosine_similarity(q8, quantize_descriptors(descriptors[task.database]))
    mask = task.exclude_self_mask()
    drop = 0
    if mask is not None and mask.any():
        per_query = mask.sum(axis=1)
        if (per_query != per_query[0]).any():
            raise ValueError("every query must exclude the same number of database items")
        drop = int(per_query[0])
        ham[mask] = bits + 1  # after every real item, in either order
        if sim is not None:
            sim[mask] = -1.0
    order = two_stage_order(ham, np.arange(len(task.database)), bits, sim, rerank=rerank, shortlist=shortlist,
                            weight=weight, gate=gate)
    return order[:, : order.shape[1] - drop]


def evaluate(
    codes: np.ndarray, labels: np.ndarray, task: RetrievalTask, descriptors: np.ndarray | None = None, *,
    rerank: bool = True, shortlist: int = DEFAULT_SHORTLIST, weight: float = DEFAULT_WEIGHT,
    gate: float | None = None,
) -> dict[str, float]:
    """The task's metrics for ``(N, bits)`` bool codes (and descriptors) ranked as the index ranks.

    ``labels``: ``(N,)`` class ids, or ``(N, L)`` bool multi-hot rows for multi-label relevance.
    """
    order = ranked_positions(codes, task, descriptors, rerank=rerank, shortlist=shortlist, weight=weight, gate=gate)
    return report_from_relevance(relevance_matrix(labels[task.queries], labels[task.database], order), task.ks)


def evaluate_codes(codes: np.ndarray, labels: np.ndarray, task: RetrievalTask) -> dict[str, float]:
    """Hamming-only metrics (ties by database order): :func:`evaluate` without re-rank."""
    return evaluate(codes, labels, task, rerank=False)
