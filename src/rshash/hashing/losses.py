"""Hashing losses as small composable modules (in the style of pytorch-metric-learning).

All take sigmoid outputs ``u`` in [0, 1]^K. Triplet losses take index tensors
``(a, p, n)`` from a miner, so mining strategy and loss are independent.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def sq_dist(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Row-wise squared Euclidean distance."""
    return ((x - y) ** 2).sum(dim=1)


class LosslessTripletLoss(nn.Module):
    """The lossless triplet loss (Arjun, 2018), as used by the seed paper.

    ``L = -ln(1 - pos/beta + eps) - ln(1 - (N - neg)/beta + eps)`` with squared
    distances between sigmoid outputs, ``beta = N = bits`` and ``eps = 1e-8``.
    Unlike a hinge it never reaches zero, so easy triplets keep a (small) pull:
    that is why it pairs with a batch-all miner.
    """

    def __init__(self, bits: int, eps: float = 1e-8, beta: float | None = None):
        super().__init__()
        self.n = float(bits)
        self.beta = float(beta if beta is not None else bits)
        self.eps = eps

    def forward(self, u: torch.Tensor, a: torch.Tensor, p: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
        if a.numel() == 0:
            return u.sum() * 0.0
        pos = sq_dist(u[a], u[p])
        neg = sq_dist(u[a], u[n])
        loss = -torch.log(1 - pos / self.beta + self.eps) - torch.log(1 - (self.n - neg) / self.beta + self.eps)
        return loss.mean()


class MarginTripletLoss(nn.Module):
    """Standard hinge triplet loss ``max(0, pos - neg + margin)`` on squared distances (ablation)."""

    def __init__(self, bits: int, margin_fraction: float = 0.25):
        super().__init__()
        self.margin = margin_fraction * bits

    def forward(self, u: torch.Tensor, a: torch.Tensor, p: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
        if a.numel() == 0:
            return u.sum() * 0.0
        return F.relu(sq_dist(u[a], u[p]) - sq_dist(u[a], u[n]) + self.margin).mean()


class QuantizationLoss(nn.Module):
    """Mean squared gap between each output and its bit: pushes outputs to 0 or 1."""

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        return ((u - (u >= 0.5).to(u.dtype)) ** 2).mean()


class BitBalanceLoss(nn.Module):
    """Mean over bits of ``(batch mean - 0.5)^2``: each bit fires on about half the batch."""

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        return ((u.mean(dim=0) - 0.5) ** 2).mean()


class NeighbourhoodLoss(nn.Module):
    """Keep the pretrained features' neighbourhoods in the codes.

    Row-wise KL divergence between the softmax over the batch of teacher cosine
    similarities and of code similarities ``1 - 2 d^2 / K`` (the diagonal is
    excluded). Without it the codes keep only what separates the training
    classes and forget what the ImageNet backbone knew about other scenes.
    """

    def __init__(self, bits: int, teacher_temperature: float = 0.05, code_temperature: float = 0.1):
        super().__init__()
        self.bits = bits
        self.t_teacher = teacher_temperature
        self.t_code = code_temperature

    def forward(self, u: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        t = F.normalize(teacher, dim=1)
        sim_t = t @ t.T
        sim_c = 1 - 2 * torch.cdist(u, u).pow(2) / self.bits
        mask = torch.eye(len(u), dtype=torch.bool, device=u.device)
        log_p_t = F.log_softmax((sim_t / self.t_teacher).masked_fill(mask, -1e9), dim=1)
        log_p_c = F.log_softmax((sim_c / self.t_code).masked_fill(mask, -1e9), dim=1)
        return F.kl_div(log_p_c, log_p_t, log_target=True, reduction="batchmean")


class SimilarityLoss(nn.Module):
    """Code inner products follow the teacher's similarities within the batch (similarity-preserving hashing).

    The target for a pair is ``tanh((s - mean) / std)`` of the teacher cosine
    similarity ``s`` standardised over the batch's pairs (pairs much closer than usual
    -> +1, much farther -> -1), and the loss is the mean squared gap to the codes'
    normalised inner product ``(2u_i - 1) . (2u_j - 1) / K``. Unlike a class loss it
    keeps order *within* a class and structure among scenes no label names (the
    pseudo-similarity idea of SSDH / DistillHash, made soft).
    """

    def __init__(self, bits: int):
        super().__init__()
        self.bits = bits

    def forward(self, u: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        t = F.normalize(teacher, dim=1)
        sim = t @ t.T
        off = ~torch.eye(len(u), dtype=torch.bool, device=u.device)
        pairs = sim[off]
        target = torch.tanh((sim - pairs.mean()) / pairs.std().clamp_min(1e-6))
        b = 2 * u - 1
        code_sim = b @ b.T / self.bits
        return ((code_sim - target.detach()) ** 2)[off].mean()


class CodeClassifierLoss(nn.Module):
    """Cross-entropy of a linear classifier on the centred code ``2u - 1``.

    Gives every class a direction in code space; the triplet term alone learns
    separation only through sampled triplets.
    """

    def __init__(self, bits: int, num_classes: int, scale: float = 4.0):
        super().__init__()
        self.fc = nn.Linear(bits, num_classes, bias=False)
        self.scale = scale / bits**0.5

    def forward(self, u: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(self.fc(2 * u - 1) * self.scale, labels)


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


class HashCentreLoss(nn.Module):
    """Binary cross-entropy of each output to its class's hash-centre bit (CSQ, Yuan et al. 2020).

    Centres are far apart in Hamming space by construction, so this gives every class a fixed target
    code; the triplet term alone only learns separation from sampled triplets (see docs/RESULTS.md).
    """

    def __init__(self, bits: int, num_classes: int, seed: int = 0):
        super().__init__()
        self.register_buffer("centres", torch.from_numpy(hash_centres(num_classes, bits, seed)).float())

    def forward(self, u: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        target = (self.centres[labels] + 1) / 2
        return F.binary_cross_entropy(u.clamp(1e-7, 1 - 1e-7), target)


def batch_all_triplets(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """All valid ``(anchor, positive, negative)`` index triplets of a batch.

    Batch-all rather than semi-hard: the lossless triplet loss has no hinge, so
    every triplet carries gradient, and with P x M batches of 21 classes the
    full set is only ~10^4 triplets, cheap to evaluate.
    """
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    pos = same & ~eye
    neg = ~same
    valid = pos[:, :, None] & neg[:, None, :]
    a, p, n = valid.nonzero(as_tuple=True)
    return a, p, n
