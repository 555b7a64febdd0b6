"""Rasters end to end in the index: chips as items with geo rows, crash-safe resumable ingestion, the stored
stretch, geo search (point, box, ids, examples; area of interest, radius; own place dropped, near-duplicates
suppressed), removal, and the CLI with GeoJSON / CSV export.

Uses the shared real rasters (skipped without them) and a small session index (tests/conftest.py).
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import shutil
import sqlite3
from contextlib import closing
from pathlib import Path

import numpy as np
import pyproj
import pytest
import rasterio
from rasterio.transform import from_origin

from rshash.cli import main as cli_main
from rshash.codes import unpack_codes
from rshash.geo import footprints
from rshash.geo.places import PlaceNotIndexed
from rshash.geo.tiling import chip_path, parse_chip_path
from rshash.index import Index

COGEO, NAIP = "cogeo.tif", "naip_m_3211605_ne_11_060_20200415.tif"


def db(index_dir: Path) -> sqlite3.Connection:
    return closing(sqlite3.connect(index_dir / "meta.sqlite"))


def copy_index(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def write_raster(path: Path, data: np.ndarray, res: float = 1.0) -> Path:
    count, height, width = data.shape
    with rasterio.open(path, "w", driver="GTiff", width=width, height=height, count=count, dtype=data.dtype.name,
                       crs="EPSG:32633", transform=from_origin(500000, 5000000, res, res)) as ds:
        ds.write(data)
    return path


def counting(index: Index) -> list[int]:
    """Count the chips the index's encoder encodes from now on."""
    seen: list[int] = []
    encode = index.encoder.encode

    def wrapped(pixels):
        seen.append(len(pixels))
        return encode(pixels)

    index.encoder.encode = wrapped
    return seen


def shoelace(ring) -> float:
    x, y = np.asarray(ring, float).T
    return 0.5 * float(np.sum(x[:-1] * y[1:] - x[1:] * y[:-1]))


# --------------------------------------------------------------------------- ingestion


def test_chips_are_items_with_geo_rows(raster_index_dir, shared_rasters):
    with Index.open(raster_index_dir) as index:
        assert len(index) == 21
        rasters = {r["name"]: r for r in index.rasters()}
        assert {n: r["chips"] for n, r in rasters.items()} == {COGEO: 9, NAIP: 12}
        assert rasters[COGEO]["stretch"] == {"kind": "none"} and rasters[NAIP]["bands"] == [1, 2, 3]
        assert rasters[COGEO]["crs"] == "EPSG:3857" and rasters[COGEO]["gsd"] == pytest.approx(0.4727, abs=1e-3)
        meta = index.get(1)
        assert meta.label is None and meta.path == chip_path(str(shared_rasters / COGEO), (0, 0, 512, 512))
        assert parse_chip_path(meta.path) == (str(shared_rasters / COGEO), (0, 0, 512, 512))
        assert parse_chip_path("/data/a#b.png") is None
    with db(raster_index_dir) as conn:
        assert conn.execute("SELECT value FROM meta WHERE key = 'model_gsd'").fetchone()[0] == "0.3"
        assert conn.execute("SELECT COUNT(*) FROM chips").fetchone()[0] == 21
        assert conn.execute("SELECT COUNT(*) FROM chips_rtree").fetchone()[0] == 21
        # every chip row belongs to an item row, and the item's path names the chip's window
        rows = conn.execute("SELECT i.path, r.path, c.col_off, c.row_off, c.width, c.height, c.footprint, c.lon, c.lat "
                            "FROM chips c JOIN images i ON i.id = c.item_id JOIN rasters r ON r.id = c.raster_id").fetchall()
    assert len(rows) == 21
    for item_path, raster_path, c, r, w, h, footprint, lon, lat in rows:
        assert item_path == f"{raster_path}#{c},{r},{w},{h}"
        ring = json.loads(footprint)["coordinates"][0]
        assert ring[0] == ring[-1] and shoelace(ring) > 0  # closed, counter-clockwise, lon first
        with rasterio.open(raster_path) as ds:  # corners computed independently: affine, then pyproj
            to_ll = pyproj.Transformer.from_crs(pyproj.CRS.from_wkt(ds.crs.to_wkt()), "EPSG:4326", always_xy=True)
            corners = [ds.transform @ p for p in [(c, r), (c + w, r), (c + w, r + h), (c, r + h)]]
            lons, lats = to_ll.transform(*zip(*corners))
            cx, cy = ds.transform @ (c + w / 2, r + h / 2)
        assert min(p[0] for p in ring) == pytest.approx(min(lons), abs=1e-7)
        assert max(p[1] for p in ring) == pytest.approx(max(lats), abs=1e-7)
        assert (lon, lat) == pytest.approx(to_ll.transform(cx, cy), abs=1e-9)


