"""The web app and HTTP API over one index (``rshash serve``): the application factory.

Endpoints (every error is JSON ``{"detail": "message"}`` with a 4xx status, but for a
foreign Host header: plain 400):

* ``GET  /``                           the search page (static files served by this app; nothing external)
* ``POST /api/search``                 multipart upload ``image`` (+ ``k``, ``radius``, ``label``, ``rerank``
                                       as form or query fields)
* ``GET  /api/search?id=N``            "more like this" for an indexed image (itself excluded; a raster chip's
                                       own overlapping neighbours too)
* ``GET  /api/images/{id}``            the original file (TIFF, which browsers cannot show, as PNG)
* ``GET  /api/images/{id}/thumbnail``  a small JPEG (cached in memory, least recently used evicted)
* ``GET  /api/stats``                  index size, code length, model fingerprint, classes with counts
* ``GET  /healthz``                    liveness, and the index is readable
* ``GET  /docs``, ``/openapi.json``    API reference (an offline page: no CDN)
* ``GET  /map``, ``/api/geo/...``      the map page and the geo API over raster chips (:mod:`.routers.geo`):
                                       search by point, box, ids or uploaded images; remove a raster

Every request is bounded: see :func:`limits_text` (also the intro of ``/docs``).

Layout: :mod:`.schemas` (response models), :mod:`.deps` (the shared service object and
its dependency), :mod:`.routers` (search, images, about), :mod:`.uploads`, :mod:`.decoding`,
:mod:`.thumbnails`, :mod:`.limits` and :mod:`.errors`.
"""

from __future__ import annotations

import json
import os
from contextlib import asynccontextmanager
from pathlib import Path
from typing import AsyncIterator, Sequence

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from starlette.middleware.trustedhost import TrustedHostMiddleware

from .. import __version__
from ..index import Index
from ..geo.queries import BOX_MAX_CHIPS, BOX_TILES
from ..geo.search import MAX_AOI_CHIPS
from ..index.search import MAX_EXAMPLES
from ..ranking import DEFAULT_SHORTLIST
from .decoding import pixel_limit
from .deps import DEFAULT_MAX_PIXELS, PAGE_WINDOW, Service, Settings
from .errors import add_error_handlers
from .limits import BodyLimit, served_hosts
from .routers import about, geo, images, search
from .routers.about import STATIC_DIR
from .schemas import K_MAX

#: Room for the multipart envelope and the small form fields on top of the image itself.
MULTIPART_OVERHEAD = 64 * 1024
#: Environment variable with :func:`create_app`'s keyword arguments as JSON, for worker processes.
CONFIG_ENV = "RSHASH_SERVE_CONFIG"
#: ONNX Runtime threads per uploaded image: one. Uploads are many small requests spread over the workers (and
#: concurrent requests of one worker); one thread costs 14 ms of CPU per upload where two cost 16 ms for 1-2 ms
#: less latency (benchmarks/serve_load.py). Override with RSHASH_SERVE_THREADS.
QUERY_ENCODER_THREADS = int(os.environ.get("RSHASH_SERVE_THREADS", "1"))
#: BLAS threads of a serving process (numpy's matrix products: scoring, relevance feedback): as many as the
#: encoder's. Several BLAS threads per request spin against the other requests and workers on the same cores:
#: a refinement scoring 10^5 items took 94 ms of server time with the default BLAS threads, 61 ms with one.
SERVE_BLAS_THREADS = QUERY_ENCODER_THREADS


def limits_text(settings: Settings) -> str:
    """The request limits, as the API reference states them."""
    return (
        f"Limits: k at most {K_MAX}; offset + k at most {PAGE_WINDOW} (pages come from one re-ranked order); "
        f"a radius returns at most k results (default {K_MAX}) and only the {DEFAULT_SHORTLIST} nearest by Hamming "
        f"distance are re-ranked; at most {MAX_EXAMPLES} ids (repeated id=) or uploaded images per search, "
        f"searched together; an area of interest holding more than {MAX_AOI_CHIPS:,} chips is refused (422; one "
        f"covering every chip is no filter); a query box is read as one tile up to {BOX_TILES:g} tiles a side, as "
        f"the chips it covers up to {BOX_MAX_CHIPS}, and refused beyond (422); "
        f"uploads at most {settings.max_upload_mb:g} MB each request and {pixel_limit(settings.max_pixels):,} "
        f"pixels each image, at most {settings.max_encodes} encoded at once. A raster that cannot be read is 503."
    )


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
    max_large_decodes: int = 2,
    preload_model: bool = False,
    allowed_hosts: Sequence[str] | None = None,
) -> FastAPI:
    """The FastAPI app serving the index in ``index_dir`` (or an already open ``index``).

    ``max_upload_mb`` bounds a query image's bytes (413 above it), ``max_pixels`` its
    decoded size; at most ``max_encodes`` uploads are received and encoded at once and at
    most ``max_large_decodes`` large indexed images decoded at once. ``preload_model`` loads
    the encoder now instead of on the first upload. ``allowed_hosts``: the Host header
    names answered (default: 127.0.0.1, localhost, [::1]; ``["*"]``: any); others get 400.
    An index opened here is closed when the app shuts down.
    """
    if (index_dir is None) == (index is None):
        raise ValueError("give either index_dir or an open index")
    settings = Settings(
        max_upload_mb=max_upload_mb,
        max_pixels=max_pixels,
        thumbnail_size=thumbnail_size,
        thumbnail_cache_bytes=int(thumbnail_cache_mb * 1024 * 1024),
        max_encodes=max_encodes,
        max_large_decodes=max_large_decodes,
    )
    owns_index = index is None
    if index is None:
        index = Index.open(index_dir, model_dir, encoder_threads=QUERY_ENCODER_THREADS)
    service = Service(index, settings)
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
        "by Hamming distance between binary codes, re-ranked by descriptor similarity. "
        "Errors are JSON `{\"detail\": \"message\"}`. " + limits_text(settings),
        docs_url=None,  # FastAPI's pages load Swagger UI / ReDoc from a CDN; /docs is self-contained
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.service = service
    # The last added runs first: the Host check, then the body limit.
    app.add_middleware(
        BodyLimit, max_bytes=settings.max_upload_bytes + MULTIPART_OVERHEAD, message=settings.upload_too_large
    )
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=served_hosts(extra=allowed_hosts or ()))
    add_error_handlers(app)
    for router in (search.router, images.router, about.router, geo.router):
        app.include_router(router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app


def create_app_from_env() -> FastAPI:
    """:func:`create_app` with the arguments in ``$RSHASH_SERVE_CONFIG`` (uvicorn's factory in each worker)."""
    try:
        kwargs = json.loads(os.environ[CONFIG_ENV])
    except (KeyError, ValueError) as exc:
        raise RuntimeError(f"${CONFIG_ENV} must hold create_app's arguments as a JSON object") from exc
    from threadpoolctl import threadpool_limits

    threadpool_limits(SERVE_BLAS_THREADS, user_api="blas")  # for the life of this serving process
    return create_app(**kwargs)
