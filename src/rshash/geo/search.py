"""Searching an index of raster chips by place: filters by area and date, the query's own place and near-duplicates
dropped, find-all, results as places.

A query is a :class:`~rshash.geo.queries.GeoQuery` (from a point, a box, ids, images or several examples:
:mod:`rshash.geo.queries`; several examples: an examples search, :func:`~rshash.index.search.rank_feedback`);
the tables it reads are :mod:`rshash.geo.catalog`'s.

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
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from ..diffusion import DIFFUSION_ITEMS
from ..feedback import FIND_ALL_THRESHOLD
from ..index.query import Queries
from ..index.search import Searcher, SearchParams
from ..index.store import Store
from ..ranking import DEFAULT_SHORTLIST
from . import tables
from .catalog import parse_box
from .dates import parse_range
from .footprints import overlap_fractions, suppress_overlaps, to_polygon, to_polygons
from .places import SAME_PLACE_IOU, merged_areas, same_place
from .queries import GeoQuery, PlaceQueries

#: Default near-duplicate threshold: hits sharing more than this fraction of the smaller footprint with a
#: better hit are dropped (with the default 50 % tiling overlap, side neighbours share 0.5, corners 0.25).
MAX_OVERLAP = 0.3
#: Hits sharing more than this fraction with the query's own footprint are the query's place: dropped.
SELF_OVERLAP = 0.01
#: An area of interest holding more chips than this is refused (one covering every chip is no filter).
MAX_AOI_CHIPS = 500_000
#: Extra hits fetched beyond ``4 * (offset + k)`` to make up for those dropped as the query's own place or as
#: near-duplicates; a second (last) pass fetches up to 4 times more when too few places are left.
FETCH_MARGIN = 200
#: "Find all" scores at most this many candidates (the best by the feedback ranking).
FIND_ALL_MAX = 10_000


class AreaTooLarge(ValueError):
    """An area of interest with more chips than :data:`MAX_AOI_CHIPS` (and not every chip)."""


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


class GeoSearch(PlaceQueries):
    """Geo queries (:class:`~rshash.geo.queries.PlaceQueries`) and searches over one
    :class:`~rshash.index.archive.Index` (``index.geo``)."""

    def __init__(self, store: Store, queries: Queries, searcher: Searcher):
        super().__init__(store, queries)
        self.searcher = searcher

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
            # places of the best hits first (the suppression of overlaps is greedy in rank order, so a prefix's
            # places are the first places of all): most searches need no more than twice the wanted ones
            head = hits if wanted is None else hits[: 2 * wanted]
            places = self._places(head, own, max_overlap)
            if len(head) < len(hits) and len(places) < wanted:
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
        ``limit``: a slider shows how many a threshold keeps), ``ids`` (the chips kept, best first),
        ``areas``: a GeoJSON FeatureCollection of the merged areas (properties: ``chips``, ``best_score``), and
        ``capped``: true when every diffused candidate was kept (the ranking diffuses the best
        :data:`~rshash.diffusion.DIFFUSION_ITEMS` candidates and ranks the rest after them, so more places like
        these may lie beyond: narrow the area or the dates)."""
        ids = self.allowed_ids(aoi, datetime)
        hits = self.searcher.search(query.examples, SearchParams(limit, None, **options), ids=ids,
                                    negatives=() if negatives is None else negatives.examples, feedback=True)
        kept = [h for h in hits if h.score <= threshold]
        capped = len(hits) > DIFFUSION_ITEMS and len(kept) >= DIFFUSION_ITEMS
        return {"threshold": threshold, "count": len(kept), "scores": [round(h.score, 4) for h in hits],
                "ids": [h.id for h in kept], "areas": merged_areas(kept, self.chips([h.id for h in kept])),
                "capped": capped}

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
        extent = self.chip_extent()
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


def hits_json(hits: Sequence[GeoHit]) -> list[dict]:
    """Results as JSON-ready dicts (tuples as lists)."""
    return json.loads(json.dumps([h.to_dict() for h in hits]))