def test_rerun_skips_indexed_windows(raster_index_dir, shared_rasters, tmp_path):
    index_dir = copy_index(raster_index_dir, tmp_path / "index")
    with Index.open(index_dir) as index:
        encoded = counting(index)
        report = index.add_rasters(shared_rasters / NAIP, gsd="native", tile=128, progress=False)
        assert (report.added, report.unchanged, encoded) == (0, 12, [])
        assert len(index) == 21 and len(index.rasters()) == 2


def test_interrupted_run_resumes_without_duplicates(small_model_dir, shared_rasters, tmp_path):
    """Raising mid-run (as a crash would stop it): whole batches only, then the rerun encodes only the rest."""
    index_dir = tmp_path / "index"
    with Index.create(index_dir, small_model_dir) as index:
        encode = index.encoder.encode
        calls = itertools.count()

        def failing(pixels):
            if next(calls) == 2:
                raise RuntimeError("killed")
            return encode(pixels)

        index.encoder.encode = failing
        with pytest.raises(RuntimeError, match="killed"):
            index.add_rasters(shared_rasters / NAIP, gsd="native", tile=128, batch_size=4, progress=False)
    with db(index_dir) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        per_batch = [n for (n,) in conn.execute("SELECT COUNT(*) FROM images GROUP BY generation")]
        assert per_batch == [4, 4]
        assert conn.execute("SELECT COUNT(*) FROM chips").fetchone()[0] == 8
        assert conn.execute("SELECT COUNT(*) FROM rasters").fetchone()[0] == 1  # with the first batch
    with Index.open(index_dir) as index:
        encoded = counting(index)
        report = index.add_rasters(shared_rasters / NAIP, gsd="native", tile=128, batch_size=4, progress=False)
        assert (report.added, report.unchanged, sum(encoded)) == (4, 8, 4)
        assert len(index) == 12
    with db(index_dir) as conn:
        windows = conn.execute("SELECT col_off, row_off, width, height FROM chips").fetchall()
        assert len(windows) == len(set(windows)) == 12
        assert conn.execute("SELECT COUNT(*) FROM chips_rtree").fetchone()[0] == 12


