"""Where a Milvus collection lives: a server URI or a local Milvus Lite file (shared by the backend package and
its Milvus module, so neither imports the other at run time)."""

from __future__ import annotations


def is_remote(uri: str) -> bool:
    """Whether ``uri`` names a Milvus server (``http://``, ``https://``, ``tcp://``, ``grpc://``, ``unix:``)
    rather than a local Milvus Lite file."""
    return uri.split(":", 1)[0].lower() in ("http", "https", "tcp", "grpc", "unix") and ":" in uri
