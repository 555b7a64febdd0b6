"""HashNet (Cao et al., ICCV 2017): class-balanced pairwise cross-entropy with continuation."""

from __future__ import annotations

import torch
from torch import nn

from .pairs import pair_nll, pair_similarity


class HashNetLoss(nn.Module):
    """Weighted pairwise cross-entropy on ``theta_ij = alpha <h_i, h_j>``.

    Similar and dissimilar pairs are weighted by ``|S| / |S_1|`` and ``|S| / |S_0|``,
    so the loss is ``mean over similar pairs + mean over dissimilar pairs``:
    dissimilar pairs far outnumber similar ones and would otherwise dominate.
    ``alpha = 10 / bits`` as in the authors' code. Continuation: ``h = tanh(beta z)``
    on the pre-sigmoid output ``z`` with ``beta = sqrt(1 + gamma * step)`` growing
    each training step, so codes are pushed to +-1 gradually (``beta = 1/2`` at
    step 0 equals ``2u - 1``).
    """

    def __init__(self, bits: int, alpha: float | None = None, continuation: bool = True, gamma: float = 0.005):
        super().__init__()
        self.alpha = alpha if alpha is not None else 10.0 / bits
        self.continuation, self.gamma = continuation, gamma
        self.register_buffer("step", torch.zeros((), dtype=torch.long))

    def scale(self) -> float:
        """The continuation's ``beta`` (in units of the pre-sigmoid output, halved)."""
        return 0.5 * float((1 + self.gamma * self.step.item()) ** 0.5) if self.continuation else 0.5

    def forward(
        self, u: torch.Tensor, labels: torch.Tensor, teacher: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        z = torch.logit(u.clamp(1e-6, 1 - 1e-6))
        h = torch.tanh(self.scale() * z)
        if self.training and torch.is_grad_enabled():
            self.step += 1
        s, distinct = pair_similarity(labels)
        nll = pair_nll(self.alpha * h @ h.T, s)
        similar, dissimilar = distinct & (s > 0), distinct & (s == 0)
        parts = [nll[m].mean() for m in (similar, dissimilar) if m.any()]
        total = sum(parts) if parts else u.sum() * 0.0
        return {"pairwise": total, "total": total}
