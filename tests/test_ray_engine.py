"""The Ray engine (``--engine ray``) on a local Ray with 2 CPUs: codes and descriptors equal to the local engine's
bit for bit, reruns add nothing, changed files are re-encoded, unreadable files are reported, and nothing
imports Ray unless asked."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from scenes import write_scenes
from rshash.index import Index

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install -e '.[ray]')")

IMAGES_PER_CLASS = 12
# Ray Data reads its own deprecated settings when it copies its context: not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.*")


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray for the whole module (start-up takes seconds); skip when it cannot start here."""
    try:
        ray.init(num_cpus=2, include_dashboard=False, configure_logging=False)
    except Exception as exc:  # no shared memory, sandboxed sockets, ...
        pytest.skip(f"a local Ray cannot start on this machine: {exc}")
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def model_dir(small_model_dir) -> Path:
    """The session's 32-bit model with a random head (conftest), shared with the raster tests."""
    return small_model_dir


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    """24 small scenes in two class folders, plus one file that is not an image."""
    root = write_scenes(tmp_path_factory.mktemp("ray-images"), ("fields", "roofs"), IMAGES_PER_CLASS, seed=12,
                        size=64, blocks=4, noise=15.0)
    (root / "fields" / "broken.png").write_bytes(b"this is not an image")
    return root


@pytest.fixture(scope="module")
def built(tmp_path_factory, local_ray, model_dir, images):
    """The same folder indexed by the local engine and by the Ray engine, with their reports."""
    base = tmp_path_factory.mktemp("ray-indexes")
    local = Index.create(base / "local", model_dir)
    local_report = local.add_paths(images, batch_size=8, progress=False)
    on_ray = Index.create(base / "ray", model_dir)
    ray_report = on_ray.add_paths(images, batch_size=8, progress=False, engine="ray", workers=1)
    yield local, local_report, on_ray, ray_report
    local.close()
    on_ray.close()


def _rows(index: Index) -> dict[str, tuple]:
    """path -> everything stored about it but its id and time added."""
    ids = index._store.run(lambda conn: [i for (i,) in conn.execute("SELECT id FROM images")])
    metas = index._store.get(ids).values()
    return {m.path: (m.code, m.descriptor, m.sha256, m.width, m.height, m.label) for m in metas}


def test_ray_codes_and_descriptors_equal_local_bit_for_bit(built):
    local, local_report, on_ray, ray_report = built
    assert ray_report.added == local_report.added == 2 * IMAGES_PER_CLASS
    assert len(on_ray) == len(local) == 2 * IMAGES_PER_CLASS
    local_rows, ray_rows = _rows(local), _rows(on_ray)
    assert set(ray_rows) == set(local_rows)
    for path, row in local_rows.items():
        assert ray_rows[path] == row, path  # packed code, int8 descriptor, checksum, size, label
    # searches agree too (same codes, same descriptors, same tie-break)
    query = next(iter(local_rows))
    hits = [[(h.path, h.distance) for h in index.search(query, k=5)] for index in (on_ray, local)]
    assert hits[0] == hits[1]


def test_unreadable_file_is_reported_not_fatal(built):
    _, local_report, _, ray_report = built
    assert [p for p, _ in ray_report.skipped] == [p for p, _ in local_report.skipped]
    assert len(ray_report.skipped) == 1 and ray_report.skipped[0][0].endswith("broken.png")
    assert "cannot decode" in ray_report.skipped[0][1]


def test_rerun_adds_nothing_and_changed_file_is_reencoded(built, images):
    local, _, on_ray, _ = built
    again = on_ray.add_paths(images, batch_size=8, progress=False, engine="ray", workers=1)
    assert (again.added, again.updated, again.unchanged, len(again.skipped)) == (0, 0, 2 * IMAGES_PER_CLASS, 1)
    assert len(on_ray) == 2 * IMAGES_PER_CLASS
    changed = images / "roofs" / "0.png"
    Image.fromarray(np.full((64, 64, 3), 90, np.uint8)).save(changed)
    local.add_paths(images, batch_size=8, progress=False)
    report = on_ray.add_paths(images, batch_size=8, progress=False, engine="ray", workers=1)
    assert (report.added, report.updated, report.unchanged) == (0, 1, 2 * IMAGES_PER_CLASS - 1)
    assert len(on_ray) == 2 * IMAGES_PER_CLASS
    assert _rows(on_ray)[str(changed)] == _rows(local)[str(changed)]


def test_raster_chips_on_ray_equal_the_local_engine(tmp_path, local_ray, model_dir, shared_rasters):
    """One pipeline for every item kind: raster chips load in Ray tasks (the raster reopened there with its
    stored bands and stretch) and encode in actors, bit for bit as locally; a rerun adds nothing."""
    naip = shared_rasters / "naip_m_3211605_ne_11_060_20200415.tif"
    options = dict(gsd="native", tile=128, overlap=0.5, batch_size=4, progress=False)
    with Index.create(tmp_path / "local", model_dir) as local, Index.create(tmp_path / "ray", model_dir) as on_ray:
        local_report = local.add_rasters(naip, **options)
        ray_report = on_ray.add_rasters(naip, engine="ray", workers=1, **options)
        assert ray_report.added == local_report.added == 12
        assert ray_report.chips_skipped == local_report.chips_skipped
        assert _rows(on_ray) == _rows(local)
        assert on_ray.geo.chips(range(1, 13)).keys() == local.geo.chips(range(1, 13)).keys()
        again = on_ray.add_rasters(naip, engine="ray", workers=1, **options)
        assert (again.added, again.unchanged) == (0, 12)


def test_cli_engine_ray(tmp_path, local_ray, model_dir, images, capsys):
    from rshash.cli import main

    out = tmp_path / "index"
    assert main(["index", "--model", str(model_dir), "--images", str(images), "--out", str(out),
                 "--engine", "ray", "--workers", "1", "--batch-size", "16"]) == 0
    assert "24 added" in capsys.readouterr().out
    with Index.open(out) as index:
        assert len(index) == 2 * IMAGES_PER_CLASS
    with pytest.raises(SystemExit):
        main(["index", "--images", str(images), "--out", str(out), "--workers", "2"])  # --workers needs --engine ray


def test_nothing_imports_ray_without_the_ray_engine():
    code = ("import rshash.cli, rshash.index, rshash.encoding.local, rshash.encoding.chips; import sys; "
            "assert 'ray' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)
