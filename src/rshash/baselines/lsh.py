"""Locality-sensitive hashing with random hyperplanes (Charikar 2002): the data-independent floor."""

from __future__ import annotations

import numpy as np

from .linear import LinearHasher


class LSH(LinearHasher):
    """Each bit is the side of a seeded random Gaussian hyperplane through the feature mean."""

    def _projection(self, centred: np.ndarray) -> np.ndarray:
        return np.random.default_rng(self.seed).standard_normal((centred.shape[1], self.bits))
