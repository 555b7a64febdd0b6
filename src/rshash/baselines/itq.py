"""Iterative quantization (Gong & Lazebnik 2011): PCA, then the rotation that best fits the hypercube."""

from __future__ import annotations

import numpy as np

from .linear import LinearHasher


def random_rotation(dim: int, rng: np.random.Generator) -> np.ndarray:
    """A random orthogonal ``(dim, dim)`` matrix (QR of a Gaussian matrix)."""
    q, r = np.linalg.qr(rng.standard_normal((dim, dim)))
    return q * np.sign(np.diag(r))


def itq_rotation(v: np.ndarray, iterations: int, rng: np.random.Generator) -> np.ndarray:
    """Alternate ``B = sign(V R)`` and the orthogonal Procrustes fit of ``R`` to ``B``."""
    rotation = random_rotation(v.shape[1], rng)
    for _ in range(iterations):
        b = np.where(v @ rotation >= 0, 1.0, -1.0)
        u, _, vt = np.linalg.svd(b.T @ v)
        rotation = (u @ vt).T
    return rotation


class ITQ(LinearHasher):
    """PCA to ``bits`` dimensions, then a learned rotation minimising the quantization error."""

    def __init__(self, bits: int, iterations: int = 50, seed: int = 0):
        super().__init__(bits, seed)
        self.iterations = iterations

    def _projection(self, centred: np.ndarray) -> np.ndarray:
        if self.bits > min(centred.shape):
            raise ValueError(f"ITQ needs bits <= min(samples, dims) = {min(centred.shape)}, got {self.bits}")
        _, _, vt = np.linalg.svd(centred, full_matrices=False)
        pca = vt[: self.bits].T
        return pca @ itq_rotation(centred @ pca, self.iterations, np.random.default_rng(self.seed))
