"""Shared fixtures: seeded synthetic scenes, the real UCMD when present, quiet progress bars."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("RSHASH_PROGRESS", "0")


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch):
    """Feature caches go to a per-session temp dir, never the user's ~/.cache."""
    monkeypatch.setenv("RSHASH_CACHE", str(tmp_path_factory.getbasetemp() / "rshash-cache"))


@pytest.fixture(scope="session")
def ucmd_dir() -> Path:
    """The real UCMD (``$RSHASH_DATA`` or ../shared/data/UCMerced_LandUse); skip when absent."""
    candidates = [os.environ.get("RSHASH_DATA"), Path(__file__).resolve().parents[2] / "shared/data/UCMerced_LandUse"]
    for c in candidates:
        if c and (Path(c) / "Images").is_dir():
            return Path(c)
    pytest.skip("UCMD not available (set RSHASH_DATA)")


@pytest.fixture(scope="session")
def shared_rasters() -> Path:
    """The shared real rasters (``$RSHASH_RASTERS`` or ../shared/data/rasters); skip when absent."""
    for c in (os.environ.get("RSHASH_RASTERS"), Path(__file__).resolve().parents[2] / "shared/data/rasters"):
        if c and (Path(c) / "cogeo.tif").is_file():
            return Path(c)
    pytest.skip("shared rasters not available (set RSHASH_RASTERS)")


@pytest.fixture(scope="session")
def small_model_dir(tmp_path_factory) -> Path:
    """One real 32-bit model directory (ImageNet backbone + random head) shared by the raster and map tests."""
    from rshash.model import HashingModel, ModelConfig
    from rshash.model_dir import save_model_dir

    path = tmp_path_factory.mktemp("small-model") / "model"
    save_model_dir(path, HashingModel(ModelConfig(bits=32)))
    return path


#: The raster index the geo tests share: few chips, so it builds in seconds.
RASTER_INDEX_OPTIONS = {
    "cogeo.tif": dict(gsd="native", tile=512, overlap=0.5),  # 9 chips, Web Mercator
    "naip_m_3211605_ne_11_060_20200415.tif": dict(gsd="native", tile=128, overlap=0.5),  # 12 chips, UTM 11N
}


@pytest.fixture(scope="session")
def raster_index_dir(tmp_path_factory, small_model_dir, shared_rasters) -> Path:
    """A read-only template index of two real rasters; tests that change an index copy it first."""
    from rshash.index import Index

    path = tmp_path_factory.mktemp("raster-index") / "index"
    with Index.create(path, small_model_dir) as index:
        for name, options in RASTER_INDEX_OPTIONS.items():
            index.add_rasters(shared_rasters / name, batch_size=8, progress=False, **options)
    return path
