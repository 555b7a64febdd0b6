"""Shared shape of the unsupervised hashers: bit = sign of a linear projection of centred features."""

from __future__ import annotations

import numpy as np


class LinearHasher:
    """``codes(x) = (x - mean) @ W >= 0``; subclasses choose ``W`` in :meth:`_projection`."""

    def __init__(self, bits: int, seed: int = 0):
        if bits <= 0:
            raise ValueError(f"bits must be positive, got {bits}")
        self.bits, self.seed = bits, seed
        self.mean: np.ndarray | None = None
        self.weights: np.ndarray | None = None

    def fit(self, features: np.ndarray) -> "LinearHasher":
        """Learn the centre and projection from (training) features ``(N, D)``."""
        x = np.asarray(features, dtype=np.float64)
        if x.ndim != 2:
            raise ValueError(f"expected (N, D) features, got shape {x.shape}")
        self.mean = x.mean(axis=0)
        self.weights = self._projection(x - self.mean)
        return self

    def codes(self, features: np.ndarray) -> np.ndarray:
        """``(N, D)`` features -> ``(N, bits)`` bool codes."""
        if self.weights is None or self.mean is None:
            raise RuntimeError(f"{type(self).__name__} is not fitted: call fit() first")
        return (np.asarray(features, dtype=np.float64) - self.mean) @ self.weights >= 0

    def _projection(self, centred: np.ndarray) -> np.ndarray:
        raise NotImplementedError
