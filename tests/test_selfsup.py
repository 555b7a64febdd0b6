"""Self-supervised training on unlabelled rasters (issue 15, item 1): whitening from the archive's pairs, the
exported head, views, and ``rshash train --rasters`` end to end on synthetic acquisitions of one place."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from rasterio.transform import from_origin

from rshash.data.augment import chip_views
from rshash.hashing.head import WhiteningHashHead
from rshash.hashing.whitening import class_pairs, fit_pair_whitening, level_features, spread_to_levels

UTM = "EPSG:32614"


def _place(rng: np.random.Generator, size: int) -> np.ndarray:
    """A blocky RGB scene: fields of different colours and textures, so that chips differ from each other."""
    cells = rng.integers(0, 256, size=(size // 16, size // 16, 3)).astype(np.float32)
    scene = np.kron(cells, np.ones((16, 16, 1))) + rng.normal(0, 12, size=(size, size, 3))
    return np.clip(scene, 0, 255)


def _write(path: Path, rgb: np.ndarray, gsd: float = 5.0) -> Path:
    with rasterio.open(path, "w", driver="GTiff", width=rgb.shape[1], height=rgb.shape[0], count=3, dtype="uint8",
                       crs=UTM, transform=from_origin(500000, 5200000, gsd, gsd)) as ds:
        ds.write(np.moveaxis(rgb.astype(np.uint8), 2, 0))
    return path


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> Path:
    """Two acquisitions of one place (256 px at 5 m: 16 grid chips each; the second darker, noisier) and a
    truncated GeoTIFF that training must skip."""
    folder = tmp_path_factory.mktemp("archive")
    rng = np.random.default_rng(0)
    scene = _place(rng, 256)
    _write(folder / "place_2010.tif", scene)
    _write(folder / "place_2020.tif", scene * 0.8 + rng.normal(0, 8, size=scene.shape))
    good = (folder / "place_2010.tif").read_bytes()
    (folder / "broken.tif").write_bytes(good[: len(good) // 3])
    return folder


def test_whitening_suppresses_what_changes_between_dates():
    """Places differ in a few directions; dates differ by a large nuisance in others: raw cosine finds the other
    date poorly, the codes from the learned whitening find it."""
    rng = np.random.default_rng(0)
    n, dim = 120, 64
    place = rng.normal(size=(n, dim)) * np.r_[np.ones(16), np.full(dim - 16, 0.05)]
    nuisance = lambda: rng.normal(size=(n, dim)) * np.r_[np.zeros(16), np.full(dim - 16, 1.0)]  # noqa: E731
    date_a, date_b = place + nuisance(), place + nuisance()
    train = np.arange(80)
    views = np.stack([np.r_[date_a[train], date_b[train]]], axis=1)  # (160, 1, dim): one view per chip
    pairs = np.stack([np.arange(80), np.arange(80) + 80], axis=1)
    fit = fit_pair_whitening(views, pairs, bits=16, dims=16, pca_dims=64, aug_weight=0.0)
    test_a, test_b = date_a[80:], date_b[80:]

    def top1(x, y):
        x = x / np.linalg.norm(x, axis=1, keepdims=True)
        y = y / np.linalg.norm(y, axis=1, keepdims=True)
        return float((np.argmax(x @ y.T, axis=1) == np.arange(len(x))).mean())

    ca, cb = fit.codes(test_a).astype(int), fit.codes(test_b).astype(int)
    hamming_top1 = float((np.argmin(np.abs(ca[:, None] - cb[None]).sum(2), axis=1) == np.arange(len(ca))).mean())
    assert top1(test_a, test_b) < 0.7
    assert hamming_top1 > 0.9
    assert fit.time_pairs == 80 and fit.projection.shape == (64, 16) and fit.rotation.shape == (16, 16)


def test_whitening_refuses_what_it_cannot_fit():
    views = np.random.default_rng(0).normal(size=(10, 2, 32))
    with pytest.raises(ValueError, match="multiple of 8"):
        fit_pair_whitening(views, np.zeros((0, 2), int), bits=12)
    with pytest.raises(ValueError, match="too few training chips or images"):
        fit_pair_whitening(views, np.zeros((0, 2), int), bits=32, dims=32)
    with pytest.raises(ValueError, match="no positive pairs"):
        fit_pair_whitening(views[:, :1], np.zeros((0, 2), int), bits=8, dims=8)
    small = fit_pair_whitening(views, np.zeros((0, 2), int), bits=8, dims=128)  # augmentations only, fewer dims
    assert small.projection.shape[1] == 19 and small.time_pairs == 0


def test_head_computes_the_fit_from_level_vectors():
    """The torch head (what the ONNX encoder runs) gives the fit's descriptors and codes."""
    rng = np.random.default_rng(1)
    tap_dims = [8, 12, 6]
    pooled = rng.normal(size=(40, 3, sum(tap_dims))).astype(np.float32)
    x = level_features(pooled, tap_dims)
    fit = fit_pair_whitening(x, np.stack([np.arange(20), np.arange(20, 40)], 1), bits=8, dims=8, pca_dims=12)
    head = WhiteningHashHead(tap_dims, bits=8, dims=8).load_fit(fit)
    bounds = np.cumsum([0, *tap_dims])
    levels = [torch.from_numpy(pooled[:, 0, a:b]) for a, b in zip(bounds[:-1], bounds[1:])]
    with torch.no_grad():
        embedded = head.embed(levels).numpy()
        logits = head(levels).numpy()
    np.testing.assert_allclose(embedded, fit.embed(x[:, 0]), rtol=1e-4, atol=1e-4)
    assert ((logits >= 0) == fit.codes(x[:, 0])).mean() > 0.99
    with pytest.raises(ValueError, match="shape"):
        WhiteningHashHead(tap_dims, bits=8, dims=16).load_fit(fit)


