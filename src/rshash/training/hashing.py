"""Phase 3: train the hashing head on cached level vectors.

Batches hold P classes x M images (each in a random dihedral view), so every
batch has positives and negatives for the batch-all triplet miner. The epoch
with the best validation mAP@all is kept; loss weights are chosen on the
validation split (see docs/RESULTS.md), never on test.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torch import nn

from ..hashing.head import WHITEN, HashHead, WhiteningHashHead
from ..hashing.losses import (
    BitBalanceLoss,
    CodeClassifierLoss,
    HashCentreLoss,
    LosslessTripletLoss,
    MarginTripletLoss,
    NeighbourhoodLoss,
    QuantizationLoss,
    SimilarityLoss,
    batch_all_triplets,
)
from ..evaluation.protocols import RetrievalTask, evaluate
from ..progress import progress_bar

log = logging.getLogger(__name__)


@dataclass
class HashTrainConfig:
    bits: int = 32
    cell: str = "lstm"
    width: int = 256
    dropout: float = 0.2
    triplet: str = "lossless"  # or "margin"
    w_triplet: float = 1.0
    w_quant: float = 0.1
    w_balance: float = 0.1
    # Chosen on two validation folds (benchmarks/select_defaults.py: protocol A's validation split and four
    # validation-unseen classes; benchmarks/results/select_defaults.json): the paper's three losses plus hash
    # centres plus the neighbourhood term with the fine-tuned features as teacher scored the best mean; the
    # similarity term and the class term are options. The paper's configuration: w_centre=0, w_neighbour=0.
    w_centre: float = 1.0
    w_class: float = 0.0
    w_neighbour: float = 1.0
    w_similarity: float = 0.0
    # Features whose similarities the neighbourhood and similarity terms keep: "pretrained" (ImageNet) or
    # "finetuned" (the fine-tuned backbone's last stage, also the source of the re-rank descriptor).
    teacher: str = "finetuned"
    epochs: int = 30
    classes_per_batch: int = 16
    images_per_class: int = 4
    lr: float = 1e-3
    weight_decay: float = 1e-4
    eval_every: int = 5
    seed: int = 0
    # cell="whiten": no gradient training: a closed-form learned whitening of the fine-tuned last level from
    # same-class pairs (and each image's augmented views, weighted by whiten_aug_weight), then ITQ
    # (rshash.hashing.whitening, as the self-supervised archive models); the loss terms above do not apply.
    # Settings chosen on the validation folds: benchmarks/select_whitening.py.
    whiten_eps: float = 0.3
    whiten_aug_weight: float = 0.1
    whiten_pairs: int = 20000
    whiten_dims: int = 128


#: The labelled recipe's head, chosen on the validation folds by issue 15's rule (benchmarks/select_whitening.py,
#: benchmarks/results/select_whitening.json): see :func:`default_recipe`.
DEFAULT_CELL = WHITEN
#: and its code length (the longer codes keep more of the content no label names: 128 ranked above 64 there).
DEFAULT_BITS = 128


def default_recipe(bits: int | None = None, seed: int = 0) -> HashTrainConfig:
    """The one default of labelled training (at ``bits``, default :data:`DEFAULT_BITS`): what ``rshash train``, the main job and the benchmarks use.
    ``HashTrainConfig()`` itself stays the gradient-trained head (the paper's losses and ours, and the deep
    baselines, which plug their objectives into it)."""
    return HashTrainConfig(bits=bits or DEFAULT_BITS, seed=seed, cell=DEFAULT_CELL)


def split_levels(x: torch.Tensor, dims: Sequence[int]) -> list[torch.Tensor]:
    return list(torch.split(x, list(dims), dim=1))


class HashObjective(nn.Module):
    """The weighted sum of the hashing losses; weights of 0 switch a term off (ablations)."""

    def __init__(self, config: HashTrainConfig, num_classes: int):
        super().__init__()
        self.c = config
        bits = config.bits
        self.triplet = LosslessTripletLoss(bits) if config.triplet == "lossless" else MarginTripletLoss(bits)
        self.quant = QuantizationLoss()
        self.balance = BitBalanceLoss()
        self.classify = CodeClassifierLoss(bits, num_classes)
        self.centre = HashCentreLoss(bits, num_classes, config.seed)
        self.neighbour = NeighbourhoodLoss(bits)
        self.similarity = SimilarityLoss(bits)

    def forward(self, u: torch.Tensor, labels: torch.Tensor, teacher: torch.Tensor) -> dict[str, torch.Tensor]:
        c = self.c
        terms = {"triplet": self.triplet(u, *batch_all_triplets(labels)) * c.w_triplet}
        if c.w_quant:
            terms["quant"] = self.quant(u) * c.w_quant
        if c.w_balance:
            terms["balance"] = self.balance(u) * c.w_balance
        if c.w_centre:
            terms["centre"] = self.centre(u, labels) * c.w_centre
        if c.w_class:
            terms["class"] = self.classify(u, labels) * c.w_class
        if c.w_neighbour:
            terms["neighbour"] = self.neighbour(u, teacher) * c.w_neighbour
        if c.w_similarity:
            terms["similarity"] = self.similarity(u, teacher) * c.w_similarity
        terms["total"] = sum(terms.values())
        return terms


def pk_batches(labels: np.ndarray, idx: np.ndarray, p: int, m: int, rng: np.random.Generator) -> list[np.ndarray]:
    """One epoch of P-classes x M-images batches covering ``idx`` about once."""
    by_class = {c: rng.permutation(idx[labels[idx] == c]) for c in np.unique(labels[idx])}
    classes = list(by_class)
    n_batches = max(1, len(idx) // (min(p, len(classes)) * m))
    batches = []
    for _ in range(n_batches):
        chosen = rng.choice(classes, size=min(p, len(classes)), replace=False)
        batches.append(np.concatenate([rng.choice(by_class[c], size=m, replace=len(by_class[c]) < m) for c in chosen]))
    return batches


@torch.no_grad()
def head_descriptors(head: WhiteningHashHead, levels: np.ndarray, dims: Sequence[int],
                     batch_size: int = 1024) -> np.ndarray:
    """L2-normalised whitened descriptors of ``(N, D)`` level vectors: what a whitening model's encoder outputs."""
    out = [
        nn.functional.normalize(head.embed(split_levels(torch.from_numpy(levels[i : i + batch_size]), dims)), dim=1).numpy()
        for i in range(0, len(levels), batch_size)
    ]
    return np.concatenate(out)


