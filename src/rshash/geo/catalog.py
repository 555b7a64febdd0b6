"""The chip and raster tables of one index (``meta.sqlite``) as the geo layer reads them: rasters, chips by id
and by lon/lat box, the extent of every chip, and the pixels of any window of an indexed raster.

Also the parsing of lon/lat points and boxes every geo entry point shares (:func:`parse_lonlat`,
:func:`parse_box`: longitude first, wrapped into [-180, 180]; a box across the antimeridian has
``lon_min > lon_max``).
"""

from __future__ import annotations

import math
import sqlite3
from pathlib import Path
from typing import Any, Sequence

from ..index.store import Store
from . import tables
from .crs import footprint_lonlat, has_lonlat, wrap_lon
from .footprints import footprint_bbox, polygon_geometry
from .places import PlaceNotIndexed
from .reader import RasterReaders

Box = tuple[float, float, float, float]


def parse_box(text: str | Sequence[float]) -> Box:
    """``"LONMIN,LATMIN,LONMAX,LATMAX"`` (or 4 numbers) as a checked box. Longitudes past +-180 (a map
    panned round the world) are wrapped into [-180, 180]; ``lon_min > lon_max`` then means a box across the
    antimeridian, and a box 360 degrees wide or more is the whole band of latitudes."""
    values = [float(v) for v in (text.split(",") if isinstance(text, str) else text)]
    if len(values) != 4 or not all(math.isfinite(v) for v in values):
        raise ValueError(f"a box is LONMIN,LATMIN,LONMAX,LATMAX, got {text!r}")
    lon_min, lat_min, lon_max, lat_max = values
    if not -90 <= lat_min < lat_max <= 90:
        raise ValueError(f"box out of range or empty (longitude first, then latitude): {text!r}")
    if lon_max - lon_min >= 360.0:
        return -180.0, lat_min, 180.0, lat_max
    return wrap_lon(lon_min), lat_min, wrap_lon(lon_max), lat_max


def parse_lonlat(text: str | Sequence[float]) -> tuple[float, float]:
    """``"LON,LAT"`` (longitude first) as a checked point; a longitude past +-180 is wrapped into range."""
    values = [float(v) for v in (text.split(",") if isinstance(text, str) else text)]
    if len(values) != 2 or not all(math.isfinite(v) for v in values) or not -90 <= values[1] <= 90:
        raise ValueError(f"a point is LON,LAT (longitude first, in degrees), got {text!r}")
    return wrap_lon(values[0]), values[1]


def in_box(lon: float, lat: float, box: Box) -> bool:
    """Whether a point is inside a lon/lat box (``box[0] > box[2]``: across the antimeridian)."""
    west, south, east, north = box
    inside_lon = west <= lon <= east if west <= east else lon >= west or lon <= east
    return inside_lon and south <= lat <= north


def _has_chips(conn: sqlite3.Connection) -> bool:
    return conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'chips'").fetchone() is not None


