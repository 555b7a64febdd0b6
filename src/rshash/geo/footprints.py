"""Footprints as places: overlap and near-duplicate suppression, GeoJSON and CSV export.

A footprint is a closed lon/lat ring ``[[lon, lat], ...]`` (see :mod:`rshash.geo.crs`), a GeoJSON Polygon
mapping, or a shapely polygon; results are mappings, dataclasses or objects with ``to_dict()``. Written
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


def to_polygon(footprint: Any) -> Polygon | None:
    """A shapely polygon from a ring, a GeoJSON Polygon mapping, or a polygon; None stays None."""
    if footprint is None or isinstance(footprint, Polygon):
        return footprint
    if isinstance(footprint, Mapping):
        return shapely.geometry.shape(footprint)
    return Polygon(footprint)


# --------------------------------------------------------------------------- overlap suppression


def overlap(a: Any, b: Any, measure: str = "fraction") -> float:
    """Overlap of two footprints: ``"fraction"`` = intersection / smaller area, or ``"iou"``.

    Areas are taken in lon/lat degrees: for chip-sized footprints the ratio is the ground ratio.
    """
    pa, pb = to_polygon(a), to_polygon(b)
    if pa is None or pb is None:
        return 0.0
    inter = pa.intersection(pb).area
    if measure == "iou":
        union = pa.union(pb).area
        return inter / union if union > 0 else 0.0
    if measure != "fraction":
        raise ValueError(f"unknown overlap measure {measure!r} (fraction or iou)")
    smaller = min(pa.area, pb.area)
    return inter / smaller if smaller > 0 else 0.0


def suppress_overlaps(footprints: Sequence[Any], max_overlap: float, measure: str = "fraction") -> list[int]:
    """Indices of the footprints to keep, in rank order: a footprint overlapping an already kept one by more
    than ``max_overlap`` (see :func:`overlap`) is dropped. A footprint that is None is always kept."""
    polys = [to_polygon(f) for f in footprints]
    present = [i for i, p in enumerate(polys) if p is not None]
    tree = shapely.STRtree([polys[i] for i in present]) if present else None
    kept: list[int] = []
    kept_set: set[int] = set()
    for i, poly in enumerate(polys):
        if poly is None:
            kept.append(i)
            continue
        hits = [present[j] for j in tree.query(poly, predicate="intersects")]
        if any(j in kept_set and overlap(poly, polys[j], measure) > max_overlap for j in hits):
            continue
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


def polygon_geometry(footprint: Any, precision: int = 7) -> dict[str, Any] | None:
    """RFC 7946 Polygon geometry: lon/lat, closed, exterior counter-clockwise, rounded to ``precision``."""
    poly = to_polygon(footprint)
    if poly is None or poly.is_empty:
        return None
    poly = orient(poly, sign=1.0)
    ring = [[round(x, precision), round(y, precision)] for x, y in poly.exterior.coords]
    if ring[0] != ring[-1]:
        ring.append(list(ring[0]))
    return {"type": "Polygon", "coordinates": [ring]}


def feature_collection(results: Iterable[Any], footprint_key: str = "footprint", precision: int = 7) -> dict:
    """A GeoJSON FeatureCollection: one Feature per result, its footprint as the Polygon geometry
    (null when it has none) and every other field as a property."""
    features = []
    for result in results:
        props = _as_mapping(result)
        geometry = polygon_geometry(props.pop(footprint_key, None), precision)
        feature: dict[str, Any] = {"type": "Feature", "geometry": geometry, "properties": _jsonable(props)}
        if geometry is not None:
            feature["bbox"] = list(ring_bbox(geometry["coordinates"][0]))
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
