"""The tiling plan: which source-pixel windows (rasterio ``Window`` s) cover a raster, and how chips are named.

- **Ground resolution**: tiles are ``tile`` pixels at the target ground resolution: ``gsd="auto"`` is the
  model's training resolution (``model_gsd``, 0.3 m for UCMD), a float is metres, ``"native"`` keeps the
  raster's pixels. Windows are in source pixels; the reader resamples each window to ``out_size``.
- **Tiling**: stride = window x (1 - overlap); the last row and column are shifted back inside the
  raster; along an axis shorter than one window there is one window at 0, of the full window size (it
  extends past the raster and is read boundless, the padding as nodata: never clipped and stretched).
- **Names**: a chip's item path is ``RASTER_PATH#col,row,width,height`` (:func:`chip_path`); a window
  becomes that int tuple in one place only (:func:`window_key`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator, Sequence

from rasterio.windows import Window

#: Ground resolution (metres) of the training data: UCMD's 1 ft orthophotos.
MODEL_GSD_M = 0.3
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


def resolve_gsd(gsd: str | float, native: float | None, model_gsd: float = MODEL_GSD_M) -> float | None:
    """Target ground resolution in metres: ``"auto"`` -> ``model_gsd``, ``"native"`` -> ``native``, or a float."""
    if gsd == "native":
        return native
    target = float(model_gsd) if gsd == "auto" else float(gsd)
    if not target > 0:
        raise RasterError(f"gsd must be 'auto', 'native' or a positive number of metres, got {gsd!r}")
    return target


# --------------------------------------------------------------------------- options and chip names


@dataclass(frozen=True)
class TilingOptions:
    """How rasters are cut into chips (see :mod:`rshash.geo.source`)."""

    tile: int = 256
    gsd: str | float = "auto"
    overlap: float = 0.5
    bands: Sequence[int] | None = None
    max_nodata: float = 0.5

    def source_options(self, model_gsd: float, out_size: int) -> dict[str, Any]:
        return {"tile": int(self.tile), "gsd": self.gsd, "overlap": float(self.overlap), "bands": self.bands,
                "max_nodata": float(self.max_nodata), "model_gsd": float(model_gsd), "out_size": int(out_size)}


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
