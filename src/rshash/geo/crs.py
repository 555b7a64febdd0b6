"""Coordinates: CRSs, lon/lat transforms, ground pixel size, and lon/lat footprints of pixel windows.

Everything here speaks longitude/latitude on WGS 84 (EPSG:4326) in RFC 7946 order: **longitude first**.
A footprint is a closed ring ``[[lon, lat], ...]`` (first point repeated last) with a counter-clockwise
exterior, as RFC 7946 section 3.1.6 asks. Rasters are described by a CRS (anything ``pyproj.CRS`` accepts:
an EPSG string, WKT, a rasterio or pyproj CRS) and a 6-number affine transform ``(a, b, c, d, e, f)``
(x = a*col + b*row + c, y = d*col + e*row + f; rasterio/affine order).

This module is a leaf: it imports nothing else from rshash (and not rasterio), so every layer can use it.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Any, Sequence

import numpy as np
import pyproj
import shapely
import shapely.affinity
from shapely.geometry import Polygon
from shapely.geometry.polygon import orient

LONLAT = "EPSG:4326"
_WEB_MERCATOR_METHOD = "popular visualisation pseudo mercator"

Ring = list[list[float]]


class CRSUnitsError(ValueError):
    """The raster has no CRS, or a CRS whose units cannot be turned into metres."""


# --------------------------------------------------------------------------- CRS helpers


@lru_cache(maxsize=64)
def _crs_from_text(text: str) -> pyproj.CRS:
    return pyproj.CRS.from_user_input(text)


def to_pyproj_crs(crs: Any) -> pyproj.CRS:
    """A ``pyproj.CRS`` from an EPSG string, WKT, or a rasterio/pyproj CRS object (cached by its WKT)."""
    if crs is None:
        raise CRSUnitsError("the raster has no coordinate reference system")
    if isinstance(crs, pyproj.CRS):
        return crs
    text = crs if isinstance(crs, str) else crs.to_wkt()
    return _crs_from_text(text)


@lru_cache(maxsize=64)
def _lonlat_transformer(wkt: str) -> pyproj.Transformer:
    return pyproj.Transformer.from_crs(pyproj.CRS.from_wkt(wkt), LONLAT, always_xy=True)


def lonlat_transformer(crs: Any) -> pyproj.Transformer:
    """Transformer from ``crs`` to lon/lat (``always_xy``: x/lon first), cached per CRS."""
    return _lonlat_transformer(to_pyproj_crs(crs).to_wkt())


def from_lonlat_transformer(crs: Any) -> pyproj.Transformer:
    """Transformer from lon/lat to ``crs`` (``always_xy``)."""
    return pyproj.Transformer.from_crs(LONLAT, to_pyproj_crs(crs), always_xy=True)


def pixel_to_xy(transform: Sequence[float], cols: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Apply an affine ``(a, b, c, d, e, f)`` to pixel coordinates (col, row); corners are integers."""
    a, b, c, d, e, f = (float(v) for v in transform[:6])
    cols, rows = np.asarray(cols, float), np.asarray(rows, float)
    return a * cols + b * rows + c, d * cols + e * rows + f


def has_lonlat(crs: Any) -> bool:
    """Whether coordinates in ``crs`` can be transformed to lon/lat (not so for a local engineering CRS)."""
    try:
        lonlat_transformer(crs)
    except (pyproj.exceptions.ProjError, CRSUnitsError):
        return False
    return True


def crs_text(crs: Any) -> str | None:
    """``"EPSG:n"`` when the CRS is exactly an EPSG one, else its WKT; None for no CRS."""
    if crs is None:
        return None
    pcrs = to_pyproj_crs(crs)
    epsg = pcrs.to_epsg(min_confidence=100)
    return f"EPSG:{epsg}" if epsg else pcrs.to_wkt()


def window_bounds(transform: Sequence[float], window: Sequence[float]) -> tuple[float, float, float, float]:
    """``(left, bottom, right, top)`` in the CRS of a pixel window ``(col_off, row_off, width, height)``."""
    c, r, w, h = window
    xs, ys = pixel_to_xy(transform, np.array([c, c + w, c, c + w]), np.array([r, r, r + h, r + h]))
    return float(xs.min()), float(ys.min()), float(xs.max()), float(ys.max())


def is_web_mercator(crs: Any) -> bool:
    """True for EPSG:3857 and its aliases (any CRS using the Pseudo-Mercator method)."""
    op = to_pyproj_crs(crs).coordinate_operation
    return op is not None and op.method_name.lower() == _WEB_MERCATOR_METHOD


