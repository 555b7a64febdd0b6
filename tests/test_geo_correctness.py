"""Geo answers that are right (issue 16, item 1): box searches at the index's scale, boundless (never stretched)
windows, the antimeridian, and palette rasters read through their colour table.

Synthetic rasters written with rasterio in tmp_path; one small index (module scope) of a UTM raster of 81 chips
and a geographic raster across 180 degrees.
"""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

import numpy as np
import pytest
import rasterio
import shapely
from fastapi.testclient import TestClient
from rasterio.enums import ColorInterp
from rasterio.transform import from_origin
from rasterio.windows import Window

from rshash.geo import footprints, tables
from rshash.geo import queries as geo_queries
from rshash.geo.crs import footprint_lonlat
from rshash.geo.overlays import render_overlay
from rshash.geo.catalog import parse_box, parse_lonlat
from rshash.geo.source import open_raster
from rshash.geo.tiling import chip_path, parse_chip_path, plan_tiles
from rshash.index import Index

UTM11 = "EPSG:32611"


def write(path: Path, data: np.ndarray, crs: str = UTM11, transform=None, **profile) -> Path:
    count, height, width = data.shape
    kwargs = dict(driver="GTiff", width=width, height=height, count=count, dtype=data.dtype.name, crs=crs,
                  transform=transform or from_origin(500000, 4000000, 1.0, 1.0)) | profile
    with rasterio.open(path, "w", **kwargs) as ds:
        ds.write(data)
    return path


def noise(shape, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, shape).astype(np.uint8)


#: A geographic raster across 180 degrees: 200 x 200 px of 1e-4 degrees from lon 179.99 (to 180.01).
DATELINE = from_origin(179.99, 10.01, 1e-4, 1e-4)


@pytest.fixture(scope="module")
def geo_index(tmp_path_factory, small_model_dir) -> Path:
    base = tmp_path_factory.mktemp("geo-correctness")
    wide = write(base / "wide.tif", noise((3, 640, 640), 1))  # tile 128, overlap 0.5: 9 x 9 = 81 chips
    dateline = write(base / "dateline.tif", noise((3, 200, 200), 2), crs="EPSG:4326", transform=DATELINE)
    with Index.create(base / "index", small_model_dir) as index:
        for path in (wide, dateline):
            index.add_rasters(path, batch_size=32, progress=False, gsd="native", tile=128, overlap=0.5)
    return base / "index"


def chip_rows(index_dir: Path, name: str) -> list[tuple]:
    with closing(sqlite3.connect(index_dir / "meta.sqlite")) as conn:
        return conn.execute("SELECT c.item_id, c.col_off, c.row_off, c.width, c.height, c.lon_min, c.lon_max "
                            "FROM chips c JOIN rasters r ON r.id = c.raster_id WHERE r.path LIKE ? "
                            "ORDER BY c.item_id", (f"%{name}",)).fetchall()


def lonlat_of_pixel(col: float, row: float) -> tuple[float, float]:
    """Lon/lat of a pixel of wide.tif (UTM 11N, 1 m, top-left 500000, 4000000)."""
    import pyproj
    return pyproj.Transformer.from_crs(UTM11, "EPSG:4326", always_xy=True).transform(500000 + col, 4000000 - row)


def pixel_box(c0: float, r0: float, c1: float, r1: float) -> tuple[float, float, float, float]:
    """The lon/lat box of a pixel rectangle of wide.tif, shrunk a hair inside."""
    (w, n), (e, s) = lonlat_of_pixel(c0 + 0.05, r0 + 0.05), lonlat_of_pixel(c1 - 0.05, r1 - 0.05)
    return w, s, e, n


# --------------------------------------------------------------------------- 1. box search at the index's scale


def test_small_box_is_one_tile_sized_window_centred_on_it(geo_index):
    """A box of 50 x 40 px is read as one 128 x 128 window (the raster's chip size) centred on it, not resized
    whole to the model input (HEAD read the 50 x 40 window and stretched it)."""
    with Index.open(geo_index) as index:
        query = index.geo.box_query(pixel_box(300, 200, 350, 240))
        assert query.described["window"] == [325 - 64, 220 - 64, 128, 128]
        # up to 1.5 tiles a side is still one window
        assert index.geo.box_query(pixel_box(100, 100, 290, 290)).described["window"] == [195 - 64, 195 - 64, 128, 128]


