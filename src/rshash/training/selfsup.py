"""Self-supervised training on unlabelled rasters: the archive's time and geography are the labels.

``rshash train --rasters FILE_OR_FOLDER...`` (and/or ``--data`` of an image folder without class folders):

1. **Chips**: the grid chips of every raster (64 px at native resolution, :func:`rshash.geo.place.read_place`), read
   by the indexing reader with the same bands and stretch; rasters that cannot be read are skipped with a warning.
   Images of an unlabelled folder are chips too (decoded like indexed images; no place, so no time pairs).
2. **Positives**: the same footprint in another acquisition (chips of two rasters whose footprints have IoU >= 0.5)
   and augmented views of a chip (crop/scale, colour, rotation/flip, :mod:`rshash.data.augment`). Same-date
   neighbours are never positives: they are the hard distractors of finding the same place. Everything else
   (other footprints) is negative.
3. **Features**: the frozen ImageNet backbone's pooled levels of every view (ONNX Runtime), cached on disk under a
   key of the chips' pixels, so an interrupted run restarts from the cached features.
4. **Head**: a learned whitening from the positive pairs and ITQ (:mod:`rshash.hashing.whitening`), optionally
   refined by the paper's lossless triplet loss on time/augmentation triplets with the quantization, balance and
   teacher-similarity terms (:func:`refine_head`).
5. **Model**: written atomically as a model directory whose config records each raster's ground resolution and
   band meaning (``--gsd auto`` then tiles at it).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from ..backbone import StageBackbone, create_backbone
from ..data.augment import chip_views
from ..data.datasets import ImageRecord, SkipReport, load_batch
from ..data.sources import folder_source
from ..features import PretrainedOutputs, default_cache_dir
from ..geo.place import PlaceChips, cross_date_pairs, read_place
from ..geo.source import raster_paths
from ..hashing.head import WHITEN
from ..hashing.whitening import WhiteningFit, fit_pair_whitening, level_features
from ..io_utils import atomic_directory
from ..model import HashingModel, level_dims
from ..model_config import ModelConfig, training_source
from ..model_dir import save_model_dir
from ..onnx_export import export_onnx, open_session, run_session_all
from ..progress import progress_bar

log = logging.getLogger(__name__)
FEATURES_VERSION = 1


@dataclass
class SelfSupConfig:
    """The self-supervised recipe. The head's input (levels and grid), ``eps`` and ``aug_weight`` are chosen on the
    same-place folds (benchmarks/select_selfsup.py); bits, views and the refinement are ablated by
    benchmarks/archive_learning.py."""

    bits: int = 128
    dims: int = 128  # whitened descriptor dimensions (>= bits)
    pca_dims: int = 256  # PCA before whitening
    aug_weight: float = 0.0  # weight of augmentation pairs next to time pairs (without time pairs: they alone)
    eps: float = 3e-3  # eigenvalue floor of the whitening, relative to the largest
    views: int = 8  # the chip and views - 1 augmented views
    chip: int = 64  # grid chip side in native pixels
    max_chips_per_raster: int = 3000
    max_images: int = 5000  # images of an unlabelled folder read at most (an even sample beyond)
    use_time_pairs: bool = True  # ablation: False learns from augmented views only
    refine_epochs: int = 0  # loss refinement of the closed-form head (0: closed form only)
    seed: int = 0
    backbone: str = "efficientnet-lite0"
    # The head's input (benchmarks/select_selfsup.py): the grid pooling of one backbone map (``grid`` x ``grid``
    # cells of ``grid_tap``: where things are in the chip; 0: none) beside or instead of (``grid_levels``) the
    # globally pooled levels (what is in the chip, wherever it is).
    grid: int = 4
    grid_tap: str = "stage5"
    grid_levels: bool = True
    grid_weight: float = 4.0  # the grid block (unit norm) beside the levels (each of unit norm) in the fit

    @property
    def uses_levels(self) -> bool:
        """Whether the head reads the pooled levels (always without a grid)."""
        return self.grid_levels or not self.grid


@dataclass
class ArchiveFeatures:
    """Chips of an archive and the frozen backbone's pooled levels of their views."""

    place: PlaceChips
    pooled: np.ndarray  # float32 (N, views, sum(tap_dims))
    tap_dims: list[int]
    skipped: list[tuple[str, str]] = field(default_factory=list)
    grid: np.ndarray | None = None  # float16 (N, views, cells * channels): grid pooling of one map (None: none)
    use_levels: bool = True  # the pooled levels are part of the head's input
    grid_weight: float = 1.0  # the grid block's scale in the fit (see :func:`head_fit`)

    def levels(self, idx: np.ndarray | slice = slice(None)) -> np.ndarray:
        """``(n, views, D)``: what the head is fitted on, the concatenated per-level normalised features (if
        ``use_levels``) then the grid pooling (if any) times ``grid_weight``, as
        :class:`rshash.hashing.head.WhiteningHashHead` concatenates them (:func:`head_fit` moves the weight into
        the fit)."""
        parts = [level_features(self.pooled[idx], self.tap_dims)] if self.use_levels else []
        if self.grid is not None:
            parts.append(self.grid[idx].astype(np.float64) * self.grid_weight)
        return np.concatenate(parts, axis=-1)


