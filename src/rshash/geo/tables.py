"""SQLite tables for georeferenced items: rasters, chips and an R*Tree on their lon/lat bounds.

Functions take an open ``sqlite3.Connection`` and never commit: the caller's transaction decides, so a
batch of chips lands together with its items (or not at all). A chip row is keyed by the id of its row in
the index's items table (``images`` today), so the code, label and path stay where they are and a chip
only adds where it is. The R*Tree ``chips_rtree`` (float32 bounds, rounded outward by SQLite) gives
candidates; queries refine them against the exact bounds kept in ``chips``. A chip across the antimeridian
has two R*Tree boxes (its id and minus its id), and queries return each chip once. A trigger keeps the R*Tree in
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
    status TEXT NOT NULL DEFAULT 'complete',  -- 'partial' until every window was read (see RASTER_STATUSES)
    reason TEXT,               -- why a partial raster stopped (a read error), NULL otherwise
    tiling TEXT,               -- JSON: tile, gsd, overlap, bands, max_nodata it was cut with; NULL: unknown
    datetime TEXT,             -- ISO 8601 UTC acquisition time (start; see rshash.geo.dates); NULL: unknown
    datetime_end TEXT,         -- ISO 8601 end of the acquisition interval; NULL: an instant or unknown
    UNIQUE (path, sha256)
)""",
"""CREATE TABLE IF NOT EXISTS chips (
    item_id INTEGER PRIMARY KEY REFERENCES {items}(id) ON DELETE CASCADE,
    raster_id INTEGER NOT NULL REFERENCES rasters(id),
    col_off INTEGER NOT NULL, row_off INTEGER NOT NULL, width INTEGER NOT NULL, height INTEGER NOT NULL,
    x_min REAL, y_min REAL, x_max REAL, y_max REAL,        -- bounds in the raster CRS
    footprint TEXT,                                        -- GeoJSON Polygon, lon/lat
    lon REAL, lat REAL,                                    -- centroid
    lon_min REAL, lat_min REAL, lon_max REAL, lat_max REAL, -- lon_min > lon_max: across the antimeridian
    valid_fraction REAL,
    UNIQUE (raster_id, col_off, row_off, width, height)
)""",
"CREATE VIRTUAL TABLE IF NOT EXISTS chips_rtree USING rtree(item_id, lon_min, lon_max, lat_min, lat_max)",
"DROP TRIGGER IF EXISTS chips_rtree_delete",  # made again below: older indexes deleted one box only
"""CREATE TRIGGER chips_rtree_delete AFTER DELETE ON chips BEGIN
    DELETE FROM chips_rtree WHERE item_id IN (old.item_id, -old.item_id);
END""",
)

#: Columns added to ``rasters`` by index format 3 (``ALTER TABLE`` on older indexes; see :func:`upgrade_rasters`).
RASTER_COLUMNS_V3 = (("status", "TEXT NOT NULL DEFAULT 'complete'"), ("reason", "TEXT"), ("tiling", "TEXT"),
                     ("datetime", "TEXT"), ("datetime_end", "TEXT"))
#: ``rasters.status``: every planned window was read, or the run stopped early (read error, interrupted,
#: ``max_chips``) and a rerun resumes it.
COMPLETE, PARTIAL = "complete", "partial"
RASTER_STATUSES = (COMPLETE, PARTIAL)

_CHIP_COLUMNS = ("item_id", "raster_id", "col_off", "row_off", "width", "height", "x_min", "y_min", "x_max",
                 "y_max", "footprint", "lon", "lat", "lon_min", "lat_min", "lon_max", "lat_max", "valid_fraction")


def create_tables(conn: sqlite3.Connection, items_table: str = "images") -> None:
    """Create the rasters and chips tables and the R*Tree if missing (chips reference ``items_table(id)``)."""
    if not items_table.isidentifier():
        raise ValueError(f"bad table name {items_table!r}")
    for statement in _SCHEMA:  # one by one: executescript would commit the caller's transaction
        conn.execute(statement.replace("{items}", items_table))
    upgrade_rasters(conn)


def upgrade_rasters(conn: sqlite3.Connection) -> list[str]:
    """Add the format-3 columns to a ``rasters`` table made by an older index (defaults: ``complete``, and
    NULL tiling meaning "unknown, keep its chips"); return the columns added. No table: nothing to do."""
    have = {r[1] for r in conn.execute("PRAGMA table_info(rasters)")}
    if not have:
        return []
    added = []
    for name, decl in RASTER_COLUMNS_V3:
        if name not in have:
            conn.execute(f"ALTER TABLE rasters ADD COLUMN {name} {decl}")
            added.append(name)
    return added


def _get(obj: Any, key: str) -> Any:
    return obj[key] if isinstance(obj, Mapping) else getattr(obj, key)