def test_box_near_the_edge_reads_boundless_padding_as_nodata(tmp_path):
    """A box partly outside its raster keeps the full tile size (HEAD clipped it per axis and stretched it)."""
    path = write(tmp_path / "r.tif", np.full((3, 300, 300), 200, np.uint8))
    with open_raster(path, gsd="native", tile=128, out_size=64) as src:
        box = (*lonlat_of_pixel(-40, 80), *lonlat_of_pixel(40, 0))  # cols -40..40, rows 0..80
        chip = src.read_box(*box, size=(128, 128))
    c, r, width, height = chip.meta.window
    assert (width, height) == (128, 128) and c == -64 and r == -24
    assert chip.meta.valid_fraction == pytest.approx((128 - 64) * (128 - 24) / 128 ** 2, abs=0.03)
    # 64 px output: padding left of column 32 and above row 12
    assert chip.pixels[:, :30].max() == 0 and chip.pixels[:10].max() == 0 and chip.pixels[14:, 34:].min() == 200


def test_box_of_several_tiles_is_a_query_of_its_chips(geo_index):
    """A box of 2.5 x 2.5 tiles: the indexed chips whose centres it holds, as one multi-example query."""
    with Index.open(geo_index) as index:
        query = index.geo.box_query(pixel_box(0, 0, 320, 320))
        rows = chip_rows(geo_index, "wide.tif")
        expected = sorted(i for i, c, r, w, h, *_ in rows if c + w / 2 < 320 and r + h / 2 < 320)
        assert query.described["ids"] == expected and 1 < len(expected) <= geo_queries.BOX_MAX_CHIPS
        hits = index.search_box(pixel_box(0, 0, 320, 320), k=5, max_overlap=None)
        assert hits and not {h.id for h in hits} & set(expected)


def test_box_too_large_is_a_clear_422(geo_index):
    with Index.open(geo_index) as index:
        with pytest.raises(geo_queries.BoxTooLarge, match=f"at most {geo_queries.BOX_MAX_CHIPS} indexed chips"):
            index.geo.box_query(pixel_box(0, 0, 640, 640))  # 81 chips
        with pytest.raises(geo_queries.BoxTooLarge, match="1.5 tiles"):
            index.geo.box_query(pixel_box(0, 0, 640, 400))  # 9 x 6 centres
    from rshash.service.app import create_app
    with TestClient(create_app(geo_index), base_url="http://127.0.0.1:8000") as client:
        r = client.get("/api/geo/search", params={"box": ",".join(map(str, pixel_box(0, 0, 640, 640)))})
    assert r.status_code == 422 and "at most 16 indexed chips" in r.json()["detail"]


# --------------------------------------------------------------------------- 2. windows never clipped


def test_raster_narrower_than_a_window_keeps_the_full_window():
    plan = plan_tiles(100, 80, 256, 256)
    assert [tuple(w.flatten()) for w in plan.windows()] == [(0, 0, 256, 256)]
    assert tuple(plan.window_containing(99, 79).flatten()) == (0, 0, 256, 256)
    tall = plan_tiles(100, 700, 256, 256, overlap=0.5)  # one short axis, the other tiled as before
    assert {(w.width, w.height) for w in tall.windows()} == {(256, 256)} and tall.row_starts[-1] == 444
    path = chip_path("/data/small.tif", (0, 0, 256, 256))
    assert parse_chip_path(path) == ("/data/small.tif", (0, 0, 256, 256))
    assert parse_chip_path(chip_path("/d/a#b.tif", (-64, -24, 128, 128))) == ("/d/a#b.tif", (-64, -24, 128, 128))


def test_small_raster_chip_is_padded_not_stretched(tmp_path):
    """A 100 x 80 raster in a 256 px window: the data fill the top-left 100/256 of the chip, the rest is
    padding (nodata, black), and the footprint is the window read."""
    data = np.zeros((3, 80, 100), np.uint8)
    data[:, :, :50] = 200
    data[:, :, 50:] = 60
    data += noise((3, 80, 100), 3) % 8  # not flat
    path = write(tmp_path / "small.tif", data, transform=from_origin(500000, 4000000, 0.3, 0.3))
    with open_raster(path, out_size=224) as src:  # gsd auto = 0.3 m: windows of 256 px
        chips = [c for batch in src.iter_chips() for c in batch]
    assert len(chips) == 1
    chip = chips[0]
    assert chip.meta.window == (0, 0, 256, 256) and chip.pixels.shape == (224, 224, 3)
    scale = 224 / 256
    assert chip.pixels[:60, int(40 * scale)].min() >= 200 and chip.pixels[:60, int(60 * scale)].max() < 70
    assert chip.pixels[:, int(110 * scale):].max() == 0 and chip.pixels[int(90 * scale):].max() == 0
    assert chip.meta.valid_fraction == pytest.approx(100 * 80 / 256 ** 2, abs=0.01)
    with rasterio.open(path) as ds:
        left, bottom, right, top = rasterio.windows.bounds(Window(0, 0, 256, 256), ds.transform)
    assert chip.meta.bounds == pytest.approx((left, bottom, right, top))