def _features_key(pixels: np.ndarray, backbone: StageBackbone, views: int, seed: int, grid: int, grid_tap: str) -> str:
    parts = [FEATURES_VERSION, backbone.name, list(backbone.taps), views, seed] + ([grid, grid_tap] if grid else [])
    h = hashlib.sha256(json.dumps(parts).encode())
    h.update(np.ascontiguousarray(pixels).data)
    return h.hexdigest()[:20]


def view_features(pixels: np.ndarray, backbone: StageBackbone, views: int, seed: int = 0,
                  cache_dir: str | Path | None = None, batch_chips: int = 8, grid: int = 0,
                  grid_tap: str = "stage5") -> tuple[np.ndarray, np.ndarray | None]:
    """Pooled pretrained levels ``(N, views, D)`` of every chip and ``views - 1`` augmented views of it, and with
    ``grid`` > 0 the grid pooling of their ``grid_tap`` maps ``(N, views, grid^2 * C)`` (float16; else None).
    Cached on disk under a key of the pixels and settings."""
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    target = cache / f"selfsup-{_features_key(pixels, backbone, views, seed, grid, grid_tap)}"
    if (target / "pooled.npy").is_file() and (not grid or (target / "grid.npy").is_file()):
        log.info("archive features from cache: %s", target)
        return np.load(target / "pooled.npy"), np.load(target / "grid.npy") if grid else None
    size = backbone.input_size
    names = ("cut", "pooled", "grid") if grid else ("cut", "pooled")
    session = open_session(export_onnx(PretrainedOutputs(backbone, grid, grid_tap),
                                       torch.zeros(1, size, size, 3, dtype=torch.uint8), outputs=names))
    rng = np.random.default_rng(seed)
    out: list[np.ndarray] = []
    grids: list[np.ndarray] = []
    with progress_bar(total=len(pixels) * views, desc="archive features", unit="view") as bar:
        for start in range(0, len(pixels), batch_chips):
            chunk = pixels[start:start + batch_chips]
            stack = np.concatenate([chip_views(c, views, rng) for c in chunk])
            outputs = run_session_all(session, stack)
            out.append(outputs[1].reshape(len(chunk), views, -1).astype(np.float32))
            if grid:
                grids.append(outputs[2].reshape(len(chunk), views, -1).astype(np.float16))
            bar.update(len(chunk) * views)
    pooled = np.concatenate(out) if out else np.zeros((0, views, 0), np.float32)
    grid_features = (np.concatenate(grids) if grids else np.zeros((0, views, 0), np.float16)) if grid else None
    with atomic_directory(target) as tmp:
        np.save(tmp / "pooled.npy", pooled)
        if grid_features is not None:
            np.save(tmp / "grid.npy", grid_features)
    return pooled, grid_features


def place_features(place: PlaceChips, config: SelfSupConfig, backbone: StageBackbone,
                   cache_dir: str | Path | None = None, skipped: list[tuple[str, str]] | None = None) -> ArchiveFeatures:
    """The view features of the chips of ``place`` that the recipe's head reads."""
    pooled, grid = view_features(place.pixels, backbone, config.views, config.seed, cache_dir, grid=config.grid,
                                 grid_tap=config.grid_tap)
    return ArchiveFeatures(place, pooled, level_dims(backbone), list(skipped or []), grid, config.uses_levels,
                           config.grid_weight)


