"""Footprints as places: overlap and near-duplicate suppression, GeoJSON and CSV export.

A footprint is a closed lon/lat ring ``[[lon, lat], ...]`` (see :mod:`rshash.geo.crs`), a GeoJSON Polygon or
MultiPolygon mapping (a footprint split at the antimeridian), or a shapely geometry; results are mappings,
dataclasses or objects with ``to_dict()``. Written
GeoJSON follows RFC 7946: longitude first, exterior rings counter-clockwise.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import shapely
from shapely.geometry import Polygon
from shapely.geometry.polygon import orient


def ring_bbox(ring: Sequence[Sequence[float]]) -> tuple[float, float, float, float]:
    """``(lon_min, lat_min, lon_max, lat_max)`` of a ring (no antimeridian handling)."""
    lon_min, lat_min, lon_max, lat_max = shapely.bounds(Polygon(ring)).tolist()
    return lon_min, lat_min, lon_max, lat_max


def footprint_bbox(footprint: Any) -> tuple[float, float, float, float]:
    """``(west, south, east, north)`` of a footprint (ring, GeoJSON mapping or shapely geometry). A footprint
    split at the antimeridian (parts touching both +180 and -180) gets ``west > east`` (RFC 7946 section 5.2)."""
    geom = to_polygon(footprint)
    parts = list(getattr(geom, "geoms", [geom]))
    west, south, east, north = shapely.bounds(geom).tolist()
    if len(parts) > 1 and east >= 180.0 and west <= -180.0:
        eastern = [p for p in parts if p.bounds[2] >= 180.0]  # the part(s) ending at +180
        western = [p for p in parts if p.bounds[2] < 180.0]
        if western:
            west = min(p.bounds[0] for p in eastern)
            east = max(p.bounds[2] for p in western)
    return west, south, east, north


def box_polygon(box: Sequence[float]) -> Any:
    """A lon/lat box ``(west, south, east, north)`` as a polygon; ``west > east`` (across the antimeridian)
    gives a MultiPolygon of its two parts."""
    west, south, east, north = (float(v) for v in box)
    if west <= east:
        return shapely.box(west, south, east, north)
    return shapely.MultiPolygon([shapely.box(west, south, 180.0, north), shapely.box(-180.0, south, east, north)])


def to_polygon(footprint: Any) -> Any:
    """A shapely (multi)polygon from a ring, a GeoJSON Polygon or MultiPolygon mapping, or a shapely geometry;
    None stays None. Invalid geometry (a self-crossing ring) is repaired with ``shapely.make_valid``."""
    if footprint is None:
        return None
    if isinstance(footprint, shapely.Geometry):
        geom = footprint
    elif isinstance(footprint, Mapping):
        geom = shapely.geometry.shape(footprint)
    else:
        geom = Polygon(footprint)
    return geom if geom.is_valid else shapely.make_valid(geom)


def to_polygons(footprints: Sequence[Any]) -> list[Any]:
    """:func:`to_polygon` of each footprint; GeoJSON Polygons without holes (every chip footprint but those
    split at the antimeridian) are built together, one ``shapely.polygons`` call per ring length."""
    out: list[Any] = [None] * len(footprints)
    groups: dict[int, list[int]] = {}
    for i, f in enumerate(footprints):
        if isinstance(f, Mapping) and f.get("type") == "Polygon" and len(f.get("coordinates", ())) == 1:
            groups.setdefault(len(f["coordinates"][0]), []).append(i)
        else:
            out[i] = to_polygon(f)
    for length, idx in groups.items():
        polys = shapely.polygons(np.asarray([footprints[i]["coordinates"][0] for i in idx], dtype=np.float64))
        valid = shapely.is_valid(polys)
        for i, poly, ok in zip(idx, polys, valid):
            out[i] = poly if ok else shapely.make_valid(poly)
    return out


# --------------------------------------------------------------------------- overlap suppression


def overlap_area(a: Any, b: Any) -> float:
    """Area (square degrees) of the intersection of two footprints; 0 when either is None or GEOS cannot
    intersect them (geometry that ``make_valid`` could not repair): never raises."""
    pa, pb = to_polygon(a), to_polygon(b)
    if pa is None or pb is None:
        return 0.0
    try:
        return float(pa.intersection(pb).area)
    except shapely.errors.GEOSException:
        return 0.0


def overlap(a: Any, b: Any, measure: str = "fraction") -> float:
    """Overlap of two footprints: ``"fraction"`` = intersection / smaller area, or ``"iou"``.

    Areas are taken in lon/lat degrees: for chip-sized footprints the ratio is the ground ratio.
    """
    if measure not in ("fraction", "iou"):
        raise ValueError(f"unknown overlap measure {measure!r} (fraction or iou)")
    pa, pb = to_polygon(a), to_polygon(b)
    if pa is None or pb is None:
        return 0.0
    inter = overlap_area(pa, pb)
    if measure == "iou":
        union = pa.area + pb.area - inter
        return inter / union if union > 0 else 0.0
    smaller = min(pa.area, pb.area)
    return inter / smaller if smaller > 0 else 0.0


def overlap_fractions(a: Sequence[Any], b: Sequence[Any]) -> np.ndarray:
    """:func:`overlap` (``"fraction"``) of shapely geometries pairwise, ``a[k]`` with ``b[k]``, vectorised; a pair
    GEOS cannot intersect gets 0, as in :func:`overlap_area`."""
    a, b = np.asarray(a, dtype=object), np.asarray(b, dtype=object)
    if not len(a):
        return np.zeros(0)
    try:
        inter = shapely.area(shapely.intersection(a, b))
    except shapely.errors.GEOSException:  # unrepairable geometry somewhere: pair by pair
        inter = np.array([overlap_area(x, y) for x, y in zip(a, b)])
    smaller = np.minimum(shapely.area(a), shapely.area(b))
    return np.where(smaller > 0, inter / np.where(smaller > 0, smaller, 1.0), 0.0)


def suppress_overlaps(footprints: Sequence[Any], max_overlap: float, measure: str = "fraction") -> list[int]:
    """Indices of the footprints to keep, in rank order: a footprint overlapping an already kept one by more
    than ``max_overlap`` (see :func:`overlap`) is dropped. A footprint that is None is always kept. The
    intersecting pairs come from one STRtree query and their overlaps from one vectorised computation."""
    polys = to_polygons(footprints)
    present = [i for i, p in enumerate(polys) if p is not None]
    too_close: dict[int, set[int]] = {}
    if present:
        arr = np.asarray([polys[i] for i in present], dtype=object)
        try:
            left, right = shapely.STRtree(arr).query(arr, predicate="intersects")
        except shapely.errors.GEOSException:  # unrepairable geometry: every pair
            grid = np.array([(x, y) for x in range(len(arr)) for y in range(len(arr))]).reshape(-1, 2).T
            left, right = grid[0], grid[1]
        later = left > right  # each pair once: the lower-ranked one is what may be dropped
        left, right = left[later], right[later]
        if measure == "fraction":
            frac = overlap_fractions(arr[left], arr[right])
        else:
            frac = np.array([overlap(x, y, measure) for x, y in zip(arr[left], arr[right])])
        for i, j in zip(left[frac > max_overlap].tolist(), right[frac > max_overlap].tolist()):
            too_close.setdefault(present[i], set()).add(present[j])
    kept: list[int] = []
    kept_set: set[int] = set()
    for i in range(len(polys)):
        if not too_close.get(i, set()) & kept_set:
            kept.append(i)
            kept_set.add(i)
    return kept


# --------------------------------------------------------------------------- export


def _as_mapping(result: Any) -> dict[str, Any]:
    """A result as a plain dict: mappings as is, dataclasses via ``asdict``, else ``to_dict()``."""
    if isinstance(result, Mapping):
        return dict(result)
    if dataclasses.is_dataclass(result):
        return dataclasses.asdict(result)
    return dict(result.to_dict())


def _jsonable(value: Any) -> Any:
    """Numpy scalars/arrays, tuples and paths turned into JSON types."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (np.ndarray, tuple, list)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _exterior(poly: Polygon, precision: int) -> list[list[float]]:
    ring = [[round(x, precision), round(y, precision)] for x, y in orient(poly, sign=1.0).exterior.coords]
    if ring[0] != ring[-1]:
        ring.append(list(ring[0]))
    return ring


