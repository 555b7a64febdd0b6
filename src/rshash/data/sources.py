"""What a labelled image folder records in a model as a training source: its ground resolution and bands.

A folder states its resolution (``rshash train --gsd METRES``), or the data layer knows it: UCMD (recognised
by its ``Images/<class>/`` layout and its class names) is 0.3 m. Otherwise the resolution is recorded as
unknown (None) with a warning, and an index of that model tiles rasters only at a ``--gsd`` given.
Images are decoded as RGB, so a folder's bands are red, green, blue.
"""

from __future__ import annotations

import logging
from functools import lru_cache
from pathlib import Path
from typing import Any, Sequence

from ..model_config import RGB_BANDS, UCMD_GSD_M, training_source
from .datasets import ImageRecord
from .download import UCMERCED_PIXELS, read_pixel_manifest

log = logging.getLogger(__name__)


@lru_cache(maxsize=1)
def ucmd_classes() -> frozenset[str]:
    """UCMD's 21 class names (from the pixel manifest shipped with rshash)."""
    return frozenset(name.split("/")[0] for name in read_pixel_manifest(UCMERCED_PIXELS))


def is_ucmd(records: Sequence[ImageRecord]) -> bool:
    """Whether every image is a UCMD image by layout and class: ``.../Images/<UCMD class>/<file>``."""
    classes = ucmd_classes()
    return bool(records) and all(
        r.label in classes and Path(r.path).parent.name == r.label and Path(r.path).parent.parent.name == "Images"
        for r in records)


def folder_source(data: str | Path, records: Sequence[ImageRecord], gsd: float | None = None) -> dict[str, Any]:
    """The training source of a labelled folder or manifest: ``gsd`` (metres) if given, UCMD's 0.3 m if the
    records are UCMD, else unknown (None, with a warning)."""
    if gsd is not None and not gsd > 0:
        raise ValueError(f"--gsd must be a positive number of metres, got {gsd!r}")
    if gsd is None and is_ucmd(records):
        gsd = UCMD_GSD_M
    elif gsd is None:
        log.warning("%s: ground resolution unknown: recorded as unknown in the model, so `rshash index --rasters` "
                    "with --gsd auto will refuse rasters; pass --gsd METRES (the images' metres per pixel)", data)
    return training_source("folder", Path(data).absolute(), gsd, RGB_BANDS)
