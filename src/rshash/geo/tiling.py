"""The tiling plan: which source-pixel windows (rasterio ``Window`` s) cover a raster, and how chips are named.

- **Ground resolution**: tiles are ``tile`` pixels at the target ground resolution: ``gsd="auto"`` is the
  model's training resolution nearest the raster's own (``model_gsd``: the resolutions its config records,
  0.3 m for UCMD; with ``max_mismatch`` a raster more than that factor away is refused), a float is metres,
  ``"native"`` keeps the raster's pixels (:func:`resolve_gsd`, which also says why). Windows are in source pixels; the reader resamples each window to ``out_size``.
- **Tiling**: stride = window x (1 - overlap); the last row and column are shifted back inside the
  raster; along an axis shorter than one window there is one window at 0, of the full window size (it
  extends past the raster and is read boundless, the padding as nodata: never clipped and stretched).
- **Names**: a chip's item path is ``RASTER_PATH#col,row,width,height`` (:func:`chip_path`); a window
  becomes that int tuple in one place only (:func:`window_key`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

from rasterio.windows import Window

from ..model_config import UCMD_GSD_M

#: Ground resolution (metres) of the training data when nothing else is known: UCMD's 1 ft orthophotos.
MODEL_GSD_M = UCMD_GSD_M
#: ``gsd="auto"`` in an index refuses a raster whose own resolution is more than this factor (either way)
#: from the nearest resolution its model was trained at.
MAX_GSD_MISMATCH = 2.0
#: A resampling ratio beyond this (either way) gets a warning.
EXTREME_RATIO = 8.0


class RasterError(ValueError):
    """A raster, or a request on it, that cannot be served (clear message for the user)."""


def window_key(window: Window) -> tuple[int, int, int, int]:
    """``(col_off, row_off, width, height)`` as ints: how a window is named in chip paths and SQLite."""
    col_off, row_off, width, height = (int(v) for v in window.flatten())
    return col_off, row_off, width, height


# --------------------------------------------------------------------------- tiling plan


def _starts(size: int, win: int, stride: int) -> tuple[int, ...]:
    """Window offsets along one axis: a regular stride, the last shifted back so it ends at ``size``."""
    if win >= size:
        return (0,)
    starts = list(range(0, size - win + 1, stride))
    if starts[-1] + win < size:
        starts.append(size - win)
    return tuple(starts)


@dataclass(frozen=True)
class TilingPlan:
    """Windows (source pixels) covering a raster: every ``col_starts`` x ``row_starts`` pair, row-major."""

    width: int
    height: int
    win_width: int
    win_height: int
    col_starts: tuple[int, ...]
    row_starts: tuple[int, ...]
    tile: int
    overlap: float
    target_gsd: float | None

    def __len__(self) -> int:
        return len(self.col_starts) * len(self.row_starts)

    def windows(self) -> Iterator[Window]:
        """All windows, row by row (so consecutive reads share blocks); full size even past a short axis."""
        for row in self.row_starts:
            for col in self.col_starts:
                yield Window(col, row, self.win_width, self.win_height)

    def window_containing(self, col: float, row: float) -> Window:
        """The window containing pixel (col, row) whose centre is nearest to it."""
        if not (0 <= col < self.width and 0 <= row < self.height):
            raise RasterError(f"pixel ({col:.1f}, {row:.1f}) is outside the raster")
        w, h = self.win_width, self.win_height
        c = min((s for s in self.col_starts if s <= col < s + w), key=lambda s: abs(s + w / 2 - col))
        r = min((s for s in self.row_starts if s <= row < s + h), key=lambda s: abs(s + h / 2 - row))
        return Window(c, r, w, h)


def plan_tiles(width: int, height: int, win_width: int, win_height: int, overlap: float = 0.5,
               tile: int = 256, target_gsd: float | None = None) -> TilingPlan:
    """A :class:`TilingPlan` of ``win_width`` x ``win_height`` source-pixel windows with ``overlap`` (0 <= o < 1)."""
    if not 0.0 <= overlap < 1.0:
        raise RasterError(f"overlap must be in [0, 1), got {overlap}")
    win_width, win_height = max(1, int(win_width)), max(1, int(win_height))
    stride_x = max(1, round(win_width * (1.0 - overlap)))
    stride_y = max(1, round(win_height * (1.0 - overlap)))
    return TilingPlan(width, height, win_width, win_height, _starts(width, win_width, stride_x),
                      _starts(height, win_height, stride_y), tile, overlap, target_gsd)


@dataclass(frozen=True)
class GsdChoice:
    """The ground resolution a raster is tiled at (None: its own pixels, unknown in metres) and why."""

    target: float | None
    reason: str


def _metres(value: float | None) -> str:
    return "unknown" if value is None else f"{value:.3g} m"


def resolve_gsd(gsd: str | float, native: float | None, model_gsd: float | Sequence[float] = MODEL_GSD_M,
                max_mismatch: float | None = None) -> GsdChoice:
    """Target ground resolution in metres and the reason: ``"native"`` -> ``native``, a number -> itself,
    ``"auto"`` -> the resolution of ``model_gsd`` (one or several, metres) nearest ``native`` (by ratio).

    With ``max_mismatch`` (an index passes :data:`MAX_GSD_MISMATCH`), ``"auto"`` refuses with a
    :class:`RasterError` a raster whose resolution is more than that factor from the nearest model resolution,
    or a model that records no resolution: chips so unlike the training scenes give codes that mean little.
    """
    if gsd == "native":
        return GsdChoice(native, f"native: the raster's own pixels ({_metres(native)})")
    if gsd != "auto":
        target = float(gsd)
        if not target > 0:
            raise RasterError(f"gsd must be 'auto', 'native' or a positive number of metres, got {gsd!r}")
        return GsdChoice(target, f"given: gsd {target:.3g} m (raster {_metres(native)})")
    recorded = [float(model_gsd)] if isinstance(model_gsd, (int, float)) else [float(g) for g in model_gsd]
    if not recorded:
        raise RasterError("gsd auto: the model records no training ground resolution; pass --gsd METRES "
                          "(gsd=METRES) or --gsd native")
    if native is None:
        target = recorded[0]
        return GsdChoice(target, f"auto: the model's {target:.3g} m (raster resolution unknown)")
    target = min(recorded, key=lambda g: abs(math.log(g / native)))
    ratio = max(target / native, native / target)
    if max_mismatch is not None and ratio > max_mismatch:
        raise RasterError(
            f"gsd auto: the raster's ground resolution {native:.3g} m is {ratio:.3g}x from the nearest resolution "
            f"the model was trained at ({target:.3g} m; model: {', '.join(f'{g:.3g} m' for g in recorded)}), more "
            f"than {max_mismatch:g}x: refused; pass --gsd METRES (gsd=METRES) to resample it, or --gsd native "
            "to tile its own pixels")
    which = "the model's" if len(recorded) == 1 else "the nearest of the model's"
    return GsdChoice(target, f"auto: {which} {target:.3g} m (raster {native:.3g} m, {ratio:.3g}x)")


# --------------------------------------------------------------------------- options and chip names


@dataclass(frozen=True)
class TilingOptions:
    """How rasters are cut into chips (see :mod:`rshash.geo.source`)."""

    tile: int = 256
    gsd: str | float = "auto"
    overlap: float = 0.5
    bands: Sequence[int] | None = None
    max_nodata: float = 0.5

    def source_options(self, model_gsd: Sequence[float], out_size: int) -> dict[str, Any]:
        """Options of :func:`~rshash.geo.source.open_raster` in an index: ``gsd="auto"`` picks among the
        model's resolutions and refuses a mismatch above :data:`MAX_GSD_MISMATCH`."""
        return {"tile": int(self.tile), "gsd": self.gsd, "overlap": float(self.overlap), "bands": self.bands,
                "max_nodata": float(self.max_nodata), "model_gsd": [float(g) for g in model_gsd],
                "max_mismatch": MAX_GSD_MISMATCH, "out_size": int(out_size)}


def chip_path(raster_path: str, window: Sequence[int]) -> str:
    """The item path of a chip: ``RASTER_PATH#col,row,width,height`` (stable and readable)."""
    return f"{raster_path}#{','.join(str(int(v)) for v in window)}"


def parse_chip_path(path: str) -> tuple[str, tuple[int, int, int, int]] | None:
    """``(raster path, window)`` of a chip's item path; None for an ordinary image path."""
    raster, sep, window = path.rpartition("#")
    parts = window.split(",")
    if not sep or len(parts) != 4 or not all(p.lstrip("-").isdigit() for p in parts):
        return None
    c, r, w, h = (int(p) for p in parts)
    return raster, (c, r, w, h)
