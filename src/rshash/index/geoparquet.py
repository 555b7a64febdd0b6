"""The index out as GeoParquet 1.1: one row per item, readable by pyarrow, GeoPandas, DuckDB, QGIS.

Columns (chip columns null for an item that is not a raster chip):

* ``id`` (int64), ``path`` and ``label`` (string);
* ``geometry``: the footprint, WKB, lon/lat (OGC:CRS84; a chip across the antimeridian is a MultiPolygon);
* ``bbox``: struct of ``xmin, ymin, xmax, ymax`` (doubles), the GeoParquet 1.1 *covering* of ``geometry`` so
  readers can skip row groups outside a box (``xmin > xmax``: across the antimeridian);
* ``lon``, ``lat``: the centroid;
* ``datetime``, ``datetime_end``: the raster's acquisition (timestamp, UTC; end null for an instant);
* ``raster`` (its path), ``raster_id``, ``window``: ``fixed_size_list<int32>[4]`` = col_off, row_off, width,
  height in raster pixels, ``valid_fraction``;
* ``code``: the packed binary code, ``fixed_size_binary[bits/8]``; ``descriptor``: the int8 re-rank descriptor,
  ``fixed_size_list<int8>[dims]``.

The file's key-value metadata holds ``geo`` (the GeoParquet 1.1 column metadata) and ``rshash``: the model's
fingerprint, bits, descriptor size, ground resolutions and re-rank weight, and every raster's tiling, bands and
stretch, so a reader knows which model made the codes. Rows are read from one snapshot of the index, written
in row groups as they are read (memory bounded by one group), to a temporary file renamed into place: a crash
leaves the previous file (or none), never a truncated one.
"""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import numpy as np

from ..progress import progress_bar

if TYPE_CHECKING:  # pyarrow loads only when exporting
    import pyarrow as pa

#: GeoParquet specification version written.
GEOPARQUET_VERSION = "1.1.0"
#: Rows per row group (and per read from SQLite).
ROW_GROUP = 100_000

_ITEMS = ("SELECT i.id, i.path, i.label, i.code, i.descriptor{chip} FROM images i{join} "
          "WHERE i.id > ? ORDER BY i.id LIMIT ?")
_CHIP_COLUMNS = (", c.footprint, c.lon, c.lat, c.lon_min, c.lat_min, c.lon_max, c.lat_max, c.col_off, c.row_off, "
                 "c.width, c.height, c.valid_fraction, c.raster_id, r.path, r.datetime, r.datetime_end")
_CHIP_JOIN = " LEFT JOIN chips c ON c.item_id = i.id LEFT JOIN rasters r ON r.id = c.raster_id"