def fit_whitening_head(levels: np.ndarray, dims: Sequence[int], labels: np.ndarray, train_idx: np.ndarray,
                       config: HashTrainConfig) -> tuple[WhiteningHashHead, dict]:
    """The closed-form labelled head (``config.cell == "whiten"``): whitening of the last level's features of the
    ``train_idx`` images (every view) by the differences of same-class pairs and of augmented views, then ITQ."""
    # imported here: rshash.hashing.whitening uses the ITQ of rshash.baselines, whose deep baselines import this module
    from ..hashing.whitening import class_pairs, fit_pair_whitening, level_features, spread_to_levels

    last = level_features(levels[train_idx][..., sum(dims[:-1]):], [dims[-1]])
    pairs = class_pairs(labels[train_idx], config.whiten_pairs, config.seed)
    fit = fit_pair_whitening(last, pairs, config.bits, max(config.whiten_dims, config.bits),
                             max(256, 2 * config.bits), config.whiten_aug_weight, config.whiten_eps, seed=config.seed)
    head = WhiteningHashHead(list(dims), config.bits, fit.projection.shape[1])
    head.load_fit(spread_to_levels(fit, dims))
    return head.eval(), {"class_pairs": fit.time_pairs, "augmentation_pairs": fit.aug_pairs,
                         "descriptor_dims": int(fit.projection.shape[1])}


@torch.no_grad()
def head_outputs(head: HashHead, levels: np.ndarray, dims: Sequence[int], batch_size: int = 1024) -> np.ndarray:
    """Sigmoid outputs for ``(N, D)`` level vectors."""
    head.eval()
    out = [
        torch.sigmoid(head(split_levels(torch.from_numpy(levels[i : i + batch_size]), dims))).numpy()
        for i in range(0, len(levels), batch_size)
    ]
    return np.concatenate(out)


