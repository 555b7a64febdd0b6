"""Raster sources: a georeferenced GeoTIFF/COG becomes a stream of uint8 RGB chips with footprints.

    with open_raster("scene.tif", gsd="auto", tile=256, overlap=0.5, out_size=224) as src:  # a RasterSource
        print(src.info.to_dict(), len(src.plan))
        for batch in src.iter_chips(batch_size=64):      # lists of Chip(pixels, meta)
            ...
        print(src.skipped)                               # Counter({'nodata': 12, 'flat': 3})

The rules, in one place:

- **Bands** (:mod:`.bands`): ``bands`` (1-based) if given; else the bands whose colour interpretation is red, green,
  blue; else the first three (a single band is repeated as grey; a palette band is expanded through its
  colour table to RGB, in every read: chips, boxes, thumbnails, overlays). A 4th band is never read as pixels, and
  an alpha-tagged band is used as a mask only if it is binary (0 / max) or ``use_alpha=True``: NAIP's NIR
  is sometimes tagged alpha and must not black out the scene.
- **Ground resolution and tiling**: see :mod:`rshash.geo.tiling` (the plan of source-pixel windows);
  rasterio resamples each window to ``out_size``. A window past the raster's edge (a raster smaller than
  one window, a box near the edge) is read boundless at its full size, the padding as nodata: never
  clipped and stretched.
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
from rasterio.enums import Resampling
from rasterio.errors import NotGeoreferencedWarning
from rasterio.windows import Window

from .bands import apply_stretch, choose_bands, compute_stretch, inside_mask, mask_bands, read_bands, valid_mask
from .crs import (CRSUnitsError, centre_lonlat, crs_text, footprint_lonlat, from_lonlat_transformer,
                  ground_pixel_size, has_lonlat, window_bounds)
from .digest import raster_sha256
from .footprints import footprint_bbox
from .tiling import EXTREME_RATIO, MODEL_GSD_M, RasterError, TilingPlan, plan_tiles, resolve_gsd, window_key

log = logging.getLogger(__name__)

#: File name endings taken from a folder given as a raster source.
RASTER_SUFFIXES = (".tif", ".tiff", ".vrt", ".jp2", ".img")


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
    footprint: list[list[float]] | dict | None  # closed CCW ring of [lon, lat]; across 180: a GeoJSON MultiPolygon
    centroid: tuple[float, float] | None  # (lon, lat)
    bbox: tuple[float, float, float, float] | None  # west, south, east, north (west > east: across 180)
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
                 model_gsd: float | Sequence[float] = MODEL_GSD_M, max_mismatch: float | None = None,
                 tile: int = 256, overlap: float = 0.5, out_size: int = 224,
                 max_nodata: float = 0.5, min_std: float = 1.0, resampling: Resampling = Resampling.bilinear,
                 stretch: dict[str, Any] | None = None, use_alpha: bool | None = None) -> None:
        self.ds = ds
        self.out_size, self.min_valid, self.min_std = int(out_size), 1.0 - float(max_nodata), float(min_std)
        self.resampling = resampling
        self.bands = choose_bands(ds, bands)
        self.mask_bands = mask_bands(ds, self.bands, use_alpha)
        native = self._native_gsd(gsd)
        self.georeferenced = native is not None and has_lonlat(ds.crs)  # footprints can be computed
        try:
            choice = resolve_gsd(gsd, None if native is None else sum(native) / 2, model_gsd, max_mismatch)
        except RasterError as exc:
            raise RasterError(f"{ds.name}: {exc}") from None
        self.gsd_reason = choice.reason  # the resolution tiled at, and why
        self.plan = self._plan(native, choice.target, int(tile), overlap)
        self.info = RasterInfo(
            path=os.path.abspath(ds.name), sha256=raster_sha256(ds.name), crs=crs_text(ds.crs),
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
        source = RasterSource(self.ds, bands=bands, gsd=self.plan.target_gsd or "native", tile=self.plan.tile,
                              overlap=self.plan.overlap, out_size=self.out_size, max_nodata=1.0 - self.min_valid,
                              stretch=stretch)
        source.gsd_reason = self.gsd_reason
        return source

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
            bbox = footprint_bbox(footprint)
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
        below ``1 - max_nodata``) or ``"flat"`` (std below ``min_std``). The valid fraction that decides is
        taken over the part of the window inside the raster (a raster smaller than one window is read whole,
        padded), while ``meta.valid_fraction`` counts the padding as nodata."""
        valid = self._read_valid(window)
        inside = inside_mask(self.ds, window, valid.shape)
        if not inside.any() or float(valid[inside].mean()) < self.min_valid:
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

    def _lonlats_to_pixels(self, lon: np.ndarray, lat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(cols, rows) of lon/lat points, shifted together by the multiple of 360 degrees (-360, 0, +360)
        that brings their middle nearest the raster: a geographic raster may hold longitudes past 180."""
        self._require_crs()
        to_crs = from_lonlat_transformer(self.ds.crs)
        inverse = ~self.ds.transform
        best = None
        for shift in (0.0, -360.0, 360.0):
            x, y = to_crs.transform(np.asarray(lon, float) + shift, np.asarray(lat, float))
            cols, rows = inverse @ (np.asarray(x, float), np.asarray(y, float))
            c, r = float(np.mean(cols)), float(np.mean(rows))
            away = max(0.0, -c, c - self.ds.width) + max(0.0, -r, r - self.ds.height)
            if best is None or away < best[0]:
                best = (away, cols, rows)
        return best[1], best[2]

    def lonlat_to_pixel(self, lon: float, lat: float) -> tuple[float, float]:
        """(col, row) of a lon/lat point, fractional pixels (across the antimeridian: see
        :meth:`_lonlats_to_pixels`)."""
        cols, rows = self._lonlats_to_pixels(np.array([lon]), np.array([lat]))
        return float(cols[0]), float(rows[0])

    def window_for_point(self, lon: float, lat: float) -> Window:
        """The plan's window that contains the point, nearest to its centre."""
        return self.plan.window_containing(*self.lonlat_to_pixel(lon, lat))

    def read_point(self, lon: float, lat: float) -> Chip:
        """The chip of :meth:`window_for_point`."""
        return self.read_chip(self.window_for_point(lon, lat))

    def box_pixels(self, lon_min: float, lat_min: float, lon_max: float, lat_max: float,
                   densify: int = 21) -> tuple[float, float, float, float]:
        """``(col_min, row_min, col_max, row_max)``: fractional source pixels of a lon/lat box (``lon_min >
        lon_max``: across the antimeridian), its edges densified; RasterError when it misses the raster."""
        if lon_min > lon_max:
            lon_max += 360.0
        t = np.linspace(0.0, 1.0, densify)
        lons = np.concatenate([lon_min + (lon_max - lon_min) * t, np.full(densify, lon_max),
                               lon_max - (lon_max - lon_min) * t, np.full(densify, lon_min)])
        lats = np.concatenate([np.full(densify, lat_min), lat_min + (lat_max - lat_min) * t,
                               np.full(densify, lat_max), lat_max - (lat_max - lat_min) * t])
        cols, rows = self._lonlats_to_pixels(lons, lats)
        box = float(cols.min()), float(rows.min()), float(cols.max()), float(rows.max())
        if not np.all(np.isfinite(box)) or box[2] <= 0 or box[3] <= 0 or box[0] >= self.ds.width \
                or box[1] >= self.ds.height:
            raise RasterError(f"the box ({lon_min}, {lat_min}, {lon_max}, {lat_max}) does not overlap "
                              f"{Path(self.ds.name).name}")
        return box

    def window_for_box(self, lon_min: float, lat_min: float, lon_max: float, lat_max: float,
                       size: tuple[int, int] | None = None) -> Window:
        """A window of ``size`` (width, height) source pixels (default: the plan's window) centred on a
        lon/lat box: the box at the index's scale, never stretched. It may extend past the raster (it is
        read boundless, the padding as nodata)."""
        c0, r0, c1, r1 = self.box_pixels(lon_min, lat_min, lon_max, lat_max)
        w, h = size or (self.plan.win_width, self.plan.win_height)
        return Window(round((c0 + c1 - w) / 2), round((r0 + r1 - h) / 2), int(w), int(h))

    def read_box(self, lon_min: float, lat_min: float, lon_max: float, lat_max: float,
                 size: tuple[int, int] | None = None) -> Chip:
        """The chip of :meth:`window_for_box` (search by a box drawn on the map), resampled to out_size."""
        return self.read_chip(self.window_for_box(lon_min, lat_min, lon_max, lat_max, size))


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
