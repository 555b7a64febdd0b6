"""Refine the closed-form self-supervised head with the paper's losses (``rshash train --refine-epochs N``).

Starting from the learned whitening and ITQ rotation (:mod:`rshash.hashing.whitening`), the projection and the
rotation are trained on batches of footprints, each present twice: a chip and a positive (the same footprint at
another date when the archive has one, else an augmented view). Losses, as in the paper plus one term:

* :class:`~rshash.hashing.losses.LosslessTripletLoss` on every triplet of the batch (batch-all: anchor, its
  positive, any chip of another footprint);
* :class:`~rshash.hashing.losses.QuantizationLoss` and :class:`~rshash.hashing.losses.BitBalanceLoss`;
* :class:`~rshash.hashing.losses.SimilarityLoss` to the frozen backbone's features, so that what no pair names
  (general content) stays in the codes.

The mean of the features is kept fixed; only the two matrices move.
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from ..hashing.losses import BitBalanceLoss, LosslessTripletLoss, QuantizationLoss, SimilarityLoss, batch_all_triplets
from ..hashing.whitening import WhiteningFit
from ..progress import progress_bar

log = logging.getLogger(__name__)


def refine_head(fit: WhiteningFit, views: np.ndarray, pairs: np.ndarray, config, batch: int = 64,
                lr: float = 1e-3, quant_weight: float = 0.1, balance_weight: float = 0.1,
                similarity_weight: float = 1.0) -> WhiteningFit:
    """``views`` ``(N, V, D)`` level features of the training chips; ``pairs`` ``(P, 2)`` time pairs (indices
    into N). Returns a new fit with refined projection and rotation."""
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    n, v, _ = views.shape
    x = torch.from_numpy(np.asarray(views, dtype=np.float32)) - torch.from_numpy(fit.mean)
    projection = torch.nn.Parameter(torch.from_numpy(fit.projection.copy()))
    rotation = torch.nn.Parameter(torch.from_numpy(fit.rotation.copy()))
    with torch.no_grad():  # a scale that puts the initial sigmoid outputs near 0 and 1 but not saturated
        scale = 3.0 / float((x[:, 0] @ projection @ rotation).std().clamp_min(1e-6))
    partners: list[list[int]] = [[] for _ in range(n)]
    for a, b in pairs:
        partners[a].append(int(b))
        partners[b].append(int(a))
    footprint = [min([a, *partners[a]]) for a in range(n)]  # one label per footprint (its time pairs are all pairs)
    triplet, quant, balance, similar = (LosslessTripletLoss(config.bits), QuantizationLoss(), BitBalanceLoss(),
                                        SimilarityLoss(config.bits))
    optimizer = torch.optim.Adam([projection, rotation], lr=lr)
    steps = max(1, n // (batch // 2))
    with progress_bar(total=config.refine_epochs * steps, desc="refine head", unit="step") as bar:
        for _ in range(config.refine_epochs):
            for _ in range(steps):
                anchors = rng.choice(n, size=min(batch // 2, n), replace=False)
                rows, labels = [], []
                for a in anchors:
                    view = int(rng.integers(v))
                    rows.append(x[a, view])
                    if partners[a] and rng.random() < 0.5 or v == 1:
                        p = partners[a][int(rng.integers(len(partners[a])))] if partners[a] else a
                        rows.append(x[p, int(rng.integers(v))])
                    else:
                        rows.append(x[a, int((view + 1 + rng.integers(v - 1)) % v)])
                    labels += [footprint[a], footprint[a]]
                feats = torch.stack(rows)
                u = torch.sigmoid(scale * (feats @ projection @ rotation))
                a_idx, p_idx, n_idx = batch_all_triplets(torch.tensor(labels))
                loss = (triplet(u, a_idx, p_idx, n_idx) + quant_weight * quant(u) + balance_weight * balance(u)
                        + similarity_weight * similar(u, feats))
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                bar.update(1)
                bar.set_postfix(loss=f"{loss.item():.3f}")
    return WhiteningFit(fit.mean, projection.detach().numpy().copy(), rotation.detach().numpy().copy(),
                        fit.time_pairs, fit.aug_pairs)
