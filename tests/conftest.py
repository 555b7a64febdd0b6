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
