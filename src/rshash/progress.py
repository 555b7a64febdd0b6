"""Progress bars with rate and ETA (tqdm), quiet when output is not a terminal unless asked."""

from __future__ import annotations

import os
import sys
from typing import Any

from tqdm.auto import tqdm


def progress_bar(iterable: Any = None, **kwargs: Any) -> tqdm:
    """A tqdm bar on stderr; ``RSHASH_PROGRESS=0`` silences all bars (tests, logs)."""
    if os.environ.get("RSHASH_PROGRESS") == "0":
        kwargs["disable"] = True
    kwargs.setdefault("file", sys.stderr)
    kwargs.setdefault("dynamic_ncols", True)
    kwargs.setdefault("mininterval", 1.0)
    return tqdm(iterable, **kwargs)
