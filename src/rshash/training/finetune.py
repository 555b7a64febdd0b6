"""Phase 1: fine-tune the backbone tail with a classification head on cached cut maps.

The trunk stays frozen (its outputs are in the feature bank), so each step
costs only the tail's forward and backward pass. Each epoch shows every
training image once, in one of its 8 dihedral views picked at random; the
epoch with the best validation accuracy is kept.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..backbone import StageBackbone
from ..progress import progress_bar

log = logging.getLogger(__name__)


@dataclass
class FinetuneConfig:
    epochs: int = 6
    batch_size: int = 32
    lr_tail: float = 3e-4
    lr_head: float = 2e-3
    weight_decay: float = 1e-4
    label_smoothing: float = 0.1
    dropout: float = 0.2
    seed: int = 0


class TailClassifier(nn.Module):
    """Backbone tail + average pooling + linear classifier (used only while fine-tuning)."""

    def __init__(self, backbone: StageBackbone, num_classes: int, dropout: float):
        super().__init__()
        self.backbone = backbone
        self.drop = nn.Dropout(dropout)
        self.fc = nn.Linear(backbone.channels["head"], num_classes)

    def forward(self, cut: torch.Tensor) -> torch.Tensor:
        head = self.backbone.tail(cut)["head"]
        return self.fc(self.drop(head.mean(dim=(2, 3))))


def _as_input(cut: np.ndarray) -> torch.Tensor:
    # channels_last: in NCHW the depthwise-conv backward is 30-100x slower on this torch build
    return torch.from_numpy(np.ascontiguousarray(cut, dtype=np.float32)).contiguous(memory_format=torch.channels_last)


@torch.no_grad()
def predict(model: TailClassifier, cut: np.ndarray, batch_size: int = 128) -> np.ndarray:
    """Class predictions for cut maps ``(N, C, H, W)``."""
    model.eval()
    preds = [model(_as_input(cut[i : i + batch_size])).argmax(1).numpy() for i in range(0, len(cut), batch_size)]
    return np.concatenate(preds) if preds else np.zeros(0, dtype=np.int64)


def finetune_tail(
    backbone: StageBackbone,
    cut: np.ndarray,
    labels: np.ndarray,
    train_idx: np.ndarray,
    val_idx: np.ndarray,
    num_classes: int,
    config: FinetuneConfig = FinetuneConfig(),
) -> tuple[TailClassifier, dict]:
    """Fine-tune in place; return the best-on-validation classifier and per-epoch metrics.

    ``cut`` is the bank's ``(N, V, C, H, W)`` array; validation uses view 0.
    """
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    model = TailClassifier(backbone, num_classes, config.dropout).to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(
        [
            {"params": backbone.tail_parameters(), "lr": config.lr_tail},
            {"params": model.fc.parameters(), "lr": config.lr_head},
        ],
        weight_decay=config.weight_decay,
    )
    steps_per_epoch = int(np.ceil(len(train_idx) / config.batch_size))
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=[config.lr_tail, config.lr_head], total_steps=steps_per_epoch * config.epochs, pct_start=0.15
    )
    history, best_acc, best_state = [], -1.0, None
    views = cut.shape[1]
    for epoch in range(config.epochs):
        model.train()
        order = rng.permutation(train_idx)
        total_loss = 0.0
        with progress_bar(total=len(order), desc=f"fine-tune {epoch + 1}/{config.epochs}", unit="img") as bar:
            for start in range(0, len(order), config.batch_size):
                idx = order[start : start + config.batch_size]
                x = _as_input(cut[idx, rng.integers(0, views, len(idx))])
                y = torch.from_numpy(labels[idx]).long()
                loss = F.cross_entropy(model(x), y, label_smoothing=config.label_smoothing)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                total_loss += loss.item() * len(idx)
                bar.update(len(idx))
        val_acc = float((predict(model, cut[val_idx, 0]) == labels[val_idx]).mean()) if len(val_idx) else float("nan")
        history.append({"epoch": epoch + 1, "train_loss": total_loss / len(order), "val_accuracy": val_acc})
        log.info("fine-tune epoch %d: loss %.4f, val acc %.4f", epoch + 1, total_loss / len(order), val_acc)
        if not len(val_idx) or val_acc > best_acc:
            best_acc, best_state = val_acc, copy.deepcopy(model.state_dict())
    model.load_state_dict(best_state)
    model.eval()
    best_epoch = max(history, key=lambda h: h["val_accuracy"])["epoch"] if len(val_idx) else config.epochs
    return model, {"history": history, "best_epoch": best_epoch, "val_accuracy": best_acc}
