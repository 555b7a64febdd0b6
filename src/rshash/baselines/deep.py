"""Supervised deep-hashing baselines: our head and training loop, the baseline's objective."""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
from torch import nn

from ..hashing.head import HashHead
from ..training.hashing import HashTrainConfig, head_outputs, train_hash_head
from .csq import CSQLoss
from .dpsh import DPSHLoss
from .hashnet import HashNetLoss
from .milan import MiLANLoss

#: name -> objective factory ``(bits, num_classes, seed) -> nn.Module``; "ours" and "ours-lstm" use train_hash_head's
#: own (the config decides: the default recipe's closed-form whitening head, or the LSTM head with our losses).
DEEP_METHODS: dict[str, Callable[[int, int, int], nn.Module | None]] = {
    "dpsh": lambda bits, classes, seed: DPSHLoss(bits),
    "hashnet": lambda bits, classes, seed: HashNetLoss(bits),
    "csq": lambda bits, classes, seed: CSQLoss(bits, classes, seed=seed),
    "milan": lambda bits, classes, seed: MiLANLoss(bits),
    "ours": lambda bits, classes, seed: None,
    "ours-lstm": lambda bits, classes, seed: None,
}


def make_objective(name: str, bits: int, num_classes: int, seed: int = 0) -> nn.Module | None:
    """The objective module of a deep method (``None`` means train_hash_head's own objective)."""
    if name not in DEEP_METHODS:
        raise ValueError(f"unknown deep hashing method {name!r}; choose from {sorted(DEEP_METHODS)}")
    return DEEP_METHODS[name](bits, num_classes, seed)


def train_deep(
    name: str,
    levels: np.ndarray,
    dims: Sequence[int],
    teacher: np.ndarray,
    labels: np.ndarray,
    train_idx: np.ndarray,
    val_idx: np.ndarray,
    num_classes: int,
    config: HashTrainConfig,
    progress: bool = False,
) -> tuple[HashHead, dict]:
    """Train a head with method ``name`` on level vectors ``(N, V, D)`` (the same loop for every method)."""
    objective = make_objective(name, config.bits, num_classes, config.seed)
    return train_hash_head(levels, dims, teacher, labels, train_idx, val_idx, num_classes, config, progress, objective)


def head_codes(head: HashHead, levels: np.ndarray, dims: Sequence[int], view: int = 0) -> np.ndarray:
    """``(N, bits)`` bool codes of every item's ``view`` (view 0: the image as stored)."""
    return head_outputs(head, levels[:, view], dims) >= 0.5
