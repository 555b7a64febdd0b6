"""Identical warnings collapsed into one line with a count: :class:`CollapsedWarnings`.

GDAL reports through rasterio's loggers (``rasterio._env``: ``CPLE_... in <message>``), rasterio and numpy
through Python warnings; reading a raster window by window repeats the same message for every chip.
While the block runs (in any thread: the loader threads too) warnings of both kinds are counted by message
instead of printed; at its end each distinct message is logged once, with how often it came.
"""

from __future__ import annotations

import logging
import warnings
from collections import Counter
from typing import Any

log = logging.getLogger(__name__)

#: Loggers GDAL and rasterio warn through (a logger's filters apply to records it creates, not its children's).
RASTERIO_LOGGERS = ("rasterio", "rasterio._env", "rasterio._err", "rasterio._io", "rasterio._base", "rasterio.env")
#: Distinct messages kept; further ones are counted under one "other warnings" line.
MAX_DISTINCT = 50
OTHER = "other warnings"


class CollapsedWarnings(logging.Filter):
    """Count warnings by message while the ``with`` block runs; log each once at its end, ``label``-prefixed.

    ``counts`` (message -> times) stays readable afterwards (a report records it)."""

    def __init__(self, label: str, logger: logging.Logger = log):
        super().__init__()
        self.label, self.logger = label, logger
        self.counts: Counter[str] = Counter()
        self._catch: Any = None

    def _count(self, message: str) -> None:
        key = message if message in self.counts or len(self.counts) < MAX_DISTINCT else OTHER
        self.counts[key] += 1

    def filter(self, record: logging.LogRecord) -> bool:  # a rasterio logger's record
        if record.levelno < logging.WARNING:
            return True
        self._count(record.getMessage())
        return False

    def _show(self, message: Any, category: type, *args: Any, **kwargs: Any) -> None:
        self._count(f"{category.__name__}: {message}")

    def __enter__(self) -> "CollapsedWarnings":
        self._catch = warnings.catch_warnings()
        self._catch.__enter__()
        warnings.simplefilter("always")  # counted here, so every occurrence must reach _show
        warnings.showwarning = self._show
        for name in RASTERIO_LOGGERS:
            logging.getLogger(name).addFilter(self)
        return self

    def __exit__(self, *exc: object) -> None:
        for name in RASTERIO_LOGGERS:
            logging.getLogger(name).removeFilter(self)
        self._catch.__exit__(*exc)
        for message, n in self.counts.items():
            self.logger.warning("%s: %s%s", self.label, message, f" (x{n})" if n > 1 else "")