def schema(bits: int, dims: int) -> "pa.Schema":
    """The Arrow schema of an export (without its metadata)."""
    import pyarrow as pa

    bbox = pa.struct([(k, pa.float64()) for k in ("xmin", "ymin", "xmax", "ymax")])
    return pa.schema([
        ("id", pa.int64()), ("path", pa.string()), ("label", pa.string()), ("geometry", pa.binary()), ("bbox", bbox),
        ("lon", pa.float64()), ("lat", pa.float64()), ("datetime", pa.timestamp("ms", tz="UTC")),
        ("datetime_end", pa.timestamp("ms", tz="UTC")), ("raster", pa.string()), ("raster_id", pa.int64()),
        ("window", pa.list_(pa.int32(), 4)), ("valid_fraction", pa.float64()),
        ("code", pa.binary(bits // 8)), ("descriptor", pa.list_(pa.int8(), dims)),
    ])


def _has_chips(conn: sqlite3.Connection) -> bool:
    return conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'chips'").fetchone() is not None


def _timestamps(values: list[str | None]) -> "pa.Array":
    """ISO UTC strings (``YYYY-MM-DDTHH:MM:SSZ``, see :mod:`rshash.geo.dates`) as a timestamp array."""
    import pyarrow as pa
    import pyarrow.compute as pc

    parsed = pc.strptime(pa.array(values, pa.string()), format="%Y-%m-%dT%H:%M:%SZ", unit="s")
    return parsed.cast(pa.timestamp("ms", tz="UTC"))


def _batch(rows: list[tuple], chips: bool, bits: int, dims: int) -> "pa.RecordBatch":
    """One record batch from SQL rows (see ``_ITEMS``)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import shapely

    n = len(rows)
    columns: list[tuple] = list(zip(*rows)) if rows else [()] * (5 + (17 if chips else 0))
    code = np.frombuffer(b"".join(columns[3]), dtype=np.uint8)
    desc = np.frombuffer(b"".join(columns[4]), dtype=np.int8)
    if code.size != n * (bits // 8) or desc.size != n * dims:
        raise ValueError("an item's stored code or descriptor has the wrong size for this index")
    out: dict[str, Any] = {
        "id": pa.array(columns[0], pa.int64()), "path": pa.array(columns[1], pa.string()),
        "label": pa.array(columns[2], pa.string()),
        "code": pa.FixedSizeBinaryArray.from_buffers(pa.binary(bits // 8), n, [None, pa.py_buffer(code.tobytes())]),
        "descriptor": pa.FixedSizeListArray.from_arrays(pa.array(desc, pa.int8()), dims),
    }
    if chips:
        (footprint, lon, lat, lon_min, lat_min, lon_max, lat_max, col_off, row_off, width, height, valid, raster_id,
         raster, start, end) = columns[5:]
        geoms = shapely.from_geojson(np.array(footprint, dtype=object))
        out["geometry"] = pa.array(shapely.to_wkb(geoms), pa.binary())
        has = pa.array([v is not None for v in lon_min])
        out["bbox"] = pa.StructArray.from_arrays(
            [pa.array(v, pa.float64()) for v in (lon_min, lat_min, lon_max, lat_max)],
            names=["xmin", "ymin", "xmax", "ymax"], mask=pc.invert(has))
        out |= {"lon": pa.array(lon, pa.float64()), "lat": pa.array(lat, pa.float64()),
                "datetime": _timestamps(list(start)), "datetime_end": _timestamps(list(end)),
                "raster": pa.array(raster, pa.string()), "raster_id": pa.array(raster_id, pa.int64()),
                "valid_fraction": pa.array(valid, pa.float64())}
        window = np.array([[a, b, c, d] if a is not None else [0, 0, 0, 0]
                           for a, b, c, d in zip(col_off, row_off, width, height)], dtype=np.int32).reshape(-1)
        is_chip = np.array([a is not None for a in col_off], dtype=bool)
        out["window"] = pa.FixedSizeListArray.from_arrays(pa.array(window, pa.int32()), 4,
                                                          mask=pa.array(~is_chip))
    target = schema(bits, dims)
    arrays = [out[f.name] if f.name in out else pa.nulls(n, f.type) for f in target]
    return pa.RecordBatch.from_arrays(arrays, schema=target)


def geometry_types(conn: sqlite3.Connection) -> list[str]:
    """The footprint geometry types present (chips store GeoJSON Polygons, MultiPolygons across 180)."""
    if not _has_chips(conn):
        return []
    multi, single = conn.execute(
        "SELECT COALESCE(SUM(footprint LIKE '%\"MultiPolygon\"%'), 0), "
        "COALESCE(SUM(footprint IS NOT NULL AND footprint NOT LIKE '%\"MultiPolygon\"%'), 0) FROM chips").fetchone()
    return [name for name, count in (("MultiPolygon", multi), ("Polygon", single)) if count]


def geo_metadata(types: list[str], extent: list[float] | None) -> dict:
    """The ``geo`` key of a GeoParquet 1.1 file with one WKB column in OGC:CRS84 and its bbox covering."""
    from pyproj import CRS

    column: dict[str, Any] = {
        "encoding": "WKB", "geometry_types": sorted(types),
        "crs": CRS("OGC:CRS84").to_json_dict(), "edges": "planar",
        "covering": {"bbox": {k: ["bbox", k] for k in ("xmin", "ymin", "xmax", "ymax")}},
    }
    if extent is not None:
        column["bbox"] = extent
    return {"version": GEOPARQUET_VERSION, "primary_column": "geometry", "columns": {"geometry": column}}


def _rasters(conn: sqlite3.Connection) -> list[dict]:
    from ..geo import tables

    ids = [r[0] for r in conn.execute("SELECT id FROM rasters ORDER BY id")] if _has_chips(conn) else []
    keep = ("id", "path", "sha256", "crs", "width", "height", "bands", "gsd", "stretch", "tiling", "status",
            "datetime", "datetime_end")
    return [{k: row.get(k) for k in keep} for row in (tables.get_raster(conn, i) for i in ids) if row is not None]


def _extent(conn: sqlite3.Connection) -> list[float] | None:
    if not _has_chips(conn):
        return None
    row = conn.execute("SELECT MIN(lon_min), MIN(lat_min), MAX(lon_max), MAX(lat_max) FROM chips_rtree").fetchone()
    return None if row is None or row[0] is None else [float(v) for v in row]


def write_geoparquet(conn: sqlite3.Connection, path: str | Path, model: dict, *, row_group: int = ROW_GROUP,
                     progress: bool = True) -> dict:
    """Write every item readable through ``conn`` (one read snapshot of an index) to ``path``; ``model``: the
    index's model identity for the ``rshash`` metadata (``bits`` and ``descriptor_dims`` required). Returns a
    summary: rows, chips, bytes, path."""
    import pyarrow.parquet as pq

    bits, dims = int(model["bits"]), int(model["descriptor_dims"])
    path = Path(path)
    chips = _has_chips(conn)
    total = int(conn.execute("SELECT COUNT(*) FROM images").fetchone()[0])
    extent = _extent(conn)
    rshash_meta = {"model": model, "rasters": _rasters(conn), "rows": total,
                   "columns": "see rshash.index.geoparquet: code = packed bits (numpy.packbits order), descriptor = "
                              "int8, cosine similarity is its re-rank similarity"}
    sql = _ITEMS.format(chip=_CHIP_COLUMNS if chips else "", join=_CHIP_JOIN if chips else "")
    types = geometry_types(conn)
    target = schema(bits, dims).with_metadata({"geo": json.dumps(geo_metadata(types, extent)),
                                                "rshash": json.dumps(rshash_meta)})
    n_chips = 0
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with pq.ParquetWriter(tmp, target, compression="zstd") as writer, \
                progress_bar(total=total, desc="export", unit="item", disable=not progress) as bar:
            for rows in _pages(conn, sql, row_group):
                batch = _batch(rows, chips, bits, dims)
                n_chips += len(rows) - batch.column("raster_id").null_count
                writer.write_batch(batch.replace_schema_metadata(target.metadata), row_group_size=row_group)
                bar.update(len(rows))
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return {"path": str(path), "rows": total, "chips": n_chips, "bytes": path.stat().st_size,
            "geometry_types": types}


def _pages(conn: sqlite3.Connection, sql: str, size: int) -> Iterator[list[tuple]]:
    last = 0
    while True:
        rows = conn.execute(sql, (last, size)).fetchall()
        if not rows:
            return
        yield rows
        last = int(rows[-1][0])
