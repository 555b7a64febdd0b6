"""The same-place protocol (rshash.evaluation.same_place): grid chips matched across dates by footprint, folds
with a guard band, tie-aware recall, the footprint bootstrap."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from rshash.evaluation import same_place as sp


def _write(path, data, x0=500000.0):
    count, height, width = data.shape
    with rasterio.open(path, "w", driver="GTiff", width=width, height=height, count=count, dtype="uint8",
                       crs="EPSG:32633", transform=from_origin(x0, 5000000, 5.0, 5.0)) as ds:
        ds.write(data)
    return path


@pytest.fixture()
def place(tmp_path):
    rng = np.random.default_rng(0)
    scene = rng.integers(0, 255, (3, 256, 320), dtype=np.uint8)
    later = np.clip(scene.astype(int) + rng.integers(-10, 10, scene.shape), 0, 255).astype(np.uint8)
    # dates 0 and 1: the same grid; date 2 is shifted by half a chip (grid cells overlap with IoU 1/3: no match)
    shifted = _write(tmp_path / "c.tif", later, x0=500000.0 + 32 * 5.0)
    return sp.read_place([_write(tmp_path / "a.tif", scene), _write(tmp_path / "b.tif", later), shifted], 64)


def test_chips_on_the_origin_grid_matched_by_footprint(place):
    assert np.bincount(place.date).tolist() == [20, 20, 20]  # 4 x 5 whole 64 px cells per date
    assert all(w[0] % 64 == 0 and w[1] % 64 == 0 and w[2:] == (64, 64) for w in place.windows)
    a, b, c = (np.flatnonzero(place.date == d) for d in range(3))
    assert (place.group[a] == place.group[b]).all()  # same window, same footprint: IoU 1
    assert not np.isin(place.group[c], place.group[a]).any()  # half a chip off: IoU 1/3 < 0.5, no match


def test_folds_hold_out_a_block_and_its_guard_band(place):
    folds = sp.folds(place)
    assert len(folds) == 4 and sorted(np.unique(place.block)) == [0, 1, 2, 3]
    for fold in folds:
        held = np.flatnonzero(place.block == fold.index)
        assert set(fold.queries) <= set(held)
        assert not set(fold.train) & (set(held) | set(fold.guard))
        assert not set(fold.queries) & set(np.flatnonzero(place.date == 2))  # no match at another date
        step = sp._grid_step(place)
        for g in fold.guard:  # every guard chip touches the held-out block
            assert (np.abs(place.centre[held] - place.centre[g]).max(axis=1) < 1.5 * step).any()
    held_out_dates = sp.folds(place, train_dates=[0])
    assert all(set(place.date[f.train]) <= {0} for f in held_out_dates)


def test_tie_aware_recall_is_the_expectation_over_tied_orders():
    dist = np.array([[0.0, 1.0, 1.0, 1.0, 2.0]])
    relevant = np.array([[False, True, False, False, True]])
    # top 2: item 0 for sure, then one of three tied items: the relevant one with probability 1/3
    assert sp.tie_aware_recall(dist, relevant, 2)[0] == pytest.approx((1 / 3) / 2)
    assert sp.tie_aware_recall(dist, relevant, 4)[0] == pytest.approx(0.5)
    assert sp.tie_aware_recall(dist, relevant, 5)[0] == pytest.approx(1.0)
    assert sp.first_match_rank(dist, relevant)[0] == pytest.approx(3.0)  # middle of ranks 2..4


def test_query_matrices_never_return_the_query_and_relevance_is_other_dates(place):
    queries = np.flatnonzero(place.date == 0)[:3]
    dist, relevant = sp.query_matrices(place, queries, np.zeros((3, len(place))))
    assert np.isinf(dist[np.arange(3), queries]).all()
    assert (relevant.sum(axis=1) == 1).all() and not relevant[np.arange(3), queries].any()


def test_bootstrap_interval_brackets_the_difference():
    rng = np.random.default_rng(0)
    a = rng.random(200)
    lo, hi = sp.bootstrap_difference(a + 0.1, a, np.arange(200) // 2)
    assert lo == pytest.approx(0.1) and hi == pytest.approx(0.1)
    lo, hi = sp.bootstrap_difference(rng.random(200), rng.random(200), np.arange(200) // 2)
    assert lo < 0 < hi