def polygon_geometry(footprint: Any, precision: int = 7) -> dict[str, Any] | None:
    """RFC 7946 geometry: a Polygon (or a MultiPolygon for a footprint split at the antimeridian): lon/lat,
    closed, exteriors counter-clockwise, rounded to ``precision``."""
    geom = to_polygon(footprint)
    if geom is None or geom.is_empty:
        return None
    polys = [g for g in getattr(geom, "geoms", [geom]) if isinstance(g, Polygon) and not g.is_empty]
    if len(polys) == 1:
        return {"type": "Polygon", "coordinates": [_exterior(polys[0], precision)]}
    return {"type": "MultiPolygon", "coordinates": [[_exterior(p, precision)] for p in polys]}


def feature_collection(results: Iterable[Any], footprint_key: str = "footprint", precision: int = 7) -> dict:
    """A GeoJSON FeatureCollection: one Feature per result, its footprint as the Polygon geometry
    (null when it has none) and every other field as a property."""
    features = []
    for result in results:
        props = _as_mapping(result)
        geometry = polygon_geometry(props.pop(footprint_key, None), precision)
        feature: dict[str, Any] = {"type": "Feature", "geometry": geometry, "properties": _jsonable(props)}
        if geometry is not None:
            feature["bbox"] = list(footprint_bbox(geometry))
        features.append(feature)
    return {"type": "FeatureCollection", "features": features}


