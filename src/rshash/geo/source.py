"""Raster sources: a georeferenced GeoTIFF/COG becomes a stream of uint8 RGB chips with footprints.

    with open_raster("scene.tif", gsd="auto", tile=256, overlap=0.5, out_size=224) as src:  # a RasterSource
        print(src.info.to_dict(), len(src.plan))
        for batch in src.iter_chips(batch_size=64):      # lists of Chip(pixels, meta)
            ...
        print(src.skipped)                               # Counter({'nodata': 12, 'flat': 3})

The rules, in one place:

- **Bands**: ``bands`` (1-based) if given; else the bands whose colour interpretation is red, green,
  blue; else the first three (a single band is repeated as grey). A 4th band is never read as pixels, and
  an alpha-tagged band is used as a mask only if it is binary (0 / max) or ``use_alpha=True``: NAIP's NIR
  is sometimes tagged alpha and must not black out the scene.
- **Ground resolution and tiling**: see :mod:`rshash.geo.tiling` (the plan of source-pixel windows);
  rasterio resamples each window to ``out_size``.
- **Values**: uint8 is used as is; any other type gets one 2-98 percentile stretch per band for the
  whole raster, from an overview / decimated read, kept in ``info.stretch`` (a JSON-able dict) so chips
  stay comparable and an index can record it. Never a per-chip stretch.
- **Skips**: chips whose valid fraction (dataset mask / nodata) is below ``1 - max_nodata`` or whose
  pixels are flat (std < ``min_std`` grey levels) are skipped and counted in ``skipped`` by reason.
- **Memory**: every read is one window with ``out_shape``, so memory does not grow with the raster size.

:class:`RasterError` is defined beside the tiling plan (:mod:`rshash.geo.tiling` raises it too) and
imported here, its home for callers.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Container, Iterable, Iterator, Sequence

import numpy as np
import rasterio
import shapely
from rasterio.enums import ColorInterp, MaskFlags, Resampling
from rasterio.errors import NotGeoreferencedWarning, WindowError
from rasterio.features import geometry_window
from rasterio.windows import Window

from ..data.download import file_sha256
from .crs import (CRSUnitsError, centre_lonlat, crs_text, footprint_lonlat, from_lonlat_transformer,
                  ground_pixel_size, has_lonlat, window_bounds)
from .footprints import ring_bbox
from .tiling import EXTREME_RATIO, MODEL_GSD_M, RasterError, TilingPlan, plan_tiles, resolve_gsd, window_key

log = logging.getLogger(__name__)

#: File name endings taken from a folder given as a raster source.
RASTER_SUFFIXES = (".tif", ".tiff", ".vrt", ".jp2", ".img")


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


def read_bands(ds: Any, bands: Sequence[int], shape: tuple[int, int], window: Window | None = None,
               resampling: Resampling = Resampling.bilinear) -> np.ndarray:
    """(len(bands), h, w) raw values of ``bands`` (1-based; a repeated band read once) resampled to ``shape``."""
    unique = list(dict.fromkeys(bands))
    data = ds.read(unique, window=window, out_shape=(len(unique), *shape), resampling=resampling)
    return data[[unique.index(b) for b in bands]]


def valid_mask(ds: Any, mbands: Sequence[int], window: Window | None, shape: tuple[int, int],
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
    """An open raster with its band choice, stretch and tiling plan; made by :func:`open_raster`.

    It owns the dataset: ``close()`` (or the end of a ``with`` block) closes it."""

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
        self.georeferenced = native is not None and has_lonlat(ds.crs)  # footprints can be computed
        target = resolve_gsd(gsd, None if native is None else sum(native) / 2, model_gsd)
        self.plan = self._plan(native, target, int(tile), overlap)
        self.info = RasterInfo(
            path=os.path.abspath(ds.name), sha256=file_sha256(ds.name), crs=crs_text(ds.crs),
            transform=tuple(float(v) for v in tuple(ds.transform)[:6]), width=ds.width, height=ds.height,
            count=ds.count, bands=self.bands, dtype=ds.dtypes[self.bands[0] - 1],
            stretch=stretch or compute_stretch(ds, self.bands, self.mask_bands),
            gsd=None if native is None else sum(native) / 2)
        self.skipped: Counter[str] = Counter()

    # ----------------------------------------------------------------- lifetime

    def close(self) -> None:
        """Close the dataset (again: nothing happens)."""
        self.ds.close()

    @property
    def closed(self) -> bool:
        return bool(self.ds.closed)

    def __enter__(self) -> RasterSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def with_stretch(self, bands: Sequence[int], stretch: dict[str, Any]) -> RasterSource:
        """This dataset and tiling read with other bands and a given stretch (how an index recorded it).

        The new source shares the dataset: close only one of them."""
        return RasterSource(self.ds, bands=bands, gsd=self.plan.target_gsd or "native", tile=self.plan.tile,
                            overlap=self.plan.overlap, out_size=self.out_size, max_nodata=1.0 - self.min_valid,
                            stretch=stretch)

    def _native_gsd(self, gsd: str | float) -> tuple[float, float] | None:
        """Ground pixel size (x, y) in metres; None (allowed only with gsd="native") without CRS units."""
        try:
            return ground_pixel_size(self.ds.crs, self.ds.transform, self.ds.width, self.ds.height)
        except CRSUnitsError as exc:
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
        win = window_key(window)
        footprint = centroid = bbox = None
        if self.georeferenced:
            footprint = footprint_lonlat(self.ds.crs, self.info.transform, win)
            centroid = centre_lonlat(self.ds.crs, self.info.transform, win)
            bbox = ring_bbox(footprint)
        bounds = window_bounds(self.info.transform, win)
        return ChipMeta(self.info.path, win, bounds, footprint, centroid, bbox, valid_fraction)

    def _read_valid(self, window: Window) -> np.ndarray:
        return valid_mask(self.ds, self.mask_bands, window, (self.out_size, self.out_size))

    def _read_pixels(self, window: Window, valid: np.ndarray) -> np.ndarray:
        """Read ``window`` resampled to ``out_size``; uint8 RGB with invalid pixels set to 0."""
        data = read_bands(self.ds, self.bands, (self.out_size, self.out_size), window, self.resampling)
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

    def load_chip(self, window: Window) -> tuple[Chip | None, str | None]:
        """``(chip, None)`` for a window worth indexing, else ``(None, reason)``: ``"nodata"`` (valid fraction
        below ``1 - max_nodata``) or ``"flat"`` (std below ``min_std``)."""
        valid = self._read_valid(window)
        if float(valid.mean()) < self.min_valid:
            return None, "nodata"
        pixels = self._read_pixels(window, valid)
        if self._is_flat(pixels, valid):
            return None, "flat"
        return Chip(pixels, self._meta(window, float(valid.mean()))), None

    def iter_chips(self, batch_size: int = 64,
                   skip: Container[tuple[int, int, int, int]] = ()) -> Iterator[list[Chip]]:
        """Chips of the plan in batches, window by window; nodata and flat chips are counted in
        ``self.skipped``, as are windows in ``skip`` (e.g. those an interrupted run already indexed)."""
        batch: list[Chip] = []
        for window in self.plan.windows():
            if window_key(window) in skip:
                self.skipped["already_indexed"] += 1
                continue
            chip, reason = self.load_chip(window)
            if chip is None:
                self.skipped[reason] += 1
                continue
            batch.append(chip)
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
        x, y = from_lonlat_transformer(self.ds.crs).transform(lon, lat)
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
        xmin, ymin, xmax, ymax = from_lonlat_transformer(self.ds.crs).transform_bounds(
            lon_min, lat_min, lon_max, lat_max, densify_pts=21)
        try:  # offsets rounded down, far edges up, intersected with the raster
            win = geometry_window(self.ds, [shapely.box(xmin, ymin, xmax, ymax)])
        except WindowError:
            win = None
        if win is None or win.width <= 0 or win.height <= 0:
            raise RasterError(f"the box ({lon_min}, {lat_min}, {lon_max}, {lat_max}) does not overlap {self.ds.name}")
        return Window(*window_key(win))

    def read_box(self, lon_min: float, lat_min: float, lon_max: float, lat_max: float) -> Chip:
        """One chip of an arbitrary lon/lat box (search by a box drawn on the map), resampled to out_size."""
        return self.read_chip(self.window_for_box(lon_min, lat_min, lon_max, lat_max))


def open_raster(path: str | Path, **options: Any) -> RasterSource:
    """Open a GeoTIFF/COG as a :class:`RasterSource` (options: see :class:`RasterSource`), to use in a
    ``with`` block (closed at its end) or to ``close()``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)  # no CRS gets our own clear error
        try:
            ds = rasterio.open(path)
        except rasterio.errors.RasterioIOError as exc:
            raise RasterError(f"cannot open {path} as a raster: {exc}") from exc
    try:
        return RasterSource(ds, **options)
    except BaseException:
        ds.close()
        raise


def raster_paths(items: Iterable[str | Path] | str | Path) -> list[Path]:
    """Absolute raster paths: files as given, folders searched recursively for GeoTIFF-like files (sorted);
    duplicates dropped. A missing path is an error."""
    if isinstance(items, (str, Path)):
        items = [items]
    out: dict[Path, None] = {}
    for item in items:
        path = Path(item).absolute()
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in RASTER_SUFFIXES)
            out.update(dict.fromkeys(found))
        elif path.is_file():
            out[path] = None
        else:
            raise FileNotFoundError(f"no such raster file or folder: {item}")
    return list(out)
