"""Raster data layer, geo export and geo tables: real rasters from shared/data/rasters, synthetic ones in tmp_path.

Expected coordinates are computed independently of rshash: the affine transform applied to the window
corners and pyproj to lon/lat.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import resource
import sqlite3
from pathlib import Path

import numpy as np
import pyproj
import pytest
import rasterio
from rasterio.enums import ColorInterp, Resampling
from rasterio.transform import from_origin
from rasterio.windows import Window

from rshash.geo import footprints, tables
from rshash.geo.source import RasterError, open_raster
from rshash.geo.tiling import plan_tiles

UTM33 = "EPSG:32633"


@pytest.fixture(scope="module")
def rasters_dir(shared_rasters) -> Path:
    """The shared rasters (conftest: ``$RSHASH_RASTERS`` or ``<repo>/../shared/data/rasters``; skip when absent)."""
    return shared_rasters


def write_raster(path: Path, data: np.ndarray, crs: str | None = UTM33, res: float = 1.0, **profile) -> Path:
    """A GeoTIFF of ``data`` (bands, h, w) with its top-left at (500000, 5000000) in ``crs``."""
    count, height, width = data.shape
    kwargs = dict(driver="GTiff", width=width, height=height, count=count, dtype=data.dtype.name)
    if crs is not None:
        kwargs.update(crs=crs, transform=from_origin(500000, 5000000, res, res))
    kwargs.update(profile)
    with rasterio.open(path, "w", **kwargs) as ds:
        ds.write(data)
    return path


def noise(shape, seed=0, dtype=np.uint8, high=256) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, high, shape).astype(dtype)


def independent_corners(ds, window) -> np.ndarray:
    """Lon/lat of the 4 window corners: affine * (col, row), then pyproj."""
    c, r, w, h = window
    xs, ys = zip(*(ds.transform @ p for p in [(c, r), (c + w, r), (c + w, r + h), (c, r + h)]))
    to_ll = pyproj.Transformer.from_crs(pyproj.CRS.from_wkt(ds.crs.to_wkt()), "EPSG:4326", always_xy=True)
    lon, lat = to_ll.transform(xs, ys)
    return np.column_stack([lon, lat])


def shoelace(ring) -> float:
    x, y = np.asarray(ring, float).T
    return 0.5 * float(np.sum(x[:-1] * y[1:] - x[1:] * y[:-1]))


# --------------------------------------------------------------------------- footprints and scale


@pytest.mark.parametrize("name, lon_range, lat_range", [
    ("cogeo.tif", (128, 129), (37, 38)),  # Web Mercator
    ("naip_m_3211605_ne_11_060_20200415.tif", (-117, -116), (32, 33)),  # UTM 11N
])
def test_footprints_and_centroids_match_pyproj(rasters_dir, name, lon_range, lat_range):
    with open_raster(rasters_dir / name, out_size=32) as src:
        chips = [c for batch in src.iter_chips(batch_size=8) for c in batch]
        ds = src.ds
        assert len(chips) == len(src.plan) > 1
        for chip in chips[:: max(1, len(chips) // 6)]:
            meta = chip.meta
            ring = np.asarray(meta.footprint)
            assert np.allclose(ring[0], ring[-1]) and shoelace(ring) > 0  # closed, counter-clockwise
            for corner in independent_corners(ds, meta.window):  # every corner is a ring vertex
                assert np.abs(ring - corner).max(axis=1).min() < 1e-9
            c, r, w, h = meta.window
            x, y = ds.transform @ (c + w / 2, r + h / 2)
            to_ll = pyproj.Transformer.from_crs(pyproj.CRS.from_wkt(ds.crs.to_wkt()), "EPSG:4326", always_xy=True)
            assert np.allclose(meta.centroid, to_ll.transform(x, y), atol=1e-9)
            lon, lat = meta.centroid  # RFC 7946 order: longitude first
            assert lon_range[0] < lon < lon_range[1] and lat_range[0] < lat < lat_range[1]
            assert meta.bbox == (ring[:, 0].min(), ring[:, 1].min(), ring[:, 0].max(), ring[:, 1].max())
            assert np.allclose(meta.bounds, rasterio.windows.bounds(Window(*meta.window), ds.transform))


def test_web_mercator_scale_on_cogeo(rasters_dir):
    with open_raster(rasters_dir / "cogeo.tif", out_size=32) as src:
        ds = src.ds
        cx, cy = ds.transform @ (ds.width / 2, ds.height / 2)
        _, lat = pyproj.Transformer.from_crs("EPSG:3857", "EPSG:4326", always_xy=True).transform(cx, cy)
        expected = ds.res[0] * math.cos(math.radians(lat))
        assert src.info.gsd == pytest.approx(expected, rel=1e-6)
        assert src.info.gsd == pytest.approx(0.597164 * math.cos(math.radians(37.67)), rel=1e-3)
        assert src.plan.win_width == round(256 * 0.3 / expected)  # 256 px at 0.3 m
        chip = src.read_chip(next(src.plan.windows()))
        (lon0, lat0), (lon1, _), _, (_, lat3) = independent_corners(ds, chip.meta.window)
        geod = pyproj.Geod(ellps="WGS84")  # the chip is 256 x 0.3 m = 76.8 m on the ground
        assert geod.inv(lon0, lat0, lon1, lat0)[2] == pytest.approx(76.8, rel=0.01)
        assert geod.inv(lon0, lat0, lon0, lat3)[2] == pytest.approx(76.8, rel=0.01)
        assert src.info.crs == "EPSG:3857" and len(src.info.transform) == 6
        assert len(src.info.sha256) == 64 and src.info.stretch == {"kind": "none"}


def test_geographic_crs_metres_at_centre_latitude(tmp_path):
    data = noise((3, 300, 300))
    path = tmp_path / "geo.tif"
    with rasterio.open(path, "w", driver="GTiff", width=300, height=300, count=3, dtype="uint8",
                       crs="EPSG:4326", transform=from_origin(10.0, 60.0, 1e-5, 1e-5)) as ds:
        ds.write(data)
    geod = pyproj.Geod(ellps="WGS84")
    lat = 60.0 - 150e-5
    gx, gy = geod.inv(10.0, lat, 10.00001, lat)[2], geod.inv(10.0, lat - 0.5e-5, 10.0, lat + 0.5e-5)[2]
    with open_raster(path, out_size=16) as src:  # square ground tiles: more columns than rows
        assert (src.plan.win_width, src.plan.win_height) == (round(76.8 / gx), round(76.8 / gy))
        assert src.info.gsd == pytest.approx((gx + gy) / 2, rel=1e-6)


def test_extreme_resampling_warns(rasters_dir, caplog):
    with caplog.at_level(logging.WARNING, logger="rshash.geo.source"):
        with open_raster(rasters_dir / "RGB.byte.tif") as src:  # 300 m pixels at 0.3 m: 1000x
            assert src.plan.win_width == 1
    assert "upsampling" in caplog.text and "gsd='native'" in caplog.text


# --------------------------------------------------------------------------- nodata, bands, stretch


def test_landsat_nodata_chips_skipped(rasters_dir):
    with open_raster(rasters_dir / "RGB.byte.tif", gsd="native", tile=64, out_size=16) as src:
        chips = [c for batch in src.iter_chips(batch_size=50) for c in batch]
        mask = src.ds.dataset_mask() > 0
        assert src.skipped["nodata"] > 0
        assert len(chips) + sum(src.skipped.values()) == len(src.plan)
        assert (0, 0, 64, 64) not in {c.meta.window for c in chips}  # the top-left corner is border
        for chip in chips:
            c, r, w, h = chip.meta.window
            assert chip.meta.valid_fraction >= 0.5
            assert chip.meta.valid_fraction == pytest.approx(mask[r:r + h, c:c + w].mean(), abs=0.1)
    with open_raster(rasters_dir / "RGB.byte.tif", gsd="native", tile=64, out_size=16, max_nodata=0.9) as src:
        assert sum(len(b) for b in src.iter_chips()) > len(chips)


def test_naip_bands_1_2_3_and_nir_never_alpha(rasters_dir):
    path = rasters_dir / "naip_m_3211605_ne_11_060_20200415.tif"
    with open_raster(path, out_size=64) as src:
        assert src.ds.colorinterp[3] == ColorInterp.alpha  # the file tags NIR as alpha
        assert src.bands == (1, 2, 3) and src.mask_bands == ()
        window = next(src.plan.windows())
        chip = src.read_chip(window)
        expected = src.ds.read([1, 2, 3], window=window, out_shape=(3, 64, 64), resampling=Resampling.bilinear)
        assert np.array_equal(chip.pixels, expected.transpose(1, 2, 0)) and chip.meta.valid_fraction == 1.0
    with open_raster(rasters_dir / "naip_m_4709963_se_14_1_20090818.tif", gsd="native") as src:
        assert src.ds.colorinterp[0] == ColorInterp.gray and src.bands == (1, 2, 3)
        assert src.info.bands == (1, 2, 3) and src.info.count == 4


def test_binary_alpha_band_is_a_mask(tmp_path):
    data = noise((4, 128, 128))
    data[3] = 255
    data[3, :, :96] = 0  # a real alpha: three quarters transparent
    path = write_raster(tmp_path / "rgba.tif", data, photometric="RGB", alpha="YES")
    with open_raster(path, gsd="native", tile=128, out_size=32) as src:
        assert src.bands == (1, 2, 3) and src.mask_bands
        assert list(src.iter_chips()) == [] and src.skipped["nodata"] == 1
    with open_raster(path, gsd="native", tile=128, out_size=32, use_alpha=False) as src:
        assert src.mask_bands == () and len(list(src.iter_chips())) == 1


def test_uint16_one_stretch_per_raster(tmp_path):
    data = np.zeros((4, 256, 512), np.uint16)
    ramp = np.arange(256 * 256).reshape(256, 256)
    data[:, :, :256] = 1000 + ramp * 1000 // ramp.max()  # left chip 1000..2000
    data[:, :, 256:] = 1000 + ramp * 3000 // ramp.max()  # right chip 1000..4000
    data[3] = 7  # NIR-like 4th band, ignored
    path = write_raster(tmp_path / "s2like.tif", data)
    with open_raster(path, gsd="native", tile=256, overlap=0.0, out_size=256, resampling=Resampling.nearest) as src:
        stretch = src.info.stretch
        json.dumps(src.info.to_dict())  # JSON-able, so an index can record it
        assert stretch["kind"] == "percentile" and src.bands == (1, 2, 3)
        assert stretch["low"][0] == pytest.approx(np.percentile(data[0], 2), rel=0.01)
        assert stretch["high"][0] == pytest.approx(np.percentile(data[0], 98), rel=0.01)
        left, right = [c for batch in src.iter_chips() for c in batch]
    raw_l, raw_r = data[0, :, :256], data[0, :, 256:]
    for value in np.intersect1d(raw_l, raw_r)[::50]:  # equal raw values -> equal uint8, across chips
        a, b = left.pixels[..., 0][raw_l == value], right.pixels[..., 0][raw_r == value]
        assert len(set(a.tolist()) | set(b.tolist())) == 1
    assert left.pixels.max() < 200 and right.pixels.max() == 255  # not stretched chip by chip
    with open_raster(path, gsd="native", tile=256, overlap=0.0, out_size=256, stretch=stretch,
                     resampling=Resampling.nearest) as src:  # a recorded stretch reads the same pixels
        assert np.array_equal(src.read_chip(Window(0, 0, 256, 256)).pixels, left.pixels)


# --------------------------------------------------------------------------- tiling


def test_plan_shifts_last_row_and_column_inside():
    plan = plan_tiles(1000, 700, 256, 256, overlap=0.5)
    assert plan.col_starts == (0, 128, 256, 384, 512, 640, 744)
    assert plan.row_starts == (0, 128, 256, 384, 444)
    assert len(list(plan.windows())) == len(plan) == 35
    assert all(w.col_off + w.width <= 1000 and w.row_off + w.height <= 700 for w in plan.windows())
    assert plan_tiles(512, 512, 256, 256, overlap=0.0).col_starts == (0, 256)


def test_last_window_inside_on_a_raster(tmp_path):
    path = write_raster(tmp_path / "odd.tif", noise((3, 300, 420)), res=0.3)
    with open_raster(path, overlap=0.5, out_size=16) as src:  # 0.3 m native: windows of 256 px
        windows = [c.meta.window for batch in src.iter_chips() for c in batch]
    assert (164, 44, 256, 256) in windows and len(windows) == 6  # cols 0, 128, 164; rows 0, 44
    assert all(c + w <= 420 and r + h <= 300 for c, r, w, h in windows)


def test_raster_smaller_than_one_tile_gives_one_chip(tmp_path):
    path = write_raster(tmp_path / "small.tif", noise((3, 80, 100)), res=0.3)
    with open_raster(path) as src:
        chips = [c for batch in src.iter_chips() for c in batch]
    assert len(chips) == 1 and chips[0].meta.window == (0, 0, 256, 256)  # read boundless at full size, never stretched
    assert chips[0].pixels.shape == (224, 224, 3) and chips[0].pixels.dtype == np.uint8


def test_no_crs_is_a_clear_error_unless_native(tmp_path):
    path = write_raster(tmp_path / "nocrs.tif", noise((3, 64, 64)), crs=None)
    with pytest.raises(RasterError, match="no coordinate reference system.*gsd='native'"):
        with open_raster(path):
            pass
    with open_raster(path, gsd="native", tile=64, out_size=16) as src:
        (chip,) = next(src.iter_chips())
        assert chip.meta.footprint is None and chip.meta.centroid is None and src.info.crs is None
        with pytest.raises(RasterError, match="no CRS"):
            src.window_for_point(10.0, 50.0)


def test_large_compressible_raster_streams(tmp_path):
    """20000 x 20000, deflate, tiled, written one strip of blocks at a time; plan and a few chips only."""
    path = tmp_path / "huge.tif"
    profile = dict(driver="GTiff", width=20000, height=20000, count=1, dtype="uint8", crs=UTM33,
                   transform=from_origin(500000, 5000000, 0.3, 0.3), tiled=True, blockxsize=512,
                   blockysize=512, compress="deflate")
    block = np.tile((np.arange(512, dtype=np.uint8) // 4)[None, :], (512, 40))[:, :20000]
    with rasterio.open(path, "w", **profile) as ds:
        for row in range(0, 20000, 512):
            h = min(512, 20000 - row)
            ds.write((block[:h] + (row // 512) % 7 * 20)[None], window=Window(0, row, 20000, h))
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with open_raster(path, out_size=64) as src:
        assert len(src.plan) == len(src.plan.col_starts) ** 2 == 156 ** 2  # 155 strides + the shifted last
        assert src.plan.col_starts[-2:] == (19712, 20000 - 256)
        chips = [c for batch in itertools.islice(src.iter_chips(batch_size=8), 3) for c in batch]
    assert len(chips) == 24 and all(c.pixels.shape == (64, 64, 3) for c in chips)
    assert chips[0].meta.window == (0, 0, 256, 256) and src.info.bands == (1, 1, 1)
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before) / 1024
    assert grown_mb < 150  # the whole band would be 400 MB


# --------------------------------------------------------------------------- places


def test_point_and_box_reads(rasters_dir):
    with open_raster(rasters_dir / "cogeo.tif", out_size=32) as src:
        windows = list(src.plan.windows())
        meta = src.read_chip(windows[len(windows) // 2]).meta
        assert src.window_for_point(*meta.centroid).flatten() == meta.window
        box_chip = src.read_box(*meta.bbox)
        c, r, w, h = box_chip.meta.window
        assert abs(c - meta.window[0]) <= 1 and abs(r - meta.window[1]) <= 1 and abs(w - meta.window[2]) <= 2
        assert box_chip.pixels.shape == (32, 32, 3)
        with pytest.raises(RasterError, match="does not overlap"):
            src.read_box(0.0, 0.0, 0.01, 0.01)
        with pytest.raises(RasterError, match="outside"):
            src.window_for_point(0.0, 0.0)


# --------------------------------------------------------------------------- GeoJSON, CSV, overlaps


def assert_rfc7946(fc: dict) -> None:
    """The RFC 7946 structure of a FeatureCollection of Polygons (or null geometries)."""
    assert fc["type"] == "FeatureCollection" and isinstance(fc["features"], list)
    for feature in fc["features"]:
        assert feature["type"] == "Feature" and isinstance(feature["properties"], dict)
        geometry = feature["geometry"]
        if geometry is None:
            continue
        assert geometry["type"] == "Polygon" and isinstance(geometry["coordinates"], list)
        exterior = geometry["coordinates"][0]
        assert len(exterior) >= 4 and exterior[0] == exterior[-1]
        assert all(len(p) == 2 and -180 <= p[0] <= 180 and -90 <= p[1] <= 90 for p in exterior)
        assert shoelace(exterior) > 0  # exterior counter-clockwise (right-hand rule)
        west, south, east, north = feature["bbox"]
        assert west <= east and south <= north


def test_geojson_and_csv_export(rasters_dir, tmp_path):
    with open_raster(rasters_dir / "cogeo.tif", out_size=16) as src:
        metas = [src.read_chip(w).meta for w in itertools.islice(src.plan.windows(), 3)]
    results = [dict(rank=i + 1, distance=i, id=10 + i, footprint=m.footprint, centroid=m.centroid,
                    raster=m.raster_path, window=m.window) for i, m in enumerate(metas)]
    results.append({"rank": 4, "distance": np.int64(5), "id": 99, "footprint": None})
    clockwise = [[0, 0], [0, 1], [1, 1], [1, 0], [0, 0]]
    results.append({"rank": 5, "footprint": clockwise})
    fc = json.loads(footprints.write_geojson(tmp_path / "hits.geojson", results).read_text())
    assert_rfc7946(fc)
    first = fc["features"][0]
    assert first["properties"]["rank"] == 1 and "footprint" not in first["properties"]
    assert first["geometry"]["coordinates"][0][0][0] == pytest.approx(metas[0].footprint[0][0], abs=1e-7)
    assert fc["features"][3]["geometry"] is None and fc["features"][3]["properties"]["distance"] == 5
    text = footprints.write_csv(tmp_path / "hits.csv", results[:3]).read_text().splitlines()
    assert text[0].startswith("lon,lat,") and "rank" in text[0] and "window" not in text[0]
    lon, lat = (float(v) for v in text[1].split(",")[:2])
    assert (lon, lat) == pytest.approx(metas[0].centroid)


def test_suppress_overlaps_keeps_rank_order():
    square = lambda x, y: [[x, y], [x + 1, y], [x + 1, y + 1], [x, y + 1], [x, y]]  # noqa: E731
    fps = [square(0, 0), square(0.5, 0), square(5, 5), None, square(0.2, 0.0)]
    assert footprints.suppress_overlaps(fps, max_overlap=0.3) == [0, 2, 3]
    assert footprints.suppress_overlaps(fps, max_overlap=0.6) == [0, 1, 2, 3]
    assert footprints.suppress_overlaps(fps, max_overlap=0.3, measure="iou") == [0, 2, 3]
    assert footprints.overlap(fps[0], fps[1], "iou") == pytest.approx(1 / 3)


# --------------------------------------------------------------------------- SQLite geo tables


def test_geo_tables_rtree_queries(rasters_dir):
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE images (id INTEGER PRIMARY KEY, path TEXT)")
    tables.create_tables(conn)
    with open_raster(rasters_dir / "cogeo.tif", out_size=16) as src:
        metas = [c.meta for batch in src.iter_chips() for c in batch]
        info = src.info
    conn.execute("BEGIN")
    ids = [conn.execute("INSERT INTO images (path) VALUES ('x')").lastrowid for _ in metas]
    raster_id = tables.insert_raster(conn, info)
    assert tables.insert_chips(conn, raster_id, zip(ids, metas)) == len(metas)
    assert conn.in_transaction  # nothing committed inside
    assert tables.find_raster(conn, info.path, info.sha256) == raster_id
    assert tables.get_raster(conn, raster_id)["stretch"] == {"kind": "none"}
    assert len(tables.indexed_windows(conn, raster_id)) == len(metas)

    m = metas[len(metas) // 2]
    lon0, lat0, lon1, lat1 = m.bbox
    box = (lon0 + 0.3 * (lon1 - lon0), lat0 + 0.3 * (lat1 - lat0), lon1, lat1)
    brute = [i for i, mm in zip(ids, metas) if mm.bbox[0] <= box[2] and mm.bbox[2] >= box[0]
             and mm.bbox[1] <= box[3] and mm.bbox[3] >= box[1]]
    assert tables.ids_in_bbox(conn, *box) == brute and len(brute) > 1
    k = metas.index(m)
    assert tables.chip_at(conn, *m.centroid) == ids[k]
    assert tables.chip_at(conn, 0.0, 0.0) is None
    rows = tables.get_chips(conn, [ids[k], 10**9, ids[0]])
    assert [r["item_id"] for r in rows] == [ids[k], ids[0]]
    assert rows[0]["window"] == m.window and rows[0]["centroid"] == pytest.approx(m.centroid)
    assert rows[0]["footprint"]["coordinates"][0] == [list(p) for p in m.footprint]
    assert rows[0]["raster_path"] == info.path
    tables.delete_chips(conn, [ids[k]])
    assert conn.execute("SELECT count(*) FROM chips_rtree").fetchone()[0] == len(metas) - 1
    conn.rollback()
    assert conn.execute("SELECT count(*) FROM chips").fetchone()[0] == 0