def find_raster(conn: sqlite3.Connection, path: str, sha256: str) -> int | None:
    """Id of the raster row with this path and checksum, if any (a resumed run reuses it)."""
    row = conn.execute("SELECT id FROM rasters WHERE path = ? AND sha256 = ?", (str(path), sha256)).fetchone()
    return None if row is None else int(row[0])


def insert_raster(conn: sqlite3.Connection, info: Any, tiling: Mapping[str, Any] | None = None,
                  status: str = COMPLETE) -> int:
    """Insert a raster (a ``RasterInfo`` or a mapping with its fields) with the tiling options it is cut
    with and its status; returns its id. No commit."""
    if status not in RASTER_STATUSES:
        raise ValueError(f"raster status is one of {RASTER_STATUSES}, got {status!r}")
    cur = conn.execute(
        "INSERT INTO rasters (path, sha256, crs, transform, width, height, count, bands, dtype, stretch, gsd, "
        "status, tiling) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (str(_get(info, "path")), _get(info, "sha256"), _get(info, "crs"), json.dumps(list(_get(info, "transform"))),
         int(_get(info, "width")), int(_get(info, "height")), int(_get(info, "count")),
         json.dumps(list(_get(info, "bands"))), _get(info, "dtype"), json.dumps(_get(info, "stretch")),
         _get(info, "gsd"), status, None if tiling is None else json.dumps(dict(tiling), sort_keys=True)))
    return int(cur.lastrowid)


def set_raster_status(conn: sqlite3.Connection, raster_id: int, status: str, reason: str | None = None) -> None:
    """Mark a raster ``complete`` or ``partial`` (with the reason it stopped). No commit."""
    if status not in RASTER_STATUSES:
        raise ValueError(f"raster status is one of {RASTER_STATUSES}, got {status!r}")
    conn.execute("UPDATE rasters SET status = ?, reason = ? WHERE id = ?", (status, reason, int(raster_id)))


def set_raster_time(conn: sqlite3.Connection, raster_id: int, start: str | None, end: str | None) -> None:
    """Record a raster's acquisition time (ISO UTC start, end or None; both None: unknown). No commit."""
    conn.execute("UPDATE rasters SET datetime = ?, datetime_end = ? WHERE id = ?", (start, end, int(raster_id)))


def ids_in_time(conn: sqlite3.Connection, lo: str | None, hi: str | None) -> list[int]:
    """Ids of the chips whose raster's acquisition meets ``[lo, hi]`` (ISO UTC, None: open), ascending; chips
    of rasters with no known time never do."""
    sql = "SELECT c.item_id FROM chips c JOIN rasters r ON r.id = c.raster_id WHERE r.datetime IS NOT NULL"
    args: list[str] = []
    if lo is not None:
        sql += " AND COALESCE(r.datetime_end, r.datetime) >= ?"
        args.append(lo)
    if hi is not None:
        sql += " AND r.datetime <= ?"
        args.append(hi)
    return [int(r[0]) for r in conn.execute(sql + " ORDER BY c.item_id", args)]


def raster_ids_by_path(conn: sqlite3.Connection, path: str) -> list[int]:
    """Ids of every row of the raster file ``path`` (any checksum), ascending."""
    return [int(r[0]) for r in conn.execute("SELECT id FROM rasters WHERE path = ? ORDER BY id", (str(path),))]


def raster_item_ids(conn: sqlite3.Connection, raster_id: int) -> list[int]:
    """Item ids of a raster's chips, ascending (to remove them with the raster)."""
    cur = conn.execute("SELECT item_id FROM chips WHERE raster_id = ? ORDER BY item_id", (int(raster_id),))
    return [int(r[0]) for r in cur]


def delete_raster(conn: sqlite3.Connection, raster_id: int) -> None:
    """Delete a raster row (its chips must be gone already: delete their items first). No commit."""
    conn.execute("DELETE FROM rasters WHERE id = ?", (int(raster_id),))


def get_raster(conn: sqlite3.Connection, raster_id: int) -> dict[str, Any] | None:
    """A raster row as a dict with its JSON columns decoded."""
    cur = conn.execute("SELECT * FROM rasters WHERE id = ?", (int(raster_id),))
    row = cur.fetchone()
    if row is None:
        return None
    out = dict(zip([c[0] for c in cur.description], row))
    for key in ("transform", "bands", "stretch"):
        out[key] = json.loads(out[key])
    out["tiling"] = None if out.get("tiling") is None else json.loads(out["tiling"])
    return out


