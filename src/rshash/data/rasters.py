"""Raster data layer: a georeferenced GeoTIFF/COG becomes a stream of uint8 RGB chips with footprints.

    with open_raster("scene.tif", gsd="auto", tile=256, overlap=0.5, out_size=224) as src:
        print(src.info.to_dict(), len(src.plan))
        for batch in src.iter_chips(batch_size=64):      # lists of Chip(pixels, meta)
            ...
        print(src.skipped)                               # Counter({'nodata': 12, 'flat': 3})

The rules, in one place:

- **Bands**: ``bands`` (1-based) if given; else the bands whose colour interpretation is red, green,
  blue; else the first three (a single band is repeated as grey). A 4th band is never read as pixels, and
  an alpha-tagged band is used as a mask only if it is binary (0 / max) or ``use_alpha=True``: NAIP's NIR
  is sometimes tagged alpha and must not black out the scene.
- **Ground resolution**: tiles are ``tile`` pixels at the target ground resolution: ``gsd="auto"`` is the
  model's training resolution (``model_gsd``, 0.3 m for UCMD), a float is metres, ``"native"`` keeps the
  raster's pixels. Windows are in source pixels; rasterio resamples each window to ``out_size``.
- **Tiling**: stride = window x (1 - overlap); the last row and column are shifted back inside the
  raster; a raster smaller than one window gives one chip (the window clipped to the raster).
- **Values**: uint8 is used as is; any other type gets one 2-98 percentile stretch per band for the
  whole raster, from an overview / decimated read, kept in ``info.stretch`` (a JSON-able dict) so chips
  stay comparable and an index can record it. Never a per-chip stretch.
- **Skips**: chips whose valid fraction (dataset mask / nodata) is below ``1 - max_nodata`` or whose
  pixels are flat (std < ``min_std`` grey levels) are skipped and counted in ``skipped`` by reason.
- **Memory**: every read is one window with ``out_shape``, so memory does not grow with the raster size.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections import Counter
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Container, Iterator, Sequence

import numpy as np
import rasterio
from rasterio.enums import ColorInterp, MaskFlags, Resampling
from rasterio.errors import NotGeoreferencedWarning
from rasterio.windows import Window, from_bounds

from .. import geo
from .download import file_sha256

log = logging.getLogger(__name__)

#: Ground resolution (metres) of the training data: UCMD's 1 ft orthophotos.
MODEL_GSD_M = 0.3
#: A resampling ratio beyond this (either way) gets a warning.
EXTREME_RATIO = 8.0


class RasterError(ValueError):
    """A raster, or a request on it, that cannot be served (clear message for the user)."""


# --------------------------------------------------------------------------- tiling plan


def _starts(size: int, win: int, stride: int) -> tuple[int, ...]:
    """Window offsets along one axis: a regular stride, the last shifted back so it ends at ``size``."""
    if win >= size:
        return (0,)
    starts = list(range(0, size - win + 1, stride))
    if starts[-1] + win < size:
        starts.append(size - win)
    return tuple(starts)


@dataclass(frozen=True)
class TilingPlan:
    """Windows (source pixels) covering a raster: every ``col_starts`` x ``row_starts`` pair, row-major."""

    width: int
    height: int
    win_width: int
    win_height: int
    col_starts: tuple[int, ...]
    row_starts: tuple[int, ...]
    tile: int
    overlap: float
    target_gsd: float | None

    def __len__(self) -> int:
        return len(self.col_starts) * len(self.row_starts)

    def windows(self) -> Iterator[Window]:
        """All windows, row by row (so consecutive reads share blocks)."""
        w, h = min(self.win_width, self.width), min(self.win_height, self.height)
        for row in self.row_starts:
            for col in self.col_starts:
                yield Window(col, row, w, h)

    def window_containing(self, col: float, row: float) -> Window:
        """The window containing pixel (col, row) whose centre is nearest to it."""
        if not (0 <= col < self.width and 0 <= row < self.height):
            raise RasterError(f"pixel ({col:.1f}, {row:.1f}) is outside the raster")
        w, h = min(self.win_width, self.width), min(self.win_height, self.height)
        c = min((s for s in self.col_starts if s <= col < s + w), key=lambda s: abs(s + w / 2 - col))
        r = min((s for s in self.row_starts if s <= row < s + h), key=lambda s: abs(s + h / 2 - row))
        return Window(c, r, w, h)


def plan_tiles(width: int, height: int, win_width: int, win_height: int, overlap: float = 0.5,
               tile: int = 256, target_gsd: float | None = None) -> TilingPlan:
    """A :class:`TilingPlan` of ``win_width`` x ``win_height`` source-pixel windows with ``overlap`` (0 <= o < 1)."""
    if not 0.0 <= overlap < 1.0:
        raise RasterError(f"overlap must be in [0, 1), got {overlap}")
    win_width, win_height = max(1, int(win_width)), max(1, int(win_height))
    stride_x = max(1, round(win_width * (1.0 - overlap)))
    stride_y = max(1, round(win_height * (1.0 - overlap)))
    return TilingPlan(width, height, win_width, win_height, _starts(width, win_width, stride_x),
                      _starts(height, win_height, stride_y), tile, overlap, target_gsd)


def resolve_gsd(gsd: str | float, native: float | None, model_gsd: float = MODEL_GSD_M) -> float | None:
    """Target ground resolution in metres: ``"auto"`` -> ``model_gsd``, ``"native"`` -> ``native``, or a float."""
    if gsd == "native":
        return native
    target = float(model_gsd) if gsd == "auto" else float(gsd)
    if not target > 0:
        raise RasterError(f"gsd must be 'auto', 'native' or a positive number of metres, got {gsd!r}")
    return target


# --------------------------------------------------------------------------- bands, masks, stretch


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


def _valid(ds: Any, mbands: Sequence[int], window: Window | None, shape: tuple[int, int],
           data: np.ndarray | None = None) -> np.ndarray:
    """Boolean valid-pixel mask at ``shape``: any masked band valid, and finite data where it is float."""
    if mbands:
        masks = ds.read_masks(list(mbands), window=window, out_shape=(len(mbands), *shape),
                              resampling=Resampling.nearest)
        valid = (masks > 0).any(axis=0)
    else:
        valid = np.ones(shape, bool)
    if data is not None and np.issubdtype(data.dtype, np.floating):
        valid &= np.isfinite(data).all(axis=0)
    return valid


def compute_stretch(ds: Any, bands: Sequence[int], mbands: Sequence[int] = (), max_side: int = 1024,
                    percentiles: tuple[float, float] = (2.0, 98.0)) -> dict[str, Any]:
    """One stretch for the whole raster: ``{"kind": "none"}`` for uint8, else per-band percentiles of a
    decimated read (GDAL picks an overview when there is one) over the valid pixels."""
    if ds.dtypes[bands[0] - 1] == "uint8":
        return {"kind": "none"}
    shape = _decimated_shape(ds.height, ds.width, max_side)
    data = ds.read(list(bands), out_shape=(len(bands), *shape), resampling=Resampling.nearest).astype(np.float64)
    valid = _valid(ds, mbands, None, shape, data)
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


# --------------------------------------------------------------------------- records


@dataclass(frozen=True)
class RasterInfo:
    """What an index records about a raster."""

    path: str
    sha256: str
    crs: str | None  # "EPSG:n" when exact, else WKT; None without a CRS
    transform: tuple[float, ...]  # affine (a, b, c, d, e, f)
    width: int
    height: int
    count: int
    bands: tuple[int, ...]
    dtype: str
    stretch: dict[str, Any]
    gsd: float | None  # ground pixel size in metres (mean of x and y); None without a CRS

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ChipMeta:
    """Where a chip comes from: its window in the raster and its place on the ground."""

    raster_path: str
    window: tuple[int, int, int, int]  # col_off, row_off, width, height (source pixels)
    bounds: tuple[float, float, float, float]  # left, bottom, right, top in the raster CRS
    footprint: list[list[float]] | None  # closed CCW ring of [lon, lat]
    centroid: tuple[float, float] | None  # (lon, lat)
    bbox: tuple[float, float, float, float] | None  # lon_min, lat_min, lon_max, lat_max
    valid_fraction: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Chip:
    """uint8 RGB pixels (out_size, out_size, 3) and their metadata."""

    pixels: np.ndarray
    meta: ChipMeta


# --------------------------------------------------------------------------- the source


class RasterSource:
    """An open raster with its band choice, stretch and tiling plan; made by :func:`open_raster`."""

    def __init__(self, ds: Any, *, bands: Sequence[int] | None = None, gsd: str | float = "auto",
                 model_gsd: float = MODEL_GSD_M, tile: int = 256, overlap: float = 0.5, out_size: int = 224,
                 max_nodata: float = 0.5, min_std: float = 1.0, resampling: Resampling = Resampling.bilinear,
                 stretch: dict[str, Any] | None = None, use_alpha: bool | None = None) -> None:
        self.ds = ds
        self.out_size, self.min_valid, self.min_std = int(out_size), 1.0 - float(max_nodata), float(min_std)
        self.resampling = resampling
        self.bands = choose_bands(ds, bands)
        self.mask_bands = mask_bands(ds, self.bands, use_alpha)
        native = self._native_gsd(gsd)
        self.georeferenced = native is not None and geo.has_lonlat(ds.crs)  # footprints can be computed
        target = resolve_gsd(gsd, None if native is None else sum(native) / 2, model_gsd)
        self.plan = self._plan(native, target, int(tile), overlap)
        self.info = RasterInfo(
            path=os.path.abspath(ds.name), sha256=file_sha256(ds.name), crs=geo.crs_text(ds.crs),
            transform=tuple(float(v) for v in tuple(ds.transform)[:6]), width=ds.width, height=ds.height,
            count=ds.count, bands=self.bands, dtype=ds.dtypes[self.bands[0] - 1],
            stretch=stretch or compute_stretch(ds, self.bands, self.mask_bands),
            gsd=None if native is None else sum(native) / 2)
        self.skipped: Counter[str] = Counter()

    def _native_gsd(self, gsd: str | float) -> tuple[float, float] | None:
        """Ground pixel size (x, y) in metres; None (allowed only with gsd="native") without CRS units."""
        try:
            return geo.ground_pixel_size(self.ds.crs, self.ds.transform, self.ds.width, self.ds.height)
        except geo.CRSUnitsError as exc:
            if gsd == "native":
                return None
            raise RasterError(f"{self.ds.name}: {exc}; its ground resolution is unknown, so it cannot be "
                              f"resampled to gsd={gsd!r} (use gsd='native' to tile its pixels as they are)") from exc

    def _plan(self, native: tuple[float, float] | None, target: float | None, tile: int, overlap: float) -> TilingPlan:
        """Windows of ``tile`` target pixels, in source pixels; warns when the resampling is extreme."""
        if native is None or target is None:
            return plan_tiles(self.ds.width, self.ds.height, tile, tile, overlap, tile, target)
        win_w, win_h = tile * target / native[0], tile * target / native[1]
        ratio = target / (sum(native) / 2)
        if ratio > EXTREME_RATIO or ratio < 1.0 / EXTREME_RATIO:
            how = f"downsampling {ratio:.3g}x" if ratio > 1 else f"upsampling {1 / ratio:.3g}x"
            log.warning("%s: ground pixel %.3g m, target %.3g m: %s (windows of %.3g source pixels); chips will "
                        "look unlike the training scenes; consider gsd='native'", self.ds.name,
                        sum(native) / 2, target, how, win_w)
        return plan_tiles(self.ds.width, self.ds.height, round(win_w), round(win_h), overlap, tile, target)

    # ----------------------------------------------------------------- reading

    def _meta(self, window: Window, valid_fraction: float) -> ChipMeta:
        win = (int(window.col_off), int(window.row_off), int(window.width), int(window.height))
        footprint = centroid = bbox = None
        if self.georeferenced:
            footprint = geo.footprint_lonlat(self.ds.crs, self.info.transform, win)
            centroid = geo.centre_lonlat(self.ds.crs, self.info.transform, win)
            bbox = geo.ring_bbox(footprint)
        bounds = geo.window_bounds(self.info.transform, win)
        return ChipMeta(self.info.path, win, bounds, footprint, centroid, bbox, valid_fraction)

    def _read_valid(self, window: Window) -> np.ndarray:
        return _valid(self.ds, self.mask_bands, window, (self.out_size, self.out_size))

    def _read_pixels(self, window: Window, valid: np.ndarray) -> np.ndarray:
        """Read ``window`` resampled to ``out_size``; uint8 RGB with invalid pixels set to 0."""
        unique = list(dict.fromkeys(self.bands))
        data = self.ds.read(unique, window=window, out_shape=(len(unique), self.out_size, self.out_size),
                            resampling=self.resampling)
        data = data[[unique.index(b) for b in self.bands]]
        if np.issubdtype(data.dtype, np.floating):
            valid &= np.isfinite(data).all(axis=0)
        pixels = apply_stretch(data, self.info.stretch)
        pixels[~valid] = 0
        return pixels

    def read_chip(self, window: Window) -> Chip:
        """The chip of any window (no skipping; ``meta.valid_fraction`` tells how much of it is valid)."""
        valid = self._read_valid(window)
        pixels = self._read_pixels(window, valid)
        return Chip(pixels, self._meta(window, float(valid.mean())))

    def _is_flat(self, pixels: np.ndarray, valid: np.ndarray) -> bool:
        """Whether the valid pixels' std (per channel, on a 1-in-4 grid sample) is below ``min_std``."""
        step = 4 if self.out_size >= 64 else 1
        values = pixels[::step, ::step][valid[::step, ::step]].astype(np.float32)
        return values.size == 0 or float(values.std(axis=0).max()) < self.min_std

    def iter_chips(self, batch_size: int = 64,
                   skip: Container[tuple[int, int, int, int]] = ()) -> Iterator[list[Chip]]:
        """Chips of the plan in batches, window by window; nodata and flat chips are counted in
        ``self.skipped``, as are windows in ``skip`` (e.g. those an interrupted run already indexed)."""
        batch: list[Chip] = []
        for window in self.plan.windows():
            key = (int(window.col_off), int(window.row_off), int(window.width), int(window.height))
            if key in skip:
                self.skipped["already_indexed"] += 1
                continue
            valid = self._read_valid(window)
            if float(valid.mean()) < self.min_valid:
                self.skipped["nodata"] += 1
                continue
            pixels = self._read_pixels(window, valid)
            if self._is_flat(pixels, valid):
                self.skipped["flat"] += 1
                continue
            batch.append(Chip(pixels, self._meta(window, float(valid.mean()))))
            if len(batch) >= batch_size:
                yield batch
                batch = []
        if batch:
            yield batch

    # ----------------------------------------------------------------- places

    def _require_crs(self) -> None:
        if not self.georeferenced:
            raise RasterError(f"{self.ds.name} has no CRS (or one without a link to longitude/latitude): "
                              "it cannot be searched by place")

    def lonlat_to_pixel(self, lon: float, lat: float) -> tuple[float, float]:
        """(col, row) of a lon/lat point, fractional pixels."""
        self._require_crs()
        x, y = geo.from_lonlat_transformer(self.ds.crs).transform(lon, lat)
        col, row = ~self.ds.transform @ (x, y)
        return float(col), float(row)

    def window_for_point(self, lon: float, lat: float) -> Window:
        """The plan's window that contains the point, nearest to its centre."""
        return self.plan.window_containing(*self.lonlat_to_pixel(lon, lat))

    def read_point(self, lon: float, lat: float) -> Chip:
        """The chip of :meth:`window_for_point`."""
        return self.read_chip(self.window_for_point(lon, lat))

    def window_for_box(self, lon_min: float, lat_min: float, lon_max: float, lat_max: float) -> Window:
        """Integer source window covering a lon/lat box, clipped to the raster."""
        self._require_crs()
        xmin, ymin, xmax, ymax = geo.from_lonlat_transformer(self.ds.crs).transform_bounds(
            lon_min, lat_min, lon_max, lat_max, densify_pts=21)
        win = from_bounds(xmin, ymin, xmax, ymax, self.ds.transform)
        c0, r0 = max(0, int(np.floor(win.col_off))), max(0, int(np.floor(win.row_off)))
        c1 = min(self.ds.width, int(np.ceil(win.col_off + win.width)))
        r1 = min(self.ds.height, int(np.ceil(win.row_off + win.height)))
        if c1 <= c0 or r1 <= r0:
            raise RasterError(f"the box ({lon_min}, {lat_min}, {lon_max}, {lat_max}) does not overlap {self.ds.name}")
        return Window(c0, r0, c1 - c0, r1 - r0)

    def read_box(self, lon_min: float, lat_min: float, lon_max: float, lat_max: float) -> Chip:
        """One chip of an arbitrary lon/lat box (search by a box drawn on the map), resampled to out_size."""
        return self.read_chip(self.window_for_box(lon_min, lat_min, lon_max, lat_max))


@contextmanager
def open_raster(path: str | Path, **options: Any) -> Iterator[RasterSource]:
    """Open a GeoTIFF/COG as a :class:`RasterSource` (options: see :class:`RasterSource`); closes on exit."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)  # no CRS gets our own clear error
        try:
            ds = rasterio.open(path)
        except rasterio.errors.RasterioIOError as exc:
            raise RasterError(f"cannot open {path} as a raster: {exc}") from exc
    with ds:
        yield RasterSource(ds, **options)
