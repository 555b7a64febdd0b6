"""The acquisitions of a place as grid chips grouped by footprint: what self-supervised training learns from and
what the same-place protocol (:mod:`rshash.evaluation.same_place`) measures on.

* **Chips**: ``chip`` px at native resolution on a non-overlapping grid anchored at each raster's origin (only
  whole grid cells), read by the indexing reader (:func:`rshash.geo.source.open_raster`: same bands and stretch).
* **Footprint groups**: chips of two different acquisitions are the same place when their lon/lat footprints have
  IoU >= ``MATCH_IOU``; groups are the connected components of that relation (union-find).
* **Blocks**: 2 x 2 quadrants or 4 vertical strips of the chips' common extent (the protocol's folds).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
from rasterio.errors import RasterioError
from rasterio.windows import Window

from .footprints import overlap, to_polygon
from .source import open_raster
from .tiling import RasterError

log = logging.getLogger(__name__)

CHIP = 64
MATCH_IOU = 0.5
FOLDS = 4


@dataclass
class PlaceChips:
    """Grid chips of several acquisitions: pixels, footprints, dates, footprint groups and blocks."""

    pixels: np.ndarray  # uint8 (N, size, size, 3)
    date: np.ndarray  # int (N,): index into ``rasters``
    group: np.ndarray  # int (N,): chips with the same group are the same footprint (IoU >= MATCH_IOU)
    centre: np.ndarray  # float (N, 2): lon, lat of the chip centre
    windows: list[tuple[int, int, int, int]]
    rasters: list[str]
    block: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=int))  # int (N,): fold block
    gsd: list[float | None] = field(default_factory=list)  # per raster: native ground pixel size in metres
    bands: list[tuple[str, ...]] = field(default_factory=list)  # per raster: meaning of the bands read as R, G, B

    def __len__(self) -> int:
        return len(self.date)


def grid_windows(width: int, height: int, chip: int = CHIP, stride: int = 1) -> list[Window]:
    """Whole ``chip`` x ``chip`` cells of a grid anchored at the raster's origin (every ``stride``-th row and
    column of cells)."""
    return [Window(c * chip, r * chip, chip, chip)
            for r in range(0, height // chip, stride) for c in range(0, width // chip, stride)]


def read_place(rasters: Sequence[str | Path], out_size: int, chip: int = CHIP, layout: str = "quadrants",
               bands: Sequence[int] | None = None, max_chips_per_raster: int | None = None,
               progress: bool = False, skipped: list[tuple[str, str]] | None = None) -> PlaceChips:
    """Read the grid chips of every acquisition and group them by footprint.

    Chips mostly nodata (valid fraction < 0.5) or without a footprint (no CRS) are left out. With
    ``max_chips_per_raster`` a large raster is read on a sparser grid (every k-th row and column of cells, the same
    k for rasters of one size, so acquisitions of one place keep matching footprints). With a ``skipped`` list, a
    raster that cannot be read (corrupt, truncated, no such file) is logged, listed there and left out; without
    one the error propagates."""

    pixels, dates, centres, footprints, windows, gsds, band_sets = [], [], [], [], [], [], []
    for d, path in enumerate(rasters):
        first = len(dates)
        try:
            gsd, names = _read_raster(path, d, out_size, chip, bands, max_chips_per_raster, progress,
                                      (pixels, dates, centres, footprints, windows))
        except (RasterError, RasterioError, OSError, ValueError) as exc:
            if skipped is None:
                raise
            for out in (pixels, dates, centres, footprints, windows):
                del out[first:]  # nothing of a raster that failed half way
            log.warning("skipping %s: %s", path, exc)
            skipped.append((str(path), str(exc)))
            gsd, names = None, ()
        gsds.append(gsd)
        band_sets.append(names)
    group = footprint_groups(footprints, np.asarray(dates))
    centre = np.asarray(centres, dtype=np.float64).reshape(-1, 2)
    place = PlaceChips(np.stack(pixels) if pixels else np.zeros((0, out_size, out_size, 3), np.uint8),
                       np.asarray(dates, dtype=int), group, centre, windows, [str(p) for p in rasters],
                       gsd=gsds, bands=band_sets)
    place.block = blocks(centre, layout)
    return place


def _read_raster(path, d, out_size, chip, bands, max_chips, progress, out) -> tuple[float | None, tuple[str, ...]]:
    """Append the grid chips of one raster to the ``out`` lists; return its ground pixel size and band names."""
    from ..progress import progress_bar

    pixels, dates, centres, footprints, windows = out
    with open_raster(path, gsd="native", out_size=out_size, max_nodata=1.0,
                     bands=None if bands is None else tuple(bands)) as source:
        cells = (source.ds.width // chip) * (source.ds.height // chip)
        stride = 1 if not max_chips or cells <= max_chips else math.ceil(math.sqrt(cells / max_chips))
        if stride > 1:
            log.info("%s: %d grid chips; reading every %d-th row and column", path, cells, stride)
        grid = grid_windows(source.ds.width, source.ds.height, chip, stride)
        with progress_bar(total=len(grid), desc=f"chips {Path(path).name}", unit="chip", disable=not progress) as bar:
            for window in grid:
                c = source.read_chip(window)
                bar.update(1)
                if c.meta.valid_fraction < 0.5 or c.meta.footprint is None:
                    continue  # mostly nodata, or not georeferenced: no place to match
                pixels.append(c.pixels)
                dates.append(d)
                centres.append(c.meta.centroid)
                footprints.append(to_polygon(c.meta.footprint))
                windows.append(tuple(int(v) for v in c.meta.window))
        return source.info.gsd, tuple(band_name(source.ds, b) for b in source.bands)


def band_name(ds, band: int) -> str:
    """What a band holds: its description, else its colour interpretation, else ``band<n>``."""
    desc = (ds.descriptions[band - 1] or "").strip().lower()
    if desc:
        return desc
    interp = ds.colorinterp[band - 1].name
    return interp if interp not in ("undefined", "gray", "grey") else f"band{band}"


def footprint_groups(polys: list, dates: np.ndarray) -> np.ndarray:
    """Union-find over chips of different dates whose footprints overlap with IoU >= MATCH_IOU."""
    parent = list(range(len(polys)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    if not polys:
        return np.zeros(0, dtype=int)
    import shapely

    tree = shapely.STRtree(polys)
    for i, p in enumerate(polys):
        for j in tree.query(p):
            j = int(j)
            if j > i and dates[j] != dates[i] and overlap(p, polys[j], "iou") >= MATCH_IOU:
                parent[find(j)] = find(i)
    roots = np.asarray([find(i) for i in range(len(polys))])
    return np.unique(roots, return_inverse=True)[1]


def blocks(centre: np.ndarray, layout: str) -> np.ndarray:
    """Fold block of each chip centre: 2 x 2 quadrants or 4 vertical strips of the common extent."""
    if len(centre) == 0:
        return np.zeros(0, dtype=int)
    lo, hi = centre.min(axis=0), centre.max(axis=0)
    rel = (centre - lo) / np.maximum(hi - lo, 1e-12)
    if layout == "quadrants":
        return (np.minimum(rel[:, 0] * 2, 1.999).astype(int) + 2 * np.minimum((1 - rel[:, 1]) * 2, 1.999).astype(int))
    if layout == "strips":
        return np.minimum(rel[:, 0] * FOLDS, FOLDS - 0.001).astype(int)
    raise ValueError(f"layout is 'quadrants' or 'strips', got {layout!r}")


def cross_date_pairs(place: PlaceChips, members: np.ndarray | None = None) -> np.ndarray:
    """``(P, 2)`` index pairs ``i < j`` of chips of one footprint at different dates (among ``members``)."""
    idx = np.arange(len(place)) if members is None else np.asarray(members)
    pairs = []
    order = idx[np.argsort(place.group[idx], kind="stable")]
    groups = place.group[order]
    starts = np.flatnonzero(np.r_[True, groups[1:] != groups[:-1]])
    for a, b in zip(starts, np.r_[starts[1:], len(order)]):
        mem = order[a:b]
        for x in range(len(mem)):
            for y in range(x + 1, len(mem)):
                if place.date[mem[x]] != place.date[mem[y]]:
                    pairs.append((min(mem[x], mem[y]), max(mem[x], mem[y])))
    return np.asarray(pairs, dtype=int).reshape(-1, 2)
