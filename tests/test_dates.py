"""Acquisition dates: parsed from text, file names and TIFF tags; recorded per raster at indexing; a date filter
on geo search (Python, CLI, HTTP); the same place in every acquisition, in date order."""

from __future__ import annotations

import json
import shutil

import pytest
from fastapi.testclient import TestClient

from rshash.cli import main as cli_main
from rshash.geo.dates import acquisition, check_datetime_option, parse_range, parse_time, time_from_name, time_from_tiff
from rshash.index import Index
from rshash.service.app import create_app

NAIP = "naip_m_3211605_ne_11_060_20200415.tif"
PAIR = ("naip_m_4709963_se_14_1_20090818.tif", "naip_m_4709963_se_14_1_20200831.tif")


@pytest.mark.parametrize("name, start, end", [
    (NAIP, "2020-04-15T00:00:00Z", None),
    ("m_4709963_se_14_1_20090818.tif", "2009-08-18T00:00:00Z", None),
    ("scene_2021-07-03_rgb.tif", "2021-07-03T00:00:00Z", None),
    ("landsat_ucayali_1985.tif", "1985-01-01T00:00:00Z", "1985-12-31T23:59:59Z"),  # a bare year: that year
    ("tile_0512_2019.tif", "2019-01-01T00:00:00Z", "2019-12-31T23:59:59Z"),  # 0512 is no year
])
def test_dates_from_file_names(name, start, end):
    found = time_from_name(name)
    assert (found.start, found.end, found.source) == (start, end, "file name")


@pytest.mark.parametrize("name", ["RGB.byte.tif", "cogeo.tif", "x_20200230.tif",  # no date; 30 February
                                  "s2_20200101_20200105.tif", "a_1999_2004.tif",  # two dates or years: ambiguous
                                  "id_123456789.tif"])  # a longer run of digits holds no date
def test_names_without_one_clear_date_give_none(name):
    assert time_from_name(name) is None


def test_times_intervals_and_filters():
    assert parse_time("2020-04-15T10:30:00+02:00") == ("2020-04-15T08:30:00Z", None)  # to UTC
    assert parse_time("20200415") == ("2020-04-15T00:00:00Z", None)
    assert parse_time("2020-02") == ("2020-02-01T00:00:00Z", "2020-02-29T23:59:59Z")
    assert parse_time("2009/2012") == ("2009-01-01T00:00:00Z", "2012-12-31T23:59:59Z")
    assert parse_range("2020-04-15") == ("2020-04-15T00:00:00Z", "2020-04-15T23:59:59Z")  # the whole day
    assert parse_range("2015/..") == ("2015-01-01T00:00:00Z", None)
    assert parse_range("../2010") == (None, "2010-12-31T23:59:59Z")
    for bad in ("", "yesterday", "2020-13", "2012/2009", "../..", "1850"):
        with pytest.raises(ValueError):
            parse_range(bad)
    with pytest.raises(ValueError, match="open interval"):
        parse_time("2015/..")  # an acquisition has both ends
    with pytest.raises(ValueError):
        check_datetime_option("last summer")
    assert check_datetime_option("tiff") == "tiff" and check_datetime_option("2019-06/2019-08") == "2019-06/2019-08"


def test_tiff_tags_only_when_asked():
    tags = {"TIFFTAG_DATETIME": "2023:01:05 12:00:00"}  # usually when the file was processed
    assert acquisition(NAIP, "auto", tags).start == "2020-04-15T00:00:00Z"
    assert acquisition(NAIP, "tiff", tags).start == "2023-01-05T12:00:00Z"
    assert acquisition(NAIP, "tiff", {"TIFFTAG_DATETIME": "garbage"}).start == "2020-04-15T00:00:00Z"
    assert time_from_tiff({}) is None
    assert acquisition(NAIP, "none") is None
    given = acquisition("cogeo.tif", "2019-06/2019-08")
    assert (given.start, given.end, given.source) == ("2019-06-01T00:00:00Z", "2019-08-31T23:59:59Z", "given")


@pytest.fixture(scope="module")
def pair_index(tmp_path_factory, small_model_dir, shared_rasters):
    """The NAIP place at two dates, plus a raster of unknown date."""
    path = tmp_path_factory.mktemp("dates") / "index"
    with Index.create(path, small_model_dir) as index:
        report = index.add_rasters([shared_rasters / n for n in PAIR], gsd="native", tile=128, overlap=0,
                                   progress=False)
        assert [r["datetime_source"] for r in report.rasters] == ["file name", "file name"]
        index.add_rasters(shared_rasters / "cogeo.tif", gsd="native", tile=512, overlap=0.5, progress=False)
    return path