# --------------------------------------------------------------------------- 3. antimeridian


def test_projected_footprint_across_180_is_split():
    """UTM 60N, a window across 180 degrees: a MultiPolygon of two small parts, every longitude in range
    (HEAD gave one ring from 179.x to -179.x: the whole world, an invalid polygon)."""
    transform = from_origin(820000, 1200000, 10.0, 10.0)  # x 820-850 km: lon ~179.9 .. 180.2 at lat ~10.8
    fp = footprint_lonlat("EPSG:32660", transform, (0, 0, 3000, 3000), densify=8)
    assert isinstance(fp, dict) and fp["type"] == "MultiPolygon" and len(fp["coordinates"]) == 2
    geom = shapely.geometry.shape(fp)
    assert geom.is_valid and geom.area < 0.2
    assert all(-180 <= x <= 180 for part in fp["coordinates"] for x, _ in part[0])
    west, south, east, north = footprints.footprint_bbox(fp)
    assert 179 < west < 180 and -180 < east < -179 and south < north
    feature = footprints.feature_collection([{"rank": 1, "footprint": fp}])["features"][0]
    assert feature["geometry"]["type"] == "MultiPolygon"
    assert feature["bbox"] == pytest.approx([west, south, east, north], abs=1e-6)


def test_overlap_never_raises_and_handles_multipolygons():
    bowtie = [[0, 0], [1, 1], [1, 0], [0, 1], [0, 0]]  # self-crossing: GEOS raised TopologyException on HEAD
    square = [[0, 0], [1, 0], [1, 1], [0, 1], [0, 0]]
    assert 0.0 <= footprints.overlap(bowtie, square) <= 1.0
    assert footprints.suppress_overlaps([bowtie, square, None], 0.3) in ([0, 2], [0, 1, 2])
    across = {"type": "MultiPolygon", "coordinates": [[[[179.9, 0], [180, 0], [180, 1], [179.9, 1], [179.9, 0]]],
                                                      [[[-180, 0], [-179.9, 0], [-179.9, 1], [-180, 1], [-180, 0]]]]}
    west_half = [[-180, 0], [-179.9, 0], [-179.9, 1], [-180, 1], [-180, 0]]
    assert footprints.overlap(across, west_half) == pytest.approx(1.0)
    assert footprints.suppress_overlaps([across, west_half], 0.3) == [0]


def test_longitudes_are_wrapped_in_queries():
    assert parse_lonlat("181,10") == (-179.0, 10.0) and parse_lonlat((-180.5, 1)) == (179.5, 1.0)
    assert parse_lonlat("180,0") == (180.0, 0.0)
    assert parse_box("179,0,181,1") == (179.0, 0.0, -179.0, 1.0)  # across the antimeridian
    assert parse_box("-190,0,-170,1") == (170.0, 0.0, -170.0, 1.0)
    assert parse_box("-200,0,200,1") == (-180.0, 0.0, 180.0, 1.0)
    with pytest.raises(ValueError):
        parse_lonlat("0,91")


