"""The full hashing model: backbone stage maps -> pooled level vectors -> hash head + descriptor.

Two outputs per image: the sigmoid hash outputs (bit = output >= 0.5), searched by
Hamming distance, and a compact real-valued *descriptor* (PCA of the fine-tuned
average-pooled head features, L2-normalised) that re-ranks the Hamming shortlist.

Kept separate from training so that indexing and serving import only this,
and so that one object defines what the exported ONNX encoder computes.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .backbone import StageBackbone, create_backbone
from .hashing.head import WHITEN, HashHead, WhiteningHashHead
from .model_config import ModelConfig

__all__ = ["DescriptorHead", "HashingModel", "ModelConfig", "PixelEncoder", "grid_pool", "level_dims", "pool_map"]


def pool_map(feature_map: torch.Tensor) -> torch.Tensor:
    """Global average and max pooling, concatenated: ``(N, C, H, W) -> (N, 2C)``."""
    return torch.cat([feature_map.mean(dim=(2, 3)), feature_map.amax(dim=(2, 3))], dim=1)


def _grid_matrix(h: int, w: int, cells: int) -> torch.Tensor:
    """``(h * w, cells * cells)``: averaging weights of the cells of a ``cells x cells`` grid over an ``h x w``
    map, cell bounds as :func:`torch.nn.functional.adaptive_avg_pool2d` draws them, row-major cells."""
    m = np.zeros((h, w, cells, cells), dtype=np.float32)
    for i in range(cells):
        r0, r1 = (i * h) // cells, -((-(i + 1) * h) // cells)
        for j in range(cells):
            c0, c1 = (j * w) // cells, -((-(j + 1) * w) // cells)
            m[r0:r1, c0:c1, i, j] = 1.0 / ((r1 - r0) * (c1 - c0))
    return torch.from_numpy(m.reshape(h * w, cells * cells))


def grid_pool(feature_map: torch.Tensor, cells: int) -> torch.Tensor:
    """Where things are in the chip: ``(N, C, H, W) -> (N, cells * cells * C)``, the map averaged over each cell of
    a ``cells x cells`` grid, each cell's vector L2-normalised, cells row-major, the whole scaled to unit norm.
    (One matrix product, so the ONNX graph is plain; the map's size is fixed by the encoder's input size.)"""
    n, c, h, w = feature_map.shape
    if not 0 < cells <= min(int(h), int(w)):
        raise ValueError(f"a grid of {cells} x {cells} cells does not fit a {int(h)} x {int(w)} map")
    pooled = feature_map.flatten(2) @ _grid_matrix(int(h), int(w), cells)  # (N, C, cells^2)
    return F.normalize(pooled, dim=1).transpose(1, 2).flatten(1) / cells


def level_dims(backbone: StageBackbone) -> list[int]:
    return [2 * backbone.channels[t] for t in backbone.taps]


class DescriptorHead(nn.Module):
    """Average-pooled last-level features ``(N, C)`` -> centred, PCA-projected, L2-normalised ``(N, dims)``.

    The projection is fitted once after training (:meth:`fit`, on the training images)
    and stored as buffers, so the exported encoder computes it.
    """

    def __init__(self, in_dim: int, dims: int):
        super().__init__()
        if not 0 < dims <= in_dim:
            raise ValueError(f"descriptor dims must be in 1..{in_dim}, got {dims}")
        self.register_buffer("mean", torch.zeros(in_dim))
        self.register_buffer("proj", torch.eye(in_dim)[:, :dims].clone())

    def fit(self, features: np.ndarray) -> "DescriptorHead":
        """PCA on ``(N, C)`` features: the mean and the top principal directions."""
        x = np.asarray(features, dtype=np.float64)
        mean = x.mean(axis=0)
        # Principal directions from the C x C covariance (C is ~1280; N can be large).
        _, vecs = np.linalg.eigh(np.cov(x - mean, rowvar=False))
        top = vecs[:, ::-1][:, : self.proj.shape[1]]
        top *= np.where(top.sum(axis=0) < 0, -1.0, 1.0)  # deterministic signs
        self.mean.copy_(torch.from_numpy(mean).float())
        self.proj.copy_(torch.from_numpy(np.ascontiguousarray(top)).float())
        return self

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return F.normalize((features - self.mean) @ self.proj, dim=1)


class HashingModel(nn.Module):
    """Image (float RGB in [0,1], NCHW) -> sigmoid hash outputs ``(N, bits)`` and descriptors ``(N, dims)``."""

    def __init__(self, config: ModelConfig, pretrained: bool = True, backbone: StageBackbone | None = None):
        super().__init__()
        self.config = config
        self.backbone = backbone or create_backbone(config.backbone, pretrained, config.taps, config.cut)
        dims = level_dims(self.backbone)
        if config.grid and (config.cell != WHITEN or config.grid_tap not in self.backbone.taps):
            raise ValueError(f"a grid ({config.grid}) is read by a whitening head from one of the taps "
                             f"{list(self.backbone.taps)}; got cell {config.cell!r}, grid_tap {config.grid_tap!r}")
        self.head: HashHead | WhiteningHashHead
        if config.cell == WHITEN:  # a self-supervised archive model: the head makes the descriptor too
            grid_width = config.grid ** 2 * self.backbone.channels[config.grid_tap] if config.grid else 0
            self.head = WhiteningHashHead(dims, config.bits, config.descriptor_dims, grid_width, config.grid_levels)
            self.descriptor = None
        else:
            self.head = HashHead(dims, config.bits, config.width, config.cell, config.dropout)
            self.descriptor = DescriptorHead(dims[-1] // 2, config.descriptor_dims)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        maps = self.backbone(x)
        levels = [pool_map(m) for m in maps]
        if self.descriptor is None:
            c = self.config
            grid = grid_pool(maps[self.backbone.taps.index(c.grid_tap)], c.grid) if c.grid else None
            embedded = self.head.embed(levels, grid)
            return torch.sigmoid(embedded @ self.head.rotation), F.normalize(embedded, dim=1)
        last = levels[-1]
        return torch.sigmoid(self.head(levels)), self.descriptor(last[:, : last.shape[1] // 2])


class PixelEncoder(nn.Module):
    """What the ONNX encoder computes: ``uint8 (N, H, W, 3)`` pixels -> (sigmoid outputs, descriptors)."""

    #: Names of the ONNX graph's outputs, in order.
    OUTPUTS = ("output", "descriptor")

    def __init__(self, model: HashingModel):
        super().__init__()
        self.model = model

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = pixels.permute(0, 3, 1, 2).float() / 255.0
        return self.model(x)