def ground_pixel_size(crs: Any, transform: Sequence[float], width: int, height: int) -> tuple[float, float]:
    """Ground size in metres of one pixel (along columns, along rows) at the raster centre.

    Projected CRS: the nominal size times the unit's metre factor; Web Mercator is further corrected by
    cos(latitude) of the centre (its nominal metres shrink on the ground away from the equator).
    Geographic CRS: geodesic metres on the CRS's ellipsoid at the centre latitude. Raises
    :class:`CRSUnitsError` for no CRS or a CRS without usable units.
    """
    pcrs = to_pyproj_crs(crs)
    a, b, _, d, e, _ = (float(v) for v in transform[:6])
    size_x, size_y = math.hypot(a, d), math.hypot(b, e)
    axis = pcrs.axis_info[0] if pcrs.axis_info else None
    if axis is None or not axis.unit_conversion_factor or axis.unit_name.lower() in ("unknown", "unit", ""):
        raise CRSUnitsError(f"the raster CRS has no usable units: {pcrs.name!r}")
    cx, cy = pixel_to_xy(transform, np.array([width / 2]), np.array([height / 2]))
    if pcrs.is_geographic:
        to_deg = math.degrees(axis.unit_conversion_factor)  # angular unit -> degrees
        lon, lat = float(cx[0]) * to_deg, float(cy[0]) * to_deg
        geod = pcrs.get_geod() or pyproj.Geod(ellps="WGS84")
        dx = geod.inv(lon - size_x * to_deg / 2, lat, lon + size_x * to_deg / 2, lat)[2]
        dy = geod.inv(lon, lat - size_y * to_deg / 2, lon, lat + size_y * to_deg / 2)[2]
        return float(dx), float(dy)
    metres = float(axis.unit_conversion_factor)
    gx, gy = size_x * metres, size_y * metres
    if is_web_mercator(pcrs):
        _, lat = lonlat_transformer(pcrs).transform(float(cx[0]), float(cy[0]))
        scale = math.cos(math.radians(lat))
        gx, gy = gx * scale, gy * scale
    return gx, gy


# --------------------------------------------------------------------------- footprints of windows


def window_ring_pixels(col_off: float, row_off: float, width: float, height: float, densify: int = 4) -> np.ndarray:
    """Pixel-space closed ring around a window: 4 corners plus ``densify - 1`` points inside each edge."""
    t = np.linspace(0.0, 1.0, max(1, densify), endpoint=False)
    c0, r0, c1, r1 = col_off, row_off, col_off + width, row_off + height
    edges = [
        (c0 + (c1 - c0) * t, np.full_like(t, r0)),  # top, left to right
        (np.full_like(t, c1), r0 + (r1 - r0) * t),  # right, top to bottom
        (c1 - (c1 - c0) * t, np.full_like(t, r1)),  # bottom, right to left
        (np.full_like(t, c0), r1 - (r1 - r0) * t),  # left, bottom to top
    ]
    cols = np.concatenate([e[0] for e in edges] + [[c0]])
    rows = np.concatenate([e[1] for e in edges] + [[r0]])
    return np.stack([cols, rows], axis=1)


def wrap_lon(lon: float) -> float:
    """A longitude in [-180, 180]: values already in range are kept (180 stays 180), others wrapped."""
    lon = float(lon)
    return lon if -180.0 <= lon <= 180.0 else (lon + 180.0) % 360.0 - 180.0


def _split_at_antimeridian(poly: Polygon) -> Ring | dict[str, Any]:
    """A lon/lat polygon whose longitudes may pass +-180 (unwrapped): its ring when it stays inside
    [-180, 180], else a GeoJSON MultiPolygon of its parts cut at +-180 and shifted back into range."""
    west, _, east, _ = poly.bounds
    if west >= -180.0 and east <= 180.0:
        return np.asarray(poly.exterior.coords).tolist()
    parts = []
    for offset in (-360.0, 0.0, 360.0):  # the part in [-180 - offset, 180 - offset], moved by +offset
        piece = poly.intersection(shapely.box(-180.0 - offset, -90.0, 180.0 - offset, 90.0))
        for g in getattr(piece, "geoms", [piece]):
            if isinstance(g, Polygon) and not g.is_empty and g.area > 0:
                moved = orient(shapely.affinity.translate(g, xoff=offset), sign=1.0)
                parts.append([np.asarray(moved.exterior.coords).tolist()])
    return {"type": "MultiPolygon", "coordinates": parts}


def footprint_lonlat(crs: Any, transform: Sequence[float], window: Sequence[float],
                     densify: int = 4) -> Ring | dict[str, Any]:
    """Lon/lat footprint of a pixel window ``(col_off, row_off, width, height)``: a closed CCW ring, or a
    GeoJSON MultiPolygon mapping when the window crosses the antimeridian (split at +-180, every longitude
    in [-180, 180]).

    The window's edges are densified (``densify`` points per edge) before the transform, so a footprint
    in a CRS far from lon/lat (polar, Web Mercator at high latitude) keeps its curved edges. Longitudes
    are unwrapped along the ring first, so a projected window across 180 degrees is not read as one
    spanning the whole world, and a geographic raster with longitudes past 180 is brought back in range.
    """
    px = window_ring_pixels(*window, densify=densify)
    x, y = pixel_to_xy(transform, px[:, 0], px[:, 1])
    lon, lat = lonlat_transformer(crs).transform(x, y)
    lon = np.unwrap(np.asarray(lon, float), period=360.0)
    lon -= 360.0 * math.floor((float(lon.mean()) + 180.0) / 360.0)  # its middle in [-180, 180)
    poly = orient(Polygon(np.stack([lon, np.asarray(lat, float)], axis=1)), sign=1.0)
    return _split_at_antimeridian(poly)


def centre_lonlat(crs: Any, transform: Sequence[float], window: Sequence[float]) -> tuple[float, float]:
    """Lon/lat of the window's centre (the footprint's centroid, up to the curvature of the projection);
    the longitude in [-180, 180]."""
    col_off, row_off, width, height = window
    x, y = pixel_to_xy(transform, np.array([col_off + width / 2]), np.array([row_off + height / 2]))
    lon, lat = lonlat_transformer(crs).transform(float(x[0]), float(y[0]))
    return wrap_lon(lon), float(lat)
