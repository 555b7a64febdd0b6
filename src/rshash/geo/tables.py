"""SQLite tables for georeferenced items: rasters, chips and an R*Tree on their lon/lat bounds.

Functions take an open ``sqlite3.Connection`` and never commit: the caller's transaction decides, so a
batch of chips lands together with its items (or not at all). A chip row is keyed by the id of its row in
the index's items table (``images`` today), so the code, label and path stay where they are and a chip
only adds where it is. The R*Tree ``chips_rtree`` (float32 bounds, rounded outward by SQLite) gives
candidates; queries refine them against the exact bounds kept in ``chips``. A trigger keeps the R*Tree in
step with deletes from ``chips``, including cascades from the items table when foreign keys are on.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any, Iterable, Mapping, Sequence

from shapely.geometry import Point, shape

_SCHEMA = (
"""CREATE TABLE IF NOT EXISTS rasters (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    path TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    crs TEXT,                  -- "EPSG:n" or WKT; NULL when the raster has none
    transform TEXT NOT NULL,   -- JSON [a, b, c, d, e, f]
    width INTEGER NOT NULL,
    height INTEGER NOT NULL,
    count INTEGER,
    bands TEXT NOT NULL,       -- JSON list of the 1-based bands read as R, G, B
    dtype TEXT,
    stretch TEXT NOT NULL,     -- JSON: the raster's one stretch
    gsd REAL,                  -- ground pixel size, metres
    UNIQUE (path, sha256)
)""",
"""CREATE TABLE IF NOT EXISTS chips (
    item_id INTEGER PRIMARY KEY REFERENCES {items}(id) ON DELETE CASCADE,
    raster_id INTEGER NOT NULL REFERENCES rasters(id),
    col_off INTEGER NOT NULL, row_off INTEGER NOT NULL, width INTEGER NOT NULL, height INTEGER NOT NULL,
    x_min REAL, y_min REAL, x_max REAL, y_max REAL,        -- bounds in the raster CRS
    footprint TEXT,                                        -- GeoJSON Polygon, lon/lat
    lon REAL, lat REAL,                                    -- centroid
    lon_min REAL, lat_min REAL, lon_max REAL, lat_max REAL,
    valid_fraction REAL,
    UNIQUE (raster_id, col_off, row_off, width, height)
)""",
"CREATE VIRTUAL TABLE IF NOT EXISTS chips_rtree USING rtree(item_id, lon_min, lon_max, lat_min, lat_max)",
"""CREATE TRIGGER IF NOT EXISTS chips_rtree_delete AFTER DELETE ON chips BEGIN
    DELETE FROM chips_rtree WHERE item_id = old.item_id;
