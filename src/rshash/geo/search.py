"""Searching an index of raster chips by place: queries from places, filters by area, results as places.

A query becomes :class:`~rshash.index.search.QueryVectors` (and the footprints of the place it was made from):

* a lon/lat **point**: the indexed chip that contains it (nearest centre), its stored code and descriptor;
* a lon/lat **box**: that window read from its raster (with the stored bands and stretch) and encoded now;
* an indexed **id**, an **image** (file or pixels), or **several examples** at once, combined into one query
  (majority vote of the code bits, mean descriptor: :func:`~rshash.index.search.combine_examples`).

The search is the index's one search path (Hamming shortlist, re-rank, ties by id) with an optional area
of interest (the chip ids from the R*Tree, passed as the allowed set) and Hamming radius. Then hits that
overlap the query's own footprint are dropped, and a hit overlapping a better one by more than
``max_overlap`` (intersection / smaller area) is suppressed as a near-duplicate. Each result carries its
rank, distance, score, lon/lat centroid, footprint (GeoJSON Polygon), raster and pixel window.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from ..index.query import Queries, is_id
from ..index.search import QueryVectors, Searcher, SearchParams, combine_examples
from ..index.store import Store
from . import tables
from .crs import footprint_lonlat, has_lonlat
from .footprints import overlap, polygon_geometry, ring_bbox, suppress_overlaps, to_polygon
from .reader import RasterReaders
from .source import RasterError


#: Default near-duplicate threshold: hits sharing more than this fraction of the smaller footprint with a
#: better hit are dropped (with the default 50 % tiling overlap, side neighbours share 0.5, corners 0.25).
MAX_OVERLAP = 0.3
#: Hits sharing more than this fraction with the query's own footprint are the query's place: dropped.
SELF_OVERLAP = 0.01
Box = tuple[float, float, float, float]


class PlaceNotIndexed(ValueError):
    """No indexed chip or raster at the requested place."""


@dataclass(frozen=True)
class GeoHit:
    """One result as a place (lon/lat fields are None for an item that is not a raster chip)."""

    rank: int
    id: int
    distance: int
    score: float
    similarity: float | None
    lon: float | None
    lat: float | None
    footprint: dict | None  # GeoJSON Polygon, lon/lat
    raster: str | None  # the raster's path
    raster_id: int | None
    window: tuple[int, int, int, int] | None  # col_off, row_off, width, height (raster pixels)
    path: str
    label: str | None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class GeoQuery:
    """A query's vectors, the footprints of the place(s) it was made from, and what it was (JSON)."""

    vectors: QueryVectors
    footprints: tuple[Any, ...] = ()
    described: dict = dataclasses.field(default_factory=dict)


def parse_box(text: str | Sequence[float]) -> Box:
    """``"LONMIN,LATMIN,LONMAX,LATMAX"`` (or 4 numbers) as a checked box (lon_min > lon_max: antimeridian)."""
    values = [float(v) for v in (text.split(",") if isinstance(text, str) else text)]
    if len(values) != 4 or not all(math.isfinite(v) for v in values):
        raise ValueError(f"a box is LONMIN,LATMIN,LONMAX,LATMAX, got {text!r}")
    lon_min, lat_min, lon_max, lat_max = values
    if not (-180 <= lon_min <= 180 and -180 <= lon_max <= 180 and -90 <= lat_min < lat_max <= 90):
        raise ValueError(f"box out of range or empty (longitude first, then latitude): {text!r}")
    return lon_min, lat_min, lon_max, lat_max


def parse_lonlat(text: str | Sequence[float]) -> tuple[float, float]:
    """``"LON,LAT"`` (longitude first) as a checked point."""
    values = [float(v) for v in (text.split(",") if isinstance(text, str) else text)]
    if len(values) != 2 or not (-180 <= values[0] <= 180 and -90 <= values[1] <= 90):
        raise ValueError(f"a point is LON,LAT (longitude first, in degrees), got {text!r}")
    return values[0], values[1]


def _has_chips(conn: sqlite3.Connection) -> bool:
    return conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'chips'").fetchone() is not None


