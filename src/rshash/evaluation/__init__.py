"""Evaluation protocols (who queries whom), rankings from any distance, and the HTML report."""

from .protocols import (
    RetrievalTask,
    all_vs_all,
    evaluate_codes,
    protocol_a,
    protocol_b,
    stratified_indices,
    unseen_assignment,
    unseen_classes,
    unseen_task,
)
from .ranking import ranked_relevance, ranking_report

__all__ = [
    "RetrievalTask", "all_vs_all", "evaluate_codes", "protocol_a", "protocol_b", "ranked_relevance",
    "ranking_report", "stratified_indices", "unseen_assignment", "unseen_classes", "unseen_task",
]