def test_raster_across_180_is_found_on_both_sides(geo_index):
    """Chips across 180 are stored split, with two R*Tree boxes; a click at -179.99+ finds them (HEAD stored
    longitudes past 180 and answered 'no indexed chip')."""
    rows = chip_rows(geo_index, "dateline.tif")
    crossing = [r for r in rows if r[5] > r[6]]
    assert len(rows) == 9 and crossing and all(179.989 < r[5] < 180 and -180 < r[6] < -179.989 for r in crossing)
    with closing(sqlite3.connect(geo_index / "meta.sqlite")) as conn:
        assert all(-180 <= lo <= hi <= 180 for lo, hi in conn.execute("SELECT lon_min, lon_max FROM chips_rtree"))
        assert conn.execute("SELECT COUNT(*) FROM chips_rtree WHERE item_id < 0").fetchone()[0] == len(crossing)
        east = tables.ids_in_bbox(conn, -179.9999, 9.99, -179.995, 10.0)
        both = tables.ids_in_bbox(conn, 179.999, 9.99, -179.999, 10.0)  # a box across 180
        assert east and len(east) == len(set(east)) and set(east) <= {r[0] for r in crossing}
        assert len(both) == len(set(both)) and set(both) >= set(east)
    with Index.open(geo_index) as index:
        west_side = index.geo.point_query(179.995, 10.0).described["chip"]
        east_side = index.geo.point_query(-179.997, 10.0).described["chip"]
        wrapped = index.geo.point_query(180.003, 10.0).described["chip"]
        assert east_side in {r[0] for r in crossing} and wrapped == east_side and west_side in {r[0] for r in rows}
        hits = index.search_places([east_side], k=5, max_overlap=0.3)  # MultiPolygon overlaps: no error
        assert all(-180 <= h.lon <= 180 for h in hits if h.lon is not None)
        query = index.geo.box_query((179.998, 9.998, -179.998, 10.0))  # a small box across 180
        col, row, width, height = query.described["window"]  # centred on column 100, row 110; tile 129 x 127
        assert (width, height) == (129, 127) and abs(col - (100 - 129 / 2)) <= 1 and abs(row - (110 - 127 / 2)) <= 1


def test_delete_removes_both_rtree_boxes(geo_index, tmp_path):
    import shutil
    index_dir = shutil.copytree(geo_index, tmp_path / "index")
    item = next(r[0] for r in chip_rows(index_dir, "dateline.tif") if r[5] > r[6])
    with Index.open(index_dir) as index:
        assert index.remove([item]) == [item]
    with closing(sqlite3.connect(index_dir / "meta.sqlite")) as conn:
        assert conn.execute("SELECT COUNT(*) FROM chips_rtree WHERE item_id IN (?, ?)", (item, -item)).fetchone()[0] == 0


def test_map_page_wraps_longitudes():
    js = (Path(__file__).resolve().parents[1] / "src/rshash/static/map.js").read_text()
    assert "ev.latlng.wrap()" in js and "wrapNum(v, [-180, 180], true)" in js
    assert "lonBox(b)" in js and js.count("eastOf(") >= 3


# --------------------------------------------------------------------------- 4. palette rasters


PALETTE = {0: (0, 0, 0, 255), 1: (255, 0, 0, 255), 2: (0, 255, 0, 255), 3: (0, 0, 255, 255)}


def palette_raster(path: Path) -> Path:
    index = np.zeros((1, 128, 128), np.uint8)
    index[:, :, :64] = 1
    index[:, :64, 64:] = 2
    index[:, 64:, 64:] = 3
    with rasterio.open(path, "w", driver="GTiff", width=128, height=128, count=1, dtype="uint8", crs=UTM11,
                       transform=from_origin(500000, 4000000, 1.0, 1.0), photometric="palette") as ds:
        ds.write(index)
        ds.write_colormap(1, PALETTE)
    with rasterio.open(path) as ds:
        assert ds.colorinterp[0] == ColorInterp.palette
    return path


def test_palette_raster_is_read_through_its_colour_table(tmp_path):
    """Chips, boxes and overlays show the colours (HEAD read the indices 1, 2, 3 as grey)."""
    path = palette_raster(tmp_path / "palette.tif")
    with open_raster(path, gsd="native", tile=128, out_size=64) as src:
        assert src.info.stretch == {"kind": "none"}
        chip = src.read_chip(Window(0, 0, 128, 128))
        assert chip.pixels[10, 10].tolist() == [255, 0, 0]
        assert chip.pixels[10, 50].tolist() == [0, 255, 0] and chip.pixels[50, 50].tolist() == [0, 0, 255]
        box = src.read_box(*lonlat_of_pixel(70, 120), *lonlat_of_pixel(120, 70), size=(32, 32))
        assert (box.pixels.reshape(-1, 3) == [0, 0, 255]).all(axis=1).mean() > 0.9
        row = src.info.to_dict() | {"id": 1}
        import io
        from PIL import Image
        png = Image.open(io.BytesIO(render_overlay(src, row, max_side=64))).convert("RGBA")
    rgba = np.asarray(png).reshape(-1, 4)
    opaque = rgba[rgba[:, 3] == 255][:, :3]
    assert {(255, 0, 0), (0, 255, 0), (0, 0, 255)} <= {tuple(p) for p in opaque.tolist()}
