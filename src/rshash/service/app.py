"""The web app and HTTP API over one index (``rshash serve``).

Endpoints (every error is JSON ``{"detail": "message"}`` with a 4xx status):

* ``GET  /``                           the search page (static files served by this app; nothing external)
* ``POST /api/search``                 multipart upload ``image`` (+ ``k``, ``radius``, ``label`` as form or query fields)
* ``GET  /api/search?id=N``            "more like this" for an indexed image (itself excluded)
* ``GET  /api/images/{id}``            the original file (formats browsers cannot show, such as TIFF, as PNG)
* ``GET  /api/images/{id}/thumbnail``  a small JPEG (cached in memory, least recently used evicted)
* ``GET  /api/stats``                  index size, code length, model fingerprint, classes with counts
* ``GET  /healthz``                    liveness, and the index is readable
* ``GET  /docs``, ``/openapi.json``    API reference (an offline page: no CDN)

Images are only ever served by id from the index, never from a path the client
gives. Blocking work (decoding, encoding, searching) runs in the threadpool; the
shared :class:`~rshash.index.Index` is thread-safe (its SQLite store and faiss
searcher are behind locks), and at most ``max_encodes`` uploads decode and encode
at once, so a burst of big uploads can neither exhaust memory nor starve searches by id.
"""

import asyncio
import io
import logging
import os
import re
import threading
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, AsyncIterator

import numpy as np
from fastapi import FastAPI, File, Form, HTTPException, Query, Request, UploadFile
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from PIL import Image
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .. import __version__
from ..data import images as _images
from ..data.images import UnreadableImage, decode_rgb
from ..index import Hit, Index, ImageMeta
from ..index.faiss_index import faiss  # imported there with its loader's log lines quietened
from .thumbnails import LRUCache, browser_image, make_thumbnail

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
DEFAULT_K = 20
K_MAX = 1000
#: Uploads above this many pixels are refused before decoding (8000 x 8000; ~450 MB while decoding).
DEFAULT_MAX_PIXELS = 64_000_000
#: Room for the multipart envelope and the small form fields on top of the image itself.
MULTIPART_OVERHEAD = 64 * 1024
#: Browser-cache lifetime of image responses: an id's content never changes (a changed file gets a new id).
IMAGE_HEADERS = {"Cache-Control": "public, max-age=86400", "X-Content-Type-Options": "nosniff"}


# ---------------------------------------------------------------------------- response models (for /docs)


class Result(BaseModel):
    rank: int = Field(description="1 = nearest")
    id: int = Field(description="the image's id in the index")
    distance: int = Field(description="Hamming distance between the codes")
    label: str | None = Field(description="class of the indexed image, if known")
    path: str = Field(description="display name: parent folder / file name (never the server's full path)")
    thumbnail_url: str
    image_url: str


class SearchResponse(BaseModel):
    query: dict = Field(description='what was searched: {"id": N} or {"filename", "width", "height"}')
    k: int
    radius: int | None
    label: str | None = Field(description="class filter, if any")
    query_ms: float = Field(description="server-side time: decoding + encoding (uploads) + search")
    count: int
    results: list[Result]


class ClassCount(BaseModel):
    name: str
    count: int


class StatsResponse(BaseModel):
    index: str = Field(description="name of the index directory")
    images: int
    bits: int = Field(description="code length")
    kind: str = Field(description="search structure: flat, multihash or ivf")
    fingerprint: str = Field(description="fingerprint of the model that made the codes")
    created_at: str | None
    classes: list[ClassCount]
    can_search_by_image: bool = Field(description="false when the model files are missing (search by id still works)")
    max_upload_bytes: int
    max_pixels: int
    k_max: int
    default_k: int
    thumbnail_size: int
    version: str


class Health(BaseModel):
    status: str
    images: int


_NOT_FOUND = {404: {"description": "no image with that id in the index"}}
_INVALID = {422: {"description": "invalid parameter"}}
_UPLOAD_ERRORS = {
    413: {"description": "upload over the size or pixel limit"},
    422: {"description": "invalid parameter, or not a readable image"},
    503: {"description": "the model is unavailable: search by image impossible (search by id still works)"},
}


# ---------------------------------------------------------------------------- the service state


