"""Searching an index of raster chips by place: queries from places, filters by area, results as places.

A query becomes :class:`~rshash.index.search.QueryVectors` (and the footprints of the place it was made from):

* a lon/lat **point**: the indexed chip that contains it (nearest centre), its stored code and descriptor;
* a lon/lat **box**: one tile-sized window centred on it (read boundless, encoded now), or for a larger box
  the indexed chips whose centres it holds as several examples (see :meth:`GeoSearch.box_query`);
* an indexed **id**, an **image** (file or pixels), or **several examples** at once (at most
  :data:`~rshash.index.search.MAX_EXAMPLES`): the union of their shortlists re-ranked against all of them
  (:func:`~rshash.index.search.rank_examples`).

The search is the index's one search path (Hamming shortlist, re-rank, ties by id) with an optional area
of interest (the chip ids from the R*Tree, passed as the allowed set; an AOI covering every chip is no
filter, one holding more than :data:`MAX_AOI_CHIPS` chips is refused) and Hamming radius. Then hits that
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

import numpy as np

from ..index.query import Queries, is_id
from ..feedback import FIND_ALL_THRESHOLD
from ..ranking import DEFAULT_SHORTLIST
from ..index.search import QueryVectors, Searcher, SearchParams, as_examples, check_examples
from ..index.store import Store
from . import tables
from .crs import footprint_lonlat, has_lonlat, wrap_lon
from .dates import parse_range
from .places import SAME_PLACE_IOU, PlaceNotIndexed, merged_areas, same_place
from .footprints import (box_polygon, footprint_bbox, overlap_area, overlap_fractions, polygon_geometry,
                         suppress_overlaps, to_polygon, to_polygons)
from .reader import RasterReaders
from .source import RasterError


#: Default near-duplicate threshold: hits sharing more than this fraction of the smaller footprint with a
#: better hit are dropped (with the default 50 % tiling overlap, side neighbours share 0.5, corners 0.25).
MAX_OVERLAP = 0.3
#: Hits sharing more than this fraction with the query's own footprint are the query's place: dropped.
SELF_OVERLAP = 0.01
#: A box up to this many tiles a side (tile = the raster's indexed chip window) is read as one tile-sized
#: window centred on it, at the index's scale.
BOX_TILES = 1.5
#: A larger box is a multi-example query of the indexed chips whose centres it holds, at most this many.
BOX_MAX_CHIPS = 16
#: An area of interest holding more chips than this is refused (one covering every chip is no filter).
MAX_AOI_CHIPS = 500_000
#: Extra hits fetched beyond ``4 * (offset + k)`` to make up for those dropped as the query's own place or as
#: near-duplicates; a second (last) pass fetches up to 4 times more when too few places are left.
FETCH_MARGIN = 200
#: "Find all" scores at most this many candidates (the best by the feedback ranking).
FIND_ALL_MAX = 10_000
Box = tuple[float, float, float, float]


class AreaTooLarge(ValueError):
    """An area of interest with more chips than :data:`MAX_AOI_CHIPS` (and not every chip)."""


class BoxTooLarge(ValueError):
    """A box search covering more than :data:`BOX_MAX_CHIPS` indexed chips (the service answers 422)."""


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
    datetime: str | None = None  # the raster's acquisition (ISO UTC start; see rshash.geo.dates)
    datetime_end: str | None = None  # its end for an interval (a year), None for an instant

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class GeoQuery:
    """A query's example vectors (one, or several searched together), the footprints of the place(s) it was
    made from, and what it was (JSON). A single :class:`QueryVectors` given is kept as a one-example tuple."""

    examples: tuple[QueryVectors, ...]
    footprints: tuple[Any, ...] = ()
    described: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "examples", as_examples(self.examples))

    @property
    def vectors(self) -> QueryVectors:
        """The vectors of a one-example query (several examples have no single vector: use ``examples``)."""
        if len(self.examples) != 1:
            raise ValueError(f"a query of {len(self.examples)} examples has no single vector; use .examples")
        return self.examples[0]


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


def _in_box(lon: float, lat: float, box: Box) -> bool:
    """Whether a point is inside a lon/lat box (``box[0] > box[2]``: across the antimeridian)."""
    west, south, east, north = box
    inside_lon = west <= lon <= east if west <= east else lon >= west or lon <= east
    return inside_lon and south <= lat <= north


def _has_chips(conn: sqlite3.Connection) -> bool:
    return conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'chips'").fetchone() is not None


class GeoSearch:
    """Geo queries and searches over one :class:`~rshash.index.archive.Index` (``index.geo``)."""

    def __init__(self, store: Store, queries: Queries, searcher: Searcher):
        self.queries = queries
        self.searcher = searcher
        self._store = store
        self.readers = RasterReaders(store)
        self._extent: tuple[int, Box | None] | None = None  # (generation, chip extent), see _chip_extent

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
        """Indexed items (one, or several examples searched together): their stored vectors, themselves
        excluded."""
        ids = [int(i) for i in ids]
        check_examples(len(ids))
        vectors = tuple(self.queries.vectors(i) for i in ids)
        chips = self.chips(ids)
        return GeoQuery(vectors, tuple(chips[i]["footprint"] for i in ids if i in chips and chips[i]["footprint"]),
                        {"ids": ids} if len(ids) > 1 else {"id": ids[0]})

    def box_query(self, box: Sequence[float], raster: int | str | Path | None = None) -> GeoQuery:
        """A lon/lat box on its raster (the given one, else the indexed raster covering most of it), at the
        index's scale. The tile is the raster's indexed chip window (its most common size, source pixels):

        * a box up to :data:`BOX_TILES` tiles a side: one tile-sized window centred on the box, read
          boundless (padding as nodata) at the index's resolution and encoded now;
        * a larger box: the indexed chips of that raster whose centres it holds, as one multi-example
          query (:meth:`id_query`), at most :data:`BOX_MAX_CHIPS` of them;
        * beyond that: :class:`BoxTooLarge`.
        """
        box = parse_box(box)
        raster_id = self.raster_id(raster)
        if raster_id is None:
            raster_id = self._raster_for_box(box)
        tile = self._read(lambda conn: tables.chip_size(conn, raster_id))
        if tile is None:
            raise PlaceNotIndexed(f"raster {raster_id} has no indexed chips")
        chip = None
        try:
            with self.readers.source(raster_id, self.queries.input_size) as source:
                c0, r0, c1, r1 = source.box_pixels(*box)
                if c1 - c0 <= BOX_TILES * tile[0] and r1 - r0 <= BOX_TILES * tile[1]:
                    chip = source.read_box(*box, size=tile)
                else:  # the tiles of the box's part inside the raster: a bound before reading chip rows
                    width, height = source.ds.width, source.ds.height
                    tiles = (min(c1, width) - max(c0, 0)) / tile[0] * (min(r1, height) - max(r0, 0)) / tile[1]
        except RasterError as exc:
            raise PlaceNotIndexed(str(exc)) from exc
        if chip is None:
            return self._box_of_chips(box, raster_id, tile, tiles)
        vectors = self.queries.vectors(chip.pixels)
        return GeoQuery(vectors, (chip.meta.footprint,) if chip.meta.footprint else (),
                        {"box": list(box), "raster_id": raster_id, "window": list(chip.meta.window)})

    def _box_of_chips(self, box: Box, raster_id: int, tile: tuple[int, int], tiles: float) -> GeoQuery:
        """The multi-example query of the raster's indexed chips whose centres lie in the box."""
        limit = (f"a box search reads at most {BOX_TILES:g} tiles ({tile[0]} x {tile[1]} source pixels) a side "
                 f"as one chip, or uses at most {BOX_MAX_CHIPS} indexed chips as examples: draw a smaller box")
        if tiles > 4 * BOX_MAX_CHIPS:  # so many tiles hold more chip centres than the limit: no rows read
            raise BoxTooLarge(f"the box covers about {tiles:.0f} tiles of raster {raster_id}; {limit}")
        chips = self.chips(self.ids_in_box(box))
        ids = sorted(i for i, c in chips.items() if int(c["raster_id"]) == raster_id
                     and c["centroid"] is not None and _in_box(*c["centroid"], box))
        if len(ids) > BOX_MAX_CHIPS:
            raise BoxTooLarge(f"the box covers {len(ids)} indexed chips of raster {raster_id}; {limit}")
        if not ids:
            raise PlaceNotIndexed(f"no indexed chip of raster {raster_id} has its centre in the box {list(box)}")
        query = self.id_query(ids)
        return dataclasses.replace(query, described=query.described | {"box": list(box), "raster_id": raster_id})

    def _raster_for_box(self, box: Box) -> int:
        best: tuple[float, int] | None = None
        query = box_polygon(box)
        for r in self.rasters():
            if r["footprint"] is None:
                continue
            area = overlap_area(r["footprint"], query)
            if area > 0 and (best is None or (-area, r["id"]) < best):
                best = (-area, r["id"])
        if best is None:
            raise PlaceNotIndexed(f"no indexed raster covers the box {list(box)}")
        return best[1]

    def examples_query(self, examples: Sequence[Any]) -> GeoQuery:
        """Several positive examples (indexed ids, image files, uint8 RGB pixels, or GeoQuery s) as one query
        (at most :data:`~rshash.index.search.MAX_EXAMPLES` vectors, counted before any is encoded)."""
        check_examples(len(examples))
        if examples and all(is_id(e) for e in examples):
            return self.id_query(list(examples))
        parts = [e if isinstance(e, GeoQuery) else self.id_query([e]) if is_id(e)
                 else GeoQuery(self.queries.vectors(e), (), {"image": str(e) if isinstance(e, (str, Path)) else "pixels"})
                 for e in examples]
        if not parts:
            raise ValueError("no examples given")
        if len(parts) == 1:
            return parts[0]
        vectors = tuple(v for p in parts for v in p.examples)
        return GeoQuery(vectors, tuple(f for p in parts for f in p.footprints), {"examples": [p.described for p in parts]})

    # ------------------------------------------------------------------ search

    def search(self, query: GeoQuery, k: int | None = 20, *, aoi: Sequence[float] | None = None,
               radius: int | None = None, max_overlap: float | None = MAX_OVERLAP, rerank: bool = True,
               offset: int = 0, datetime: str | None = None, negatives: GeoQuery | None = None,
               **options: Any) -> list[GeoHit]:
        """The ``k`` best places for ``query`` (``k=None`` with a radius: all within it), after ``offset``.

        ``aoi``: only chips whose bounds intersect this lon/lat box (see :meth:`aoi_ids`). ``datetime``: only
        chips of rasters acquired then (``2020``, ``2020-04-15``, ``2009/2012``, ``2015/..``: see
        :func:`rshash.geo.dates.parse_range`; rasters of unknown date are left out). ``negatives``: examples
        of what is not wanted (marked "no"): relevance feedback, see
        :func:`rshash.index.search.rank_feedback`. ``max_overlap``:
        near-duplicate threshold (None: keep overlapping hits). Hits overlapping the query's own footprint are
        dropped. Bounded: one search of ``min(4 * (offset + k) + FETCH_MARGIN, window)`` hits (window: the
        re-ranked ``max(shortlist, offset + k)``), and a second, last one of the whole window only when too
        few places are left; so pages (``offset + k <= shortlist``) come from one order.
        """
        if k is not None and k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        if k is None and radius is None:
            raise ValueError("k=None (no limit) needs a radius; give k")
        shortlist = int(options.get("shortlist", DEFAULT_SHORTLIST))
        if offset < 0 or (offset and (k is None or offset + k > shortlist)):
            raise ValueError(f"offset + k must be within the re-ranked window of {shortlist} results, "
                             f"got offset {offset} and k {k}")
        ids = self.allowed_ids(aoi, datetime)
        own = [to_polygon(f) for f in query.footprints]
        wanted = None if k is None else offset + k
        window = None if wanted is None else max(shortlist, wanted)
        fetch = None if wanted is None else min(4 * wanted + FETCH_MARGIN, window)
        while True:
            hits = self.searcher.search(query.examples, SearchParams(fetch, radius, rerank, **options), ids=ids,
                                        negatives=() if negatives is None else negatives.examples)
            places = self._places(hits, own, max_overlap)
            if fetch is None or len(hits) < fetch or len(places) >= wanted or fetch >= window:
                break
            fetch = window  # the second and last pass
        places = places[offset:] if k is None else places[offset : offset + k]
        return [dataclasses.replace(p, rank=offset + i + 1) for i, p in enumerate(places)]

    def find_all(self, query: GeoQuery, negatives: GeoQuery | None = None, *,
                 threshold: float = FIND_ALL_THRESHOLD, aoi: Sequence[float] | None = None,
                 datetime: str | None = None, limit: int = FIND_ALL_MAX, **options: Any) -> dict:
        """Every place like the query's examples (and unlike the negatives) scoring at most ``threshold`` (the
        standardised feedback score of :func:`rshash.index.search.rank_feedback`), as one layer: touching or
        overlapping chip footprints merged into areas.

        Returns ``threshold``, ``count`` (chips kept), ``scores`` (every candidate's score, ascending, at most
        ``limit``: a slider shows how many a threshold keeps), ``ids`` (the chips kept, best first) and
        ``areas``: a GeoJSON FeatureCollection of the merged areas (properties: ``chips``, ``best_score``)."""
        ids = self.allowed_ids(aoi, datetime)
        hits = self.searcher.search(query.examples, SearchParams(limit, None, **options), ids=ids,
                                    negatives=() if negatives is None else negatives.examples, feedback=True)
        kept = [h for h in hits if h.score <= threshold]
        return {"threshold": threshold, "count": len(kept), "scores": [round(h.score, 4) for h in hits],
                "ids": [h.id for h in kept], "areas": merged_areas(kept, self.chips([h.id for h in kept]))}

    def same_place(self, item_id: int, min_iou: float = SAME_PLACE_IOU, read_missing: bool = True) -> list[dict]:
        """The same place in every indexed acquisition, in date order: see :func:`rshash.geo.places.same_place`."""
        return same_place(self, item_id, min_iou, read_missing)

    def allowed_ids(self, aoi: Sequence[float] | None, datetime: str | None) -> list[int] | None:
        """The chip ids a search may return: those of an area of interest (:meth:`aoi_ids`) acquired then
        (``datetime``, :func:`rshash.geo.dates.parse_range`); None when neither filter is given."""
        ids = None if aoi is None else self.aoi_ids(aoi)
        if datetime is not None:
            lo, hi = parse_range(datetime)
            dated = self._read(lambda conn: tables.ids_in_time(conn, lo, hi), [])
            ids = dated if ids is None else sorted(set(ids).intersection(dated))
        return ids

    def aoi_ids(self, aoi: Sequence[float]) -> list[int] | None:
        """The chip ids of an area of interest, as the search's allowed set: ``None`` (no filter) when it
        covers every chip; :class:`AreaTooLarge` when it holds more than :data:`MAX_AOI_CHIPS` chips (counted
        in the R*Tree with a limit, never listed)."""
        box = parse_box(aoi)
        extent = self._chip_extent()
        if extent is None:
            return []
        if box[0] <= box[2] and box[0] <= extent[0] and box[1] <= extent[1] and box[2] >= extent[2] \
                and box[3] >= extent[3]:
            return None
        halves = [box] if box[0] <= box[2] else [(box[0], box[1], 180.0, box[3]), (-180.0, box[1], box[2], box[3])]
        count = sum(self._read(lambda conn, b=b: tables.count_in_bbox(conn, *b, limit=MAX_AOI_CHIPS + 1), 0)
                    for b in halves)
        if count > MAX_AOI_CHIPS:
            raise AreaTooLarge(f"the area of interest holds more than {MAX_AOI_CHIPS:,} chips: draw a smaller one "
                               "(or none: an area covering every chip is no filter)")
        return self.ids_in_box(box)

    def _chip_extent(self) -> Box | None:
        """The lon/lat bounds of every chip (None: no chips), read again only after the index changed."""
        generation = self._store.generation()
        cached = self._extent
        if cached is None or cached[0] != generation:
            row = self._read(lambda conn: conn.execute(
                "SELECT MIN(lon_min), MIN(lat_min), MAX(lon_max), MAX(lat_max) FROM chips_rtree").fetchone())
            extent = None if row is None or row[0] is None else tuple(float(v) for v in row)
            cached = self._extent = (generation, extent)
        return cached[1]

    def _places(self, hits: list, own: list, max_overlap: float | None) -> list[GeoHit]:
        from shapely import STRtree

        chips = self.chips([h.id for h in hits])
        with_place = [i for i, c in chips.items() if c["footprint"] is not None]
        polygons = dict(zip(with_place, to_polygons([chips[i]["footprint"] for i in with_place])))
        own_place: set[int] = set()  # hits overlapping the query's own footprint(s): one query, one computation
        if own and with_place:
            mine = np.asarray(own, dtype=object)
            placed = np.asarray([polygons[i] for i in with_place], dtype=object)
            left, right = STRtree(mine).query(placed, predicate="intersects")
            frac = overlap_fractions(placed[left], mine[right])
            own_place = {with_place[k] for k in left[frac > SELF_OVERLAP].tolist()}
        places = []
        for h in hits:
            c = chips.get(h.id)
            fp = None if c is None else c["footprint"]
            if h.id in own_place:
                continue
            places.append(GeoHit(
                h.rank, h.id, h.distance, h.score, h.similarity,
                None if c is None else c["lon"], None if c is None else c["lat"], fp,
                None if c is None else c["raster_path"], None if c is None else int(c["raster_id"]),
                None if c is None else tuple(int(v) for v in c["window"]), h.path, h.label,
                None if c is None else c["datetime"], None if c is None else c["datetime_end"]))
        if max_overlap is not None:
            keep = suppress_overlaps([polygons.get(p.id) for p in places], max_overlap)
            places = [places[i] for i in keep]
        return places

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


def hits_json(hits: Sequence[GeoHit]) -> list[dict]:
    """Results as JSON-ready dicts (tuples as lists)."""
    return json.loads(json.dumps([h.to_dict() for h in hits]))