def write_geojson(path: str | Path, results: Iterable[Any], **kwargs: Any) -> Path:
    """Write :func:`feature_collection` to ``path`` (UTF-8 JSON)."""
    path = Path(path)
    path.write_text(json.dumps(feature_collection(results, **kwargs)), encoding="utf-8")
    return path


def _lonlat_of(props: Mapping[str, Any], footprint_key: str) -> tuple[Any, Any]:
    """(lon, lat) of a result: its ``lon``/``lat`` fields, else its ``centroid``, else its footprint's centroid."""
    if props.get("lon") is not None and props.get("lat") is not None:
        return props["lon"], props["lat"]
    if props.get("centroid") is not None:
        lon, lat = props["centroid"]
        return lon, lat
    poly = to_polygon(props.get(footprint_key))
    if poly is None:
        return None, None
    c = poly.centroid
    return c.x, c.y


def results_csv(results: Iterable[Any], footprint_key: str = "footprint") -> str:
    """CSV text: ``lon,lat`` then every scalar field of the results (footprints and lists left out)."""
    rows = []
    for result in results:
        props = _as_mapping(result)
        lon, lat = _lonlat_of(props, footprint_key)
        scalars = {k: _jsonable(v) for k, v in props.items()
                   if k not in ("lon", "lat") and not isinstance(v, (Mapping, list, tuple, np.ndarray))}
        rows.append({"lon": lon, "lat": lat, **scalars})
    fields: list[str] = ["lon", "lat"]
    for row in rows:
        fields += [k for k in row if k not in fields]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def write_csv(path: str | Path, results: Iterable[Any], **kwargs: Any) -> Path:
    """Write :func:`results_csv` to ``path``."""
    path = Path(path)
    path.write_text(results_csv(results, **kwargs), encoding="utf-8")
    return path
