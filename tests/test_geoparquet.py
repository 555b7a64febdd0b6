"""GeoParquet export: schema and GeoParquet 1.1 metadata, a round trip of every field through pyarrow (codes,
descriptors, footprints, dates, windows; nulls for plain images), a bbox-filtered read on the covering column,
the CLI, and an atomic write (a failed export keeps the previous file)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
import shapely

from rshash.cli import main as cli_main
from rshash.data.datasets import ImageRecord
from rshash.index import Index
from scenes import write_scenes

NAIP = "naip_m_3211605_ne_11_060_20200415.tif"


@pytest.fixture(scope="module")
def exported(raster_index_dir, tmp_path_factory):
    """The shared raster index plus three plain images, exported."""
    root = tmp_path_factory.mktemp("geoparquet")
    index_dir = shutil.copytree(raster_index_dir, root / "index")
    images = write_scenes(root / "images", ("a", "b"), per_class=2, seed=1)
    with Index.open(index_dir) as index:
        index.add_paths([ImageRecord(str(p), "a") for p in sorted((images / "a").glob("*.png"))]
                  + [ImageRecord(str(images / "b" / "0.png"))], progress=False)
        summary = index.export_geoparquet(root / "index.parquet", progress=False)
    return index_dir, root / "index.parquet", summary


def test_schema_and_geoparquet_metadata(exported):
    _, path, summary = exported
    schema = pq.read_schema(path)
    assert schema.field("code").type == pa.binary(4)  # 32 bits packed
    assert schema.field("descriptor").type == pa.list_(pa.int8(), 128)
    assert schema.field("window").type == pa.list_(pa.int32(), 4)
    assert schema.field("datetime").type == pa.timestamp("ms", tz="UTC")
    geo = json.loads(schema.metadata[b"geo"])
    assert geo["version"] == "1.1.0" and geo["primary_column"] == "geometry"
    column = geo["columns"]["geometry"]
    assert column["encoding"] == "WKB" and column["geometry_types"] == ["Polygon"]
    assert column["crs"]["id"] == {"authority": "OGC", "code": "CRS84"}
    assert column["covering"]["bbox"]["xmin"] == ["bbox", "xmin"]
    west, south, east, north = column["bbox"]
    assert west < -116 and east > 128 and south < 33 < north  # NAIP in California, cogeo in Korea
    meta = json.loads(schema.metadata[b"rshash"])
    assert meta["model"]["bits"] == 32 and meta["model"]["fingerprint"]
    assert [r["path"].rsplit("/", 1)[-1] for r in meta["rasters"]] == ["cogeo.tif", NAIP]
    assert meta["rasters"][0]["tiling"]["tile"] == 512
    assert summary["rows"] == 24 and summary["chips"] == 21 and summary["bytes"] == path.stat().st_size


def test_every_field_round_trips(exported):
    index_dir, path, _ = exported
    rows = pq.read_table(path).to_pylist()
    with Index.open(index_dir) as index:
        assert [r["id"] for r in rows] == list(range(1, len(index) + 1))
        chips = index.geo.chips([r["id"] for r in rows])
        for r in rows:
            meta = index.get(r["id"])
            assert r["code"] == meta.code and bytes(np.array(r["descriptor"], dtype=np.int8)) == meta.descriptor
            assert (r["path"], r["label"]) == (meta.path, meta.label)
            chip = chips.get(r["id"])
            if chip is None:  # a plain image: no place
                assert r["geometry"] is None and r["bbox"] is None and r["window"] is None and r["datetime"] is None
                continue
            assert shapely.from_wkb(r["geometry"]).equals(shapely.geometry.shape(chip["footprint"]))
            assert r["window"] == list(chip["window"]) and r["raster_id"] == chip["raster_id"]
            assert (r["lon"], r["lat"]) == pytest.approx(chip["centroid"])
            assert r["bbox"] == pytest.approx({"xmin": chip["lon_min"], "ymin": chip["lat_min"],
                                               "xmax": chip["lon_max"], "ymax": chip["lat_max"]})
            if r["raster"].endswith(NAIP):  # the date from the file name, an instant
                assert r["datetime"].isoformat() == "2020-04-15T00:00:00+00:00" and r["datetime_end"] is None
            else:
                assert r["datetime"] is None
    assert sum(r["label"] == "a" for r in rows) == 2


def test_a_bbox_filtered_read_uses_the_covering_column(exported):
    _, path, _ = exported
    korea = (pc.field("bbox", "xmin") <= 129.0) & (pc.field("bbox", "xmax") >= 128.0) \
        & (pc.field("bbox", "ymin") <= 38.0) & (pc.field("bbox", "ymax") >= 37.0)
    table = ds.dataset(path).to_table(filter=korea, columns=["id", "raster", "geometry"])
    assert table.num_rows == 9 and {r.rsplit("/", 1)[-1] for r in table.column("raster").to_pylist()} == {"cogeo.tif"}


def test_cli_export_and_a_failed_export_keeps_the_previous_file(exported, tmp_path, capsys, monkeypatch):
    index_dir, _, _ = exported
    out = tmp_path / "out.parquet"
    assert cli_main(["export", "--index", str(index_dir), "--geoparquet", str(out)]) == 0
    assert "wrote 24 items (21 raster chips)" in capsys.readouterr().out
    before = out.read_bytes()

    from rshash.index import geoparquet

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(geoparquet, "_batch", broken)
    assert cli_main(["export", "--index", str(index_dir), "--geoparquet", str(out)]) == 2
    assert "disk full" in capsys.readouterr().err
    assert out.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["out.parquet"]
    assert cli_main(["export", "--index", str(tmp_path / "nowhere"), "--geoparquet", str(out)]) == 2
