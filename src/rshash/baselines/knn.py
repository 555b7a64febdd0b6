"""No hashing: rank the database by cosine similarity of real-valued features (the reference ceiling)."""

from __future__ import annotations

import numpy as np

from ..evaluation.protocols import RetrievalTask
from ..evaluation.ranking import ranking_report


def l2_normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def cosine_distances(queries: np.ndarray, database: np.ndarray) -> np.ndarray:
    """``1 - cos`` between every query and database row, ``(Q, N)``."""
    return 1.0 - l2_normalise(queries) @ l2_normalise(database).T


def knn_report(features: np.ndarray, labels: np.ndarray, task: RetrievalTask) -> dict[str, float]:
    """The task's metrics when the full database is ranked by cosine similarity (AP over the full ranking)."""
    dist = cosine_distances(features[task.queries], features[task.database])
    return ranking_report(dist, labels[task.queries], labels[task.database], task.exclude_self_mask(), task.ks)
