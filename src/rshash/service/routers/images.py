"""``/api/images/{id}`` and its thumbnail: indexed images only, by id, never by a path the client gives.

Decodes of large images (TIFF conversion, thumbnails) each take one of the service's
``max_large_decodes`` slots, so a burst of them cannot exhaust memory or the threadpool.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, Response
from starlette.concurrency import run_in_threadpool

from ...data.images import UnreadableImage
from ..deps import ServiceDep
from ..errors import image_error
from ..schemas import IMAGE_ERRORS
from ..thumbnails import browser_image, make_thumbnail

router = APIRouter(tags=["images"])

#: Browser-cache lifetime of image responses: an id's content never changes (a changed file gets a new id).
IMAGE_HEADERS = {"Cache-Control": "public, max-age=86400", "X-Content-Type-Options": "nosniff"}

IdParam = Annotated[int, PathParam(description="image id")]


def _unreadable(id: int, exc: UnreadableImage):
    return image_error(exc, 404, prefix=f"image {id} cannot be read on the server: ")


@router.get(
    "/api/images/{id}",
    responses={**IMAGE_ERRORS, 200: {"content": {"image/*": {}}, "description": "the image"}},
    response_class=Response,
)
async def original_image(service: ServiceDep, id: IdParam) -> Response:
    """The indexed image file; TIFF (which browsers cannot show) is converted to PNG."""
    meta = await run_in_threadpool(service.meta, id)  # checked every time: a removed image stops being served
    data = service.converted.get(id)
    if data is None:
        try:
            async with service.decode_slot(meta.width * meta.height):
                data, media_type = await run_in_threadpool(browser_image, meta.path)
        except UnreadableImage as exc:
            raise _unreadable(id, exc) from exc
        if data is None:
            return FileResponse(meta.path, media_type=media_type, headers=IMAGE_HEADERS)
        service.converted.put(id, data)
    return Response(data, media_type="image/png", headers=IMAGE_HEADERS)


@router.get(
    "/api/images/{id}/thumbnail",
    responses={**IMAGE_ERRORS, 200: {"content": {"image/jpeg": {}}, "description": "JPEG thumbnail"}},
    response_class=Response,
)
async def thumbnail(service: ServiceDep, id: IdParam) -> Response:
    """A JPEG of the image at most ``thumbnail_size`` pixels on a side."""
    meta = await run_in_threadpool(service.meta, id)
    data = service.thumbnails.get(id)
    if data is None:
        try:
            async with service.decode_slot(meta.width * meta.height):
                data = await run_in_threadpool(make_thumbnail, meta.path, service.settings.thumbnail_size)
        except UnreadableImage as exc:
            raise _unreadable(id, exc) from exc
        service.thumbnails.put(id, data)
    return Response(data, media_type="image/jpeg", headers=IMAGE_HEADERS)
