"""Archive index and search: SQLite metadata (source of truth) + a derived code index (faiss or Milvus).

The public names are loaded on first use (PEP 562), so importing a submodule such as ``rshash.index.store``
(as the ingest pipeline in :mod:`rshash.encoding` does) does not import the whole index facade.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_NAMES = {
    "FORMAT_VERSION": ".store",
    "ImageMeta": ".store",
    "IndexFormatError": ".store",
    "Index": ".archive",
    "ModelMismatchError": ".archive",
    "Query": ".archive",
    "Hit": ".search",
    "AddReport": "..encoding.report",
    "KINDS": ".backends.faiss",
}

__all__ = sorted(_NAMES)


def __getattr__(name: str) -> Any:
    module = _NAMES.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(module, __name__), name)
    globals()[name] = value
    return value
