"""Raster ingestion that never stops for one raster, tiling stored per raster, bounded reading back (issue 16):
awkward and broken rasters in one run, partial rasters resumed, warnings collapsed, other tiling options
replacing a raster's chips, VRT sources hashed, the format-3 migration, the reader cache, removing a raster,
and the overall progress bar."""

from __future__ import annotations

import json
import logging
import shutil
import sqlite3
import threading
import warnings
from contextlib import closing
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.errors import RasterioIOError
from rasterio.transform import from_origin

from rasters_awkward import outcomes, unexpected, write_awkward_rasters
from rshash.cli import main as cli_main
from rshash.encoding import chips as chips_module
from rshash.geo import digest
from rshash.geo.reader import RasterReaders
from rshash.geo.source import RasterSource
from rshash.index import Index
from rshash.index.store import FORMAT_VERSION, Store

COGEO, NAIP = "cogeo.tif", "naip_m_3211605_ne_11_060_20200415.tif"


def db(index_dir: Path) -> sqlite3.Connection:
    return closing(sqlite3.connect(index_dir / "meta.sqlite"))


def write_raster(path: Path, size: int = 512, seed: int = 0, res: float = 0.3) -> Path:
    rng = np.random.default_rng(seed)
    data = (np.linspace(0, 150, size)[None, None, :] + rng.integers(0, 100, (3, size, size))).astype(np.uint8)
    with rasterio.open(path, "w", driver="GTiff", width=size, height=size, count=3, dtype="uint8", crs="EPSG:32633",
                       transform=from_origin(500000, 5000000, res, res)) as ds:
        ds.write(data)
    return path


def raster_rows(index_dir: Path) -> list[tuple]:
    with db(index_dir) as conn:
        return conn.execute("SELECT path, status, reason, tiling FROM rasters ORDER BY id").fetchall()


def fail_windows_after(monkeypatch, n_ok: int) -> None:
    """Reading a window raises a rasterio read error after ``n_ok`` windows were read (in the loader thread)."""
    real, count = RasterSource.load_chip, {"n": 0}

    def load_chip(self, window):
        count["n"] += 1
        if count["n"] > n_ok:
            raise RasterioIOError("Read failed. TIFFReadEncodedTile() failed.")
        return real(self, window)

    monkeypatch.setattr(RasterSource, "load_chip", load_chip)


# --------------------------------------------------------------------------- no raster stops the run


def test_awkward_folder_is_indexed_in_one_run(small_model_dir, tmp_path, capsys):
    """Truncated, text-as-.tif, no CRS, all nodata, 10 px, float DEM, rotated, palette, antimeridian, uint16:
    one CLI run, each file with its expected outcome and reason in add_report.json."""
    folder = tmp_path / "awkward"
    expected = write_awkward_rasters(folder)
    assert len(expected) >= 10
    out = tmp_path / "index"
    assert cli_main(["index", "--rasters", str(folder), "--out", str(out), "--model", str(small_model_dir)]) == 0
    report = json.loads((out / "add_report.json").read_text())
    assert unexpected(expected, outcomes(report, folder)) == {}
    rows = {Path(p).name: (status, reason) for p, status, reason, _ in raster_rows(out)}
    assert rows["truncated.tif"][0] == "partial" and "could not be read" in rows["truncated.tif"][1]
    assert rows["good_rgb.tif"] == ("complete", None)
    assert "partial" in capsys.readouterr().out


def test_read_error_mid_raster_keeps_chips_and_the_rerun_resumes(small_model_dir, tmp_path, monkeypatch):
    path = write_raster(tmp_path / "scene.tif")  # 9 chips at 0.3 m, tile 256, overlap 0.5
    index_dir = tmp_path / "index"
    with Index.create(index_dir, small_model_dir) as index:
        fail_windows_after(monkeypatch, 4)
        report = index.add_rasters(path, batch_size=4, progress=False)
        (entry,) = report.rasters
        assert (entry["status"], entry["added"], report.chips_skipped["read_error"]) == ("partial", 4, 5)
        assert "could not be read" in entry["reason"] and "TIFFReadEncodedTile" in entry["reason"]
        monkeypatch.undo()
        report = index.add_rasters(path, batch_size=4, progress=False)  # resumes: the 5 windows left
        assert (report.added, report.unchanged, report.rasters[0]["status"]) == (5, 4, "complete")
        assert len(index) == 9
    assert [r[1:3] for r in raster_rows(index_dir)] == [("complete", None)]