class GeoSearch:
    """Geo queries and searches over one :class:`~rshash.index.archive.Index` (``index.geo``)."""

    def __init__(self, store: Store, queries: Queries, searcher: Searcher):
        self.queries = queries
        self.searcher = searcher
        self._store = store
        self.readers = RasterReaders(store)

    def close(self) -> None:
        self.readers.close()

    # ------------------------------------------------------------------ tables

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
                footprint, bounds = polygon_geometry(ring), list(ring_bbox(ring))
            out.append({"id": row["id"], "path": row["path"], "name": Path(row["path"]).name, "width": row["width"],
                        "height": row["height"], "crs": row["crs"], "gsd": row["gsd"], "bands": row["bands"],
                        "dtype": row["dtype"], "stretch": row["stretch"], "chips": row["chips"], "bounds": bounds,
                        "footprint": footprint, "transform": row["transform"], "sha256": row["sha256"]})
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

    # ------------------------------------------------------------------ queries

    def point_query(self, lon: float, lat: float, raster: int | str | Path | None = None) -> GeoQuery:
        """The indexed chip containing the point (nearest centre): its stored vectors and footprint."""
        lon, lat = parse_lonlat((lon, lat))
        raster_id = self.raster_id(raster)
        item = self._read(lambda conn: tables.chip_at(conn, lon, lat, raster_id))
        if item is None:
            raise PlaceNotIndexed(f"no indexed chip at lon {lon:.6f}, lat {lat:.6f}"
                                  + (f" in raster {raster}" if raster is not None else ""))
        query = self.id_query([item])
        return dataclasses.replace(query, described={"lonlat": [lon, lat], "chip": item} | (
            {"raster_id": raster_id} if raster_id is not None else {}))

    def id_query(self, ids: Sequence[int]) -> GeoQuery:
        """Indexed items (one, or several examples combined): their stored vectors, themselves excluded."""
        ids = [int(i) for i in ids]
        vectors = combine_examples([self.queries.vectors(i) for i in ids], self.queries.bits)
        chips = self.chips(ids)
        return GeoQuery(vectors, tuple(chips[i]["footprint"] for i in ids if i in chips and chips[i]["footprint"]),
                        {"ids": ids} if len(ids) > 1 else {"id": ids[0]})

    def box_query(self, box: Sequence[float], raster: int | str | Path | None = None) -> GeoQuery:
        """A lon/lat box read from its raster (the given one, else the indexed raster covering most of it) and
        encoded now."""
        box = parse_box(box)
        raster_id = self.raster_id(raster)
        if raster_id is None:
            raster_id = self._raster_for_box(box)
        size = self.queries.input_size
        try:
            with self.readers.source(raster_id, size) as source:
                chip = source.read_box(*box)
        except RasterError as exc:
            raise PlaceNotIndexed(str(exc)) from exc
        vectors = self.queries.vectors(chip.pixels)
        return GeoQuery(vectors, (chip.meta.footprint,) if chip.meta.footprint else (),
                        {"box": list(box), "raster_id": raster_id, "window": list(chip.meta.window)})

    def _raster_for_box(self, box: Box) -> int:
        best: tuple[float, int] | None = None
        query = to_polygon([[box[0], box[1]], [box[2], box[1]], [box[2], box[3]], [box[0], box[3]], [box[0], box[1]]])
        for r in self.rasters():
            if r["footprint"] is None:
                continue
            area = to_polygon(r["footprint"]).intersection(query).area
            if area > 0 and (best is None or (-area, r["id"]) < best):
                best = (-area, r["id"])
        if best is None:
            raise PlaceNotIndexed(f"no indexed raster covers the box {list(box)}")
        return best[1]

    def examples_query(self, examples: Sequence[Any]) -> GeoQuery:
        """Several positive examples (indexed ids, image files, uint8 RGB pixels, or GeoQuery s) as one query."""
        if examples and all(is_id(e) for e in examples):
            return self.id_query(list(examples))
        parts = [e if isinstance(e, GeoQuery) else self.id_query([e]) if is_id(e)
                 else GeoQuery(self.queries.vectors(e), (), {"image": str(e) if isinstance(e, (str, Path)) else "pixels"})
                 for e in examples]
        if not parts:
            raise ValueError("no examples given")
        if len(parts) == 1:
            return parts[0]
        vectors = combine_examples([p.vectors for p in parts], self.queries.bits)
        return GeoQuery(vectors, tuple(f for p in parts for f in p.footprints), {"examples": [p.described for p in parts]})

    # ------------------------------------------------------------------ search

    def search(self, query: GeoQuery, k: int | None = 20, *, aoi: Sequence[float] | None = None,
               radius: int | None = None, max_overlap: float | None = MAX_OVERLAP, rerank: bool = True,
               **options: Any) -> list[GeoHit]:
        """The ``k`` best places for ``query`` (``k=None`` with a radius: all within it).

        ``aoi``: only chips whose bounds intersect this lon/lat box. ``max_overlap``: near-duplicate
        threshold (None: keep overlapping hits). Hits overlapping the query's own footprint are dropped.
        """
        ids = None if aoi is None else self.ids_in_box(aoi)
        if k is not None and k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        own = [to_polygon(f) for f in query.footprints]
        fetch = None if k is None else max(4 * k, k + 20)
        while True:
            hits = self.searcher.search(query.vectors, SearchParams(fetch, radius, rerank, **options), ids=ids)
            places = self._places(hits, own, max_overlap)
            exhausted = fetch is None or len(hits) < fetch
            if exhausted or len(places) >= k or fetch >= 1 << 16:
                break
            fetch *= 4
        places = places if k is None else places[:k]
        return [dataclasses.replace(p, rank=i + 1) for i, p in enumerate(places)]

    def _places(self, hits: list, own: list, max_overlap: float | None) -> list[GeoHit]:
        chips = self.chips([h.id for h in hits])
        places = []
        for h in hits:
            c = chips.get(h.id)
            fp = None if c is None else c["footprint"]
            if fp is not None and own and any(overlap(fp, o) > SELF_OVERLAP for o in own):
                continue
            places.append(GeoHit(
                h.rank, h.id, h.distance, h.score, h.similarity,
                None if c is None else c["lon"], None if c is None else c["lat"], fp,
                None if c is None else c["raster_path"], None if c is None else int(c["raster_id"]),
                None if c is None else tuple(int(v) for v in c["window"]), h.path, h.label))
        if max_overlap is not None:
            keep = suppress_overlaps([p.footprint for p in places], max_overlap)
            places = [places[i] for i in keep]
        return places

    # ------------------------------------------------------------------ pixels

    def chip_pixels(self, item_id: int, size: int):
        """uint8 RGB ``(size, size, 3)`` of an indexed chip, read again from its raster."""
        chip = self.chips([item_id]).get(int(item_id))
        if chip is None:
            raise PlaceNotIndexed(f"item {item_id} is not a raster chip")
        from rasterio.windows import Window

        with self.readers.source(int(chip["raster_id"]), size) as source:
            return source.read_chip(Window(*chip["window"])).pixels


def hits_json(hits: Sequence[GeoHit]) -> list[dict]:
    """Results as JSON-ready dicts (tuples as lists)."""
    return json.loads(json.dumps([h.to_dict() for h in hits]))
