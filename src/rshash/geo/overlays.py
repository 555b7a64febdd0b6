"""Raster overlays for the map page: an indexed raster warped to Web Mercator as a PNG, cached on disk.

The map (Leaflet, in Web Mercator) places an image between two lon/lat corners and stretches it linearly in
Mercator, so the raster is warped to EPSG:3857 on the server (rasterio), with the bands and the one stretch
it was indexed with, transparent where it has no data. The raster is first read decimated (GDAL uses its
overviews), so a 20 000 px raster renders in bounded memory. The PNG is written once per raster version
(checksum) and size, under ``INDEX_DIR/overlays/`` (or a temporary folder when the index is read-only).
"""

from __future__ import annotations

import hashlib
import io
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rasterio.transform import Affine
from PIL import Image
from rasterio.enums import Resampling
from rasterio.warp import calculate_default_transform, reproject

from ..io_utils import atomic_write_bytes
from .crs import lonlat_transformer, to_pyproj_crs, window_bounds
from .bands import apply_stretch, read_bands, valid_mask
from .source import RasterSource

WEB_MERCATOR = "EPSG:3857"
#: Largest side of an overlay image, pixels.
MAX_SIDE = 2048


@dataclass(frozen=True)
class OverlayPlan:
    """The warped image's grid: its Web-Mercator transform and size, and its lon/lat corners."""

    transform: Affine
    width: int
    height: int
    bounds: tuple[float, float, float, float]  # lon_min, lat_min, lon_max, lat_max


def overlay_plan(row: dict, max_side: int = MAX_SIDE) -> OverlayPlan:
    """The Web-Mercator grid of a raster row (``rasters`` table), at most ``max_side`` pixels a side."""
    if row.get("crs") is None:
        raise ValueError(f"raster {row.get('id')} has no CRS: it cannot be drawn on the map")
    left, bottom, right, top = window_bounds(row["transform"], (0, 0, row["width"], row["height"]))
    crs = to_pyproj_crs(row["crs"]).to_wkt()
    transform, width, height = calculate_default_transform(crs, WEB_MERCATOR, row["width"], row["height"],
                                                           left=left, bottom=bottom, right=right, top=top)
    scale = max(width, height) / max_side
    if scale > 1:
        width, height = max(1, math.ceil(width / scale)), max(1, math.ceil(height / scale))
        transform = transform * Affine.scale(scale, scale)
    x0, y0 = transform.c, transform.f
    x1, y1 = transform * (width, height)
    lon0, lat0 = lonlat_transformer(WEB_MERCATOR).transform(x0, y0)
    lon1, lat1 = lonlat_transformer(WEB_MERCATOR).transform(x1, y1)
    return OverlayPlan(transform, int(width), int(height), (min(lon0, lon1), min(lat0, lat1), max(lon0, lon1), max(lat0, lat1)))


def render_overlay(source: RasterSource, row: dict, max_side: int = MAX_SIDE) -> bytes:
    """The raster (as indexed: bands, stretch) warped to Web Mercator: an RGBA PNG, transparent outside
    the data."""
    plan = overlay_plan(row, max_side)
    ds = source.ds
    scale = min(1.0, 2 * max(plan.width, plan.height) / max(ds.width, ds.height))  # read ~2x the output
    h, w = max(1, round(ds.height * scale)), max(1, round(ds.width * scale))
    rgb = apply_stretch(read_bands(ds, source.bands, (h, w), resampling=Resampling.average), source.info.stretch)
    valid = valid_mask(ds, source.mask_bands, None, (h, w))
    src = np.concatenate([rgb.transpose(2, 0, 1), (valid * 255).astype(np.uint8)[None]])
    src_transform = ds.transform * Affine.scale(ds.width / w, ds.height / h)
    out = np.zeros((4, plan.height, plan.width), np.uint8)
    crs = to_pyproj_crs(row["crs"]).to_wkt()
    for band in range(4):
        reproject(src[band], out[band], src_transform=src_transform, src_crs=crs, dst_transform=plan.transform,
                  dst_crs=WEB_MERCATOR, resampling=Resampling.nearest if band == 3 else Resampling.bilinear,
                  src_nodata=None, dst_nodata=0, init_dest_nodata=True)
    image = Image.fromarray(np.ascontiguousarray(out.transpose(1, 2, 0)), "RGBA")
    buf = io.BytesIO()
    image.save(buf, format="PNG", optimize=False)
    return buf.getvalue()


class OverlayCache:
    """PNG files per raster version and size, in ``INDEX_DIR/overlays`` (else a temporary folder)."""

    def __init__(self, index_dir: str | Path):
        index_dir = Path(index_dir).absolute()
        preferred = index_dir / "overlays"
        tag = hashlib.sha256(str(index_dir).encode()).hexdigest()[:12]
        fallback = Path(tempfile.gettempdir()) / f"rshash-overlays-{tag}"
        self.dir = preferred if _writable(preferred) else fallback

    def path(self, row: dict, max_side: int) -> Path:
        return self.dir / f"raster-{row['id']}-{row['sha256'][:16]}-{max_side}.png"

    def get(self, row: dict, max_side: int) -> bytes | None:
        try:
            return self.path(row, max_side).read_bytes()
        except OSError:
            return None

    def put(self, row: dict, max_side: int, data: bytes) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(self.path(row, max_side), data)


def _writable(folder: Path) -> bool:
    target = folder if folder.exists() else folder.parent
    return os.access(target, os.W_OK)
