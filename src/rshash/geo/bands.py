"""Reading a dataset's pixel values the one way every reader does: band choice (colour interpretation, a palette
band expanded through its colour table), validity masks (dataset mask / nodata, a binary alpha, the part of a
window inside the raster) and the one 2-98 % stretch per raster. Used by :mod:`.source` (chips, boxes) and
:mod:`.overlays` (the map)."""

from __future__ import annotations

import logging
from typing import Any, Sequence

import numpy as np
from rasterio.enums import ColorInterp, MaskFlags, Resampling
from rasterio.windows import Window

from .tiling import RasterError

log = logging.getLogger(__name__)



def choose_bands(ds: Any, bands: Sequence[int] | None = None) -> tuple[int, ...]:
    """Three 1-based band indexes for R, G, B (see the module rules)."""
    if bands:
        chosen = tuple(int(b) for b in bands)
        if len(chosen) not in (1, 3) or not all(1 <= b <= ds.count for b in chosen):
            raise RasterError(f"bands must be 1 or 3 indexes in 1..{ds.count}, got {list(bands)}")
        return chosen * 3 if len(chosen) == 1 else chosen
    interp = list(ds.colorinterp)
    rgb = [ColorInterp.red, ColorInterp.green, ColorInterp.blue]
    if all(ci in interp for ci in rgb):
        return tuple(interp.index(ci) + 1 for ci in rgb)
    return (1, 2, 3) if ds.count >= 3 else (1, 1, 1)


def _alpha_band(ds: Any) -> int | None:
    """1-based index of the band tagged alpha, if any."""
    interp = list(ds.colorinterp)
    return interp.index(ColorInterp.alpha) + 1 if ColorInterp.alpha in interp else None


def _alpha_is_binary(ds: Any, band: int, max_side: int = 512) -> bool:
    """Whether the alpha-tagged band holds only 0 and one other value (a real mask), from a decimated read."""
    h, w = _decimated_shape(ds.height, ds.width, max_side)
    values = np.unique(ds.read(band, out_shape=(h, w), resampling=Resampling.nearest))
    return len(values) == 1 or (len(values) == 2 and values[0] == 0)


def mask_bands(ds: Any, bands: Sequence[int], use_alpha: bool | None = None) -> tuple[int, ...]:
    """Bands whose ``read_masks`` give the valid pixels; empty when every pixel counts as valid."""
    flags = [ds.mask_flag_enums[b - 1] for b in dict.fromkeys(bands)]
    if all(f == [MaskFlags.all_valid] for f in flags):
        return ()
    if any(MaskFlags.alpha in f for f in flags):
        alpha = _alpha_band(ds)
        honour = use_alpha if use_alpha is not None else alpha is not None and _alpha_is_binary(ds, alpha)
        if not honour:
            log.info("%s: band %s is tagged alpha but holds image data; not used as a mask", ds.name, alpha)
            return ()
    if any(MaskFlags.per_dataset in f for f in flags):
        return (bands[0],)
    return tuple(dict.fromkeys(bands))


def _decimated_shape(height: int, width: int, max_side: int) -> tuple[int, int]:
    scale = min(1.0, max_side / max(height, width))
    return max(1, round(height * scale)), max(1, round(width * scale))


def palette_band(ds: Any, bands: Sequence[int]) -> int | None:
    """The band to expand through its colour table: ``bands`` are one band whose colour interpretation is
    palette (and which has a colour table); else None."""
    band = bands[0]
    if len(set(bands)) != 1 or ds.colorinterp[band - 1] != ColorInterp.palette:
        return None
    try:
        ds.colormap(band)
    except ValueError:  # tagged palette without a table: read the indices as grey
        return None
    return band


def _colour_lut(ds: Any, band: int, top: int) -> np.ndarray:
    """(3, n) uint8 RGB of each palette index 0..n-1 (n > ``top``; indices without an entry are black)."""
    table = ds.colormap(band)
    lut = np.zeros((3, max(256, top + 1, max(table, default=0) + 1)), np.uint8)
    for index, rgba in table.items():
        lut[:, index] = rgba[:3]
    return lut


def crosses_edge(ds: Any, window: Window | None) -> bool:
    """Whether ``window`` extends past the raster (it is then read boundless, the padding as nodata)."""
    return window is not None and (window.col_off < 0 or window.row_off < 0 or window.col_off + window.width > ds.width
                                   or window.row_off + window.height > ds.height)


