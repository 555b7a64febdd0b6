"""The geo HTTP API and the map page's files: rasters with bounds, overlays (Web Mercator PNG, cached on disk),
chip thumbnails, search by point / box / ids with area of interest and radius, JSON / GeoJSON / CSV, errors."""

from __future__ import annotations

import csv
import io
import json
import shutil
import sqlite3
from contextlib import closing

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from rshash.geo import footprints
from rshash.index import Index
from rshash.service.app import create_app

NAIP = "naip_m_3211605_ne_11_060_20200415.tif"


@pytest.fixture(scope="module")
def index_dir(raster_index_dir, tmp_path_factory):
    return shutil.copytree(raster_index_dir, tmp_path_factory.mktemp("geo-service") / "index")


@pytest.fixture(scope="module")
def client(index_dir):
    with TestClient(create_app(index_dir), base_url="http://127.0.0.1:8000") as c:
        yield c


def chip(index_dir, raster_name: str, n: int) -> tuple[int, float, float]:
    with closing(sqlite3.connect(index_dir / "meta.sqlite")) as conn:
        return conn.execute("SELECT c.item_id, c.lon, c.lat FROM chips c JOIN rasters r ON r.id = c.raster_id "
                            "WHERE r.path LIKE ? ORDER BY c.item_id LIMIT 1 OFFSET ?", (f"%{raster_name}", n)).fetchone()


def test_rasters_and_overlays(client, index_dir):
    body = client.get("/api/geo/rasters").json()
    assert body["chips"] == 21 and [r["name"] for r in body["rasters"]] == ["cogeo.tif", NAIP]
    cogeo = body["rasters"][0]
    assert "path" not in cogeo  # never the server's paths
    lon_min, lat_min, lon_max, lat_max = cogeo["bounds"]
    assert 128 < lon_min < lon_max < 129 and 37 < lat_min < lat_max < 38  # longitude first
    assert body["bounds"][0] < -116 and body["bounds"][2] > 128
    # cogeo is already Web Mercator: its overlay covers exactly its bounds
    assert cogeo["overlay"]["bounds"] == pytest.approx(cogeo["bounds"], abs=1e-9)
    naip = body["rasters"][1]
    r = client.get(naip["overlay"]["url"])
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    with Image.open(io.BytesIO(r.content)) as img:
        assert img.mode == "RGBA" and img.size == (naip["overlay"]["width"], naip["overlay"]["height"])
        alpha = img.getchannel("A")
        assert alpha.getextrema() == (0, 255)  # UTM warped to Mercator: transparent corners, opaque data
    assert len(list((index_dir / "overlays").glob("raster-2-*.png"))) == 1  # cached on disk
    assert client.get(naip["overlay"]["url"]).content == r.content
    assert client.get("/api/geo/rasters/99/overlay.png").status_code == 404


def test_search_by_point_json_geojson_csv(client, index_dir):
    item, lon, lat = chip(index_dir, NAIP, 5)
    r = client.get("/api/geo/search", params={"lon": lon, "lat": lat, "k": 5})
    assert r.status_code == 200
    body = r.json()
    assert body["query"]["chip"] == item and body["query"]["footprints"][0]["type"] == "Polygon"
    assert 1 <= body["count"] <= 5 and [h["rank"] for h in body["results"]] == list(range(1, body["count"] + 1))
    first = body["results"][0]
    assert first["id"] != item and first["footprint"]["type"] == "Polygon" and len(first["window"]) == 4
    assert first["raster"] in ("cogeo.tif", NAIP) and first["thumbnail_url"] == f"/api/geo/chips/{first['id']}/thumbnail"
    own = body["query"]["footprints"][0]
    assert all(footprints.overlap(h["footprint"], own) <= 0.01 for h in body["results"])

    r = client.get("/api/geo/search", params={"lon": lon, "lat": lat, "k": 5, "format": "geojson"})
    assert r.headers["content-type"].startswith("application/geo+json")
    doc = r.json()
    assert doc["type"] == "FeatureCollection" and len(doc["features"]) == body["count"]
    feature = doc["features"][0]
    assert feature["geometry"]["type"] == "Polygon" and feature["properties"]["id"] == first["id"]
    ring = feature["geometry"]["coordinates"][0]
    assert ring[0] == ring[-1] and feature["bbox"] == list(footprints.ring_bbox(ring))

    r = client.get("/api/geo/search", params={"lon": lon, "lat": lat, "k": 5, "format": "csv"})
    assert r.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert list(rows[0])[:2] == ["lon", "lat"] and int(rows[0]["id"]) == first["id"]
    assert float(rows[0]["lon"]) == pytest.approx(first["lon"])