def test_a_date_filter_keeps_only_chips_acquired_then(pair_index):
    with Index.open(pair_index) as index:
        dates = {r["name"]: r["datetime"] for r in index.rasters()}
        assert dates == {PAIR[0]: "2009-08-18T00:00:00Z", PAIR[1]: "2020-08-31T00:00:00Z", "cogeo.tif": None}
        query = index.geo.id_query([1])  # a 2009 chip
        unfiltered = index.geo.search(query, 30, max_overlap=None)
        assert {h.datetime for h in unfiltered} >= {"2009-08-18T00:00:00Z", "2020-08-31T00:00:00Z"}
        in_2020 = index.geo.search(query, 10, datetime="2020")
        assert len(in_2020) == 10 and {h.raster.endswith(PAIR[1]) for h in in_2020} == {True}
        assert {h.datetime for h in index.geo.search(query, 10, datetime="../2010-01-01")} == {"2009-08-18T00:00:00Z"}
        assert index.geo.search(query, 10, datetime="1990/2000") == []  # unknown dates are never in a range
        with pytest.raises(ValueError):
            index.geo.search(query, 10, datetime="2012/2009")


def test_the_same_place_in_every_acquisition_in_date_order(pair_index):
    with Index.open(pair_index) as index:
        later = next(r["id"] for r in index.rasters() if r["name"] == PAIR[1])
        chip = index.geo.chips(range(1, len(index) + 1))
        item = next(i for i, c in chip.items() if c["raster_id"] == later)  # query from the 2020 acquisition
        rows = index.geo.same_place(item)
    assert [r["datetime"][:4] for r in rows] == ["2009", "2020"]  # date order, the chip itself included
    assert rows[1]["id"] == item and rows[1]["iou"] == 1.0
    assert rows[0]["iou"] >= 0.5 and rows[0]["window"] == list(chip[item]["window"])  # same grid, same window


def test_dates_on_the_command_line_and_over_http(pair_index, tmp_path, capsys, shared_rasters):
    copy = shutil.copytree(pair_index, tmp_path / "index")
    # --datetime given for every raster overrides the file name, also for a raster indexed before
    assert cli_main(["index", "--out", str(copy), "--rasters", str(shared_rasters / "cogeo.tif"), "--gsd", "native",
                     "--tile", "512", "--datetime", "2019-06/2019-08"]) == 0
    assert "acquired 2019-06-01..2019-08-31 (given)" in capsys.readouterr().out
    assert cli_main(["search", "--index", str(copy), "--id", "1", "--datetime", "2019", "--json"]) == 0
    results = json.loads(capsys.readouterr().out)["results"]
    assert results and {r["datetime"] for r in results} == {"2019-06-01T00:00:00Z"}
    assert cli_main(["search", "--index", str(copy), "--same-place", "1"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:3] == ["date", "id", "iou"] and table[1].startswith("2009-08-18") and len(table) == 3
    with TestClient(create_app(copy), base_url="http://127.0.0.1:8000") as client:
        body = client.get("/api/geo/search", params={"id": 1, "datetime": "2020", "k": 5}).json()
        assert body["datetime"] == "2020" and {r["datetime"][:4] for r in body["results"]} == {"2020"}
        assert client.get("/api/geo/search", params={"id": 1, "datetime": "soon"}).status_code == 422
        dates = client.get("/api/geo/chips/1/dates").json()
        assert [r["datetime"][:4] for r in dates["results"]] == ["2009", "2020"]
        assert "/" not in dates["results"][0]["raster"]  # the file name, never the server's path
        assert client.get("/api/geo/chips/999999/dates").status_code == 404
        rasters = client.get("/api/geo/rasters").json()["rasters"]
        assert {r["name"]: r["datetime"] for r in rasters}["cogeo.tif"] == "2019-06-01T00:00:00Z"


def test_an_acquisition_without_the_chip_is_read_on_the_fly(pair_index, tmp_path):
    copy = shutil.copytree(pair_index, tmp_path / "index")
    with Index.open(copy) as index:
        rows = index.geo.same_place(1)
        later = rows[1]
        index.remove([later["id"]])  # the 2020 chip of this place is gone (as if skipped as nodata)
        rows = index.geo.same_place(1)
        assert [r["datetime"][:4] for r in rows] == ["2009", "2020"]
        missing = rows[1]
        assert missing["id"] is None and missing["iou"] is None
        assert abs(missing["window"][0] - later["window"][0]) <= 1 and abs(missing["window"][2] - later["window"][2]) <= 2
        assert index.geo.same_place(1, read_missing=False)[1:] == []
    with TestClient(create_app(copy), base_url="http://127.0.0.1:8000") as client:
        body = client.get("/api/geo/chips/1/dates").json()
        url = body["results"][1]["thumbnail_url"]
        assert body["results"][1]["id"] is None and "/window.jpg?" in url
        r = client.get(url)
        assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
        assert client.get("/api/geo/rasters/99/window.jpg?col=0&row=0&width=8&height=8").status_code == 404
        assert client.get(url.replace("width=", "width=9999")).status_code == 422
