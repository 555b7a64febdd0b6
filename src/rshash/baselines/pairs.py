"""Pairwise pieces shared by the pairwise deep-hashing losses (DPSH, HashNet)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def signed(u: torch.Tensor) -> torch.Tensor:
    """Sigmoid outputs in [0, 1] -> relaxed codes in [-1, 1] (the papers' tanh-style ``h``)."""
    return 2 * u - 1


def pair_similarity(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``s_ij`` (1 = same class) over the batch and the mask of distinct pairs ``i != j``."""
    same = (labels[:, None] == labels[None, :]).float()
    distinct = ~torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    return same, distinct


def pair_nll(theta: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """Negative log-likelihood of ``s`` under ``p(s=1) = sigmoid(theta)``: ``log(1+e^theta) - s*theta`` (stable)."""
    return F.softplus(theta) - s * theta