def test_grid_pool_averages_cells_as_adaptive_pooling_does():
    """The ONNX-friendly grid pooling: adaptive average pooling's cells (14 px into 4 uneven cells), each cell's
    vector unit length, cells row-major, the whole of unit norm."""
    from rshash.model import grid_pool

    x = torch.randn(2, 5, 14, 14)
    got = grid_pool(x, 4)
    cells = torch.nn.functional.adaptive_avg_pool2d(x, 4).flatten(2)  # (2, 5, 16)
    want = torch.nn.functional.normalize(cells, dim=1).transpose(1, 2).flatten(1) / 4
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got.norm(dim=1), torch.ones(2))


@pytest.mark.parametrize("with_levels", [False, True])
def test_head_with_a_grid_computes_the_fit(with_levels):
    """A head reading a grid (beside the levels or alone) embeds as the fit on the concatenated features does;
    it refuses a grid of another width."""
    rng = np.random.default_rng(2)
    tap_dims, grid_width = [8, 12], 10
    pooled = rng.normal(size=(40, 2, sum(tap_dims))).astype(np.float32)
    grid = rng.normal(size=(40, 2, grid_width)).astype(np.float32)
    x = np.concatenate(([level_features(pooled, tap_dims)] if with_levels else []) + [grid], axis=-1)
    fit = fit_pair_whitening(x, np.stack([np.arange(20), np.arange(20, 40)], 1), bits=8, dims=8, pca_dims=12)
    head = WhiteningHashHead(tap_dims, 8, 8, grid_width, levels=with_levels).load_fit(fit)
    levels = [torch.from_numpy(pooled[:, 0, :8]), torch.from_numpy(pooled[:, 0, 8:])]
    with torch.no_grad():
        embedded = head.embed(levels, torch.from_numpy(grid[:, 0])).numpy()
        with pytest.raises(ValueError, match="grid of width 10"):
            head.embed(levels, torch.from_numpy(grid[:, 0, :4]))
    np.testing.assert_allclose(embedded, fit.embed(x[:, 0]), rtol=1e-4, atol=1e-4)


