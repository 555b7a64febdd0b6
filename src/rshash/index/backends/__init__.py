"""Code backends: where the Hamming shortlist of an index comes from (the contract: :mod:`.base`).

* ``faiss`` (default): an embedded faiss binary index, saved as a cache file beside ``meta.sqlite``
  (:mod:`.faiss`, kept up to date by :mod:`..live`).
* ``milvus``: a Milvus collection of binary vectors with the HAMMING metric (:mod:`.milvus`), on a
  local Milvus Lite file or a Milvus server. Imported only when an index uses it, so nothing imports
  pymilvus otherwise.

Either way SQLite stays the source of truth: the backend holds ``(id, code)`` pairs derived from it
and is re-synced from it when they disagree. The choice is recorded in the index meta
(``backend``, ``milvus_uri``, ``milvus_collection``).
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

from .uri import is_remote

if TYPE_CHECKING:
    from .base import CodeBackends

BACKENDS = ("faiss", "milvus")
#: Index kinds each backend can serve (Milvus Lite: ``flat`` only, see :mod:`.milvus`).
BACKEND_KINDS = {"faiss": ("flat", "multihash", "ivf"), "milvus": ("flat", "ivf")}
#: The Milvus Lite file used when no URI is given, inside the index directory.
DEFAULT_LITE_FILE = "milvus.db"


def check_backend_kind(backend: str, uri: str | None, kind: str) -> None:
    """Refuse a kind the backend cannot build (Milvus Lite: ``flat`` only)."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown search backend {backend!r}: expected one of {', '.join(BACKENDS)}")
    if kind not in BACKEND_KINDS[backend]:
        raise ValueError(f"the {backend} backend has no kind {kind!r}: use one of {', '.join(BACKEND_KINDS[backend])}")
    if backend == "milvus" and kind == "ivf" and not (uri and is_remote(uri)):
        raise ValueError("Milvus Lite supports only BIN_FLAT (kind flat); kind ivf (BIN_IVF_FLAT) needs a Milvus server")


def backend_meta(backend: str, uri: str | None, kind: str) -> dict[str, str]:
    """The index meta rows recording ``backend`` (checked against ``kind``) for a new index."""
    check_backend_kind(backend, uri, kind)
    if backend == "faiss":
        if uri:
            raise ValueError("a URI is for --backend milvus only")
        return {"backend": "faiss"}
    if uri and not is_remote(uri):
        if not uri.endswith(".db"):
            raise ValueError(f"a Milvus Lite URI is a local file ending in .db, got {uri!r}")
        uri = os.path.abspath(uri)
    # "" = INDEX_DIR/milvus.db, resolved when opened, so the index directory can be moved.
    return {"backend": "milvus", "milvus_uri": uri or "", "milvus_collection": f"rshash_{uuid.uuid4().hex[:16]}"}


def open_backend(path: Path, meta: dict[str, str]) -> "CodeBackends":
    """The code backends recorded in ``meta`` for the index in ``path``: faiss with its cache file (the default)
    or a Milvus collection."""
    backend = meta.get("backend", "faiss")
    if backend == "faiss":
        from .faiss import FaissBackends

        return FaissBackends(path)
    if backend != "milvus":
        raise ValueError(f"index {path} uses search backend {backend!r}, unknown to this version of rshash")
    from .milvus import MilvusBackend

    return MilvusBackend(meta.get("milvus_uri") or str(path / DEFAULT_LITE_FILE), meta["milvus_collection"])
