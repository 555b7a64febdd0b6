"""``/api/search``: by an indexed image's id (GET) or by an uploaded image (POST); one index search each."""

from __future__ import annotations

import os
import time
from typing import Annotated

from fastapi import APIRouter, File, Form, Query, UploadFile
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from ...index import Hit
from ..deps import PAGE_WINDOW, SearchQuery, Service, ServiceDep
from ..schemas import DEFAULT_K, INVALID, K_MAX, NOT_FOUND, UNLABELLED, UPLOAD_ERRORS, SearchResponse
from ..uploads import EncodeSlotRoute, decode_upload, read_upload, upload_name

router = APIRouter(tags=["search"])

_K = f"number of results (default {DEFAULT_K}; with a radius, everything within it up to {K_MAX})"
_RADIUS = "only results within this Hamming distance (0..code length)"
_LABEL = f"only results of this class ({UNLABELLED!r}: images without one); filtered inside the index"
_RERANK = (
    "re-rank the Hamming shortlist by descriptor similarity (default true); false: Hamming distance order, "
    "ties by id"
)

KParam = Annotated[int | None, Query(ge=1, le=K_MAX, description=_K)]
RadiusParam = Annotated[int | None, Query(ge=0, description=_RADIUS)]
LabelParam = Annotated[str | None, Query(description=_LABEL)]
RerankParam = Annotated[bool, Query(description=_RERANK)]
_OFFSET = f"results to skip (a page): offset + k at most {PAGE_WINDOW}, the re-ranked window; pages share one order"
OffsetParam = Annotated[int, Query(ge=0, le=PAGE_WINDOW, description=_OFFSET)]


@router.get("/api/search", response_model=SearchResponse, responses=NOT_FOUND | INVALID)
async def search_by_id(
    service: ServiceDep,
    id: Annotated[int, Query(ge=0, description="id of an indexed image (it is excluded from its results)")],
    k: KParam = None,
    radius: RadiusParam = None,
    label: LabelParam = None,
    rerank: RerankParam = True,
    offset: OffsetParam = 0,
) -> JSONResponse:
    """The best indexed images for an indexed one ("more like this"). An indexed raster chip's own tiling
    neighbours (overlapping its footprint) are left out, as in the geo search."""
    started = time.perf_counter()

    def answer() -> JSONResponse:
        q = service.check_query(k, radius, label, rerank, offset)
        return search_response({"id": id}, q, service.search(id, q), started, service)

    if service.quick_search(radius):  # ~1 ms: on the event loop (a thread hop would cost a third of that)
        return answer()

    def count_and_answer() -> JSONResponse:  # one hop for the whole search; the index's shape counted here
        service.shape()
        return answer()

    return await run_in_threadpool(count_and_answer)


async def search_by_image(
    service: ServiceDep,
    image: Annotated[UploadFile, File(description="query image (JPEG, PNG, TIFF, WebP, BMP or GIF)")],
    k: KParam = None,
    radius: RadiusParam = None,
    label: LabelParam = None,
    rerank: RerankParam = True,
    offset: OffsetParam = 0,
    k_form: Annotated[int | None, Form(alias="k", ge=1, le=K_MAX, description="as the query parameter")] = None,
    radius_form: Annotated[int | None, Form(alias="radius", ge=0, description="as the query parameter")] = None,
    label_form: Annotated[str | None, Form(alias="label", description="as the query parameter")] = None,
    rerank_form: Annotated[bool | None, Form(alias="rerank", description="as the query parameter")] = None,
    offset_form: Annotated[int | None, Form(alias="offset", ge=0, le=PAGE_WINDOW,
                                            description="as the query parameter")] = None,
) -> JSONResponse:
    """The best indexed images for an uploaded image (form fields override query parameters)."""
    started = time.perf_counter()
    args = (k_form if k_form is not None else k, radius_form if radius_form is not None else radius,
            label_form if label_form is not None else label, rerank_form if rerank_form is not None else rerank,
            offset_form if offset_form is not None else offset)
    # a class filter may read the index's classes (once per change): in the threadpool; the rest is arithmetic
    q = await run_in_threadpool(service.check_query, *args) if args[2] else service.check_query(*args)
    settings = service.settings
    data = await read_upload(image, settings.max_upload_bytes, settings.upload_too_large)
    name = upload_name(image)

    def decode_and_search() -> tuple[dict, list[Hit]]:  # one thread hop for the heavy part (~0.35 ms of CPU each)
        rgb = decode_upload(data, name, settings.max_pixels)
        return {"filename": name.strip("'\""), "width": int(rgb.shape[1]), "height": int(rgb.shape[0])}, \
            service.search(rgb, q)

    query, hits = await run_in_threadpool(decode_and_search)
    del data
    return search_response(query, q, hits, started, service)


# The upload route holds an encode slot from before its body is read (see rshash.service.uploads).
router.add_api_route(
    "/api/search",
    search_by_image,
    methods=["POST"],
    response_model=SearchResponse,
    responses=UPLOAD_ERRORS,
    route_class_override=EncodeSlotRoute,
)


def search_response(query: dict, q: SearchQuery, hits: list[Hit], started: float, service: Service) -> JSONResponse:
    """The answer (shaped as :class:`SearchResponse`), returned as is: FastAPI's re-validation of
    the response model would cost as much as the search itself. Raster chips are served by the geo chip route
    (they have no image file of their own)."""
    chips = service.chip_ids([h.id for h in hits])
    return JSONResponse({
        "query": query,
        "k": q.k,
        "offset": q.offset,
        "radius": q.radius,
        "label": q.label,
        "rerank": q.rerank,
        "query_ms": round((time.perf_counter() - started) * 1000, 3),
        "count": len(hits),
        "results": [
            {
                "rank": h.rank,
                "id": h.id,
                "distance": h.distance,
                "score": h.score,
                "similarity": h.similarity,
                "label": h.label,
                "path": display_path(h.path),
                **(chip_urls(h.id) if h.id in chips else image_urls(h.id)),
            }
            for h in hits
        ],
    })


def image_urls(id: int) -> dict[str, str]:
    return {"thumbnail_url": f"/api/images/{id}/thumbnail", "image_url": f"/api/images/{id}"}


def chip_urls(id: int) -> dict[str, str]:
    """A raster chip's pixels, read again from its raster (the thumbnail route serves both)."""
    url = f"/api/geo/chips/{id}/thumbnail"
    return {"thumbnail_url": url, "image_url": url}


def display_path(path: str) -> str:
    """``parent/name``: enough to recognise an image, without the server's directory layout."""
    parts = path.rsplit(os.sep, 2)  # plain string work: this runs for every result
    return f"{parts[-2]}/{parts[-1]}" if len(parts) > 1 and parts[-2] else parts[-1]
