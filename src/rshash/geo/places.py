"""Answers about places across the archive: the same place in every acquisition, and the areas "find all" keeps.

Functions over a :class:`rshash.geo.search.GeoSearch` (``geo``: its chip and raster tables and readers), which
calls them for ``GeoSearch.same_place`` and ``GeoSearch.find_all``; this module does not import it.
"""

from __future__ import annotations

import logging
import math
from typing import Any, Sequence

from .footprints import footprint_bbox, overlap, polygon_geometry, to_polygon
from .place import MATCH_IOU
from .source import RasterError

log = logging.getLogger(__name__)


class PlaceNotIndexed(ValueError):
    """No indexed chip or raster at the requested place."""

#: Two chips show the same place when their footprints' intersection over union reaches this (the same rule as
#: the training pairs and the same-place protocol: :data:`rshash.geo.place.MATCH_IOU`).
SAME_PLACE_IOU = MATCH_IOU


def same_place(geo: Any, item_id: int, min_iou: float = SAME_PLACE_IOU,
               read_missing: bool = True) -> list[dict]:
    """The same place in every indexed acquisition: per raster (other than the chip's own), the chip whose
    footprint has the largest IoU with this one if it reaches ``min_iou``, in date order (unknown dates last,
    then by raster id). Each entry: ``id``, ``raster_id``, ``raster``, ``datetime``, ``datetime_end``, ``iou``,
    ``footprint``, ``window``; the chip itself is among them, with IoU 1. ``read_missing``: a raster that covers
    the place but has no such chip (not indexed there, skipped as nodata, other tiling) gets an entry with ``id``
    None and the pixel window of the place in it, to be read on the fly (``GET /api/geo/rasters/{id}/window.jpg``)."""
    chip = geo.chips([int(item_id)]).get(int(item_id))
    if chip is None or chip["footprint"] is None:
        raise PlaceNotIndexed(f"item {item_id} is not a raster chip with a lon/lat footprint")
    best: dict[int, tuple[float, dict]] = {}
    for other in geo.chips(geo.ids_in_box(footprint_bbox(chip["footprint"]))).values():
        raster_id = int(other["raster_id"])
        if raster_id == int(chip["raster_id"]) or other["footprint"] is None:
            continue
        iou = overlap(chip["footprint"], other["footprint"], "iou")
        held = best.get(raster_id)
        if iou >= min_iou and (held is None or (iou, -other["item_id"]) > (held[0], -held[1]["item_id"])):
            best[raster_id] = (iou, other)
    rows = [(1.0, chip)] + list(best.values())
    out = [{"id": int(c["item_id"]), "raster_id": int(c["raster_id"]), "raster": c["raster_path"],
            "datetime": c["datetime"], "datetime_end": c["datetime_end"], "iou": round(float(iou), 4),
            "footprint": c["footprint"], "window": list(c["window"])} for iou, c in rows]
    if read_missing:
        out += _in_other_rasters(geo, chip, {int(chip["raster_id"]), *best})
    return sorted(out, key=lambda r: (r["datetime"] is None, r["datetime"] or "", r["raster_id"]))


def _in_other_rasters(geo: Any, chip: dict, done: set[int]) -> list[dict]:
    """Entries (``id`` None) for the rasters covering a chip's footprint that have no chip of it."""
    out = []
    for r in geo.rasters():
        if r["id"] in done or r["footprint"] is None or overlap(r["footprint"], chip["footprint"]) <= 0:
            continue
        try:
            with geo.readers.source(r["id"], geo.queries.input_size) as source:
                c0, r0, c1, r1 = source.box_pixels(*footprint_bbox(chip["footprint"]))
        except (RasterError, ValueError) as exc:  # unreadable now: left out, with the reason logged
            log.warning("same place: raster %s not read: %s", r["name"], exc)
            continue
        window = [int(math.floor(c0)), int(math.floor(r0)), max(1, int(math.ceil(c1 - c0))),
                  max(1, int(math.ceil(r1 - r0)))]
        out.append({"id": None, "raster_id": int(r["id"]), "raster": r["path"], "datetime": r["datetime"],
                    "datetime_end": r["datetime_end"], "iou": None, "footprint": chip["footprint"], "window": window})
    return out


def merged_areas(hits: Sequence[Any], chips: dict[int, dict]) -> dict:
    """The footprints of the hits' chips (``chips``: rows by id) merged where they touch or overlap, as a GeoJSON
    FeatureCollection best first; each area's properties: ``chips`` (how many), ``ids``, ``best_score``."""
    from shapely import STRtree, unary_union

    polys = [(h, to_polygon(chips[h.id]["footprint"])) for h in hits
             if h.id in chips and chips[h.id]["footprint"] is not None]
    features = []
    if polys:
        merged = unary_union([p for _, p in polys])
        parts = list(getattr(merged, "geoms", [merged]))
        tree = STRtree(parts)
        members: dict[int, list] = {}
        for h, poly in polys:
            found = tree.query(poly.representative_point(), predicate="intersects")
            if len(found):
                members.setdefault(int(found[0]), []).append(h)
        for i, part in enumerate(parts):
            inside = members.get(i, [])
            features.append({"type": "Feature", "geometry": polygon_geometry(part),
                             "properties": {"chips": len(inside), "ids": [h.id for h in inside],
                                            "best_score": min((h.score for h in inside), default=None)}})
        features.sort(key=lambda f: (f["properties"]["best_score"] is None, f["properties"]["best_score"]))
    return {"type": "FeatureCollection", "features": features}
