"""Learned whitening from the archive's own pairs, then ITQ: the closed-form self-supervised hashing head.

Radenović et al. (2018) learn a whitening for retrieval from matching pairs: the covariance of the differences of
matching descriptors says which directions are nuisance (illumination, season, sensor, framing) and whitening by
it shrinks them, before a PCA keeps the directions that still separate places. Here the matching pairs are the
archive's own: the same footprint in two acquisitions (time positives) and a chip and its augmented views
(augmentation positives, weighted by ``aug_weight``). ITQ (Gong & Lazebnik 2011) then rotates the first ``bits``
whitened dimensions so that their signs lose the least. Everything is linear, so the head exports to ONNX as two
matrix products.

Input features are the concatenated, per-level L2-normalised average-pooled stage vectors of the frozen backbone
(:func:`level_features`), so fine detail and semantics both count.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..baselines.itq import itq_rotation


def level_features(pooled: np.ndarray, tap_dims: Sequence[int]) -> np.ndarray:
    """``(..., sum(tap_dims))`` avg+max pooled levels -> ``(..., sum(tap_dims) / 2)``: each level's average half,
    L2-normalised, concatenated low level to high level."""
    bounds = np.cumsum([0, *tap_dims])
    parts = []
    for a, d in zip(bounds[:-1], tap_dims):
        v = pooled[..., a:a + d // 2].astype(np.float64)
        parts.append(v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-12))
    return np.concatenate(parts, axis=-1)


def _inverse_sqrt(cov: np.ndarray, eps: float) -> np.ndarray:
    """``cov^-1/2`` with eigenvalues floored at ``eps * max`` (a few pairs cannot pin down every direction)."""
    w, v = np.linalg.eigh(cov)
    w = np.maximum(w, 0) + eps * max(float(w.max()), 1e-12)
    return (v * w ** -0.5) @ v.T


@dataclass
class WhiteningFit:
    """``descriptor = (x - mean) @ projection``; ``bits = descriptor @ rotation >= 0``."""

    mean: np.ndarray  # (D,)
    projection: np.ndarray  # (D, dims)
    rotation: np.ndarray  # (dims, bits)
    time_pairs: int
    aug_pairs: int

    def embed(self, x: np.ndarray) -> np.ndarray:
        return (x - self.mean) @ self.projection

    def codes(self, x: np.ndarray) -> np.ndarray:
        return self.embed(x) @ self.rotation >= 0


def fit_pair_whitening(views: np.ndarray, pairs: np.ndarray, bits: int, dims: int = 128, pca_dims: int = 256,
                       aug_weight: float = 0.1, eps: float = 1e-2, itq_iterations: int = 50,
                       seed: int = 0) -> WhiteningFit:
    """Fit the head on training chips.

    ``views`` ``(N, V, D)``: level features of each training chip (view 0: the chip itself; views 1..: augmented);
    ``pairs`` ``(P, 2)``: indices into N of the same footprint at two dates. Without time pairs the nuisance
    covariance comes from the augmentations alone.
    """
    n, v, dim = views.shape
    if bits <= 0 or bits % 8:
        raise ValueError(f"bits must be a positive multiple of 8, got {bits}")
    if bits > dims:
        raise ValueError(f"bits ({bits}) must be <= whitened dims ({dims})")
    pca_dims = min(pca_dims, dim, n * v - 1)
    if bits > pca_dims:
        raise ValueError(f"too few training chips or images for {bits} bits: {n} x {v} views give at most "
                         f"{pca_dims} independent dimensions; give more rasters or images, or fewer bits (--bits)")
    dims = min(dims, pca_dims)  # a small archive gets a shorter descriptor
    mean = views[:, 0].mean(axis=0)
    _, _, vt = np.linalg.svd((views - mean).reshape(-1, dim), full_matrices=False)
    pca = vt[:pca_dims].T  # (D, pca)
    z = (views - mean) @ pca  # (N, V, pca)
    cov = np.zeros((pca_dims, pca_dims))
    if len(pairs):
        d = z[pairs[:, 0], 0] - z[pairs[:, 1], 0]
        cov += d.T @ d / len(d)
    if v > 1 and (aug_weight > 0 or not len(pairs)):
        a = (z[:, 1:] - z[:, :1]).reshape(-1, pca_dims)
        cov += (aug_weight if len(pairs) else 1.0) * (a.T @ a / len(a))
    if not cov.any():
        raise ValueError("no positive pairs: need chips of one footprint at two dates or augmented views")
    whiten = _inverse_sqrt(cov, eps)
    w = z[:, 0] @ whiten
    evals, evecs = np.linalg.eigh(w.T @ w / len(w))
    top = evecs[:, ::-1][:, :dims]
    top *= np.where(top.sum(axis=0) < 0, -1.0, 1.0)  # deterministic signs
    projection = pca @ whiten @ top  # (D, dims), principal directions of the whitened space first
    # ITQ on the leading `bits` whitened dimensions, fitted on every view of the training chips
    lead = (z.reshape(-1, pca_dims) @ whiten @ top)[:, :bits]
    rotation = np.zeros((dims, bits))
    rotation[:bits] = itq_rotation(lead, itq_iterations, np.random.default_rng(seed))
    return WhiteningFit(mean.astype(np.float32), projection.astype(np.float32), rotation.astype(np.float32),
                        int(len(pairs)), int(n * (v - 1)))


def class_pairs(labels: np.ndarray, count: int, seed: int = 0) -> np.ndarray:
    """``(P <= count, 2)`` seeded pairs of distinct items with the same label (indices into ``labels``): the
    positive pairs of a labelled source, whose differences say what varies within a class."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    members = {c: np.flatnonzero(labels == c) for c in np.unique(labels)}
    members = {c: m for c, m in members.items() if len(m) > 1}
    if not members:
        return np.zeros((0, 2), dtype=np.int64)
    anchors = rng.choice(np.concatenate(list(members.values())), size=count)
    partners = np.array([rng.choice(members[labels[a]]) for a in anchors])
    keep = anchors != partners
    return np.stack([anchors[keep], partners[keep]], axis=1).astype(np.int64)


def spread_to_levels(fit: WhiteningFit, tap_dims: Sequence[int], level: int = -1) -> WhiteningFit:
    """A fit on one level's features (:func:`level_features` of that level alone) laid out for all levels: the
    other levels' rows of ``mean`` and ``projection`` are zero, so a head over every level reads that one only."""
    widths = [d // 2 for d in tap_dims]
    start = int(np.sum(widths[:level % len(widths)]))
    mean = np.zeros(sum(widths), dtype=fit.mean.dtype)
    projection = np.zeros((sum(widths), fit.projection.shape[1]), dtype=fit.projection.dtype)
    mean[start:start + len(fit.mean)] = fit.mean
    projection[start:start + len(fit.mean)] = fit.projection
    return WhiteningFit(mean, projection, fit.rotation, fit.time_pairs, fit.aug_pairs)
