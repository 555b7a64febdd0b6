"""Ground resolution and bands are part of the model (issue 15, item 2): the model records its training
sources, an index records its model's resolutions, ``gsd="auto"`` tiles at the nearest of them and refuses a
raster more than 2x away unless ``gsd`` is given."""

from __future__ import annotations

import json
import logging
import sqlite3
from contextlib import closing
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from rshash.cli import main as cli_main
from rshash.data.datasets import ImageRecord, load_records
from rshash.data.sources import folder_source, is_ucmd
from rshash.model_config import (
    ModelConfig,
    ModelDirError,
    model_gsds,
    model_sources,
    read_config,
    training_source,
)
from rshash.model_dir import content_fingerprint

TWO_SOURCES = [training_source("folder", "/data/ucmd", 0.3), training_source("rasters", "/data/landsat", 10.0)]


def write_raster(path: Path, res: float, size: int = 64, seed: int = 0) -> Path:
    """A textured 3-band GeoTIFF of ``size`` pixels of ``res`` metres (UTM 33N)."""
    rng = np.random.default_rng(seed)
    data = (np.linspace(0, 150, size)[None, None, :] + rng.integers(0, 100, (3, size, size))).astype(np.uint8)
    with rasterio.open(path, "w", driver="GTiff", width=size, height=size, count=3, dtype="uint8",
                       crs="EPSG:32633", transform=from_origin(500000, 5000000, res, res)) as ds:
        ds.write(data)
    return path


@pytest.fixture(scope="module")
def two_source_model(tmp_path_factory) -> Path:
    """A 32-bit model trained (as its config says) on a 0.3 m folder and 10 m rasters."""
    from rshash.model import HashingModel
    from rshash.model_dir import save_model_dir

    path = tmp_path_factory.mktemp("gsd-model") / "model"
    save_model_dir(path, HashingModel(ModelConfig(bits=32, sources=TWO_SOURCES)))
    return path


def meta(index_dir: Path) -> dict[str, str]:
    with closing(sqlite3.connect(index_dir / "meta.sqlite")) as conn:
        return dict(conn.execute("SELECT key, value FROM meta"))


# --------------------------------------------------------------------------- the model config


def test_config_records_sources_and_old_configs_read_as_ucmd():
    config = ModelConfig(bits=16, input_size=224, fingerprint="0123456789abcdef", sources=TWO_SOURCES)
    d = config.to_dict()
    assert d["sources"][1] == {"kind": "rasters", "path": "/data/landsat", "gsd": 10.0,
                               "bands": ["red", "green", "blue"]}
    assert ModelConfig.from_dict(d).sources == TWO_SOURCES
    assert model_gsds(config) == [0.3, 10.0]
    old = ModelConfig(bits=16)
    assert "sources" not in old.to_dict()  # not written when absent
    assert model_sources(old) == [{"kind": "folder", "path": None, "gsd": 0.3, "bands": ["red", "green", "blue"]}]
    assert model_gsds(old) == [0.3]
    unknown = ModelConfig(sources=[training_source("folder", "/x", None)])
    assert model_gsds(unknown) == []


def test_fingerprint_of_old_configs_unchanged_and_sources_count_but_not_their_paths():
    # Values computed with the code before sources existed (commit 54c900b).
    assert content_fingerprint(b"onnx", ModelConfig(bits=16, input_size=224)) == "391accac42234ecc"
    assert content_fingerprint(b"onnx", ModelConfig(bits=64, class_names=["a", "b"], input_size=224,
                                                    encoder_precision="int8")) == "589c7dd7b31a01cf"
    with_sources = content_fingerprint(b"onnx", ModelConfig(bits=16, input_size=224, sources=TWO_SOURCES))
    assert with_sources != "391accac42234ecc"
    moved = [dict(s, path="/elsewhere" + s["path"]) for s in TWO_SOURCES]
    assert content_fingerprint(b"onnx", ModelConfig(bits=16, input_size=224, sources=moved)) == with_sources
    other_gsd = [TWO_SOURCES[0], dict(TWO_SOURCES[1], gsd=30.0)]
    assert content_fingerprint(b"onnx", ModelConfig(bits=16, input_size=224, sources=other_gsd)) != with_sources


