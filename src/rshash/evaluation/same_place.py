"""The same-place protocol: find the same footprint in another acquisition of one place.

* **Chips**: ``CHIP`` px at native resolution on a non-overlapping grid anchored at each raster's origin (only
  whole grid cells); chips of two dates correspond when their lon/lat footprints have IoU >= ``MATCH_IOU``.
* **Folds**: four footprint blocks of the place's common extent (``"quadrants"``: 2 x 2, for NAIP; ``"strips"``:
  4 vertical strips, for Landsat). Fold f holds out block f. Training reads stay outside block f plus a one-chip
  guard band (:attr:`Fold.train`); guard-band chips are never queried.
* **Database**: every grid chip of every date (training blocks included); **queries**: every chip of block f at
  every date that has a match; **relevant**: the chips of the same footprint at the other dates.
* **Metric**: tie-aware recall@k (the expected value under a random order among equal distances), recall@1, the
  median rank of the first true match, pooled over folds, with a 95 % bootstrap interval of the difference to a
  baseline (resampling footprints, so the dates of one place move together), and stable vs changed footprints
  (changed: the footprint's mean absolute pixel difference across dates in the top quarter).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

# chips, footprint groups and blocks live in the geo layer, where self-supervised training reads them too
from ..geo.place import CHIP, FOLDS, MATCH_IOU, PlaceChips, blocks, grid_windows, read_place  # noqa: F401


@dataclass(frozen=True)
class Fold:
    """One fold: queries (block f, with a match at another date), training chips (outside block f and its
    one-chip guard band), and the database (everything)."""

    index: int
    queries: np.ndarray
    train: np.ndarray
    guard: np.ndarray


def folds(place: PlaceChips, chip_degrees: float | None = None, train_dates: Sequence[int] | None = None) -> list[Fold]:
    """The four folds. The guard band: chips outside block f whose centre lies within 1.5 chip sizes (in lon/lat,
    measured on the grid; ``chip_degrees`` overrides) of a block-f chip centre. ``train_dates`` limits training
    reads to those acquisitions (the held-out-date variant)."""
    step = chip_degrees if chip_degrees is not None else _grid_step(place)
    out = []
    for f in range(FOLDS):
        held = place.block == f
        near = np.zeros(len(place), dtype=bool)
        if held.any():
            d = np.abs(place.centre[:, None, :] - place.centre[None, held, :]).max(axis=2)
            near = (d < 1.5 * step).any(axis=1) & ~held
        train = ~held & ~near
        if train_dates is not None:
            train &= np.isin(place.date, list(train_dates))
        has_match = np.asarray([np.any((place.group == place.group[i]) & (place.date != place.date[i]))
                                for i in range(len(place))], dtype=bool)
        out.append(Fold(f, np.flatnonzero(held & has_match), np.flatnonzero(train), np.flatnonzero(near)))
    return out


def _grid_step(place: PlaceChips) -> float:
    """The typical distance between neighbouring chip centres of one date (degrees)."""
    c = place.centre[place.date == 0]
    if len(c) < 2:
        return 1.0
    d = np.abs(c[:, None, :] - c[None, :, :]).max(axis=2)
    d[d == 0] = np.inf
    return float(np.median(d.min(axis=1)))


# --------------------------------------------------------------------------- metrics


def tie_aware_recall(dist: np.ndarray, relevant: np.ndarray, k: int) -> np.ndarray:
    """Expected recall@k per query under a random order among equal distances.

    ``dist`` ``(Q, N)`` (lower is nearer; ``inf`` = never returned, e.g. the query itself), ``relevant`` bool
    ``(Q, N)``. Items strictly nearer than the k-th distance count fully; the tie group at the k-th distance
    contributes the share of its places left in the top k.
    """
    out = np.zeros(len(dist))
    for q in range(len(dist)):
        n_rel = relevant[q].sum()
        if n_rel == 0:
            out[q] = np.nan
            continue
        d = dist[q]
        kth = np.partition(d, min(k, len(d)) - 1)[min(k, len(d)) - 1]
        nearer = d < kth
        tied = d == kth
        slots = k - nearer.sum()
        share = min(1.0, slots / max(tied.sum(), 1))
        out[q] = (relevant[q][nearer].sum() + share * relevant[q][tied].sum()) / n_rel
    return out


def first_match_rank(dist: np.ndarray, relevant: np.ndarray) -> np.ndarray:
    """Expected 1-based rank of the nearest relevant item (ties: the middle of its tie group)."""
    out = np.zeros(len(dist))
    for q in range(len(dist)):
        d = dist[q]
        best = d[relevant[q]].min()
        out[q] = (d < best).sum() + ((d == best).sum() + 1) / 2
    return out


def query_matrices(place: PlaceChips, queries: np.ndarray, distances: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(dist, relevant)`` for ``queries`` against the whole place, the query itself never returned."""
    dist = np.asarray(distances, dtype=np.float64).copy()
    dist[np.arange(len(queries)), queries] = np.inf
    relevant = (place.group[None, :] == place.group[queries, None]) & (place.date[None, :] != place.date[queries, None])
    return dist, relevant


def changed_footprints(place: PlaceChips, quantile: float = 0.75) -> np.ndarray:
    """Per chip: whether its footprint changed (mean absolute pixel difference across dates in the top quarter)."""
    groups = np.unique(place.group)
    diff = np.zeros(len(groups))
    for g in groups:
        members = np.flatnonzero(place.group == g)
        if len(members) > 1:
            x = place.pixels[members].astype(np.float32)
            diff[g] = np.abs(x - x.mean(axis=0)).mean()
    cut = np.quantile(diff, quantile) if len(diff) else 0.0
    return diff[place.group] > cut


def summarise(recall: np.ndarray, recall1: np.ndarray, ranks: np.ndarray, changed: np.ndarray) -> dict:
    ok = ~np.isnan(recall)
    return {"recall_at_10": round(float(recall[ok].mean()), 4), "recall_at_1": round(float(recall1[ok].mean()), 4),
            "median_first_match_rank": float(np.median(ranks[ok])), "queries": int(ok.sum()),
            "recall_at_10_stable": round(float(recall[ok & ~changed].mean()), 4) if (ok & ~changed).any() else None,
            "recall_at_10_changed": round(float(recall[ok & changed].mean()), 4) if (ok & changed).any() else None}


def bootstrap_difference(a: np.ndarray, b: np.ndarray, groups: np.ndarray, rounds: int = 2000,
                         seed: int = 0) -> tuple[float, float]:
    """95 % interval of mean(a - b) resampling whole footprint groups (a footprint's dates move together)."""
    ok = ~(np.isnan(a) | np.isnan(b))
    a, b, groups = a[ok], b[ok], groups[ok]
    uniq, inv = np.unique(groups, return_inverse=True)
    sums = np.bincount(inv, weights=a - b)
    counts = np.bincount(inv)
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(uniq), size=(rounds, len(uniq)))
    means = sums[picks].sum(axis=1) / counts[picks].sum(axis=1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return round(float(lo), 4), round(float(hi), 4)
