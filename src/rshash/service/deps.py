"""The service object the routes share (the index, caches, limits) and the FastAPI dependency giving it.

The shared :class:`~rshash.index.Index` is thread-safe; blocking work (SQLite, faiss,
decoding, encoding) runs in the threadpool. Heavy work is bounded per process: at most
``max_encodes`` uploads are received, decoded and encoded at once, and at most
``max_large_decodes`` large indexed images are decoded at once for thumbnails or conversion.
"""

from __future__ import annotations

import re
import threading
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Annotated, AsyncContextManager

import numpy as np
from fastapi import Depends, HTTPException, Request

from ..index import Hit, ImageMeta, Index
from ..index.search import TABLE_SCAN_ROWS
from ..ranking import DEFAULT_SHORTLIST
from .limits import Slots
from .schemas import DEFAULT_K, K_MAX, UNLABELLED
from .thumbnails import LRUCache

#: Uploads above this many pixels are refused before decoding (8000 x 8000; ~450 MB while decoding).
DEFAULT_MAX_PIXELS = 64_000_000
#: Indexed images above this many pixels count as large: their decodes take a ``max_large_decodes`` slot.
LARGE_IMAGE_PIXELS = 4_000_000


@dataclass(frozen=True)
class Settings:
    """Limits of one server (``create_app``'s arguments)."""

    max_upload_mb: float = 20
    max_pixels: int = DEFAULT_MAX_PIXELS
    thumbnail_size: int = 128
    thumbnail_cache_bytes: int = 64 * 1024 * 1024
    max_encodes: int = 2
    max_large_decodes: int = 2

    def __post_init__(self) -> None:
        if self.max_upload_mb <= 0:
            raise ValueError(f"max_upload_mb must be > 0, got {self.max_upload_mb}")

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)

    @property
    def upload_too_large(self) -> str:
        return f"upload too large: the limit is {self.max_upload_mb:g} MB"


@dataclass(frozen=True)
class SearchQuery:
    """A checked search request."""

    k: int
    radius: int | None
    label: str | None
    rerank: bool
    offset: int = 0

    @property
    def labels(self) -> list[str | None] | None:
        """The label filter as the index takes it (``None`` in the list: unlabelled images)."""
        if self.label is None:
            return None
        return [None if self.label == UNLABELLED else self.label]


@dataclass(frozen=True)
class IndexShape:
    """What the service keeps of one index generation."""

    generation: int
    items: int
    rasters: bool  # holds any raster (its chips are served by the geo routes)