class _UploadLimit:
    """Refuse request bodies over ``max_bytes``: at once from Content-Length, else as they stream in.

    Starlette's multipart parser would otherwise spool an unbounded body to disk
    before the endpoint could look at it.
    """

    def __init__(self, app: ASGIApp, max_bytes: int, message: str):
        self.app = app
        self.max_bytes = max_bytes
        self.message = message

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            await JSONResponse({"detail": self.message}, status_code=413)(scope, receive, send)
            return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    # Raised inside the body parser: FastAPI passes HTTPExceptions through to its handler.
                    raise HTTPException(status_code=413, detail=self.message)
            return message

        await self.app(scope, limited_receive, send)


@dataclass
class _Query:
    """A parsed search request."""

    k: int
    radius: int | None
    label: str | None


class Service:
    """What the endpoints share: the index, caches and limits."""

    def __init__(
        self,
        index: Index,
        max_upload_bytes: int,
        max_pixels: int,
        thumbnail_size: int,
        thumbnail_cache_bytes: int,
        max_encodes: int,
        faiss_threads: int | None = 1,
    ):
        self.index = index
        self.faiss_threads = faiss_threads
        self.max_upload_bytes = max_upload_bytes
        self.max_pixels = max_pixels
        self.thumbnail_size = thumbnail_size
        self.thumbnails = LRUCache(thumbnail_cache_bytes)
        self.converted = LRUCache(max(thumbnail_cache_bytes, 16 << 20))  # originals re-encoded as PNG
        self.max_encodes = max_encodes
        self._encoder_lock = threading.Lock()
        self._slots: tuple[asyncio.AbstractEventLoop, asyncio.Semaphore] | None = None

    # -------------------------------------------------------------- helpers

    def encode_slots(self) -> asyncio.Semaphore:
        """The semaphore bounding concurrent decode+encode work (one per event loop)."""
        loop = asyncio.get_running_loop()
        if self._slots is None or self._slots[0] is not loop:
            self._slots = (loop, asyncio.Semaphore(self.max_encodes))
        return self._slots[1]

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
                    detail=f"searching by image is unavailable: {_strip_paths(str(exc))}. Searching by id still works",
                ) from exc

    def meta(self, id: int) -> ImageMeta:
        meta = self.index.get(id)
        if meta is None:
            raise HTTPException(status_code=404, detail=f"no image with id {id} in the index")
        return meta

    def check_query(self, k: int | None, radius: int | None, label: str | None) -> _Query:
        if radius is not None and not 0 <= radius <= self.index.bits:
            raise HTTPException(
                status_code=422, detail=f"radius must be in 0..{self.index.bits} (the code length), got {radius}"
            )
        if label is not None:
            label = label.strip() or None
        if label is not None:
            known = [str(name) for name in self.index.stats()["labels"]]
            if label not in known:
                shown = ", ".join(known[:30]) + (", ..." if len(known) > 30 else "")
                raise HTTPException(status_code=422, detail=f"unknown class {label!r}; the index has: {shown}")
        if k is None:
            k = DEFAULT_K if radius is None else K_MAX  # a radius search returns everything within, up to k_max
        return _Query(k, radius, label)

    def decode_upload(self, data: bytes, filename: str) -> np.ndarray:
        """Pixels of an upload; 413 / 422 with a clear message for anything unusable."""
        if not data:
            raise HTTPException(status_code=422, detail="the uploaded file is empty")
        try:  # header only: refuse decompression bombs before allocating anything
            # (no warnings.catch_warnings here: it swaps process-global state, unsafe across threads)
            with Image.open(io.BytesIO(data)) as img:
                width, height = img.size
        except Image.DecompressionBombError as exc:
            raise HTTPException(
                status_code=413, detail=f"{filename}: too many pixels for this server ({exc})"
            ) from exc
        except Exception as exc:
            raise HTTPException(
                status_code=422,
                detail=f"{filename} is not an image this server can read (JPEG, PNG, TIFF, WebP, BMP, GIF...)",
            ) from exc
        limit = min(self.max_pixels, _images.MAX_PIXELS)
        if width * height > limit:
            raise HTTPException(
                status_code=413,
                detail=f"{filename} is {width}x{height} = {width * height:,} pixels; the limit is {limit:,} pixels",
            )
        try:
            return decode_rgb(data, filename)
        except UnreadableImage as exc:
            if "too many pixels" in str(exc):
                raise HTTPException(status_code=413, detail=str(exc)) from exc
            raise HTTPException(status_code=422, detail=f"the uploaded image cannot be decoded: {exc}") from exc

    def encode(self, rgb: np.ndarray) -> np.ndarray:
        self.load_encoder()
        return self.index.code_of(rgb)

    def search(self, query: int | np.ndarray, q: _Query) -> list[Hit]:
        """``k`` nearest (or within ``radius``), of class ``label`` if given; an int query excludes itself."""
        index = self.index
        by_id = isinstance(query, int)
        if self.faiss_threads is not None:
            # OpenMP's thread count is per calling thread: set it in whichever worker thread runs this.
            faiss.omp_set_num_threads(self.faiss_threads)

        def knn(n: int) -> list[Hit]:
            return index.search_by_id(query, n) if by_id else index.search(query, n)

        try:
            return self._search(query, q, by_id, knn)
        except ValueError as exc:
            if by_id and index.get(query) is None:  # removed between the check and the search
                raise HTTPException(status_code=404, detail=f"no image with id {query} in the index") from exc
            raise

    def _search(self, query: int | np.ndarray, q: _Query, by_id: bool, knn) -> list[Hit]:
        index = self.index

        if q.radius is not None:
            hits = index.range_search(query, q.radius)
            hits = [h for h in hits if not (by_id and h.id == query) and (q.label is None or h.label == q.label)]
        elif q.label is None:
            hits = knn(q.k)
        else:  # widen the search until k of that class are found (or the whole index was ranked)
            total = len(index)
            fetch = min(max(4 * q.k, 64), total)
            while True:
                hits = [h for h in knn(fetch) if h.label == q.label]
                if len(hits) >= q.k or fetch >= total:
                    break
                fetch = min(fetch * 4, total)
        return hits[: q.k]

    def response(self, query: dict, q: _Query, hits: list[Hit], started: float) -> JSONResponse:
        """The answer (shaped as :class:`SearchResponse`), returned as is: FastAPI's re-validation of
        the response model would cost as much as the search itself."""
        return JSONResponse({
            "query": query,
            "k": q.k,
            "radius": q.radius,
            "label": q.label,
            "query_ms": round((time.perf_counter() - started) * 1000, 3),
            "count": len(hits),
            "results": [
                {
                    "rank": rank,
                    "id": h.id,
                    "distance": h.distance,
                    "label": h.label,
                    "path": _display_path(h.path),
                    "thumbnail_url": f"/api/images/{h.id}/thumbnail",
                    "image_url": f"/api/images/{h.id}",
                }
                for rank, h in enumerate(hits, start=1)
            ],
        })


