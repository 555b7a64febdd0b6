"""Evaluation: metrics (the only metric code), protocols (who queries whom, ranked as the index ranks),
rankings of real-valued distances, and the HTML report."""

from .protocols import (
    RetrievalTask,
    all_vs_all,
    evaluate,
    evaluate_codes,
    protocol_a,
    protocol_b,
    ranked_positions,
    stratified_indices,
    unseen_all_task,
    unseen_assignment,
    unseen_classes,
    unseen_task,
    validation_unseen_assignment,
)
from .ranking import ranked_relevance, ranking_report

__all__ = [
    "RetrievalTask", "all_vs_all", "evaluate", "evaluate_codes", "protocol_a", "protocol_b", "ranked_positions",
    "ranked_relevance", "ranking_report", "stratified_indices", "unseen_all_task", "unseen_assignment",
    "unseen_classes", "unseen_task", "validation_unseen_assignment",
]
