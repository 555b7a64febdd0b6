"""Relevance feedback: rank candidates by positive examples and, once some are marked "no", a light classifier.

One implementation, used by the index (``Index.search_examples``, the CLI and the HTTP API) and by the
benchmark that simulates a user (``benchmarks/examples_search.py``).

* **Positives only**: the two-stage score of :mod:`rshash.ranking` averaged over the positives (the score of a
  multi-example search, at :data:`FEEDBACK_WEIGHT` unless a weight is given), lower is better.
* **Positives and negatives**: a logistic regression (scikit-learn, L2; positives and negatives balanced, and
  :data:`FEEDBACK_BACKGROUND` unmarked candidates as weak negatives) fitted on the marks' features — the
  L2-normalised int8 descriptor beside the code's bits as +-1 / sqrt(bits) — in a few milliseconds; its decision value and the positives' score are standardised over the candidates and
  blended, the classifier's weight ``n / (n + FEEDBACK_HALF)`` growing with the number of marks ``n``
  (positives and negatives together).
* **Diffusion** (:mod:`rshash.diffusion`, on by default in :func:`rshash.index.search.rank_feedback`): on the
  best :data:`rshash.diffusion.DIFFUSION_ITEMS` candidates the positives' score is replaced by their relevance
  spread over the candidates' nearest-neighbour graph before the blend; the rest follow them.

Scores are "lower is better" like every ranking score in rshash, and standardised over the candidates (mean 0,
standard deviation 1), so one threshold fits every query: "find all" keeps the candidates scoring at most
:data:`FIND_ALL_THRESHOLD`.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from .ranking import rerank_scores

#: Defaults chosen on the validation-unseen fold (benchmarks/results/examples_search.json, ``user.validation``):
#: marks at which the classifier and the positives' similarity weigh the same (weight n / (n + FEEDBACK_HALF)),
FEEDBACK_HALF = 20
#: and the descriptor weight of the positives' two-stage score in an examples search (the single-query default
#: of a labelled model, 0.25, protects seen classes; examples searches are for finding kinds of place, where
#: the descriptor generalises: 0.9 ranked far better on the validation-unseen classes).
FEEDBACK_WEIGHT = 0.9
#: Inverse L2 strength of the classifier (scikit-learn's ``C``).
FEEDBACK_C = 1.0
#: Unmarked candidates drawn (seeded) as weak negatives beside the "no" marks: the classifier then learns what
#: sets the positives apart from the archive, not only from the few marked wrong hits (a linear model fitted on
#: a handful of marks alone extrapolates: far-away content can score high along its direction).
FEEDBACK_BACKGROUND = 256
#: The weight of each background row relative to a mark (the marks' classes are balanced separately).
FEEDBACK_BACKGROUND_WEIGHT = 0.02
#: "Find all" keeps candidates whose standardised score is at most this (chosen on validation:
#: benchmarks/results/examples_search.json, ``user.validation``).
FIND_ALL_THRESHOLD = -1.0


@dataclass(frozen=True)
class Feedback:
    """What a feedback ranking used: the classifier's weight (0 without negatives) and the marks."""

    positives: int
    negatives: int
    classifier_weight: float


def features(codes: np.ndarray, descriptors: np.ndarray | None, bits: int) -> np.ndarray:
    """``(N, D + bits)`` float32: L2-normalised descriptors beside the unpacked bits as +-1 / sqrt(bits)
    (both blocks unit length), from packed uint8 codes and int8 descriptors (None: the bits only)."""
    b = np.unpackbits(np.asarray(codes, dtype=np.uint8), axis=1)[:, :bits].astype(np.float32)
    bits_block = (2.0 * b - 1.0) / np.sqrt(bits)
    if descriptors is None:
        return bits_block
    d = np.asarray(descriptors, dtype=np.float32)
    d /= np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-12)
    return np.hstack([d, bits_block])


