"""Archive index and search: SQLite metadata (source of truth) + a derived faiss binary index."""

from .archive import Index, ModelMismatchError, Query
from .ingest import AddReport
from .search import Hit
from .faiss_index import KINDS
from .store import FORMAT_VERSION, ImageMeta, IndexFormatError

__all__ = [
    "FORMAT_VERSION",
    "KINDS",
    "AddReport",
    "Hit",
    "ImageMeta",
    "Index",
    "IndexFormatError",
    "ModelMismatchError",
    "Query",
]