@pytest.mark.parametrize("bad", [
    [{"kind": "folder", "path": None, "gsd": -1, "bands": ["red"]}],
    [{"kind": "video", "path": None, "gsd": 1.0, "bands": ["red"]}],
    [{"kind": "folder", "path": None, "gsd": 1.0, "bands": []}],
    {"kind": "folder"},
])
def test_read_config_refuses_bad_sources(tmp_path, bad):
    config = ModelConfig(bits=16, input_size=224, fingerprint="0123456789abcdef").to_dict() | {"sources": bad}
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelDirError, match="source"):
        read_config(tmp_path)


def test_saved_model_records_its_sources(two_source_model):
    config = read_config(two_source_model)
    assert config.sources == TWO_SOURCES and model_gsds(config) == [0.3, 10.0]


# --------------------------------------------------------------------------- the data layer and rshash train


def _folder(root: Path, classes: list[str]) -> Path:
    for name in classes:
        (root / name).mkdir(parents=True)
        for i in range(2):
            (root / name / f"{name}{i:02d}.png").write_bytes(b"")  # scanned, never decoded here
    return root


def test_ucmd_is_recognised_by_layout_and_class_names(tmp_path, caplog):
    ucmd = _folder(tmp_path / "UCMerced_LandUse" / "Images", ["agricultural", "beach"]).parent
    records = load_records(ucmd)
    assert is_ucmd(records)
    assert folder_source(ucmd, records)["gsd"] == 0.3
    assert folder_source(ucmd, records, 0.5)["gsd"] == 0.5  # the user's word wins
    other = _folder(tmp_path / "mine" / "Images", ["agricultural", "craters"]).parent
    assert not is_ucmd(load_records(other))
    assert not is_ucmd([ImageRecord(str(tmp_path / "flat" / "agricultural" / "a.png"), "agricultural")])
    with caplog.at_level(logging.WARNING, logger="rshash.data.sources"):
        source = folder_source(other, load_records(other))
    assert source == {"kind": "folder", "path": str(other.absolute()), "gsd": None,
                      "bands": ["red", "green", "blue"]}
    assert "--gsd METRES" in caplog.text


def test_train_gsd_option_is_recorded(tmp_path, monkeypatch):
    from rshash.training import pipeline

    seen = {}
    monkeypatch.setattr(pipeline, "train", lambda records, out, options: seen.update(options=options) or {})
    data = _folder(tmp_path / "sat", ["fields", "towns"])
    assert cli_main(["train", "--data", str(data), "--out", str(tmp_path / "model"), "--gsd", "2.5"]) == 0
    assert seen["options"].sources == [{"kind": "folder", "path": str(data.absolute()), "gsd": 2.5,
                                        "bands": ["red", "green", "blue"]}]


# --------------------------------------------------------------------------- the index


def test_index_records_model_resolutions_and_auto_tiles_at_the_nearest(two_source_model, tmp_path):
    from rshash.index import Index

    with Index.create(tmp_path / "index", two_source_model) as index:
        assert index.model_gsds == [0.3, 10.0] and index.stats()["model_gsd"] == [0.3, 10.0]
        m = meta(tmp_path / "index")
        assert json.loads(m["model_gsds"]) == [0.3, 10.0] and m["model_gsd"] == "0.3"
        near_ten = write_raster(tmp_path / "eight_m.tif", 8.0, size=96)
        near_fine = write_raster(tmp_path / "half_m.tif", 0.5, size=96, seed=1)
        report = index.add_rasters([near_ten, near_fine], tile=32, progress=False)
    entries = {Path(r["path"]).name: r for r in report.rasters}
    assert not report.skipped
    assert entries["eight_m.tif"]["target_gsd"] == 10.0 and "auto" in entries["eight_m.tif"]["gsd_reason"]
    assert entries["half_m.tif"]["target_gsd"] == 0.3 and "0.5 m" in entries["half_m.tif"]["gsd_reason"]


