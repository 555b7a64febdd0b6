"""Pretrained backbone outputs for a dataset, computed once and cached on disk.

For every image and each of its ``views`` dihedral views (rotations/flips),
the bank holds

* ``cut``: the map at the cut stage (input of the fine-tuned tail), float16;
* ``pooled``: average+max pooled vectors of every tapped stage of the
  *pretrained* network, concatenated low level to high level.

Fine-tuning trains only the tail on ``cut``, so the expensive early stages run
once per image and view (ONNX Runtime), never per epoch. The pretrained pooled
vectors serve the frozen-backbone ablation, the k-NN baselines and the
neighbourhood-preserving loss. The cache key covers the backbone, stages,
views and every file's path, size and mtime, so a changed file invalidates it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from .backbone import StageBackbone, create_backbone
from .data.datasets import ImageRecord, SkipReport, load_batch
from .data.images import dihedral
from .io_utils import atomic_directory
from .model import grid_pool, pool_map
from .onnx_export import export_onnx, open_session, run_session_all
from .progress import progress_bar

log = logging.getLogger(__name__)
BANK_VERSION = 1


def default_cache_dir() -> Path:
    return Path(os.environ.get("RSHASH_CACHE", Path.home() / ".cache" / "rshash"))


class PretrainedOutputs(nn.Module):
    """uint8 NHWC pixels -> (cut map, pooled vectors of all taps): what the bank stores; with ``grid`` > 0 also
    the ``grid_tap`` map's grid pooling (:func:`rshash.model.grid_pool`) as a third output."""

    def __init__(self, backbone: StageBackbone, grid: int = 0, grid_tap: str = "stage5"):
        super().__init__()
        self.backbone, self.grid, self.grid_tap = backbone, grid, grid_tap

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, ...]:
        x = pixels.permute(0, 3, 1, 2).float() / 255.0
        low, cut = self.backbone.trunk(x)
        maps = {**low, **self.backbone.tail(cut)}
        pooled = torch.cat([pool_map(maps[t]) for t in self.backbone.taps], dim=1)
        if self.grid:
            return cut, pooled, grid_pool(maps[self.grid_tap], self.grid)
        return cut, pooled


@dataclass
class FeatureBank:
    records: list[ImageRecord]  # the images that decoded (unreadable ones are skipped)
    cut: np.ndarray  # (N, V, C, H, W) float16
    pooled: np.ndarray  # (N, V, D) float32
    tap_dims: list[int]  # width of each tap's pooled vector inside ``pooled``
    key: str = ""  # cache key: identifies the images, backbone and views

    @property
    def views(self) -> int:
        return self.cut.shape[1]

    def pooled_levels(self, idx: np.ndarray | slice, view: int | np.ndarray = 0) -> list[np.ndarray]:
        """Pretrained pooled vectors split per level."""
        flat = self.pooled[idx, view]
        bounds = np.cumsum([0, *self.tap_dims])
        return [flat[:, a:b] for a, b in zip(bounds[:-1], bounds[1:])]

    def head_features(self, idx: np.ndarray | slice, view: int | np.ndarray = 0) -> np.ndarray:
        """Average-pooled last-level features of the pretrained network (the k-NN reference)."""
        return self.pooled_levels(idx, view)[-1][:, : self.tap_dims[-1] // 2]


def _cache_key(records: Sequence[ImageRecord], backbone: StageBackbone, views: int) -> str:
    h = hashlib.sha256()
    h.update(json.dumps([BANK_VERSION, backbone.name, list(backbone.taps), backbone.cut, views]).encode())
    for r in records:
        st = Path(r.path).stat() if Path(r.path).exists() else None
        h.update(f"{r.path}|{st.st_size if st else -1}|{st.st_mtime_ns if st else -1}\n".encode())
    return h.hexdigest()[:20]


def _compute(records: Sequence[ImageRecord], backbone: StageBackbone, views: int, batch_images: int, report: SkipReport):
    size = backbone.input_size
    session = open_session(
        export_onnx(PretrainedOutputs(backbone), torch.zeros(1, size, size, 3, dtype=torch.uint8), outputs=("cut", "pooled"))
    )
    cuts, pooled, ok_all = [], [], []
    paths = [r.path for r in records]
    with progress_bar(total=len(paths) * views, desc="backbone features", unit="view") as bar:
        for start in range(0, len(paths), batch_images):
            pixels, ok = load_batch(paths[start : start + batch_images], size, report)
            if ok:
                stack = np.stack([dihedral(pixels, v) for v in range(views)], axis=1).reshape(-1, size, size, 3)
                cut, pool = run_session_all(session, stack)
                cuts.append(cut.astype(np.float16).reshape(len(ok), views, *cut.shape[1:]))
                pooled.append(pool.reshape(len(ok), views, -1))
                ok_all.extend(start + i for i in ok)
            bar.update(views * (len(paths[start : start + batch_images])))
    if not ok_all:
        raise ValueError("no readable images in the dataset")
    return ok_all, np.concatenate(cuts), np.concatenate(pooled)


def build_feature_bank(
    records: Sequence[ImageRecord],
    backbone: StageBackbone | None = None,
    views: int = 8,
    cache_dir: str | Path | None = None,
    batch_images: int = 8,
    report: SkipReport | None = None,
) -> FeatureBank:
    """Pretrained features for ``records`` (from the cache when present)."""
    backbone = backbone or create_backbone()
    report = report if report is not None else SkipReport()
    tap_dims = [2 * backbone.channels[t] for t in backbone.taps]
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    key = _cache_key(records, backbone, views)
    target = cache / f"bank-{key}"
    if (target / "meta.json").is_file():
        meta = json.loads((target / "meta.json").read_text())
        ok = meta["ok"]
        for path, reason in meta["skipped"]:
            report.add(path, reason)
        log.info("feature bank from cache: %s", target)
        return FeatureBank([records[i] for i in ok], np.load(target / "cut.npy"), np.load(target / "pooled.npy"), tap_dims, key)
    before = len(report.skipped)
    ok, cut, pooled = _compute(records, backbone, views, batch_images, report)
    with atomic_directory(target) as tmp:
        np.save(tmp / "cut.npy", cut)
        np.save(tmp / "pooled.npy", pooled)
        (tmp / "meta.json").write_text(json.dumps({"ok": ok, "skipped": report.skipped[before:]}))
    log.info("%s; feature bank cached in %s", report.summary(), target)
    return FeatureBank([records[i] for i in ok], cut, pooled, tap_dims, key)


def pretrained_embeddings(pixels: np.ndarray, batch: int = 32) -> np.ndarray:
    """ImageNet EfficientNet-Lite0 head features, average-pooled, of ``uint8 (N, S, S, 3)`` pixels: the untrained
    baseline of the retrieval protocols (the backbone before any fine-tuning)."""
    net = create_backbone(pretrained=True).eval()
    out = []
    with torch.no_grad():
        for start in range(0, len(pixels), batch):
            x = torch.from_numpy(np.ascontiguousarray(pixels[start:start + batch])).permute(0, 3, 1, 2).float() / 255.0
            out.append(net(x)[-1].mean(dim=(2, 3)).numpy())
    return np.concatenate(out) if out else np.zeros((0, 0), dtype=np.float32)
