"""Hashing heads: level vectors -> K sigmoid outputs in [0, 1] (bit = output >= 0.5).

The seed paper feeds hierarchical features to an LSTM as a sequence, low level
first, so the last step summarises detail and semantics; ``cell="none"`` is the
no-recurrence ablation (concatenate + MLP).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

CELLS = ("lstm", "gru", "none")
#: The cell name of :class:`WhiteningHashHead` in a model's config (self-supervised archive models).
WHITEN = "whiten"


class LevelProjection(nn.Module):
    """Project each level's pooled vector to a common width (a per-level linear map)."""

    def __init__(self, level_dims: Sequence[int], width: int, dropout: float = 0.0):
        super().__init__()
        self.proj = nn.ModuleList(
            nn.Sequential(nn.Dropout(dropout), nn.Linear(d, width), nn.LayerNorm(width), nn.GELU())
            for d in level_dims
        )

    def forward(self, levels: Sequence[torch.Tensor]) -> torch.Tensor:
        """(N, L, width) sequence ordered low level to high level."""
        return torch.stack([p(v) for p, v in zip(self.proj, levels)], dim=1)


class HashHead(nn.Module):
    """Level vectors -> pre-sigmoid hash logits ``(N, bits)``."""

    def __init__(self, level_dims: Sequence[int], bits: int, width: int = 256, cell: str = "lstm", dropout: float = 0.2):
        super().__init__()
        if cell not in CELLS:
            raise ValueError(f"cell must be one of {CELLS}, got {cell!r}")
        if bits <= 0 or bits % 8:
            raise ValueError(f"bits must be a positive multiple of 8, got {bits}")
        self.bits, self.cell = bits, cell
        self.project = LevelProjection(level_dims, width, dropout)
        n_levels = len(level_dims)
        # Cells unrolled over the (short) level sequence: on this CPU build nn.LSTM's fused
        # kernel was ~3x slower than the explicit loop for 5 steps, and the loop exports to ONNX as is.
        if cell == "lstm":
            self.rnn: nn.Module = nn.LSTMCell(width, width)
        elif cell == "gru":
            self.rnn = nn.GRUCell(width, width)
        else:
            self.rnn = nn.Sequential(nn.Flatten(), nn.Linear(n_levels * width, width), nn.GELU())
        self.hash = nn.Linear(width, bits)

    def _recur(self, seq: torch.Tensor) -> torch.Tensor:
        """Last hidden state after reading the levels low to high."""
        h = seq.new_zeros(seq.shape[0], seq.shape[2])
        c = torch.zeros_like(h)
        for step in range(seq.shape[1]):
            if self.cell == "lstm":
                h, c = self.rnn(seq[:, step], (h, c))
            else:
                h = self.rnn(seq[:, step], h)
        return h

    def forward(self, levels: Sequence[torch.Tensor]) -> torch.Tensor:
        seq = self.project(levels)
        h = self.rnn(seq) if self.cell == "none" else self._recur(seq)
        return self.hash(h)


class WhiteningHashHead(nn.Module):
    """Level vectors -> whitened descriptor -> hash logits, all linear (:mod:`rshash.hashing.whitening`).

    Each level's average-pooled half is L2-normalised and the levels are concatenated; ``embed`` is
    ``(x - mean) @ projection`` (the re-rank descriptor, before normalisation) and the logits are
    ``embed @ rotation``. The matrices are fitted in closed form (:meth:`load_fit`) and are parameters, so the
    loss terms can refine them.
    """

    def __init__(self, level_dims: Sequence[int], bits: int, dims: int, grid_width: int = 0, levels: bool = True):
        super().__init__()
        if bits <= 0 or bits % 8 or bits > dims:
            raise ValueError(f"bits must be a positive multiple of 8 and <= dims ({dims}), got {bits}")
        if not levels and not grid_width:
            raise ValueError("a whitening head needs the pooled levels, a grid, or both")
        self.bits, self.cell, self.level_dims = bits, WHITEN, list(level_dims)
        self.use_levels, self.grid_width = levels, grid_width
        width = (sum(d // 2 for d in level_dims) if levels else 0) + grid_width
        self.mean = nn.Parameter(torch.zeros(width), requires_grad=False)
        self.projection = nn.Parameter(torch.eye(width, dims))
        self.rotation = nn.Parameter(torch.eye(dims, bits))

    def load_fit(self, fit) -> "WhiteningHashHead":
        """Take the matrices of a :class:`rshash.hashing.whitening.WhiteningFit`."""
        with torch.no_grad():
            for name in ("mean", "projection", "rotation"):
                value = torch.from_numpy(getattr(fit, name)).float()
                if value.shape != getattr(self, name).shape:
                    raise ValueError(f"{name}: fitted shape {tuple(value.shape)} != head {tuple(getattr(self, name).shape)}")
                getattr(self, name).copy_(value)
        return self

    def embed(self, levels: Sequence[torch.Tensor], grid: torch.Tensor | None = None) -> torch.Tensor:
        """``levels``: pooled level vectors; ``grid``: the grid-pooled map (:func:`rshash.model.grid_pool`) of a
        head made with ``grid_width``."""
        parts = [nn.functional.normalize(v[:, : v.shape[1] // 2], dim=1) for v in levels] if self.use_levels else []
        if self.grid_width:
            if grid is None or grid.shape[1] != self.grid_width:
                raise ValueError(f"this head reads a grid of width {self.grid_width}")
            parts.append(grid)
        x = torch.cat(parts, dim=1)
        return (x - self.mean) @ self.projection

    def forward(self, levels: Sequence[torch.Tensor], grid: torch.Tensor | None = None) -> torch.Tensor:
        return self.embed(levels, grid) @ self.rotation


def codes_from_outputs(outputs: torch.Tensor) -> torch.Tensor:
    """Binary codes from sigmoid outputs: bit = output >= 0.5."""
    return outputs >= 0.5
