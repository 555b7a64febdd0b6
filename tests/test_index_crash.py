"""kill -9 in the middle of ``add_paths``: the index must open with whole committed batches only,
and a rerun must finish the job without re-encoding what was committed."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rshash.index import Index

N_IMAGES = 60
BATCH = 4

#: The child indexes slowly (a sleep per batch) so the parent can kill it mid-run.
CHILD = """
import sys, time
from rshash.index import Index

index = Index.open(sys.argv[1])
encode = index.encoder.encode
def slow_encode(pixels):
    time.sleep(0.15)
    return encode(pixels)
index.encoder.encode = slow_encode
index.add_paths(sys.argv[2], batch_size=int(sys.argv[3]), progress=False)
print("finished")
"""


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """A real model directory: ImageNet backbone + random hash head (~2 s)."""
    from rshash.model import HashingModel, ModelConfig
    from rshash.model_dir import save_model_dir

    path = tmp_path_factory.mktemp("model") / "model"
    save_model_dir(path, HashingModel(ModelConfig(bits=32)))
    return path


def _images(root: Path) -> Path:
    rng = np.random.default_rng(0)
    root.mkdir()
    for i in range(N_IMAGES):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(root / f"{i:03d}.png")
    return root


def _committed(db: Path) -> int:
    """Rows visible to an independent reader (0 while the table does not exist yet)."""
    try:
        with closing(sqlite3.connect(db, timeout=5)) as conn:
            return conn.execute("SELECT COUNT(*) FROM images").fetchone()[0]
    except sqlite3.OperationalError:
        return 0


def _kill_after_commits(index_dir: Path, images: Path, min_rows: int, timeout: float = 60) -> int:
    """Run the slow child, SIGKILL it once ``min_rows`` are committed; return rows seen at the kill."""
    env = os.environ | {"RSHASH_PROGRESS": "0"}
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(index_dir), str(images), str(BATCH)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + timeout
    try:
        while (seen := _committed(index_dir / "meta.sqlite")) < min_rows:
            if child.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"child ended or stalled before {min_rows} rows: {child.communicate()}")
            time.sleep(0.01)
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=10)
    finally:
        if child.poll() is None:
            os.kill(child.pid, signal.SIGKILL)
            child.wait()
    assert child.returncode == -signal.SIGKILL
    return seen


def test_kill_mid_add_keeps_whole_batches_and_resumes(tmp_path, model_dir):
    images = _images(tmp_path / "images")
    index_dir = tmp_path / "index"
    Index.create(index_dir, model_dir).close()

    seen = _kill_after_commits(index_dir, images, min_rows=2 * BATCH)

    with closing(sqlite3.connect(index_dir / "meta.sqlite")) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        per_batch = [n for (n,) in db.execute("SELECT COUNT(*) FROM images GROUP BY generation")]
    committed = sum(per_batch)
    assert seen <= committed < N_IMAGES  # killed mid-run
    assert per_batch == [BATCH] * (committed // BATCH)  # whole batches only

    with Index.open(index_dir) as index:
        assert len(index) == committed
        assert len(index.search_by_id(1, k=N_IMAGES)) == committed - 1  # cache rebuilt from SQLite

        encoded = 0
        encode = index.encoder.encode

        def counting_encode(pixels: np.ndarray):
            nonlocal encoded
            encoded += len(pixels)
            return encode(pixels)

        index.encoder.encode = counting_encode
        report = index.add_paths(images, batch_size=BATCH, progress=False)
        assert (report.added, report.unchanged, report.skipped) == (N_IMAGES - committed, committed, [])
        assert encoded == N_IMAGES - committed
        assert len(index) == N_IMAGES
        paths = {index.get(i).path for i in range(1, N_IMAGES + 1)}
        assert paths == {str(p) for p in images.iterdir()}
        # Every row's code and descriptor were committed together: both match a fresh encoding of its file,
        # so each image comes back first when it queries the index.
        for i in (1, committed, N_IMAGES):
            meta = index.get(i)
            assert len(meta.descriptor) == index.descriptor_dims
            assert index.search(meta.path, k=1)[0].id == i
