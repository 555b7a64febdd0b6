"""Phase 2: hierarchical level vectors of every image and view, from the fine-tuned backbone.

Stages up to the cut are frozen, so their pooled vectors come straight from the
feature bank; stages after it are recomputed with the fine-tuned tail from the
cached cut maps. The result is cached on disk under the tail's fingerprint.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
import torch

from ..backbone import StageBackbone
from ..features import FeatureBank, default_cache_dir
from ..io_utils import atomic_write_bytes
from ..model import pool_map
from ..onnx_export import export_onnx, open_session, run_session
from ..progress import progress_bar


class PooledTail(torch.nn.Module):
    """Cut map -> pooled vectors of the taps after the cut (exported to ONNX: ~3x eager speed)."""

    def __init__(self, backbone: StageBackbone, taps: tuple[str, ...]):
        super().__init__()
        self.backbone, self.taps = backbone, taps

    def forward(self, cut: torch.Tensor) -> torch.Tensor:
        maps = self.backbone.tail(cut)
        return torch.cat([pool_map(maps[t]) for t in self.taps], 1)


def tail_fingerprint(backbone: StageBackbone) -> str:
    """Hash of the weights' values (torch.save bytes are not reproducible, tensor contents are)."""
    h = hashlib.sha256()
    for name, tensor in sorted(backbone.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


@torch.no_grad()
def finetuned_levels(
    backbone: StageBackbone, bank: FeatureBank, cache_dir: str | Path | None = None, batch_size: int = 128
) -> np.ndarray:
    """``(N, V, D)`` level vectors (all taps, low to high) with the fine-tuned tail."""
    key = hashlib.sha256(
        (tail_fingerprint(backbone) + str(bank.cut.shape) + str([r.path for r in bank.records])).encode()
    ).hexdigest()[:20]
    path = (Path(cache_dir) if cache_dir else default_cache_dir()) / f"levels-{key}.npy"
    if path.is_file():
        return np.load(path)
    backbone.eval()
    n_low = sum(1 for t in backbone.taps if backbone.stage_end[t] <= backbone.cut_block)
    low_width = sum(bank.tap_dims[:n_low])
    high_taps = backbone.taps[n_low:]
    n, v = bank.cut.shape[:2]
    flat_cut = bank.cut.reshape(n * v, *bank.cut.shape[2:])
    session = open_session(export_onnx(PooledTail(backbone, high_taps), torch.zeros(1, *flat_cut.shape[1:])))
    high = []
    with progress_bar(total=n * v, desc="fine-tuned features", unit="view") as bar:
        for start in range(0, n * v, batch_size):
            chunk = flat_cut[start : start + batch_size].astype(np.float32)
            high.append(run_session(session, chunk))
            bar.update(len(chunk))
    levels = np.concatenate([bank.pooled[:, :, :low_width], np.concatenate(high).reshape(n, v, -1)], axis=2)
    buf = io.BytesIO()
    np.save(buf, levels.astype(np.float32))
    atomic_write_bytes(path, buf.getvalue())
    return levels