def test_a_grid_model_exports_what_torch_computes(tmp_path):
    """A whitening model with a grid: the saved ONNX encoder gives the torch model's codes and descriptors, and
    its config records the grid; a grid on a loss-trained head is refused."""
    from rshash.encoder import Encoder
    from rshash.model import HashingModel
    from rshash.model_config import ModelConfig, read_config
    from rshash.model_dir import save_model_dir

    model = HashingModel(ModelConfig(bits=16, cell="whiten", descriptor_dims=16, grid=3, grid_levels=False))
    with torch.no_grad():
        model.head.projection.copy_(torch.randn_like(model.head.projection) * 0.1)
        model.head.rotation.copy_(torch.randn_like(model.head.rotation))
    save_model_dir(tmp_path / "m", model.eval())
    config = read_config(tmp_path / "m")
    assert (config.grid, config.grid_tap, config.grid_levels) == (3, "stage5", False)
    pixels = np.random.default_rng(0).integers(0, 256, size=(3, 224, 224, 3), dtype=np.uint8)
    encoded = Encoder(tmp_path / "m").encode(pixels)
    with torch.no_grad():
        outputs, descriptors = model(torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 255.0)
    assert (encoded.codes == (outputs.numpy() >= 0.5)).mean() > 0.97
    np.testing.assert_allclose(encoded.descriptors, descriptors.numpy(), atol=1e-3)
    with pytest.raises(ValueError, match="whitening head"):
        HashingModel(ModelConfig(bits=16, grid=3), pretrained=False)


def test_the_model_computes_the_fit_of_weighted_grid_features(tmp_path):
    """The recipe fits the head on the levels beside the grid block times ``grid_weight``; the model built from
    the fit (the weight moved into its matrices) gives those descriptors and codes from pixels."""
    from types import SimpleNamespace

    from rshash.backbone import create_backbone
    from rshash.training.selfsup import SelfSupConfig, build_model, place_features

    config = SelfSupConfig(bits=8, dims=8, pca_dims=16, views=2)
    assert config.grid and config.grid_levels and config.grid_weight != 1.0  # what this test is about
    backbone = create_backbone()
    pixels = np.random.default_rng(4).integers(0, 256, size=(10, 224, 224, 3), dtype=np.uint8)
    features = place_features(SimpleNamespace(pixels=pixels), config, backbone, tmp_path)
    x = features.levels()
    assert x.shape[-1] == sum(d // 2 for d in features.tap_dims) + 16 * backbone.channels["stage5"]
    fit = fit_pair_whitening(x, np.zeros((0, 2), int), bits=8, dims=8, pca_dims=16)
    model = build_model(fit, config, [], backbone)
    with torch.no_grad():
        outputs, descriptors = model(torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 255.0)
    want = fit.embed(x[:, 0])
    np.testing.assert_allclose(descriptors.numpy(), want / np.linalg.norm(want, axis=1, keepdims=True), atol=2e-2)
    assert ((outputs.numpy() >= 0.5) == fit.codes(x[:, 0])).mean() > 0.9


def test_class_pairs_join_distinct_items_of_one_label():
    labels = np.array([0, 0, 0, 1, 1, 2])  # class 2 has one item: it can pair with nothing
    pairs = class_pairs(labels, 500, seed=3)
    assert len(pairs) > 300 and (pairs[:, 0] != pairs[:, 1]).all()
    assert (labels[pairs[:, 0]] == labels[pairs[:, 1]]).all() and not np.isin(pairs, [5]).any()
    np.testing.assert_array_equal(pairs, class_pairs(labels, 500, seed=3))
    assert class_pairs(np.arange(4), 10).shape == (0, 2)


def test_a_fit_on_the_last_level_reads_only_that_level():
    """The labelled whitening head is fitted on the last level's features; spread over every level, the head gives
    the same descriptors and codes whatever the other levels hold."""
    rng = np.random.default_rng(2)
    tap_dims = [8, 12, 24]
    pooled = rng.normal(size=(40, 3, sum(tap_dims))).astype(np.float32)
    last = level_features(pooled[..., sum(tap_dims[:-1]):], tap_dims[-1:])
    fit = fit_pair_whitening(last, class_pairs(np.arange(40) % 4, 200), bits=8, dims=8, pca_dims=12)
    head = WhiteningHashHead(tap_dims, bits=8, dims=8).load_fit(spread_to_levels(fit, tap_dims))
    bounds = np.cumsum([0, *tap_dims])
    noisy = pooled[:, 0].copy()
    noisy[:, : bounds[-2]] = rng.normal(size=(40, bounds[-2]))
    for x in (pooled[:, 0], noisy):
        levels = [torch.from_numpy(x[:, a:b]) for a, b in zip(bounds[:-1], bounds[1:])]
        with torch.no_grad():
            embedded, logits = head.embed(levels).numpy(), head(levels).numpy()
        np.testing.assert_allclose(embedded, fit.embed(last[:, 0]), rtol=1e-4, atol=1e-4)
        assert ((logits >= 0) == fit.codes(last[:, 0])).mean() > 0.99


def test_chip_views_keep_the_chip_first_and_follow_the_seed():
    chip = np.random.default_rng(0).integers(0, 256, size=(32, 32, 3), dtype=np.uint8)
    a = chip_views(chip, 4, np.random.default_rng(7))
    b = chip_views(chip, 4, np.random.default_rng(7))
    assert a.shape == (4, 32, 32, 3) and a.dtype == np.uint8
    np.testing.assert_array_equal(a[0], chip)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a[1], chip)