def inside_mask(ds: Any, window: Window | None, shape: tuple[int, int]) -> np.ndarray:
    """Boolean mask at ``shape``: the output pixels whose centres fall inside the raster."""
    if not crosses_edge(ds, window):
        return np.ones(shape, bool)
    rows = window.row_off + (np.arange(shape[0]) + 0.5) * window.height / shape[0]
    cols = window.col_off + (np.arange(shape[1]) + 0.5) * window.width / shape[1]
    return ((rows >= 0) & (rows < ds.height))[:, None] & ((cols >= 0) & (cols < ds.width))[None, :]


def read_bands(ds: Any, bands: Sequence[int], shape: tuple[int, int], window: Window | None = None,
               resampling: Resampling = Resampling.bilinear) -> np.ndarray:
    """(len(bands), h, w) raw values of ``bands`` (1-based; a repeated band read once) resampled to ``shape``.

    A palette band (see :func:`palette_band`) is read as indices (nearest neighbour) and expanded through
    its colour table to (3, h, w) uint8 RGB. A window past the raster's edge is read boundless (rasterio),
    never clipped, so the output keeps the window's scale; :func:`valid_mask` marks the padding invalid."""
    palette = palette_band(ds, bands)
    unique = [palette] if palette else list(dict.fromkeys(bands))
    data = ds.read(unique, window=window, out_shape=(len(unique), *shape),
                   resampling=Resampling.nearest if palette else resampling, boundless=crosses_edge(ds, window))
    if palette:
        indices = data[0].astype(np.intp)
        return np.take(_colour_lut(ds, palette, int(indices.max(initial=0))), indices, axis=1)
    return data[[unique.index(b) for b in bands]]


def valid_mask(ds: Any, mbands: Sequence[int], window: Window | None, shape: tuple[int, int],
               data: np.ndarray | None = None) -> np.ndarray:
    """Boolean valid-pixel mask at ``shape``: any masked band valid, and finite data where it is float;
    pixels past the raster's edge (a boundless window) are invalid."""
    if mbands:
        masks = ds.read_masks(list(mbands), window=window, out_shape=(len(mbands), *shape),
                              resampling=Resampling.nearest, boundless=crosses_edge(ds, window))
        valid = (masks > 0).any(axis=0)
    else:
        valid = np.ones(shape, bool)
    valid &= inside_mask(ds, window, shape)
    if data is not None and np.issubdtype(data.dtype, np.floating):
        valid &= np.isfinite(data).all(axis=0)
    return valid


def compute_stretch(ds: Any, bands: Sequence[int], mbands: Sequence[int] = (), max_side: int = 1024,
                    percentiles: tuple[float, float] = (2.0, 98.0)) -> dict[str, Any]:
    """One stretch for the whole raster: ``{"kind": "none"}`` for uint8, else per-band percentiles of a
    decimated read (GDAL picks an overview when there is one) over the valid pixels."""
    if ds.dtypes[bands[0] - 1] == "uint8" or palette_band(ds, bands):  # a palette is expanded to RGB
        return {"kind": "none"}
    shape = _decimated_shape(ds.height, ds.width, max_side)
    data = ds.read(list(bands), out_shape=(len(bands), *shape), resampling=Resampling.nearest).astype(np.float64)
    valid = valid_mask(ds, mbands, None, shape, data)
    low, high = [], []
    for band in data:
        values = band[valid]
        lo, hi = np.percentile(values, percentiles) if values.size else (0.0, 1.0)
        low.append(float(lo))
        high.append(float(hi) if hi > lo else float(lo) + 1.0)
    return {"kind": "percentile", "percentiles": list(percentiles), "low": low, "high": high,
            "sample_shape": list(shape)}


def apply_stretch(data: np.ndarray, stretch: dict[str, Any]) -> np.ndarray:
    """(bands, h, w) raw values -> (h, w, bands) uint8, with the raster's one stretch."""
    if stretch.get("kind") == "none":
        out = data if data.dtype == np.uint8 else np.clip(data, 0, 255).astype(np.uint8)
    else:
        lo = np.asarray(stretch["low"], np.float64)[:, None, None]
        hi = np.asarray(stretch["high"], np.float64)[:, None, None]
        scaled = (np.nan_to_num(data.astype(np.float64)) - lo) / (hi - lo) * 255.0
        out = np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(out.transpose(1, 2, 0))
