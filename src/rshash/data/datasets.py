"""Labelled image collections: a folder of class sub-folders or a CSV manifest.

A dataset is just a list of :class:`ImageRecord`; decoding happens later and
in batches (:func:`load_batch`), so a bad file is a logged skip, not a crash.
"""

from __future__ import annotations

import csv
import logging
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from .images import IMAGE_SUFFIXES, UnreadableImage, load_rgb, resize_rgb

log = logging.getLogger(__name__)

#: Where the README's main command looks for UCMD when neither --data nor $RSHASH_DATA is given.
DEFAULT_DATA_CANDIDATES = ("../shared/data/UCMerced_LandUse",)


@dataclass(frozen=True)
class ImageRecord:
    """One image of a dataset: where it is and, if known, its class, split and (multi-label data) all its labels."""

    path: str
    label: str | None = None
    split: str | None = None
    labels: tuple[str, ...] = ()  # every label of a multi-label manifest (``label`` is the first)

    @property
    def label_set(self) -> tuple[str, ...]:
        """All labels of the image: ``labels`` if given, else ``(label,)``, else empty."""
        return self.labels or ((self.label,) if self.label is not None else ())


class DatasetError(ValueError):
    """The dataset location or manifest is unusable (clear message for the user)."""


def resolve_data_dir(explicit: str | None) -> Path:
    """``--data``, else ``$RSHASH_DATA``, else the shared UCMD copy, else a clear error."""
    for candidate in (explicit, os.environ.get("RSHASH_DATA"), *DEFAULT_DATA_CANDIDATES):
        if candidate:
            path = Path(candidate).expanduser()
            if path.exists():
                return path
            if candidate in (explicit, os.environ.get("RSHASH_DATA")):
                raise DatasetError(f"data path does not exist: {path}")
    raise DatasetError(
        "no dataset found: pass --data DIR, set RSHASH_DATA, or fetch UCMD with "
        "`rshash data download ucmerced --to DIR`"
    )


def _class_root(root: Path) -> Path:
    """Descend into ``Images/`` (the UCMD layout) when the root holds it."""
    images = root / "Images"
    return images if images.is_dir() else root


def scan_folder(root: str | Path) -> list[ImageRecord]:
    """Records for every image file in ``root/<class>/`` (sorted, deterministic)."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"not a directory: {root}")
    base = _class_root(root)
    records: list[ImageRecord] = []
    for class_dir in sorted(p for p in base.iterdir() if p.is_dir()):
        for f in sorted(class_dir.iterdir()):
            if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES:
                records.append(ImageRecord(str(f), class_dir.name))
    if not records:
        # An unlabelled flat folder is still a valid archive to index.
        records = [
            ImageRecord(str(f))
            for f in sorted(base.iterdir())
            if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES
        ]
    if not records:
        raise DatasetError(f"no image files ({', '.join(sorted(IMAGE_SUFFIXES))}) under {root}")
    return records


def read_manifest(path: str | Path) -> list[ImageRecord]:
    """Records from a CSV manifest (paths relative to the CSV).

    Without a header the columns are ``path,label[,split]``. With a header (first cell
    ``path``) the columns are named: ``path`` and any of ``label``, ``labels`` (several
    labels separated by ``;``: an item is relevant to a query when they share one) and ``split``.
    """
    path = Path(path)
    records: list[ImageRecord] = []
    columns = ["path", "label", "split"]
    with path.open(newline="") as fh:
        for lineno, row in enumerate(csv.reader(fh), start=1):
            if not row or row[0].startswith("#"):
                continue
            if lineno == 1 and row[0].strip().lower() == "path":
                columns = [c.strip().lower() for c in row]
                unknown = set(columns) - {"path", "label", "labels", "split"}
                if unknown or len(set(columns)) != len(columns):
                    raise DatasetError(f"{path}:1: columns must be path and any of label, labels, split; got {row}")
                continue
            if len(row) < 1 or len(row) > len(columns):
                raise DatasetError(f"{path}:{lineno}: expected {','.join(columns)}, got {row}")
            cells = {name: (value.strip() or None) for name, value in zip(columns, row)}
            img = Path(cells["path"] or "")
            if not img.is_absolute():
                img = path.parent / img
            labels = tuple(x.strip() for x in (cells.get("labels") or "").split(";") if x.strip())
            label = cells.get("label") or (labels[0] if labels else None)
            records.append(ImageRecord(str(img), label, cells.get("split"), labels))
    if not records:
        raise DatasetError(f"manifest has no rows: {path}")
    return records


def load_records(source: str | Path) -> list[ImageRecord]:
    """A folder of class sub-folders or a ``.csv`` manifest."""
    source = Path(source)
    if source.is_file() and source.suffix.lower() == ".csv":
        return read_manifest(source)
    if source.is_dir():
        return scan_folder(source)
    raise DatasetError(f"expected a directory or a .csv manifest: {source}")


def class_names(records: Iterable[ImageRecord]) -> list[str]:
    """Sorted class names present in the records."""
    return sorted({r.label for r in records if r.label is not None})


@dataclass
class SkipReport:
    """Files that could not be read: one warning each, a summary at the end."""

    skipped: list[tuple[str, str]] = field(default_factory=list)

    def add(self, path: str, reason: str) -> None:
        self.skipped.append((path, reason))
        log.warning("skipping unreadable image: %s", reason)

    def summary(self) -> str:
        return f"{len(self.skipped)} unreadable file(s) skipped" if self.skipped else "no unreadable files"


def load_batch(
    paths: Sequence[str], size: int, report: SkipReport | None = None
) -> tuple[np.ndarray, list[int]]:
    """Decode and resize ``paths``; return ``(N_ok, size, size, 3) uint8`` and the indices that loaded."""
    report = report if report is not None else SkipReport()
    arrays, ok = [], []
    for i, p in enumerate(paths):
        try:
            arrays.append(resize_rgb(load_rgb(p), size))
            ok.append(i)
        except UnreadableImage as exc:
            report.add(p, str(exc))
    batch = np.stack(arrays) if arrays else np.zeros((0, size, size, 3), np.uint8)
    return batch, ok


def label_counts(records: Iterable[ImageRecord]) -> Counter:
    return Counter(r.label for r in records)
