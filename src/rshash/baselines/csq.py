"""CSQ: central similarity quantization (Yuan et al., CVPR 2020)."""

from __future__ import annotations

import torch
from torch import nn

from ..hashing.losses import HashCentreLoss, hadamard, hash_centres  # noqa: F401  (re-exported)
from .pairs import signed


class CSQLoss(nn.Module):
    """Binary cross-entropy of each output to its class centre's bit, plus ``lam * mean(|h| - 1)^2``."""

    def __init__(self, bits: int, num_classes: int, lam: float = 1e-4, seed: int = 0):
        super().__init__()
        self.lam = lam
        self.centre = HashCentreLoss(bits, num_classes, seed)

    def forward(
        self, u: torch.Tensor, labels: torch.Tensor, teacher: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        centre = self.centre(u, labels)
        quant = self.lam * (signed(u).abs() - 1).pow(2).mean()
        return {"centre": centre, "quant": quant, "total": centre + quant}