def test_loader_error_is_caught_per_raster_and_the_run_goes_on(small_model_dir, tmp_path, monkeypatch):
    """A rasterio error raised by the loader itself (through the prefetch thread): committed batches stay,
    the raster is partial, the next raster is indexed."""
    first, second = write_raster(tmp_path / "a.tif", seed=1), write_raster(tmp_path / "b.tif", seed=2)
    real, calls = chips_module.ChipLoader.__call__, {"n": 0}

    def loader(self, windows):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RasterioIOError("Read failed mid-raster")
        return real(self, windows)

    monkeypatch.setattr(chips_module.ChipLoader, "__call__", loader)
    with Index.create(tmp_path / "index", small_model_dir) as index:
        report = index.add_rasters([first, second], batch_size=4, progress=False)
        a, b = report.rasters
        assert (a["status"], a["added"], "mid-raster" in a["reason"]) == ("partial", 4, True)
        assert (b["status"], b["added"]) == ("complete", 9)


def test_encoder_errors_still_stop_the_run(small_model_dir, tmp_path):
    path = write_raster(tmp_path / "scene.tif")
    with Index.create(tmp_path / "index", small_model_dir) as index:
        index.encoder.encode = lambda pixels: (_ for _ in ()).throw(RuntimeError("encoder broke"))
        with pytest.raises(RuntimeError, match="encoder broke"):
            index.add_rasters(path, progress=False)


def test_identical_gdal_warnings_are_one_line_with_a_count(small_model_dir, tmp_path, monkeypatch, caplog):
    path = write_raster(tmp_path / "scene.tif")
    real = RasterSource.load_chip

    def noisy(self, window):
        logging.getLogger("rasterio._env").warning("CPLE_AppDefined in TIFFReadDirectory: unknown tag 33550")
        warnings.warn("resampling a rotated raster", UserWarning)
        return real(self, window)

    monkeypatch.setattr(RasterSource, "load_chip", noisy)
    with caplog.at_level(logging.WARNING), Index.create(tmp_path / "index", small_model_dir) as index:
        report = index.add_rasters(path, progress=False)
    gdal = [r.getMessage() for r in caplog.records if "unknown tag 33550" in r.getMessage()]
    assert gdal == ["scene.tif: CPLE_AppDefined in TIFFReadDirectory: unknown tag 33550 (x9)"]
    assert [r for r in caplog.records if "rotated raster" in r.getMessage()][0].getMessage().endswith("(x9)")
    assert report.rasters[0]["warnings"]["CPLE_AppDefined in TIFFReadDirectory: unknown tag 33550"] == 9


# --------------------------------------------------------------------------- tiling per raster, VRT sources


def test_other_tiling_options_replace_the_rasters_chips(small_model_dir, tmp_path):
    path = write_raster(tmp_path / "scene.tif")
    with Index.create(tmp_path / "index", small_model_dir) as index:
        assert index.add_rasters(path, tile=256, progress=False).added == 9
        report = index.add_rasters(path, tile=128, progress=False)
        (entry,) = report.rasters
        assert entry["replaced"]["chips"] == 9 and entry["replaced"]["tiling"]["tile"] == 256
        assert entry["added"] == len(index) == 49  # 7 x 7 windows of 128 px, none of the 256 px ones left
        again = index.add_rasters(path, tile=128, progress=False)  # same options: nothing to do
        assert (again.added, again.unchanged, "replaced" in again.rasters[0]) == (0, 49, False)
    with db(tmp_path / "index") as conn:
        assert {r[0] for r in conn.execute("SELECT width FROM chips")} == {128}
        ((tiling,),) = conn.execute("SELECT tiling FROM rasters").fetchall()
    assert json.loads(tiling) | {} == {"tile": 128, "gsd": "auto", "target_gsd": 0.3, "overlap": 0.5,
                                       "bands": [1, 2, 3], "max_nodata": 0.5}