def decision(codes: np.ndarray, bits: int, weights: np.ndarray, bias: float,
             descriptor_cosine: np.ndarray | None = None) -> np.ndarray:
    """``features(codes, descriptors, bits) @ weights + bias`` without building the feature rows: the bits' part
    from a lookup table per code byte, the descriptors' part given as their cosine similarity to the weights'
    descriptor block (``descriptor_cosine``, None: a classifier of bits only), since the features hold the
    L2-normalised descriptor: ``d / |d| . w_d = |w_d| cos(d, w_d)``."""
    codes = np.asarray(codes, dtype=np.uint8)
    w = np.asarray(weights, dtype=np.float32)
    wb = w[-bits:] * (2.0 / np.sqrt(bits))  # what a set bit adds; an unset one adds nothing beyond the constant
    # a lookup table per code byte: the weight sum of every byte value's set bits (numpy.packbits bit order)
    per_byte = np.unpackbits(np.arange(256, dtype=np.uint8)[:, None], axis=1).astype(np.float32)  # (256, 8)
    lut = per_byte @ np.pad(wb, (0, codes.shape[1] * 8 - bits)).reshape(codes.shape[1], 8).T  # (256, bytes)
    out = lut[codes, np.arange(codes.shape[1])].sum(axis=1) - w[-bits:].sum() / np.sqrt(bits) + bias
    if descriptor_cosine is not None:
        out = out + np.asarray(descriptor_cosine, dtype=np.float32) * np.linalg.norm(w[:-bits])
    return out.astype(np.float64)


def classifier_weight(n_marks: int, half: int = FEEDBACK_HALF) -> float:
    """The weight of the classifier in the blend, ``n / (n + half)``: growing with the number of marks."""
    return n_marks / (n_marks + half)


def _standardise(v: np.ndarray) -> np.ndarray:
    sd = float(v.std())
    return (v - v.mean()) / sd if sd > 0 else np.zeros_like(v)


def positive_scores(hamming: np.ndarray, similarity: np.ndarray | None, bits: int, weight: float) -> np.ndarray:
    """``(N,)`` mean over the positives of the two-stage score (lower is better) from ``(P, N)`` Hamming
    distances and descriptor similarities (None: normalised Hamming distance; ``(1, N)``: the mean similarity to
    the positives, the same score since it is linear in the similarity). (The nearest positive instead of
    the mean ranked worse on the validation folds.)"""
    if similarity is None:
        return (np.asarray(hamming, dtype=np.float64) / bits).mean(axis=0)
    return rerank_scores(hamming, similarity, bits, weight).mean(axis=0)


def fit_classifier(positives: np.ndarray, negatives: np.ndarray, background: np.ndarray | None = None,
                   background_weight: float = FEEDBACK_BACKGROUND_WEIGHT) -> tuple[np.ndarray, float]:
    """A linear classifier of the marks (:func:`features` rows): ``(weights, bias)``; its decision value on a
    candidate is ``features @ weights + bias`` (higher: more like the positives). Positives and negatives weigh
    the same in total; ``background`` rows (unmarked candidates) are negatives of ``background_weight`` each."""
    from sklearn.linear_model import LogisticRegression

    bg = np.zeros((0, positives.shape[1]), np.float32) if background is None else background
    x = np.vstack([positives, negatives, bg])
    y = np.r_[np.ones(len(positives)), np.zeros(len(negatives) + len(bg))]
    w = np.r_[np.full(len(positives), 1.0 / len(positives)), np.full(len(negatives), 1.0 / max(len(negatives), 1)),
              np.full(len(bg), background_weight / max(len(negatives), 1))]
    model = LogisticRegression(C=FEEDBACK_C, max_iter=200)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a few marks may not converge to tolerance: the fit is still usable
        model.fit(x, y, sample_weight=w * len(x) / w.sum())
    return model.coef_[0].astype(np.float32), float(model.intercept_[0])


def blend(base: np.ndarray, decision: np.ndarray, n_marks: int, half: int = FEEDBACK_HALF) -> tuple[np.ndarray, float]:
    """The feedback score (lower is better) of candidates from the positives' scores ``base`` (lower is better)
    and the classifier's decision values (higher is better), both standardised over the candidates; returns the
    scores and the classifier's weight."""
    alpha = classifier_weight(n_marks, half)
    blended = (1.0 - alpha) * _standardise(-np.asarray(base, dtype=np.float64)) \
        + alpha * _standardise(np.asarray(decision, dtype=np.float64))
    return -blended, alpha


def feedback_scores(base: np.ndarray, candidates: np.ndarray, positives: np.ndarray,
                    negatives: np.ndarray) -> tuple[np.ndarray, Feedback]:
    """Scores (lower is better) of candidates given the positives' scores ``base`` ``(N,)`` and the
    :func:`features` of candidates, positives and negatives: ``base`` unchanged without negatives, else
    :func:`blend` with the classifier fitted on the marks."""
    p, m = len(positives), len(negatives)
    if p == 0 or m == 0:
        return np.asarray(base, dtype=np.float64), Feedback(p, m, 0.0)
    w, b = fit_classifier(positives, negatives)
    scores, alpha = blend(base, np.asarray(candidates, dtype=np.float32) @ w + b, p + m)
    return scores, Feedback(p, m, alpha)