def head_fit(fit: WhiteningFit, config: SelfSupConfig, grid_width: int) -> WhiteningFit:
    """The fit as the model's head applies it to unweighted features: a fit on features whose last ``grid_width``
    columns (the grid block) were multiplied by ``grid_weight`` equals one on the plain block with that block's
    mean divided and its projection rows multiplied by the weight."""
    if not config.grid or config.grid_weight == 1.0:
        return fit
    rows = slice(len(fit.mean) - grid_width, len(fit.mean))
    mean, projection = fit.mean.copy(), fit.projection.copy()
    mean[rows] /= config.grid_weight
    projection[rows] *= config.grid_weight
    return WhiteningFit(mean, projection, fit.rotation, fit.time_pairs, fit.aug_pairs)


def archive_features(rasters: Sequence[str | Path], config: SelfSupConfig, cache_dir: str | Path | None = None,
                     backbone: StageBackbone | None = None, layout: str = "quadrants",
                     images: Sequence[ImageRecord] = ()) -> ArchiveFeatures:
    """Read the archive's chips (skipping unreadable rasters and images) and their view features."""
    backbone = backbone or create_backbone(config.backbone)
    skipped: list[tuple[str, str]] = []
    place = read_place(rasters, backbone.input_size, chip=config.chip, layout=layout,
                       max_chips_per_raster=config.max_chips_per_raster, progress=True, skipped=skipped)
    if images:
        place = join_places(place, image_chips(images, backbone.input_size, config.max_images, skipped))
    if len(place) == 0:
        raise ValueError("no readable chips or images in the given sources" +
                         (f" ({len(skipped)} unreadable)" if skipped else ""))
    return place_features(place, recipe_for(config, place), backbone, cache_dir, skipped)


def recipe_for(config: SelfSupConfig, place: PlaceChips) -> SelfSupConfig:
    """The recipe for these chips: without a footprint seen at two dates (an image folder, one acquisition) the
    grid is left out. It learns layout from time pairs; augmented views (rotated, flipped) alone teach it nothing
    and it cost content retrieval there (benchmarks/results/archive_content.json)."""
    if config.grid and config.use_time_pairs and not len(cross_date_pairs(place)):
        log.info("no footprint seen at two dates: the codes read the pooled levels only (no grid)")
        return replace(config, grid=0)
    return config


def image_chips(records: Sequence[ImageRecord], out_size: int, max_images: int | None = None,
                skipped: list[tuple[str, str]] | None = None, batch: int = 64) -> PlaceChips:
    """The images of an unlabelled folder as chips of one source: each its own footprint (no time pairs), no place
    (centre NaN). Unreadable files are skipped with a warning (listed in ``skipped``)."""
    if max_images and len(records) > max_images:
        log.info("%d images: training on an even sample of %d", len(records), max_images)
        records = [records[i] for i in np.linspace(0, len(records) - 1, max_images).round().astype(int)]
    report, arrays = SkipReport(), []
    with progress_bar(total=len(records), desc="images", unit="image") as bar:
        for start in range(0, len(records), batch):
            pixels, _ = load_batch([r.path for r in records[start:start + batch]], out_size, report)
            arrays.append(pixels)
            bar.update(min(batch, len(records) - start))
    if skipped is not None:
        skipped.extend(report.skipped)
    pixels = np.concatenate(arrays) if arrays else np.zeros((0, out_size, out_size, 3), np.uint8)
    n = len(pixels)
    folder = str(Path(records[0].path).parent) if records else ""
    return PlaceChips(pixels, np.zeros(n, dtype=int), np.arange(n), np.full((n, 2), np.nan), [(0, 0, 0, 0)] * n,
                      [folder], block=np.zeros(n, dtype=int), gsd=[None], bands=[("red", "green", "blue")])


def join_places(a: PlaceChips, b: PlaceChips) -> PlaceChips:
    """The chips of ``a`` then ``b`` (``b``'s sources after ``a``'s; its footprint groups kept apart)."""
    groups = int(a.group.max()) + 1 if len(a) else 0
    return PlaceChips(np.concatenate([a.pixels, b.pixels]), np.r_[a.date, b.date + len(a.rasters)].astype(int),
                      np.r_[a.group, b.group + groups].astype(int), np.concatenate([a.centre, b.centre]),
                      [*a.windows, *b.windows], [*a.rasters, *b.rasters], np.r_[a.block, b.block].astype(int),
                      [*a.gsd, *b.gsd], [*a.bands, *b.bands])


