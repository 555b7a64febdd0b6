"""STAC in: an ItemCollection and a Catalog written here from the shared rasters (pystac), indexed with the
bands their ``eo:bands`` / ``bands`` name, the Items' dates, and skips with reasons (remote href, bands split
over assets, a missing file) that never stop the run."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import pystac
import pytest

from rshash.cli import main as cli_main
from rshash.geo.stac import read_stac
from rshash.index import Index

NAIP = "naip_m_3211605_ne_11_060_20200415.tif"
BBOX = [-180.0, -90.0, 180.0, 90.0]
GEOMETRY = {"type": "Polygon", "coordinates": [[[-180, -90], [180, -90], [180, 90], [-180, 90], [-180, -90]]]}


def _item(item_id: str, when: datetime | None, assets: dict[str, pystac.Asset], **props) -> pystac.Item:
    item = pystac.Item(item_id, GEOMETRY, BBOX, when, dict(props) | (
        {} if when else {"start_datetime": "2019-06-01T00:00:00Z", "end_datetime": "2019-08-31T23:59:59Z"}))
    for key, asset in assets.items():
        item.add_asset(key, asset)
    return item


def _tiff(href: str, bands: list[str] | None = None, key: str = "eo:bands", **extra) -> pystac.Asset:
    fields = dict(extra)
    if bands is not None:
        fields[key] = [{"name": b, "common_name": b} if key == "eo:bands" else {"name": b, "eo:common_name": b}
                       for b in bands]
    return pystac.Asset(href, media_type=pystac.MediaType.COG, roles=["data"], extra_fields=fields)


@pytest.fixture(scope="module")
def item_collection(tmp_path_factory, shared_rasters) -> Path:
    naip, cogeo = shared_rasters / NAIP, shared_rasters / "cogeo.tif"
    items = [
        # STAC 1.0 eo:bands, a 4-band NAIP: red, green, blue, nir -> bands 1, 2, 3; the Item's date wins
        _item("naip", datetime(2020, 4, 16, 18, 30, tzinfo=timezone.utc),
              {"image": _tiff(str(naip), ["red", "green", "blue", "nir"], gsd=0.6)}),
        # STAC 1.1 bands, declared blue, green, red -> read as 3, 2, 1; a file:// href; an interval
        _item("cogeo", None, {"rgb": _tiff(cogeo.as_uri(), ["blue", "green", "red"], key="bands"),
                              "thumbnail": pystac.Asset("thumb.png", media_type=pystac.MediaType.PNG,
                                                        roles=["thumbnail"])}),
        _item("remote", datetime(2021, 1, 1, tzinfo=timezone.utc),
              {"visual": _tiff("https://example.invalid/scene.tif")}),
        _item("split", datetime(2021, 1, 1, tzinfo=timezone.utc),
              {"B04": _tiff(str(cogeo), ["red"]), "B03": _tiff(str(cogeo), ["green"]),
               "B02": _tiff(str(cogeo), ["blue"])}),
        _item("missing", datetime(2021, 1, 1, tzinfo=timezone.utc),
              {"visual": _tiff(str(shared_rasters / "no_such_file.tif"))}),
    ]
    path = tmp_path_factory.mktemp("stac") / "items.json"
    path.write_text(json.dumps(pystac.ItemCollection(items).to_dict()))
    return path


def test_items_are_read_with_their_assets_bands_and_dates(item_collection):
    rasters = {r.item_id: r for r in read_stac(item_collection)}
    naip, cogeo = rasters["naip"], rasters["cogeo"]
    assert (naip.asset, naip.bands, naip.gsd, naip.acquired.start) == ("image", (1, 2, 3), 0.6, "2020-04-16T18:30:00Z")
    assert (cogeo.asset, cogeo.bands) == ("rgb", (3, 2, 1)) and cogeo.path.name == "cogeo.tif"
    assert (cogeo.acquired.start, cogeo.acquired.end) == ("2019-06-01T00:00:00Z", "2019-08-31T23:59:59Z")
    assert rasters["remote"].path is None and "remote href" in rasters["remote"].reason
    assert rasters["split"].path is None and "separate assets" in rasters["split"].reason
    assert rasters["missing"].path is None and "not found" in rasters["missing"].reason
    with pytest.raises(FileNotFoundError):
        read_stac(item_collection.parent / "nowhere.json")
    (item_collection.parent / "other.json").write_text('{"type": "Topology"}')
    with pytest.raises(ValueError, match="ItemCollection"):
        read_stac(item_collection.parent / "other.json")


def test_rshash_index_stac(item_collection, small_model_dir, tmp_path, capsys):
    out = tmp_path / "index"
    assert cli_main(["index", "--out", str(out), "--model", str(small_model_dir), "--stac", str(item_collection),
                     "--gsd", "native", "--tile", "512"]) == 0
    printed = capsys.readouterr().out
    assert "(STAC item naip)" in printed and "acquired 2020-04-16 (stac)" in printed
    report = json.loads((out / "add_report.json").read_text())
    assert {Path(s["path"]).name for s in report["skipped"]} >= {"items.json#remote", "items.json#split",
                                                              "items.json#missing"}
    with Index.open(out) as index:
        rows = {r["name"]: r for r in index.rasters()}
    assert rows[NAIP]["bands"] == [1, 2, 3] and rows["cogeo.tif"]["bands"] == [3, 2, 1]
    assert rows[NAIP]["datetime"] == "2020-04-16T18:30:00Z"  # the Item's, not the file name's 2020-04-15
    assert rows["cogeo.tif"]["datetime_end"] == "2019-08-31T23:59:59Z"


def test_a_catalog_with_relative_asset_hrefs(tmp_path, shared_rasters):
    data = tmp_path / "catalog" / "data"
    data.mkdir(parents=True)
    (data / "scene.tif").symlink_to(shared_rasters / "cogeo.tif")
    catalog = pystac.Catalog("c", "test catalogue")
    catalog.add_item(_item("scene", datetime(2018, 5, 1, tzinfo=timezone.utc),
                           {"visual": _tiff(str(data / "scene.tif"))}))
    catalog.normalize_hrefs(str(tmp_path / "catalog"))
    catalog.make_all_asset_hrefs_relative()
    catalog.save(pystac.CatalogType.SELF_CONTAINED)
    rasters = read_stac(tmp_path / "catalog" / "catalog.json")
    assert [(r.item_id, r.path.resolve(), r.bands) for r in rasters] == [
        ("scene", (shared_rasters / "cogeo.tif").resolve(), None)]


def test_rasters_and_hits_out_as_stac_item_collections(raster_index_dir, tmp_path, capsys):
    rasters_json, hits_json = tmp_path / "rasters.json", tmp_path / "hits.json"
    assert cli_main(["export", "--index", str(raster_index_dir), "--stac", str(rasters_json)]) == 0
    collection = pystac.ItemCollection.from_file(str(rasters_json))
    by_name = {Path(i.assets["data"].get_absolute_href()).name: i for i in collection}
    naip, cogeo = by_name[NAIP], by_name["cogeo.tif"]
    assert naip.datetime.isoformat() == "2020-04-15T00:00:00+00:00"  # from the file name
    assert naip.properties["proj:code"].startswith("EPSG:") and naip.properties["proj:shape"] == [204, 266]
    assert cogeo.properties["rshash:datetime_unknown"] is True and cogeo.datetime is None
    for item in collection:  # (schema validation would fetch the schemas: the fields are checked here)
        assert len(item.properties["proj:transform"]) == 6 and item.bbox[0] < item.bbox[2]

    assert cli_main(["search", "--index", str(raster_index_dir), "--id", "1", "--k", "3", "--stac",
                     str(hits_json)]) == 0
    assert "wrote" in capsys.readouterr().out
    hits = list(pystac.ItemCollection.from_file(str(hits_json)))
    assert len(hits) == 3 and [h.properties["rshash:rank"] for h in hits] == [1, 2, 3]
    for h in hits:
        col, row, width, height = h.assets["data"].extra_fields["rshash:window"]
        assert h.properties["proj:shape"] == [height, width]
        with Index.open(raster_index_dir) as index:
            chip = index.geo.chips([int(h.id.split("-")[1])])[int(h.id.split("-")[1])]
        assert list(chip["window"]) == [col, row, width, height]
        # the Item's transform places the chip's first pixel at its window's corner in the raster CRS
        a, b, c, d, e, f = h.properties["proj:transform"]
        assert (c, f) == pytest.approx((chip["x_min"], chip["y_max"]), abs=1e-6)