def _chip_row(item_id: int, raster_id: int, meta: Any) -> tuple:
    """The chips-table row of a ``ChipMeta`` (or a mapping with the same fields). The footprint is stored as
    GeoJSON: a ring as a Polygon, a mapping (a MultiPolygon split at the antimeridian) as it is."""
    footprint, centroid, bbox = _get(meta, "footprint"), _get(meta, "centroid"), _get(meta, "bbox")
    if footprint is None:
        geojson = None
    elif isinstance(footprint, Mapping):
        geojson = json.dumps(dict(footprint))
    else:
        geojson = json.dumps({"type": "Polygon", "coordinates": [list(footprint)]})
    lon, lat = centroid if centroid is not None else (None, None)
    box = tuple(bbox) if bbox is not None else (None, None, None, None)
    return (int(item_id), int(raster_id), *(int(v) for v in _get(meta, "window")),
            *(float(v) for v in _get(meta, "bounds")), geojson, lon, lat, *box, _get(meta, "valid_fraction"))


def insert_chips(conn: sqlite3.Connection, raster_id: int, items: Iterable[tuple[int, Any]]) -> int:
    """Insert ``(item_id, chip_meta)`` pairs for one raster, and their R*Tree entries. No commit.

    Returns the number inserted. Chips without a lon/lat footprint get no R*Tree entry; a chip across the
    antimeridian (``lon_min > lon_max``) gets two: ``[lon_min, 180]`` under its id and ``[-180, lon_max]``
    under minus its id.
    """
    rows = [_chip_row(item_id, raster_id, meta) for item_id, meta in items]
    conn.executemany(f"INSERT INTO chips ({', '.join(_CHIP_COLUMNS)}) VALUES ({', '.join('?' * len(_CHIP_COLUMNS))})",
                     rows)
    boxes = []
    for r in rows:
        if r[13] is None:
            continue
        if r[13] <= r[15]:
            boxes.append((r[0], r[13], r[15], r[14], r[16]))
        else:
            boxes += [(r[0], r[13], 180.0, r[14], r[16]), (-r[0], -180.0, r[15], r[14], r[16])]
    conn.executemany("INSERT INTO chips_rtree (item_id, lon_min, lon_max, lat_min, lat_max) VALUES (?, ?, ?, ?, ?)",
                     boxes)
    return len(rows)


def chip_size(conn: sqlite3.Connection, raster_id: int) -> tuple[int, int] | None:
    """The most common ``(width, height)`` of a raster's indexed chip windows (its tile, in source pixels);
    None when it has no chips."""
    row = conn.execute("SELECT width, height FROM chips WHERE raster_id = ? GROUP BY width, height "
                       "ORDER BY COUNT(*) DESC, width DESC, height DESC LIMIT 1", (int(raster_id),)).fetchone()
    return None if row is None else (int(row[0]), int(row[1]))


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
    cur = conn.execute(  # exact bounds: a chip across 180 covers [lon_min, 180] and [-180, lon_max]
        "SELECT DISTINCT c.item_id FROM chips_rtree r JOIN chips c ON c.item_id = abs(r.item_id) "
        "WHERE r.lon_max >= ? AND r.lon_min <= ? AND r.lat_max >= ? AND r.lat_min <= ? "
        "AND c.lat_max >= ? AND c.lat_min <= ? AND (CASE WHEN c.lon_min <= c.lon_max "
        "THEN c.lon_max >= ? AND c.lon_min <= ? ELSE c.lon_min <= ? OR c.lon_max >= ? END) ORDER BY c.item_id",
        (lon_min, lon_max, lat_min, lat_max, lat_min, lat_max, lon_min, lon_max, lon_max, lon_min))
    return [int(r[0]) for r in cur]


def count_in_bbox(conn: sqlite3.Connection, lon_min: float, lat_min: float, lon_max: float, lat_max: float,
                  limit: int) -> int:
    """How many R*Tree boxes intersect a lon/lat box (not across the antimeridian), counting up to ``limit``: a
    bound on the chips an area of interest holds, without reading them."""
    return int(conn.execute(
        "SELECT COUNT(*) FROM (SELECT 1 FROM chips_rtree WHERE lon_max >= ? AND lon_min <= ? AND lat_max >= ? "
        "AND lat_min <= ? LIMIT ?)", (lon_min, lon_max, lat_min, lat_max, limit)).fetchone()[0])


def chip_at(conn: sqlite3.Connection, lon: float, lat: float, raster_id: int | None = None) -> int | None:
    """Id of the chip whose footprint contains the point and whose centroid is nearest to it (chips overlap);
    None when no chip covers it. ``raster_id`` limits the answer to one raster."""
    sql = ("SELECT DISTINCT c.item_id, c.footprint, c.lon, c.lat FROM chips_rtree r "
           "JOIN chips c ON c.item_id = abs(r.item_id) "
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
        d_lon = abs(c_lon - lon) % 360.0
        d = min(d_lon, 360.0 - d_lon) ** 2 + (c_lat - lat) ** 2  # across 180 too
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
            f"SELECT c.*, r.path AS raster_path, r.crs AS raster_crs, r.datetime AS datetime, "
            f"r.datetime_end AS datetime_end FROM chips c JOIN rasters r ON r.id = c.raster_id "
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