def _display_path(path: str) -> str:
    """``parent/name``: enough to recognise an image, without the server's directory layout."""
    parts = path.rsplit(os.sep, 2)  # plain string work: this runs for every result
    return f"{parts[-2]}/{parts[-1]}" if len(parts) > 1 and parts[-2] else parts[-1]


_ABSOLUTE_PATH = re.compile(r"(?<![\w.])/(?:[^\s()'\",;:/]+/)*([^\s()'\",;:/]+)")


def _strip_paths(message: str) -> str:
    """Absolute paths in an error message shortened to their last component."""
    return _ABSOLUTE_PATH.sub(r"\1", message)


def _upload_name(upload: UploadFile) -> str:
    name = Path(upload.filename or "upload").name[:120]
    return repr(name) if name else "'upload'"


# ---------------------------------------------------------------------------- the app


def create_app(
    index_dir: str | Path | None = None,
    max_upload_mb: float = 20,
    *,
    model_dir: str | Path | None = None,
    index: Index | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    thumbnail_size: int = 128,
    thumbnail_cache_mb: float = 64,
    max_encodes: int = 2,
    preload_model: bool = False,
    faiss_threads: int | None = 1,
) -> FastAPI:
    """The FastAPI app serving the index in ``index_dir`` (or an already open ``index``).

    ``max_upload_mb`` bounds a query image's bytes (413 above it), ``max_pixels`` its
    decoded size. ``preload_model`` loads the encoder now instead of on the first upload.
    ``faiss_threads`` sets faiss's OpenMP threads in the threads that search (``None``:
    leave as is): a server runs one query per request, many requests at once, and an
    OpenMP team per single-code query costs ~50 ms on a busy 2-core machine against
    ~0.2 ms single-threaded. An index opened here is closed when the app shuts down.
    """
    if (index_dir is None) == (index is None):
        raise ValueError("give either index_dir or an open index")
    if max_upload_mb <= 0:
        raise ValueError(f"max_upload_mb must be > 0, got {max_upload_mb}")
    owns_index = index is None
    if index is None:
        index = Index.open(index_dir, model_dir)
    service = Service(
        index,
        max_upload_bytes=int(max_upload_mb * 1024 * 1024),
        max_pixels=max_pixels,
        thumbnail_size=thumbnail_size,
        thumbnail_cache_bytes=int(thumbnail_cache_mb * 1024 * 1024),
        max_encodes=max_encodes,
        faiss_threads=faiss_threads,
    )
    if preload_model and service.model_available():
        service.load_encoder()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        if owns_index:
            index.close()

    app = FastAPI(
        title="rshash",
        version=__version__,
        description="Content-based remote-sensing image retrieval by deep hashing: search an image archive "
        "by Hamming distance between binary codes. Errors are JSON `{\"detail\": \"message\"}`.",
        docs_url=None,  # FastAPI's pages load Swagger UI / ReDoc from a CDN; /docs below is self-contained
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.service = service
    limit_mb = f"{max_upload_mb:g} MB"
    app.add_middleware(
        _UploadLimit,
        max_bytes=service.max_upload_bytes + MULTIPART_OVERHEAD,
        message=f"upload too large: the limit is {limit_mb}",
    )
    _add_error_handlers(app)

    # ------------------------------------------------------------------ search

    @app.post("/api/search", response_model=SearchResponse, responses=_UPLOAD_ERRORS, tags=["search"])
    async def search_by_image(
        image: Annotated[UploadFile, File(description=f"query image (JPEG, PNG, TIFF, ...; at most {limit_mb})")],
        k: Annotated[int | None, Query(ge=1, le=K_MAX, description=f"number of results (default {DEFAULT_K})")] = None,
        radius: Annotated[int | None, Query(ge=0, description="only results within this Hamming distance")] = None,
        label: Annotated[str | None, Query(description="only results of this class")] = None,
        k_form: Annotated[int | None, Form(alias="k", ge=1, le=K_MAX, description="as the query parameter")] = None,
        radius_form: Annotated[int | None, Form(alias="radius", ge=0, description="as the query parameter")] = None,
        label_form: Annotated[str | None, Form(alias="label", description="as the query parameter")] = None,
    ) -> JSONResponse:
        """The nearest indexed images to an uploaded image (form fields override query parameters)."""
        started = time.perf_counter()
        q = await run_in_threadpool(
            service.check_query,
            k_form if k_form is not None else k,
            radius_form if radius_form is not None else radius,
            label_form if label_form is not None else label,
        )
        data = await image.read(service.max_upload_bytes + 1)  # bounded, whatever the envelope said
        if len(data) > service.max_upload_bytes:
            raise HTTPException(status_code=413, detail=f"upload too large: the limit is {limit_mb}")
        name = _upload_name(image)
        async with service.encode_slots():
            rgb = await run_in_threadpool(service.decode_upload, data, name)
            del data
            code = await run_in_threadpool(service.encode, rgb)
        hits = await run_in_threadpool(service.search, code, q)
        query = {"filename": name.strip("'\""), "width": int(rgb.shape[1]), "height": int(rgb.shape[0])}
        return service.response(query, q, hits, started)

    @app.get("/api/search", response_model=SearchResponse, responses=_NOT_FOUND | _INVALID, tags=["search"])
    def search_by_id(
        id: Annotated[int, Query(ge=0, description="id of an indexed image (it is excluded from its results)")],
        k: Annotated[int | None, Query(ge=1, le=K_MAX, description=f"number of results (default {DEFAULT_K})")] = None,
        radius: Annotated[int | None, Query(ge=0, description="only results within this Hamming distance")] = None,
        label: Annotated[str | None, Query(description="only results of this class")] = None,
    ) -> JSONResponse:
        """The nearest indexed images to an indexed one ("more like this")."""
        started = time.perf_counter()
        q = service.check_query(k, radius, label)
        service.meta(id)
        hits = service.search(id, q)
        return service.response({"id": id}, q, hits, started)

    # ------------------------------------------------------------------ images

    @app.get(
        "/api/images/{id}",
        responses={**_NOT_FOUND, **_INVALID, 200: {"content": {"image/*": {}}, "description": "the image"}},
        response_class=Response,
        tags=["images"],
    )
    def original_image(id: Annotated[int, PathParam(description="image id")]) -> Response:
        """The indexed image file; formats a browser cannot show (TIFF, ...) are converted to PNG."""
        meta = service.meta(id)
        cached = service.converted.get(id)
        if cached is not None:
            return Response(cached, media_type="image/png", headers=IMAGE_HEADERS)
        try:
            data, media_type = browser_image(meta.path)
        except UnreadableImage as exc:
            raise HTTPException(status_code=404, detail=f"image {id} cannot be read on the server: {exc}") from exc
        if data is None:
            return FileResponse(meta.path, media_type=media_type, headers=IMAGE_HEADERS)
        service.converted.put(id, data)
        return Response(data, media_type=media_type, headers=IMAGE_HEADERS)

    @app.get(
        "/api/images/{id}/thumbnail",
        responses={**_NOT_FOUND, **_INVALID, 200: {"content": {"image/jpeg": {}}, "description": "JPEG thumbnail"}},
        response_class=Response,
        tags=["images"],
    )
    def thumbnail(id: Annotated[int, PathParam(description="image id")]) -> Response:
        """A JPEG of the image at most ``thumbnail_size`` pixels on a side."""
        meta = service.meta(id)  # checked every time: a removed image stops being served
        data = service.thumbnails.get(id)
        if data is None:
            try:
                data = make_thumbnail(meta.path, service.thumbnail_size)
            except UnreadableImage as exc:
                raise HTTPException(status_code=404, detail=f"image {id} cannot be read on the server: {exc}") from exc
            service.thumbnails.put(id, data)
        return Response(data, media_type="image/jpeg", headers=IMAGE_HEADERS)

    # ------------------------------------------------------------------ about

    @app.get("/api/stats", response_model=StatsResponse, tags=["about"])
    def stats() -> dict:
        """Index size, code length, model fingerprint and classes with counts."""
        s = index.stats()
        return {
            "index": Path(s["path"]).name,
            "images": s["images"],
            "bits": s["bits"],
            "kind": s["kind"],
            "fingerprint": s["fingerprint"],
            "created_at": s["created_at"],
            "classes": [{"name": str(n), "count": c} for n, c in s["labels"].items()],
            "can_search_by_image": service.model_available(),
            "max_upload_bytes": service.max_upload_bytes,
            "max_pixels": min(service.max_pixels, _images.MAX_PIXELS),
            "k_max": K_MAX,
            "default_k": DEFAULT_K,
            "thumbnail_size": service.thumbnail_size,
            "version": __version__,
        }

    @app.get("/healthz", response_model=Health, tags=["about"])
    def healthz() -> dict:
        """``ok`` while the server answers and the index is readable."""
        try:
            count = len(index)
        except Exception as exc:  # e.g. the database went away
            raise HTTPException(status_code=503, detail=f"index unreadable: {type(exc).__name__}") from exc
        return {"status": "ok", "images": count}

    # ------------------------------------------------------------------ page

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html")

    @app.get("/docs", include_in_schema=False)
    def docs() -> FileResponse:
        return FileResponse(STATIC_DIR / "docs.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app


def _add_error_handlers(app: FastAPI) -> None:
    """Every error as ``{"detail": "one clear message"}``."""

    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        parts = []
        for err in exc.errors():
            where = [str(p) for p in err.get("loc", ()) if p not in ("query", "body", "path", "form")]
            name = ".".join(where) or "request"
            if err.get("type") == "missing":
                parts.append(f"{name} is required")
            else:
                parts.append(f"{name}: {err.get('msg', 'invalid')}" + _got(err))
        return JSONResponse({"detail": "; ".join(parts) or "invalid request"}, status_code=422)

    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        return JSONResponse({"detail": detail}, status_code=exc.status_code, headers=getattr(exc, "headers", None))

    async def server_error(request: Request, exc: Exception) -> JSONResponse:
        log.exception("error serving %s %s", request.method, request.url.path)
        return JSONResponse({"detail": f"internal error ({type(exc).__name__}); see the server log"}, status_code=500)

    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(Exception, server_error)


def _got(err: dict) -> str:
    value = err.get("input")
    if isinstance(value, (str, int, float)) and len(str(value)) <= 40:
        return f", got {value!r}"
    return ""
