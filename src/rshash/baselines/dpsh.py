"""DPSH: deep pairwise-supervised hashing (Li, Wang & Kang, IJCAI 2016)."""

from __future__ import annotations

import torch
from torch import nn

from .pairs import pair_nll, pair_similarity, signed


class DPSHLoss(nn.Module):
    """Pairwise likelihood with ``theta_ij = <h_i, h_j> / 2`` plus ``eta * mean (h - sign h)^2``.

    ``h = 2u - 1``; pairs are the distinct pairs of the batch (the P x M batches
    always hold both similar and dissimilar pairs). Kept as published: with many
    classes about 95 % of a 16 x 4 batch's pairs are dissimilar and dominate the
    mean, the imbalance that HashNet's weighting addresses.
    """

    def __init__(self, bits: int, eta: float = 0.1):
        super().__init__()
        self.bits, self.eta = bits, eta

    def forward(
        self, u: torch.Tensor, labels: torch.Tensor, teacher: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        h = signed(u)
        s, distinct = pair_similarity(labels)
        likelihood = pair_nll(0.5 * h @ h.T, s)[distinct].mean()
        quant = self.eta * (h - h.detach().sign()).pow(2).mean()
        return {"likelihood": likelihood, "quant": quant, "total": likelihood + quant}