END""",
)

_CHIP_COLUMNS = ("item_id", "raster_id", "col_off", "row_off", "width", "height", "x_min", "y_min", "x_max",
                 "y_max", "footprint", "lon", "lat", "lon_min", "lat_min", "lon_max", "lat_max", "valid_fraction")


def create_tables(conn: sqlite3.Connection, items_table: str = "images") -> None:
    """Create the rasters and chips tables and the R*Tree if missing (chips reference ``items_table(id)``)."""
    if not items_table.isidentifier():
        raise ValueError(f"bad table name {items_table!r}")
    for statement in _SCHEMA:  # one by one: executescript would commit the caller's transaction
        conn.execute(statement.replace("{items}", items_table))


def _get(obj: Any, key: str) -> Any:
    return obj[key] if isinstance(obj, Mapping) else getattr(obj, key)


def find_raster(conn: sqlite3.Connection, path: str, sha256: str) -> int | None:
    """Id of the raster row with this path and checksum, if any (a resumed run reuses it)."""
    row = conn.execute("SELECT id FROM rasters WHERE path = ? AND sha256 = ?", (str(path), sha256)).fetchone()
    return None if row is None else int(row[0])


def insert_raster(conn: sqlite3.Connection, info: Any) -> int:
    """Insert a raster (a ``RasterInfo`` or a mapping with its fields); returns its id. No commit."""
    cur = conn.execute(
        "INSERT INTO rasters (path, sha256, crs, transform, width, height, count, bands, dtype, stretch, gsd) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (str(_get(info, "path")), _get(info, "sha256"), _get(info, "crs"), json.dumps(list(_get(info, "transform"))),
         int(_get(info, "width")), int(_get(info, "height")), int(_get(info, "count")),
         json.dumps(list(_get(info, "bands"))), _get(info, "dtype"), json.dumps(_get(info, "stretch")),
         _get(info, "gsd")))
    return int(cur.lastrowid)


def get_raster(conn: sqlite3.Connection, raster_id: int) -> dict[str, Any] | None:
    """A raster row as a dict with its JSON columns decoded."""
    cur = conn.execute("SELECT * FROM rasters WHERE id = ?", (int(raster_id),))
    row = cur.fetchone()
    if row is None:
        return None
    out = dict(zip([c[0] for c in cur.description], row))
    for key in ("transform", "bands", "stretch"):
        out[key] = json.loads(out[key])
    return out


def _chip_row(item_id: int, raster_id: int, meta: Any) -> tuple:
    """The chips-table row of a ``ChipMeta`` (or a mapping with the same fields)."""
    footprint, centroid, bbox = _get(meta, "footprint"), _get(meta, "centroid"), _get(meta, "bbox")
    geojson = None if footprint is None else json.dumps({"type": "Polygon", "coordinates": [list(footprint)]})
    lon, lat = centroid if centroid is not None else (None, None)
    box = tuple(bbox) if bbox is not None else (None, None, None, None)
    return (int(item_id), int(raster_id), *(int(v) for v in _get(meta, "window")),
            *(float(v) for v in _get(meta, "bounds")), geojson, lon, lat, *box, _get(meta, "valid_fraction"))


def insert_chips(conn: sqlite3.Connection, raster_id: int, items: Iterable[tuple[int, Any]]) -> int:
    """Insert ``(item_id, chip_meta)`` pairs for one raster, and their R*Tree entries. No commit.

    Returns the number inserted. Chips without a lon/lat footprint get no R*Tree entry.
    """
    rows = [_chip_row(item_id, raster_id, meta) for item_id, meta in items]
    conn.executemany(f"INSERT INTO chips ({', '.join(_CHIP_COLUMNS)}) VALUES ({', '.join('?' * len(_CHIP_COLUMNS))})",
                     rows)
    conn.executemany("INSERT INTO chips_rtree (item_id, lon_min, lon_max, lat_min, lat_max) VALUES (?, ?, ?, ?, ?)",
                     [(r[0], r[13], r[15], r[14], r[16]) for r in rows if r[13] is not None])
    return len(rows)


def indexed_windows(conn: sqlite3.Connection, raster_id: int) -> set[tuple[int, int, int, int]]:
    """Windows ``(col_off, row_off, width, height)`` of a raster already in the index (to resume a run)."""
    cur = conn.execute("SELECT col_off, row_off, width, height FROM chips WHERE raster_id = ?", (int(raster_id),))
    return {tuple(r) for r in cur}


def delete_chips(conn: sqlite3.Connection, item_ids: Iterable[int]) -> None:
    """Delete chip rows (the trigger removes their R*Tree entries). No commit."""
    conn.executemany("DELETE FROM chips WHERE item_id = ?", [(int(i),) for i in item_ids])


def ids_in_bbox(conn: sqlite3.Connection, lon_min: float, lat_min: float, lon_max: float, lat_max: float) -> list[int]:
    """Ids of chips whose lon/lat bounds intersect the box, ascending. ``lon_min > lon_max`` means a box
    across the antimeridian."""
    if lon_min > lon_max:
        return sorted(set(ids_in_bbox(conn, lon_min, lat_min, 180.0, lat_max))
                      | set(ids_in_bbox(conn, -180.0, lat_min, lon_max, lat_max)))
    cur = conn.execute(
        "SELECT c.item_id FROM chips_rtree r JOIN chips c ON c.item_id = r.item_id "
        "WHERE r.lon_max >= ? AND r.lon_min <= ? AND r.lat_max >= ? AND r.lat_min <= ? "
        "AND c.lon_max >= ? AND c.lon_min <= ? AND c.lat_max >= ? AND c.lat_min <= ? ORDER BY c.item_id",
        (lon_min, lon_max, lat_min, lat_max) * 2)
    return [int(r[0]) for r in cur]


def chip_at(conn: sqlite3.Connection, lon: float, lat: float, raster_id: int | None = None) -> int | None:
    """Id of the chip whose footprint contains the point and whose centroid is nearest to it (chips overlap);
    None when no chip covers it. ``raster_id`` limits the answer to one raster."""
    sql = ("SELECT c.item_id, c.footprint, c.lon, c.lat FROM chips_rtree r JOIN chips c ON c.item_id = r.item_id "
           "WHERE r.lon_min <= ? AND r.lon_max >= ? AND r.lat_min <= ? AND r.lat_max >= ?")
    args: list[Any] = [lon, lon, lat, lat]
    if raster_id is not None:
        sql += " AND c.raster_id = ?"
        args.append(int(raster_id))
    point = Point(lon, lat)
    best: tuple[float, int] | None = None
    for item_id, footprint, c_lon, c_lat in conn.execute(sql, args):
        if not shape(json.loads(footprint)).covers(point):
            continue
        d = (c_lon - lon) ** 2 + (c_lat - lat) ** 2
        if best is None or (d, item_id) < best:
            best = (d, int(item_id))
    return None if best is None else best[1]


def get_chips(conn: sqlite3.Connection, item_ids: Sequence[int]) -> list[dict[str, Any]]:
    """Chip rows for the ids, in the order given (unknown ids left out), with the raster's path and CRS,
    the window as a tuple, the footprint as a GeoJSON mapping and the centroid as (lon, lat)."""
    found: dict[int, dict[str, Any]] = {}
    ids = [int(i) for i in item_ids]
    for start in range(0, len(ids), 500):
        chunk = ids[start:start + 500]
        cur = conn.execute(
            f"SELECT c.*, r.path AS raster_path, r.crs AS raster_crs FROM chips c JOIN rasters r ON r.id = c.raster_id "
            f"WHERE c.item_id IN ({', '.join('?' * len(chunk))})", chunk)
        names = [d[0] for d in cur.description]
        for row in cur:
            rec = dict(zip(names, row))
            rec["window"] = (rec["col_off"], rec["row_off"], rec["width"], rec["height"])
            rec["bounds"] = (rec["x_min"], rec["y_min"], rec["x_max"], rec["y_max"])  # left, bottom, right, top
            rec["footprint"] = None if rec["footprint"] is None else json.loads(rec["footprint"])
            rec["centroid"] = None if rec["lon"] is None else (rec["lon"], rec["lat"])
            found[rec["item_id"]] = rec
    return [found[i] for i in ids if i in found]