def test_uint16_raster_one_stored_stretch_and_a_changed_file_replaced(small_model_dir, tmp_path):
    rng = np.random.default_rng(0)
    data = (rng.integers(0, 4000, (4, 300, 300)) + np.arange(300)[None, None, :] * 20).astype(np.uint16)
    path = write_raster(tmp_path / "s2like.tif", data)
    with Index.create(tmp_path / "index", small_model_dir) as index:
        report = index.add_rasters(path, gsd="native", tile=256, overlap=0.0, progress=False)
        assert report.added == 4
        (raster,) = index.rasters()
        stretch = raster["stretch"]
        assert stretch["kind"] == "percentile" and len(stretch["low"]) == len(stretch["high"]) == 3
        assert raster["bands"] == [1, 2, 3] and raster["dtype"] == "uint16"
        first_ids = sorted(index.geo.chips(range(1, 10)))
        write_raster(path, (data // 2).astype(np.uint16))  # the file changes: its chips are replaced
        report = index.add_rasters(path, gsd="native", tile=256, overlap=0.0, progress=False)
        assert (report.added, report.updated) == (4, 4)
        (raster,) = index.rasters()
        assert raster["chips"] == 4 and raster["stretch"] != stretch
        assert len(index) == 4 and not index.geo.chips(first_ids)


# --------------------------------------------------------------------------- search


def _chip_rows(index_dir: Path, raster_name: str) -> list[tuple]:
    with db(index_dir) as conn:
        return conn.execute("SELECT c.item_id, c.lon, c.lat, c.footprint FROM chips c JOIN rasters r "
                            "ON r.id = c.raster_id WHERE r.path LIKE ? ORDER BY c.item_id", (f"%{raster_name}",)).fetchall()


def _codes(index: Index, ids) -> np.ndarray:
    return unpack_codes(np.stack([np.frombuffer(index.get(i).code, np.uint8) for i in ids]), index.bits)


def test_point_search_drops_its_own_place_and_near_duplicates(raster_index_dir):
    item, lon, lat, fp = _chip_rows(raster_index_dir, NAIP)[5]
    with Index.open(raster_index_dir) as index:
        query = index.geo.point_query(lon, lat)
        assert query.described["chip"] == item  # the chip centred there
        hits = index.search_point(lon, lat, k=10, max_overlap=0.3)
        assert hits and [h.rank for h in hits] == list(range(1, len(hits) + 1))
        own = json.loads(fp)
        for h in hits:
            assert h.id != item and footprints.overlap(h.footprint, own) <= 0.01
            assert footprints.to_polygon(h.footprint).contains(footprints.to_polygon([[h.lon - 1e-9, h.lat - 1e-9], [h.lon + 1e-9, h.lat - 1e-9], [h.lon, h.lat + 1e-9]]))
            assert h.raster.endswith((NAIP, COGEO)) and len(h.window) == 4
        for a, b in itertools.combinations(hits, 2):
            assert footprints.overlap(a.footprint, b.footprint) <= 0.3
        # the distances are the Hamming distances of the stored codes
        q, d = _codes(index, [item]), _codes(index, [h.id for h in hits])
        assert [h.distance for h in hits] == (q != d).sum(axis=1).tolist()
        with pytest.raises(PlaceNotIndexed):
            index.search_point(0.0, 0.0)


def test_aoi_and_radius_filters(raster_index_dir):
    naip_ids = {r[0] for r in _chip_rows(raster_index_dir, NAIP)}
    item, lon, lat, fp = _chip_rows(raster_index_dir, COGEO)[0]
    with Index.open(raster_index_dir) as index:
        naip = next(r for r in index.rasters() if r["name"] == NAIP)
        hits = index.search_point(lon, lat, k=50, aoi=naip["bounds"], max_overlap=None)
        assert {h.id for h in hits} == naip_ids  # everything in the area, nothing else
        radius = 14
        within = index.search_point(lon, lat, k=None, radius=radius, max_overlap=None)
        ids = [i for i in range(1, 22) if i != item]
        dist = dict(zip(ids, (_codes(index, [item]) != _codes(index, ids)).sum(axis=1).tolist()))
        own = json.loads(fp)
        expected = {i for i, d in dist.items() if d <= radius and footprints.overlap(index.geo.chips([i])[i]["footprint"], own) <= 0.01}
        assert {h.id for h in within} == expected and all(h.distance <= radius for h in within)


def test_box_search_reads_and_encodes_the_window(raster_index_dir):
    """A box exactly on an indexed chip of the Web-Mercator raster (axis-aligned with lon/lat) reads the same
    window, so the same pixels and the same code."""
    item, lon, lat, fp = _chip_rows(raster_index_dir, COGEO)[4]
    with Index.open(raster_index_dir) as index:
        chip = index.geo.chips([item])[item]
        box = footprints.ring_bbox(chip["footprint"]["coordinates"][0])
        inner = (box[0] + 1e-7, box[1] + 1e-7, box[2] - 1e-7, box[3] - 1e-7)
        encoded = counting(index)
        query = index.geo.box_query(inner)
        assert encoded == [1] and query.described["raster_id"] == chip["raster_id"]
        assert tuple(query.described["window"]) == chip["window"]
        # the same pixels as the indexed chip: the same code
        assert (query.vectors.code == np.frombuffer(index.get(item).code, np.uint8)).all()
        hits = index.search_box(inner, k=5)
        assert hits and all(footprints.overlap(h.footprint, chip["footprint"]) <= 0.01 for h in hits)
        with pytest.raises(PlaceNotIndexed):
            index.search_box((10.0, 10.0, 10.1, 10.1))


def test_examples_by_id_exclude_themselves(raster_index_dir):
    with Index.open(raster_index_dir) as index:
        hits = index.search([1, 2, 3], k=30)
        assert {h.id for h in hits}.isdisjoint({1, 2, 3}) and len(hits) == 18
        places = index.search_places([1, 12], k=30, max_overlap=None)
        assert {p.id for p in places}.isdisjoint({1, 12})


def test_remove_deletes_the_geo_rows(raster_index_dir, tmp_path):
    index_dir = copy_index(raster_index_dir, tmp_path / "index")
    item, lon, lat, _ = _chip_rows(index_dir, NAIP)[0]
    with Index.open(index_dir) as index:
        assert index.geo.point_query(lon, lat).described["chip"] == item
        assert index.remove([item]) == [item]
        assert index.geo.point_query(lon, lat).described["chip"] != item  # a neighbour covers it
    with db(index_dir) as conn:
        assert conn.execute("SELECT COUNT(*) FROM chips WHERE item_id = ?", (item,)).fetchone()[0] == 0
        assert conn.execute("SELECT COUNT(*) FROM chips_rtree WHERE item_id = ?", (item,)).fetchone()[0] == 0


# --------------------------------------------------------------------------- CLI and export


def _check_feature_collection(doc: dict) -> None:
    """RFC 7946 structure: FeatureCollection of Features with Polygon geometry: closed CCW rings of
    [lon, lat] in range, a bbox, and properties."""
    assert doc["type"] == "FeatureCollection" and isinstance(doc["features"], list)
    for f in doc["features"]:
        assert f["type"] == "Feature" and isinstance(f["properties"], dict)
        assert f["geometry"]["type"] == "Polygon"
        ring = f["geometry"]["coordinates"][0]
        assert len(ring) >= 4 and ring[0] == ring[-1] and shoelace(ring) > 0
        assert all(-180 <= x <= 180 and -90 <= y <= 90 for x, y in ring)
        assert f["bbox"] == list(footprints.ring_bbox(ring))
        assert {"rank", "distance", "lon", "lat", "raster", "window"} <= set(f["properties"])


def test_cli_rasters_search_geojson_csv(raster_index_dir, tmp_path, capsys):
    index_dir = copy_index(raster_index_dir, tmp_path / "index")
    rng = np.random.default_rng(1)
    small = write_raster(tmp_path / "small.tif", rng.integers(0, 255, (3, 100, 90)).astype(np.uint8))
    assert cli_main(["index", "--rasters", str(small), "--out", str(index_dir), "--gsd", "native",
                     "--tile", "256", "--bands", "3,2,1"]) == 0
    out = capsys.readouterr().out
    assert "1 chips added" in out and "22 items" in out  # smaller than a tile: one chip
    report = json.loads((index_dir / "add_report.json").read_text())
    assert report["added"] == 1 and report["rasters"][0]["chips_planned"] == 1

    item, lon, lat, _ = _chip_rows(index_dir, NAIP)[4]
    gj, table = tmp_path / "hits.geojson", tmp_path / "hits.csv"
    assert cli_main(["search", "--index", str(index_dir), f"--lonlat={lon},{lat}", "--k", "5",
                     "--geojson", str(gj), "--csv", str(table)]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].split() == ["rank", "dist", "sim", "id", "lon", "lat", "date", "window", "raster"]
    assert printed[1].split()[6] == "2020-04-15"  # the acquisition date from the file name
    doc = json.loads(gj.read_text())
    _check_feature_collection(doc)
    assert 1 <= len(doc["features"]) <= 5
    rows = list(csv.DictReader(io.StringIO(table.read_text())))
    assert list(rows[0])[:2] == ["lon", "lat"] and len(rows) == len(doc["features"])
    assert [float(r["lon"]) for r in rows] == pytest.approx([f["properties"]["lon"] for f in doc["features"]])

    naip = [r for r in _chip_rows(index_dir, NAIP)]
    aoi = footprints.ring_bbox(json.loads(naip[-1][3])["coordinates"][0])
    assert cli_main(["search", "--index", str(index_dir), "--id", "1", "--id", "2", "--aoi=" + ",".join(map(str, aoi)),
                     "--json", "--max-overlap", "1"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["query"]["ids"] == [1, 2] and result["results"]
    assert all(r["raster"].endswith(NAIP) for r in result["results"])
    assert cli_main(["search", "--index", str(index_dir), "--lonlat", "0,0"]) == 2
    assert "no indexed chip" in capsys.readouterr().err
    assert cli_main(["search", "--index", str(index_dir), "--lonlat", "1,2", "--id", "3"]) == 2
    assert "give one query" in capsys.readouterr().err