class Service:
    """What the endpoints share: the index, caches and limits."""

    def __init__(self, index: Index, settings: Settings):
        self.index = index
        self.settings = settings
        self.thumbnails = LRUCache(settings.thumbnail_cache_bytes)
        self.converted = LRUCache(max(settings.thumbnail_cache_bytes, 16 << 20))  # originals re-encoded as PNG
        self.encode_slots = Slots(settings.max_encodes)
        self.large_decodes = Slots(settings.max_large_decodes)
        self._encoder_lock = threading.Lock()
        self._labels_lock = threading.Lock()
        self._labels: tuple[int, list[str]] | None = None  # (index generation, known class names)
        self._shape: IndexShape | None = None  # counts of the last generation seen

    # -------------------------------------------------------------- model

    def model_available(self) -> bool:
        return (self.index.model_dir / "config.json").is_file()

    def load_encoder(self) -> None:
        """Load the model's encoder once (first use takes ~1 s); 503 if it cannot be loaded."""
        with self._encoder_lock:
            try:
                self.index.encoder  # noqa: B018 (loads and checks it)
            except FileNotFoundError as exc:
                raise HTTPException(
                    status_code=503,
                    detail=f"searching by image is unavailable: the model directory of this index "
                    f"({self.index.model_dir.name}) is missing on the server; restart with "
                    "`rshash serve --model MODEL_DIR`. Searching by id still works",
                ) from exc
            except ValueError as exc:  # e.g. the model directory was overwritten by another model
                raise HTTPException(
                    status_code=503,
                    detail=f"searching by image is unavailable: {strip_paths(str(exc))}. Searching by id still works",
                ) from exc

    # -------------------------------------------------------------- images

    def meta(self, id: int) -> ImageMeta:
        meta = self.index.get(id)
        if meta is None:
            raise HTTPException(status_code=404, detail=f"no image with id {id} in the index")
        return meta

    def decode_slot(self, pixels: int) -> AsyncContextManager:
        """A slot for decoding an indexed image of ``pixels`` pixels: bounded for large ones, free otherwise."""
        return self.large_decodes() if pixels > LARGE_IMAGE_PIXELS else nullcontext()

    # -------------------------------------------------------------- search

    def known_labels(self) -> list[str]:
        """Class names in the index (``(unlabelled)`` too, if any): read again only after the index changed."""
        # One single-row read per check; stats() would count every class and list the directory each time.
        generation = self.index.generation
        cached = self._labels
        if cached is None or cached[0] != generation:
            with self._labels_lock:
                stats = self.index.stats()  # labels already named, None as "(unlabelled)"
                self._labels = cached = (int(stats["generation"]), [str(name) for name in stats["labels"]])
        return cached[1]

    def shape(self) -> "IndexShape":
        """How many items and whether any rasters: one single-row read per call (the generation), counted again
        only after the index changed."""
        generation = self.index.generation  # read first: what is committed meanwhile is seen, or read again
        cached = self._shape
        if cached is None or cached.generation != generation:
            self._shape = cached = IndexShape(generation, len(self.index), bool(self.index.rasters()))
        return cached

    def count(self) -> int:
        """The number of indexed items."""
        return self.shape().items

    def quick_search(self, radius: int | None) -> bool:
        """Whether a search by id is cheap enough to run on the event loop instead of the threadpool: no radius,
        and an index of image files small enough to be scanned exactly from memory (at most
        :data:`~rshash.index.search.TABLE_SCAN_ROWS` items: about a millisecond). Larger indexes, radius
        searches and raster chips (geo lookups) go to the threadpool, so the loop never waits long. Decided from
        the shape cached for the committed generation (one single-row read): counting a changed index is left to
        the threadpool (:meth:`shape`), so until then a search goes there."""
        cached = self._shape
        if radius is not None or cached is None or cached.generation != self.index.generation:
            return False
        return cached.items <= TABLE_SCAN_ROWS and not cached.rasters

    def check_query(self, k: int | None, radius: int | None, label: str | None, rerank: bool = True,
                    offset: int = 0) -> SearchQuery:
        bits = self.index.bits
        if radius is not None and not 0 <= radius <= bits:
            raise HTTPException(status_code=422, detail=f"radius must be in 0..{bits} (the code length), got {radius}")
        label = (label or "").strip() or None
        if label is not None:
            known = self.known_labels()
            if label not in known:
                shown = ", ".join(known[:30]) + (", ..." if len(known) > 30 else "")
                raise HTTPException(status_code=422, detail=f"unknown class {label!r}; the index has: {shown}")
        if k is None:
            k = DEFAULT_K if radius is None else K_MAX  # a radius search returns everything within, up to k_max
        check_page(k, offset)
        return SearchQuery(k, radius, label, rerank, offset)

    def search(self, query: int | np.ndarray, q: SearchQuery) -> list[Hit]:
        """One index search: an id ("more like this", itself excluded) or uint8 RGB pixels (an upload).

        An id that is a raster chip is searched as a place, so the chips overlapping its own footprint (its
        tiling neighbours) are dropped, by the geo search's own-place rule (no near-duplicate suppression)."""
        if isinstance(query, np.ndarray):
            self.load_encoder()
        try:
            if isinstance(query, int) and self.chip_ids([query]):
                geo = self.index.geo
                places = geo.search(geo.id_query([query]), q.k, radius=q.radius, rerank=q.rerank, labels=q.labels,
                                    max_overlap=None, offset=q.offset)
                return [Hit(p.rank, p.id, p.distance, p.path, p.label, p.score, p.similarity) for p in places]
            return self.index.search(query, q.k, radius=q.radius, rerank=q.rerank, labels=q.labels, offset=q.offset)
        except ValueError as exc:
            if isinstance(query, int) and self.index.get(query) is None:  # checked only when the search failed
                raise HTTPException(status_code=404, detail=f"no image with id {query} in the index") from exc
            raise

    def chip_ids(self, ids: list[int]) -> set[int]:
        """Those of ``ids`` that are raster chips (their images are read from the raster: geo chip URLs)."""
        return set(self.index.geo.chips(ids)) if ids and self.shape().rasters else set()  # images: no lookup


def check_page(k: int, offset: int) -> None:
    """422 unless ``offset + k`` is within the re-ranked window (so every page comes from one order)."""
    if offset < 0 or offset + k > PAGE_WINDOW:
        raise HTTPException(status_code=422, detail=f"offset + k must be at most {PAGE_WINDOW} (the re-ranked "
                            f"window), got offset {offset} and k {k}")


async def get_service(request: Request) -> Service:
    """The :class:`Service` of the app serving ``request`` (async: resolved on the event loop, no thread hop)."""
    return request.app.state.service


ServiceDep = Annotated[Service, Depends(get_service)]


#: Results reachable by paging: ``offset + k`` within the re-ranked shortlist.
PAGE_WINDOW = DEFAULT_SHORTLIST

_ABSOLUTE_PATH = re.compile(r"(?<![\w.])/(?:[^\s()'\",;:/]+/)*([^\s()'\",;:/]+)")


def strip_paths(message: str) -> str:
    """Absolute paths in an error message shortened to their last component."""
    return _ABSOLUTE_PATH.sub(r"\1", message)