def _vrt(path: Path, source: Path, size: int) -> Path:
    bands = "".join(
        f'<VRTRasterBand dataType="Byte" band="{b}"><SimpleSource>'
        f'<SourceFilename relativeToVRT="1">{source.name}</SourceFilename><SourceBand>{b}</SourceBand>'
        f'<SrcRect xOff="0" yOff="0" xSize="{size}" ySize="{size}"/><DstRect xOff="0" yOff="0" xSize="{size}" '
        f'ySize="{size}"/></SimpleSource></VRTRasterBand>' for b in (1, 2, 3))
    with rasterio.open(source) as ds:
        srs, gt = ds.crs.to_wkt(), ds.transform.to_gdal()
    path.write_text(f'<VRTDataset rasterXSize="{size}" rasterYSize="{size}"><SRS>{srs}</SRS>'
                    f'<GeoTransform>{", ".join(map(str, gt))}</GeoTransform>{bands}</VRTDataset>')
    return path


def test_a_vrt_is_hashed_with_its_sources(small_model_dir, tmp_path):
    source = write_raster(tmp_path / "source.tif", size=256, seed=3)
    vrt = _vrt(tmp_path / "mosaic.vrt", source, 256)
    before = digest.raster_sha256(vrt)
    with Index.create(tmp_path / "index", small_model_dir) as index:
        assert index.add_rasters(vrt, progress=False).added == 1
        write_raster(source, size=256, seed=4)  # the XML is unchanged, a source is not
        assert digest.raster_sha256(vrt) != before
        report = index.add_rasters(vrt, progress=False)
        assert (report.added, report.updated, report.unchanged) == (1, 1, 0)  # re-encoded, the old chip gone
        assert len(index) == 1


def test_raster_checksum_is_computed_once_per_change(tmp_path, monkeypatch):
    path = write_raster(tmp_path / "scene.tif", size=64)
    hashed: list[str] = []
    real = digest.file_sha256
    monkeypatch.setattr(digest, "file_sha256", lambda p: hashed.append(p) or real(p))
    digest.clear_cache()
    first = digest.raster_sha256(path)
    assert digest.raster_sha256(path) == first and len(hashed) == 1
    write_raster(path, size=64, seed=9)  # another content (size and mtime change)
    assert digest.raster_sha256(path) != first and len(hashed) == 2


# --------------------------------------------------------------------------- the index format


def _as_format_2(index_dir: Path) -> None:
    """Turn a format-3 index into what format 2 wrote: no status/reason/tiling/datetime columns."""
    with db(index_dir) as conn:
        for column in ("status", "reason", "tiling", "datetime", "datetime_end"):
            conn.execute(f"ALTER TABLE rasters DROP COLUMN {column}")
        conn.execute("UPDATE meta SET value = '2' WHERE key = 'format_version'")
        conn.commit()


def test_format_2_index_is_migrated_and_keeps_its_chips(small_model_dir, tmp_path):
    path = write_raster(tmp_path / "scene.tif")
    index_dir = tmp_path / "index"
    with Index.create(index_dir, small_model_dir) as index:
        index.add_rasters(path, progress=False)
    _as_format_2(index_dir)
    with Index.open(index_dir) as index:
        assert index._store.meta()["format_version"] == str(FORMAT_VERSION) == "3"
        report = index.add_rasters(path, tile=128, progress=False)  # tiling unknown (NULL): kept, not replaced
        assert "replaced" not in report.rasters[0] and report.unchanged == 0 and len(index) == 9 + 49 - 0
    with db(index_dir) as conn:
        columns = {r[1] for r in conn.execute("PRAGMA table_info(rasters)")}
        assert {"status", "reason", "tiling", "datetime", "datetime_end"} <= columns
        assert conn.execute("SELECT datetime, datetime_end FROM rasters").fetchall()[0] == (None, None)