def test_train_rasters_end_to_end(archive, tmp_path, caplog):
    """`rshash train --rasters FOLDER`: the broken raster is skipped with a warning, the model records the
    rasters' resolution and bands, an index tiles at it with --gsd auto, and a search from a place works; a second
    run reuses the cached features and gives the same model."""
    from rshash.cli import main
    from rshash.encoder import Encoder
    from rshash.index import Index
    from rshash.model_config import model_gsds, read_config

    out = tmp_path / "model"
    with caplog.at_level(logging.WARNING):
        assert main(["train", "--rasters", str(archive), "--out", str(out), "--bits", "16", "--views", "2"]) == 0
    assert any("broken.tif" in r.getMessage() for r in caplog.records)
    config = read_config(out)
    assert config.cell == "whiten" and config.bits == 16 and model_gsds(config) == [5.0]
    assert {Path(s["path"]).name for s in config.sources} == {"place_2010.tif", "place_2020.tif"}
    assert config.sources[0]["bands"] == ["red", "green", "blue"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["time_pairs"] == 16 and metrics["chips"] == 32
    assert [Path(p).name for p, _ in metrics["skipped_rasters"]] == ["broken.tif"]
    encoded = Encoder(out).encode(np.zeros((2, 224, 224, 3), np.uint8))
    assert encoded.codes.shape == (2, 16) and np.allclose(np.linalg.norm(encoded.descriptors, axis=1), 1, atol=1e-4)

    with Index.create(tmp_path / "index", out) as index:
        report = index.add_rasters([archive / "place_2010.tif", archive / "place_2020.tif"], tile=64, gsd="auto",
                                   overlap=0.0, progress=False)
        assert report.added == 32
        hits = index.search(1, k=5)
        assert len(hits) == 5

    caplog.clear()
    with caplog.at_level(logging.INFO, logger="rshash.training.selfsup"):
        assert main(["train", "--rasters", str(archive), "--out", str(out), "--bits", "16", "--views", "2"]) == 0
    assert any("from cache" in r.getMessage() for r in caplog.records)
    assert read_config(out).fingerprint == config.fingerprint


def test_failed_training_leaves_the_previous_model(archive, tmp_path, monkeypatch):
    from rshash.model_config import read_config
    from rshash.training import selfsup

    out = tmp_path / "model"
    config = selfsup.SelfSupConfig(bits=16, views=2)
    first = selfsup.train_selfsup([archive / "place_2010.tif", archive / "place_2020.tif"], out, config)
    monkeypatch.setattr(selfsup, "HashingModel", None)  # the build fails after features and fit: nothing written
    with pytest.raises(TypeError):
        selfsup.train_selfsup([archive / "place_2010.tif", archive / "place_2020.tif"], out, config)
    assert read_config(out).fingerprint == first["fingerprint"]


def test_train_rasters_refuses_a_folder_without_rasters(tmp_path):
    from rshash.training.selfsup import train_selfsup

    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no raster files"):
        train_selfsup([tmp_path / "empty"], tmp_path / "model")
    with pytest.raises(FileNotFoundError):
        train_selfsup([tmp_path / "missing"], tmp_path / "model")


@pytest.fixture(scope="module")
def unlabelled(tmp_path_factory) -> Path:
    """A flat folder of 12 images (odd sizes, one grayscale) and a corrupt file: no class folders, no labels."""
    from PIL import Image

    folder = tmp_path_factory.mktemp("unlabelled")
    rng = np.random.default_rng(1)
    for i in range(12):
        size = (96 + 8 * i, 80)
        pixels = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
        image = Image.fromarray(pixels).convert("L") if i == 5 else Image.fromarray(pixels)
        image.save(folder / f"scene_{i:02d}.png")
    (folder / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    return folder


def test_train_on_an_unlabelled_image_folder_alone_and_with_rasters(unlabelled, archive, tmp_path, caplog):
    """`rshash train --data FLAT_FOLDER` trains self-supervised on the images' augmented views (the corrupt file
    skipped and listed); with `--rasters` too, one model records every source; labelled data and rasters are
    refused together."""
    import shutil

    from rshash.cli import main
    from rshash.encoder import Encoder
    from rshash.model_config import model_gsds, read_config

    out = tmp_path / "images-model"
    with caplog.at_level(logging.WARNING):
        assert main(["train", "--data", str(unlabelled), "--out", str(out), "--bits", "16", "--views", "2",
                     "--gsd", "1.5"]) == 0
    assert any("corrupt.jpg" in r.getMessage() for r in caplog.records)
    config = read_config(out)
    assert config.cell == "whiten" and [s["kind"] for s in config.sources] == ["folder"]
    assert model_gsds(config) == [1.5]
    assert config.grid == 0  # no time pairs: the grid (layout learnt from them) is left out
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["chips"] == 12 and metrics["time_pairs"] == 0 and metrics["augmentation_pairs"] > 0
    assert [Path(p).name for p, _ in metrics["skipped_images"]] == ["corrupt.jpg"]
    assert Encoder(out).encode(np.zeros((1, 224, 224, 3), np.uint8)).codes.shape == (1, 16)

    both = tmp_path / "both-model"
    assert main(["train", "--rasters", str(archive / "place_2010.tif"), str(archive / "place_2020.tif"),
                 "--data", str(unlabelled), "--out", str(both), "--bits", "16", "--views", "2", "--gsd", "1.5"]) == 0
    config = read_config(both)
    assert [s["kind"] for s in config.sources] == ["rasters", "rasters", "folder"]
    assert model_gsds(config) == [1.5, 5.0]
    assert config.grid == 4 and config.grid_levels  # the rasters' time pairs: levels beside the grid
    metrics = json.loads((both / "metrics.json").read_text())
    assert metrics["chips"] == 44 and metrics["time_pairs"] == 16 and metrics["chips_per_source"] == [16, 16, 12]

    labelled = tmp_path / "labelled"
    (labelled / "a").mkdir(parents=True)
    shutil.copy(unlabelled / "scene_00.png", labelled / "a" / "x.png")
    with pytest.raises(SystemExit, match="cannot be mixed"):
        main(["train", "--rasters", str(archive), "--data", str(labelled), "--out", str(tmp_path / "m")])


def test_main_job_raster_part(archive, tmp_path):
    """The main job's raster part: a self-supervised model, an index of the chips, a search from the centre of a
    raster written as GeoJSON, examples.json; a second run reuses the model and adds no chips."""
    import argparse

    from rshash.commands.run import _raster_part
    from rshash.index import Index

    files = [archive / "place_2010.tif", archive / "place_2020.tif"]
    args = argparse.Namespace(retrain=False, seed=0)
    out = tmp_path / "rasters"
    examples = _raster_part(args, files, out, queries=("place_2010.tif",))
    assert (out / "model" / "config.json").is_file() and (out / "examples.json").is_file()
    hits = examples["place_2010.tif"]["results"]
    assert len(hits) == 10 and all(h["raster"] for h in hits)
    geojson = json.loads(Path(examples["place_2010.tif"]["geojson"]).read_text())
    assert geojson["type"] == "FeatureCollection" and len(geojson["features"]) == 10
    same = examples["place_2010.tif"]["same_place"]  # the queried chip in both acquisitions, by date
    assert [r["datetime"][:4] for r in same] == ["2010", "2020"] and same[0]["window"] == same[1]["window"]
    import pyarrow.parquet as pq

    assert pq.read_table(out / "index.parquet").num_rows == 32  # the raster index, exported
    fingerprint = json.loads((out / "model" / "config.json").read_text())["fingerprint"]
    _raster_part(args, files, out, queries=())
    assert json.loads((out / "model" / "config.json").read_text())["fingerprint"] == fingerprint
    with Index.open(out / "index") as index:
        assert len(index) == 32
