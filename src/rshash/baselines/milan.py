"""MiLAN: metric-learning based deep hashing for remote sensing (Roy, Sangineto, Demir & Sebe, GRSL 2020)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..hashing.losses import batch_all_triplets


class MiLANLoss(nn.Module):
    """Triplet margin loss + push away from 1/2 + per-code bit balance, on sigmoid outputs.

    * triplet: ``max(0, ||u_a - u_p|| - ||u_a - u_n|| + margin)`` (Euclidean, as
      ``nn.TripletMarginLoss`` in the authors' code), over all batch triplets;
    * push: ``-mean (u - 1/2)^2``, rewarding outputs near 0 or 1 so binarising loses little;
    * balance: ``mean_i (mean_k u_ik - 1/2)^2``, each code about half ones (the
      authors' balancing term), which spreads codes over the Hamming space.

    The reference code sums push and balance over the batch; here they are batch
    means, so the weights do not depend on the batch size.
    """

    def __init__(self, bits: int, margin: float = 1.0, w_push: float = 0.1, w_balance: float = 1.0):
        super().__init__()
        self.bits, self.margin, self.w_push, self.w_balance = bits, margin, w_push, w_balance

    def forward(
        self, u: torch.Tensor, labels: torch.Tensor, teacher: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        a, p, n = batch_all_triplets(labels)
        triplet = F.triplet_margin_loss(u[a], u[p], u[n], margin=self.margin) if len(a) else u.sum() * 0.0
        push = -self.w_push * (u - 0.5).pow(2).mean()
        balance = self.w_balance * (u.mean(dim=1) - 0.5).pow(2).mean()
        return {"triplet": triplet, "push": push, "balance": balance, "total": triplet + push + balance}
