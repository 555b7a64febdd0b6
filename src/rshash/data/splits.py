"""Deterministic stratified splits, saved as JSON so later runs reuse them exactly."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from ..io_utils import atomic_write_text
from .datasets import ImageRecord


def stratified_split(
    records: Sequence[ImageRecord], fractions: Mapping[str, float], seed: int
) -> dict[str, str]:
    """Assign each record's path to a split, per class, in the given proportions.

    Per class the images are shuffled with ``seed`` and cut by cumulative
    fraction (rounded), so a 80/20 split of 100 images is exactly 80/20.
    """
    total = sum(fractions.values())
    if abs(total - 1.0) > 1e-6:
        raise ValueError(f"split fractions must sum to 1, got {dict(fractions)}")
    by_class: dict[str | None, list[str]] = {}
    for r in records:
        by_class.setdefault(r.label, []).append(r.path)
    rng = np.random.default_rng(seed)
    assignment: dict[str, str] = {}
    for label in sorted(by_class, key=str):
        paths = sorted(by_class[label])
        order = rng.permutation(len(paths))
        bounds = np.round(np.cumsum([0.0, *fractions.values()]) * len(paths)).astype(int)
        for (name, _), lo, hi in zip(fractions.items(), bounds[:-1], bounds[1:]):
            for j in order[lo:hi]:
                assignment[paths[j]] = name
    return assignment


def apply_split(records: Sequence[ImageRecord], assignment: Mapping[str, str]) -> list[ImageRecord]:
    """Records with their ``split`` field set from an assignment (missing paths are an error)."""
    missing = [r.path for r in records if r.path not in assignment]
    if missing:
        raise ValueError(f"{len(missing)} image(s) are not in the split file, e.g. {missing[0]}")
    return [replace(r, split=assignment[r.path]) for r in records]


def save_split(path: str | Path, assignment: Mapping[str, str], seed: int, fractions: Mapping[str, float]) -> None:
    payload = {"seed": seed, "fractions": dict(fractions), "assignment": dict(sorted(assignment.items()))}
    atomic_write_text(path, json.dumps(payload, indent=1))


def load_split(path: str | Path) -> dict[str, str]:
    return dict(json.loads(Path(path).read_text())["assignment"])