def test_auto_refuses_a_resolution_mismatch_above_2x_unless_gsd_is_given(small_model_dir, tmp_path):
    from rshash.index import Index

    five = write_raster(tmp_path / "five_m.tif", 5.0)
    with Index.create(tmp_path / "index", small_model_dir) as index:  # a model that records no sources: 0.3 m
        assert index.model_gsds == [0.3]
        refused = index.add_rasters(five, tile=32, progress=False)
        assert refused.added == 0 and not refused.rasters and len(refused.skipped) == 1
        reason = refused.skipped[0][1]
        assert "5 m" in reason and "0.3 m" in reason and "--gsd METRES" in reason and "--gsd native" in reason
        given = index.add_rasters(five, tile=32, gsd=5.0, progress=False)
        assert given.added > 0 and given.rasters[0]["gsd_reason"].startswith("given")
        native = index.add_rasters(five, tile=32, gsd="native", progress=False)
        assert native.rasters[0]["gsd_reason"].startswith("native")
    ok = write_raster(tmp_path / "half_m.tif", 0.55, size=96)  # 1.8x: still tiled at 0.3 m
    with Index.open(tmp_path / "index") as index:
        entry = index.add_rasters(ok, tile=32, progress=False).rasters[0]
    assert entry["target_gsd"] == 0.3 and entry["added"] > 0


def test_a_model_without_a_known_resolution_needs_gsd(tmp_path):
    from rshash.model import HashingModel
    from rshash.model_dir import save_model_dir
    from rshash.index import Index

    model = tmp_path / "model"
    save_model_dir(model, HashingModel(ModelConfig(bits=32, sources=[training_source("folder", "/x", None)])))
    raster = write_raster(tmp_path / "one_m.tif", 1.0)
    with Index.create(tmp_path / "index", model) as index:
        assert index.model_gsds == []
        report = index.add_rasters(raster, tile=32, progress=False)
        assert report.added == 0 and "records no training ground resolution" in report.skipped[0][1]
        assert index.add_rasters(raster, tile=32, gsd=1.0, progress=False).added > 0
    assert "model_gsd" not in meta(tmp_path / "index")


def test_older_index_without_recorded_resolutions(small_model_dir, tmp_path):
    from rshash.index import Index

    Index.create(tmp_path / "index", small_model_dir).close()
    with closing(sqlite3.connect(tmp_path / "index" / "meta.sqlite")) as conn, conn:
        conn.execute("DELETE FROM meta WHERE key IN ('model_gsd', 'model_gsds')")  # as indexes before this change
    with Index.open(tmp_path / "index") as index:
        assert index.model_gsds is None and index.stats()["model_gsd"] is None
        index.add_rasters(write_raster(tmp_path / "r.tif", 0.3), tile=32, progress=False)
        assert index.model_gsds == [0.3]  # recorded from the model on the first raster ingest
    with closing(sqlite3.connect(tmp_path / "index" / "meta.sqlite")) as conn, conn:
        conn.execute("DELETE FROM meta WHERE key = 'model_gsds'")  # only the older single number
    with Index.open(tmp_path / "index") as index:
        assert index.model_gsds == [0.3]


def test_cli_prints_the_resolution_each_raster_was_tiled_at_and_why(small_model_dir, tmp_path, capsys):
    fine = write_raster(tmp_path / "fine.tif", 0.4)
    coarse = write_raster(tmp_path / "coarse.tif", 30.0, seed=2)
    out = tmp_path / "index"
    assert cli_main(["index", "--rasters", str(fine), str(coarse), "--out", str(out), "--model", str(small_model_dir),
                     "--tile", "32"]) == 0
    printed = capsys.readouterr().out
    assert "fine.tif" in printed and "tiled at 0.3 m (auto: the model's 0.3 m (raster 0.4 m" in printed
    assert "model resolution 0.3 m" in printed
    report = json.loads((out / "add_report.json").read_text())
    assert [Path(s["path"]).name for s in report["skipped"]] == ["coarse.tif"]
    assert "30 m" in report["skipped"][0]["reason"] and "refused" in report["skipped"][0]["reason"]
    assert cli_main(["search", "--index", str(out), "--id", "1", "--k", "2", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["model_gsd"] == [0.3]
    assert cli_main(["search", "--index", str(out), "--id", "1", "--k", "2", "--max-overlap", "0.5"]) == 0
    assert "model resolution: 0.3 m" in capsys.readouterr().out