def test_newer_format_is_still_refused(small_model_dir, tmp_path):
    with Index.create(tmp_path / "index", small_model_dir):
        pass
    with db(tmp_path / "index") as conn:
        conn.execute("UPDATE meta SET value = ? WHERE key = 'format_version'", (str(FORMAT_VERSION + 1),))
        conn.commit()
    with pytest.raises(ValueError, match="newer"):
        Store.open(tmp_path / "index" / "meta.sqlite")


# --------------------------------------------------------------------------- reading back


def test_reader_opens_a_raster_once_whatever_the_output_size(raster_index_dir, tmp_path):
    index_dir = tmp_path / "index"
    shutil.copytree(raster_index_dir, index_dir)
    store = Store.open(index_dir / "meta.sqlite")
    readers = RasterReaders(store)
    try:
        for size in (64, 224, 256, 64):
            with readers.source(1, size) as source:
                assert source.out_size == size and source.read_chip(source.plan.window_containing(5, 5)).pixels.shape[0] == size
        assert readers.opened == 1
    finally:
        readers.close()
        store.close()


def test_evicting_a_raster_never_holds_the_global_lock(raster_index_dir, tmp_path):
    index_dir = tmp_path / "index"
    shutil.copytree(raster_index_dir, index_dir)
    store = Store.open(index_dir / "meta.sqlite")
    readers = RasterReaders(store, max_open=1)
    holding, release, opened = threading.Event(), threading.Event(), threading.Event()

    def hold_first():
        with readers.source(1, 64):
            holding.set()
            release.wait(10)

    def open_second():  # evicts raster 1, whose close waits for the holder
        with readers.source(2, 64):
            opened.set()

    try:
        t1 = threading.Thread(target=hold_first)
        t1.start()
        assert holding.wait(10)
        t2 = threading.Thread(target=open_second)
        t2.start()
        t2.join(2)
        assert readers._lock.acquire(timeout=2)  # the global lock is free while the eviction waits
        readers._lock.release()
        release.set()
        t1.join(10), t2.join(10)
        assert opened.is_set() and readers.opened == 2
    finally:
        release.set()
        readers.close()
        store.close()


# --------------------------------------------------------------------------- removing a raster


def test_remove_raster_by_path_and_by_id(raster_index_dir, shared_rasters, tmp_path, capsys):
    index_dir = tmp_path / "index"
    shutil.copytree(raster_index_dir, index_dir)
    with Index.open(index_dir) as index:
        with pytest.raises(ValueError, match="no"):
            index.remove_raster(99)
        with pytest.raises(ValueError):
            index.remove_raster(tmp_path / "nowhere.tif")
        assert index.remove_raster(shared_rasters / COGEO) == 9
        assert len(index) == 12 and [r["name"] for r in index.rasters()] == [NAIP]
        naip_id = index.rasters()[0]["id"]
    assert cli_main(["index", "--out", str(index_dir), "--remove-raster", str(naip_id)]) == 0
    assert "12 chip(s)" in capsys.readouterr().out
    with db(index_dir) as conn:
        assert [conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in ("images", "chips", "chips_rtree",
                                                                                   "rasters")] == [0, 0, 0, 0]
    assert cli_main(["index", "--out", str(index_dir), "--remove-raster", "7"]) == 2


# --------------------------------------------------------------------------- progress


def test_overall_progress_bar_and_the_hashing_step(small_model_dir, tmp_path, monkeypatch, capsys):
    paths = [write_raster(tmp_path / f"{i}.tif", size=256, seed=i) for i in range(2)]
    monkeypatch.delenv("RSHASH_PROGRESS", raising=False)
    with Index.create(tmp_path / "index", small_model_dir) as index:
        index.add_rasters(paths, progress=True)
    err = capsys.readouterr().err
    assert "rasters: 100%" in err and "2/2" in err and "raster/s" in err
    assert "1.tif: hashing, sampling stretch" in err
