"""CSQ: central similarity quantization (Yuan et al., CVPR 2020)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .pairs import signed


def hadamard(n: int) -> np.ndarray:
    """Sylvester Hadamard matrix of order ``n`` (a power of 2): rows are +-1 and mutually orthogonal."""
    if n < 1 or n & (n - 1):
        raise ValueError(f"Sylvester Hadamard order must be a power of 2, got {n}")
    h = np.ones((1, 1))
    while len(h) < n:
        h = np.block([[h, h], [h, -h]])
    return h


def hash_centres(num_classes: int, bits: int, seed: int = 0) -> np.ndarray:
    """One +-1 centre per class, ``(C, bits)``.

    Rows of a Hadamard matrix and their negations when ``bits`` is a power of 2 and
    ``2 * bits >= C`` (centres at Hamming distance >= bits/2 from each other);
    otherwise seeded Bernoulli(1/2) bits (distance about bits/2 on average).
    """
    if bits & (bits - 1) == 0 and 2 * bits >= num_classes:
        h = hadamard(bits)
        return np.concatenate([h, -h])[:num_classes]
    return np.where(np.random.default_rng(seed).random((num_classes, bits)) < 0.5, -1.0, 1.0)


class CSQLoss(nn.Module):
    """Binary cross-entropy of each output to its class centre's bit, plus ``lam * mean(|h| - 1)^2``."""

    def __init__(self, bits: int, num_classes: int, lam: float = 1e-4, seed: int = 0):
        super().__init__()
        self.lam = lam
        self.register_buffer("centres", torch.from_numpy(hash_centres(num_classes, bits, seed)).float())

    def forward(
        self, u: torch.Tensor, labels: torch.Tensor, teacher: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        target = (self.centres[labels] + 1) / 2
        centre = F.binary_cross_entropy(u.clamp(1e-7, 1 - 1e-7), target)
        quant = self.lam * (signed(u).abs() - 1).pow(2).mean()
        return {"centre": centre, "quant": quant, "total": centre + quant}