def evaluate_head(head: HashHead, levels: np.ndarray, dims: Sequence[int], labels: np.ndarray, query_idx: np.ndarray, db_idx: np.ndarray) -> dict[str, float]:
    """Retrieval metrics with view-0 codes: queries ``query_idx`` against database ``db_idx``."""
    codes = head_outputs(head, levels[:, 0], dims) >= 0.5
    return evaluate(codes, labels, RetrievalTask("val", "validation queries", query_idx, db_idx), rerank=False)


def train_hash_head(
    levels: np.ndarray,
    dims: Sequence[int],
    teacher: np.ndarray,
    labels: np.ndarray,
    train_idx: np.ndarray,
    val_idx: np.ndarray,
    num_classes: int,
    config: HashTrainConfig = HashTrainConfig(),
    progress: bool = True,
    objective: nn.Module | None = None,
) -> tuple[HashHead, dict]:
    """Train a head on ``levels (N, V, D)``; pick the epoch by validation mAP@all (val vs train). A whitening head
    (``config.cell == "whiten"``) is fitted in closed form on the training images instead (no epochs).

    ``objective(u, labels, teacher) -> {"total": loss, ...}`` defaults to
    :class:`HashObjective`; baselines (DPSH, CSQ, ...) plug in their own.
    """
    if config.cell == WHITEN:
        head, info = fit_whitening_head(levels, dims, labels, train_idx, config)
        if len(val_idx):
            info["val_map_all"] = evaluate_head(head, levels, dims, labels, val_idx, train_idx)["map_all"]
        return head, info
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: extra threads only add sync overhead (measured 3x slower with 2)
    try:
        return _train_hash_head(levels, dims, teacher, labels, train_idx, val_idx, num_classes, config, progress, objective)
    finally:
        torch.set_num_threads(threads)


def _train_hash_head(levels, dims, teacher, labels, train_idx, val_idx, num_classes, config, progress, objective):
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    head = HashHead(list(dims), config.bits, config.width, config.cell, config.dropout)
    objective = objective if objective is not None else HashObjective(config, num_classes)
    params = list(head.parameters()) + list(objective.parameters())
    opt = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=config.epochs)
    views = levels.shape[1]
    lv = torch.from_numpy(np.ascontiguousarray(levels, dtype=np.float32))
    tv = torch.from_numpy(np.ascontiguousarray(teacher, dtype=np.float32))
    history, best, best_state = [], -1.0, None
    for epoch in progress_bar(range(config.epochs), desc=f"hash head {config.bits} bits", unit="epoch", disable=not progress):
        head.train()
        sums: dict[str, float] = {}
        batches = pk_batches(labels, train_idx, config.classes_per_batch, config.images_per_class, rng)
        for idx in batches:
            v = torch.from_numpy(rng.integers(0, views, len(idx)))
            ti = torch.from_numpy(idx)
            u = torch.sigmoid(head(split_levels(lv[ti, v], dims)))
            terms = objective(u, torch.from_numpy(labels[idx]).long(), tv[ti, v])
            opt.zero_grad(set_to_none=True)
            terms["total"].backward()
            opt.step()
            for k, t in terms.items():
                sums[k] = sums.get(k, 0.0) + t.item() / len(batches)
        sched.step()
        last = epoch == config.epochs - 1
        if len(val_idx) and ((epoch + 1) % config.eval_every == 0 or last):
            score = evaluate_head(head, levels, dims, labels, val_idx, train_idx)["map_all"]
            history.append({"epoch": epoch + 1, **sums, "val_map_all": score})
            if score > best:
                best, best_state = score, copy.deepcopy(head.state_dict())
    if best_state is not None:
        head.load_state_dict(best_state)
    head.eval()
    best_epoch = max(history, key=lambda h: h["val_map_all"])["epoch"] if history else config.epochs
    return head, {"history": history, "val_map_all": best, "best_epoch": best_epoch}