def test_search_by_box_ids_aoi_radius(client, index_dir):
    rasters = client.get("/api/geo/rasters").json()["rasters"]
    naip_bounds = rasters[1]["bounds"]
    w, s, e, n = naip_bounds
    box = f"{w + (e - w) * 0.3},{s + (n - s) * 0.3},{w + (e - w) * 0.6},{s + (n - s) * 0.6}"
    body = client.get("/api/geo/search", params={"box": box, "k": 4}).json()
    assert body["query"]["raster_id"] == 2 and len(body["query"]["window"]) == 4 and body["count"] >= 1

    aoi = ",".join(map(str, naip_bounds))
    body = client.get("/api/geo/search", params=[("id", 1), ("id", 2), ("aoi", aoi), ("k", 50),
                                                 ("max_overlap", 1)]).json()
    assert body["query"]["ids"] == [1, 2] and body["count"] == 12 and {h["raster"] for h in body["results"]} == {NAIP}

    item, lon, lat = chip(index_dir, "cogeo.tif", 0)
    body = client.get("/api/geo/search", params={"id": item, "radius": 12, "max_overlap": 1}).json()
    with Index.open(index_dir) as index:
        expected = [h.id for h in index.search_places(item, k=None, radius=12, max_overlap=1)]
    assert [h["id"] for h in body["results"]] == expected and all(h["distance"] <= 12 for h in body["results"])


def test_chip_thumbnail_and_pages(client, index_dir):
    item, _, _ = chip(index_dir, NAIP, 0)
    r = client.get(f"/api/geo/chips/{item}/thumbnail")
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
    with Image.open(io.BytesIO(r.content)) as img:
        assert img.size == (128, 128)
    assert client.get("/api/geo/chips/9999/thumbnail").status_code == 404
    page = client.get("/map")
    assert page.status_code == 200 and "/static/vendor/leaflet/leaflet.js" in page.text
    assert "https://" not in page.text.replace('href="https://leafletjs.com"', "")  # no CDN
    for path in ("/static/map.js", "/static/map.css", "/static/vendor/leaflet/leaflet.js",
                 "/static/vendor/leaflet/leaflet.css", "/static/vendor/leaflet/LICENSE"):
        assert client.get(path).status_code == 200, path
    assert client.get("/").status_code == 200  # the gallery page stays


@pytest.mark.parametrize("params, status, message", [
    ({"lon": 0, "lat": 0}, 404, "no indexed chip"),
    ({"box": "1,2,3"}, 422, "LONMIN,LATMIN,LONMAX,LATMAX"),
    ({"box": "10,10,10.1,10.1"}, 404, "no indexed raster covers"),
    ({"id": 9999}, 404, "no item with id 9999"),
    ({}, 422, "give one query"),
    ({"lon": 0}, 422, "give one query"),
    ({"id": 1, "radius": 99}, 422, "radius must be in 0..32"),
    ({"id": 1, "aoi": "0,0"}, 422, "LONMIN"),
    ({"id": 1, "format": "xml"}, 422, "format"),
])
def test_errors_are_json(client, params, status, message):
    r = client.get("/api/geo/search", params=params)
    assert r.status_code == status and message in r.json()["detail"], r.json()
