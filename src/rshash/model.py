"""The full hashing model: backbone stage maps -> pooled level vectors -> hash head.

Kept separate from training so that indexing and serving import only this,
and so that one object defines what the exported ONNX encoder computes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Sequence

import torch
from torch import nn

from .backbone import DEFAULT_CUT, DEFAULT_TAPS, StageBackbone, create_backbone
from .hashing.head import HashHead
from .model_dir import FORMAT_VERSION


@dataclass
class ModelConfig:
    """Everything needed to rebuild a model (stored as config.json in a model directory)."""

    bits: int = 32
    backbone: str = "efficientnet-lite0"
    taps: Sequence[str] = DEFAULT_TAPS
    cut: str = DEFAULT_CUT
    cell: str = "lstm"
    width: int = 256
    dropout: float = 0.2
    class_names: list[str] = field(default_factory=list)
    format_version: int = FORMAT_VERSION

    def to_dict(self) -> dict:
        d = asdict(self)
        d["taps"] = list(self.taps)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        known["taps"] = tuple(known.get("taps", DEFAULT_TAPS))
        return cls(**known)


def pool_map(feature_map: torch.Tensor) -> torch.Tensor:
    """Global average and max pooling, concatenated: ``(N, C, H, W) -> (N, 2C)``."""
    return torch.cat([feature_map.mean(dim=(2, 3)), feature_map.amax(dim=(2, 3))], dim=1)


def level_dims(backbone: StageBackbone) -> list[int]:
    return [2 * backbone.channels[t] for t in backbone.taps]


class HashingModel(nn.Module):
    """Image (float RGB in [0,1], NCHW) -> sigmoid hash outputs ``(N, bits)``."""

    def __init__(self, config: ModelConfig, pretrained: bool = True, backbone: StageBackbone | None = None):
        super().__init__()
        self.config = config
        self.backbone = backbone or create_backbone(config.backbone, pretrained, config.taps, config.cut)
        self.head = HashHead(level_dims(self.backbone), config.bits, config.width, config.cell, config.dropout)

    def levels(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [pool_map(m) for m in self.backbone(x)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.head(self.levels(x)))


class PixelEncoder(nn.Module):
    """What the ONNX encoder computes: ``uint8 (N, H, W, 3)`` pixels -> sigmoid outputs."""

    def __init__(self, model: HashingModel):
        super().__init__()
        self.model = model

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = pixels.permute(0, 3, 1, 2).float() / 255.0
        return self.model(x)
