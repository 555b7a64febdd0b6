"""The simulated user of issue 17: examples, then rounds of yes/no marks, scored as the index ranks them.

One class at a time: the user starts from positive examples of the class (drawn from the query split), looks
at the top :data:`LOOK` unmarked hits and marks up to :data:`MARKS` wrong ones "no" and up to :data:`MARKS`
right ones "yes", and searches again. Every ranking is the index's own relevance-feedback ranking
(:func:`rshash.index.search.rank_feedback` over the task's database, every database item a candidate);
examples and marked items are removed from the ranking and from the relevant set before scoring.

Conditions (each scored by mAP@all, AP normalised by every relevant item left, and precision@50):

* ``1pos``: the first positive alone; ``5pos``: five positives;
* ``5pos_5neg``: five positives and the (up to) five wrong hits among the top :data:`LOOK` of ``5pos`` as "no";
* ``refined_2rounds``: from ``5pos``, two rounds of marks (yes and no);

and "find all" after the two rounds: precision, recall and F1 of the candidates whose standardised score is at
most a threshold (:data:`rshash.feedback.FIND_ALL_THRESHOLD` by default). ``same_items``: the 5pos, 5pos_5neg and
refined rankings scored on the same items, those left after the two rounds (each later condition otherwise has
fewer, harder relevant items left: the marked ones are the easiest).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..feedback import FEEDBACK_HALF, FIND_ALL_THRESHOLD
from ..index.search import QueryVectors, SearchParams, rank_feedback
from ..index.vectors import VectorTable
from .metrics import average_precision, precision_at_k

LOOK = 20
MARKS = 5
CONDITIONS = ("1pos", "5pos", "5pos_5neg", "refined_2rounds")


@dataclass
class Session:
    """One user's marks on one class: positive ids (examples and "yes") and negative ids ("no")."""

    positives: list[int]
    negatives: list[int] = field(default_factory=list)

    @property
    def marked(self) -> list[int]:
        return self.positives + self.negatives


def table_of(codes: np.ndarray, descriptors: np.ndarray) -> VectorTable:
    """A vector table whose ids are the row numbers of packed codes and int8 descriptors."""
    from ..ranking import descriptor_norms

    return VectorTable(np.arange(len(codes), dtype=np.int64), np.ascontiguousarray(codes),
                       np.ascontiguousarray(descriptors), descriptor_norms(descriptors))


def ranked(table: VectorTable, database: np.ndarray, session: Session, bits: int, weight: float,
           half: int = FEEDBACK_HALF, **options) -> tuple[np.ndarray, np.ndarray]:
    """Database ids in the order the index returns them for the session's marks (marked ids left out), and
    their standardised scores (lower is better). ``options``: those of :func:`rank_feedback`."""
    vec = lambda i: QueryVectors(table.codes[i], table.descriptors[i], (int(i),))  # noqa: E731
    params = SearchParams(k=len(database), weight=weight, exclude=tuple(session.marked))
    result, _ = rank_feedback([vec(i) for i in session.positives], [vec(i) for i in session.negatives], params,
                              None, table, np.asarray(database, dtype=np.int64), bits, half=half, **options)
    return result.ids, result.scores


def ranking(table: VectorTable, database: np.ndarray, session: Session, bits: int, weight: float,
            half: int = FEEDBACK_HALF) -> np.ndarray:
    """Database ids in the order the index returns them for the session's marks (marked ids left out)."""
    return ranked(table, database, session, bits, weight, half)[0]


def find_all(ids: np.ndarray, scores: np.ndarray, relevant: np.ndarray, threshold: float) -> tuple[float, float, float]:
    """(precision, recall, F1) of "find all": the candidates scoring at most ``threshold``, against every
    relevant candidate."""
    chosen = ids[scores <= threshold]
    hits = int(np.count_nonzero(relevant[chosen]))
    total = int(np.count_nonzero(relevant[ids]))
    precision = hits / len(chosen) if len(chosen) else 0.0
    recall = hits / total if total else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return precision, recall, f1


def score(order: np.ndarray, relevant: np.ndarray) -> tuple[float, float]:
    """(AP, precision@50) of a ranking of the whole database less the marked items: AP over the whole
    ranking is normalised by every relevant item in it, i.e. every relevant database item not marked."""
    rel = relevant[order][None, :]
    return float(average_precision(rel)[0]), float(precision_at_k(rel, 50)[0])


def mark(order: np.ndarray, relevant: np.ndarray, session: Session, yes: bool = True) -> Session:
    """The user's round: among the top :data:`LOOK` hits (already unmarked), up to :data:`MARKS` right ones "yes"
    (if ``yes``) and up to :data:`MARKS` wrong ones "no"."""
    top = order[:LOOK]
    right = [int(i) for i in top if relevant[i]][:MARKS] if yes else []
    wrong = [int(i) for i in top if not relevant[i]][:MARKS]
    return Session(session.positives + right, session.negatives + wrong)


def simulate(table: VectorTable, database: np.ndarray, relevant: np.ndarray, examples: list[int], bits: int,
             weight: float, half: int = FEEDBACK_HALF, thresholds: tuple[float, ...] = (FIND_ALL_THRESHOLD,),
             **options) -> dict[str, tuple]:
    """Every condition of the module for one class: ``{condition: (AP, P@50)}``, and ``find_all``: ``{threshold:
    (precision, recall, F1)}`` after the two rounds. ``relevant``: bool over all table rows; ``examples``: at
    least five positive ids (not in ``database``)."""
    def order_of(session: Session) -> np.ndarray:
        return ranked(table, database, session, bits, weight, half, **options)[0]

    out = {}
    one = Session(examples[:1])
    out["1pos"] = score(order_of(one), relevant)
    five = Session(list(examples[:5]))
    first = order_of(five)
    out["5pos"] = score(first, relevant)
    with_no = mark(first, relevant, five, yes=False)
    second = order_of(with_no)
    out["5pos_5neg"] = score(second, relevant)
    session, order = five, first
    for _ in range(2):
        session = mark(order, relevant, session)
        order, scores = ranked(table, database, session, bits, weight, half, **options)
    out["refined_2rounds"] = score(order, relevant)
    out["find_all"] = {t: find_all(order, scores, relevant, t) for t in thresholds}
    # each ranking scored on the same items: those left after the two rounds (the marked, easiest relevant
    # items removed from every ranking), so that the steps compare the rankings, not what is left to find
    left = lambda o: o[~np.isin(o, session.marked)]  # noqa: E731
    out["same_items"] = {"5pos": score(left(first), relevant), "5pos_5neg": score(left(second), relevant),
                         "refined_2rounds": out["refined_2rounds"]}
    return out