class ChipCatalog:
    """The chip and raster tables of one index, and readers of its rasters (closed by :meth:`close`)."""

    def __init__(self, store: Store):
        self._store = store
        self.readers = RasterReaders(store)
        self._extent: tuple[int, Box | None] | None = None  # (generation, chip extent), see chip_extent

    def close(self) -> None:
        self.readers.close()

    def _read(self, fn: Any, default: Any = None) -> Any:
        """``fn(conn)`` if the index has geo tables, else ``default``."""
        def run(conn: sqlite3.Connection) -> Any:
            return fn(conn) if _has_chips(conn) else default
        return self._store.run(run)

    def rasters(self) -> list[dict]:
        """Every indexed raster: id, path, name, size, CRS, ground resolution, chips, lon/lat bounds."""
        def read(conn: sqlite3.Connection) -> list[dict]:
            counts = dict(conn.execute("SELECT raster_id, COUNT(*) FROM chips GROUP BY raster_id"))
            ids = [r[0] for r in conn.execute("SELECT id FROM rasters ORDER BY id")]
            return [tables.get_raster(conn, i) | {"chips": int(counts.get(i, 0))} for i in ids]
        out = []
        for row in self._read(read, []):
            bounds = footprint = None
            if row["crs"] is not None and has_lonlat(row["crs"]):
                ring = footprint_lonlat(row["crs"], row["transform"], (0, 0, row["width"], row["height"]), 16)
                footprint, bounds = polygon_geometry(ring), list(footprint_bbox(ring))  # west > east: across 180
            out.append({"id": row["id"], "path": row["path"], "name": Path(row["path"]).name, "width": row["width"],
                        "height": row["height"], "crs": row["crs"], "gsd": row["gsd"], "bands": row["bands"],
                        "dtype": row["dtype"], "stretch": row["stretch"], "chips": row["chips"], "bounds": bounds,
                        "footprint": footprint, "transform": row["transform"], "sha256": row["sha256"],
                        "datetime": row.get("datetime"), "datetime_end": row.get("datetime_end")})
        return out

    def raster_id(self, raster: int | str | Path | None) -> int | None:
        """A raster given by id, path or file name as its id (None stays None)."""
        if raster is None:
            return None
        if isinstance(raster, int):
            return raster
        text = str(raster)
        if text.isdigit():
            return int(text)
        rows = self.rasters()
        full = str(Path(text).absolute())
        for key in (lambda r: r["path"] == full, lambda r: r["name"] == Path(text).name):
            found = [r["id"] for r in rows if key(r)]
            if len(found) == 1:
                return found[0]
        raise PlaceNotIndexed(f"no indexed raster {text!r} (indexed: {', '.join(r['name'] for r in rows) or 'none'})")

    def chips(self, ids: Sequence[int]) -> dict[int, dict]:
        """Chip rows by item id (items that are not chips left out)."""
        rows = self._read(lambda conn: tables.get_chips(conn, [int(i) for i in ids]), [])
        return {int(r["item_id"]): r for r in rows}

    def ids_in_box(self, box: Sequence[float]) -> list[int]:
        """Ids of the chips whose bounds intersect a lon/lat box (an area of interest)."""
        return self._read(lambda conn: tables.ids_in_bbox(conn, *parse_box(box)), [])

    def chip_extent(self) -> Box | None:
        """The lon/lat bounds of every chip (None: no chips), read again only after the index changed."""
        generation = self._store.generation()
        cached = self._extent
        if cached is None or cached[0] != generation:
            row = self._read(lambda conn: conn.execute(
                "SELECT MIN(lon_min), MIN(lat_min), MAX(lon_max), MAX(lat_max) FROM chips_rtree").fetchone())
            extent = None if row is None or row[0] is None else tuple(float(v) for v in row)
            cached = self._extent = (generation, extent)
        return cached[1]

    # ------------------------------------------------------------------ pixels

    def window_pixels(self, raster_id: int, window: Sequence[int], size: int):
        """uint8 RGB ``(size, size, 3)`` of any pixel window of an indexed raster (read boundless: the part
        outside it is nodata), e.g. the place of a chip in an acquisition that has no chip of it."""
        from rasterio.windows import Window

        if self._read(lambda conn: tables.get_raster(conn, int(raster_id))) is None:
            raise PlaceNotIndexed(f"no raster {raster_id} in the index")
        with self.readers.source(int(raster_id), size) as source:
            return source.read_chip(Window(*[int(v) for v in window])).pixels

    def chip_pixels(self, item_id: int, size: int):
        """uint8 RGB ``(size, size, 3)`` of an indexed chip, read again from its raster."""
        chip = self.chips([item_id]).get(int(item_id))
        if chip is None:
            raise PlaceNotIndexed(f"item {item_id} is not a raster chip")
        from rasterio.windows import Window

        with self.readers.source(int(chip["raster_id"]), size) as source:
            return source.read_chip(Window(*chip["window"])).pixels