def fit_head(features: ArchiveFeatures, config: SelfSupConfig, members: np.ndarray | None = None) -> WhiteningFit:
    """The closed-form head from the chips ``members`` (default: all): their time pairs and augmented views."""
    members = np.arange(len(features.place)) if members is None else np.asarray(members)
    pairs = cross_date_pairs(features.place, members) if config.use_time_pairs else np.zeros((0, 2), dtype=int)
    local = np.full(len(features.place), -1)
    local[members] = np.arange(len(members))
    if not len(pairs) and config.use_time_pairs:
        log.warning("no footprint seen at two dates: the codes learn from augmented views only (give the archive's "
                    "acquisitions of one place to learn what changes over time)")
    fit = fit_pair_whitening(features.levels(members), local[pairs], config.bits, config.dims, config.pca_dims,
                             config.aug_weight, config.eps, seed=config.seed)
    if config.refine_epochs:
        from .selfsup_refine import refine_head

        fit = refine_head(fit, features.levels(members), local[pairs], config)
    return fit


def build_model(fit: WhiteningFit, config: SelfSupConfig, sources: list[dict[str, Any]],
                backbone: StageBackbone | None = None) -> HashingModel:
    """A :class:`HashingModel` (frozen pretrained backbone, whitening head) carrying ``fit``."""
    model_config = ModelConfig(bits=config.bits, backbone=config.backbone, cell=WHITEN,
                               descriptor_dims=int(fit.projection.shape[1]), dropout=0.0, sources=sources,
                               grid=config.grid, grid_tap=config.grid_tap, grid_levels=config.uses_levels)
    model = HashingModel(model_config, pretrained=True, backbone=backbone)
    model.head.load_fit(head_fit(fit, config, model.head.grid_width))
    return model.eval()


def raster_sources(place: PlaceChips, count: int | None = None) -> list[dict[str, Any]]:
    """One training source per raster (the first ``count`` sources of ``place``, default all) that gave chips:
    its path, ground resolution and band meaning."""
    used = set(np.unique(place.date).tolist())
    count = len(place.rasters) if count is None else count
    return [training_source("rasters", path, gsd, bands or ("red", "green", "blue"))
            for d, (path, gsd, bands) in enumerate(zip(place.rasters[:count], place.gsd, place.bands)) if d in used]


def train_selfsup(rasters: Sequence[str | Path], out_dir: str | Path, config: SelfSupConfig | None = None,
                  cache_dir: str | Path | None = None, images: str | Path | None = None,
                  images_gsd: float | None = None) -> dict[str, Any]:
    """Train on the rasters (files or folders) and/or an unlabelled image folder (or manifest) and write the model
    directory atomically; return the metrics."""
    from ..data.datasets import load_records

    config = config or SelfSupConfig()
    started = time.perf_counter()
    paths = raster_paths(rasters) if rasters else []
    if rasters and not paths:
        raise ValueError(f"no raster files in {', '.join(map(str, rasters))}")
    records = load_records(images) if images is not None else []
    sources = [folder_source(images, records, images_gsd)] if records else []  # checks the gsd before reading
    backbone = create_backbone(config.backbone)
    features = archive_features(paths, config, cache_dir, backbone, images=records)
    config = recipe_for(config, features.place)  # as archive_features applied it
    read_s = time.perf_counter() - started
    fit = fit_head(features, config)
    place, raster_names = features.place, {str(p) for p in paths}
    sources = raster_sources(place, len(paths)) + sources
    model = build_model(fit, config, sources, backbone)
    metrics = {
        "kind": "self-supervised", "config": asdict(config), "rasters": [str(p) for p in paths],
        "images": None if images is None else str(images),
        "skipped_rasters": [s for s in features.skipped if s[0] in raster_names],
        "skipped_images": [s for s in features.skipped if s[0] not in raster_names],
        "chips": len(place), "chips_per_source": np.bincount(place.date, minlength=len(place.rasters)).tolist(),
        "footprints_seen_at_two_dates": int(len(np.unique(place.group)) - (np.bincount(place.group) == 1).sum()),
        "time_pairs": fit.time_pairs, "augmentation_pairs": fit.aug_pairs,
        "timings": {"chips_and_features_s": round(read_s, 1), "total_s": round(time.perf_counter() - started, 1)},
    }
    metrics["fingerprint"] = save_model_dir(out_dir, model, metrics)
    metrics["timings"]["total_s"] = round(time.perf_counter() - started, 1)
    log.info("self-supervised model written to %s (%d chips, %d time pairs) in %.0f s", out_dir, len(place),
             fit.time_pairs, metrics["timings"]["total_s"])
    return metrics
