"""Receiving a query image: bounded in memory however many clients upload at once.

* :class:`EncodeSlotRoute` takes one of the service's ``max_encodes`` slots *before* the
  request body is read (FastAPI parses a form before the endpoint or any dependency runs),
  and holds it through decoding, encoding and searching; other uploads wait unread.
* :class:`~rshash.service.limits.BodyLimit` counts the body's bytes as they arrive and
  answers 413 as soon as they pass the limit.
* Only the allowed formats are opened, and their pixel count is checked from the header.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Callable, Coroutine

import numpy as np
from fastapi import HTTPException, Request, Response, UploadFile
from fastapi.routing import APIRoute

from ..data.images import UnreadableImage
from .decoding import decode, open_image
from .errors import image_error


class EncodeSlotRoute(APIRoute):
    """A route whose requests each hold one encode slot from before their body is read until answered."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[None, None, Response]]:
        handler = super().get_route_handler()

        async def with_slot(request: Request) -> Response:
            async with request.app.state.service.encode_slots():
                return await handler(request)

        return with_slot


async def read_upload(upload: UploadFile, max_bytes: int, too_large: str) -> bytes:
    """The uploaded file's bytes; 413 above ``max_bytes``, whatever the envelope said."""
    data = await upload.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise HTTPException(status_code=413, detail=too_large)
    return data


def upload_name(upload: UploadFile) -> str:
    """The client's file name for messages: the last component only, quoted, at most 120 characters."""
    name = Path(upload.filename or "upload").name[:120]
    return repr(name) if name else "'upload'"


def decode_upload(data: bytes, name: str, max_pixels: int) -> np.ndarray:
    """Pixels of an upload; 413 / 422 with a clear message for anything unusable."""
    if not data:
        raise HTTPException(status_code=422, detail="the uploaded file is empty")
    try:
        img = open_image(io.BytesIO(data), name, max_pixels)
    except UnreadableImage as exc:
        raise image_error(exc, 422) from exc
    with img:
        try:
            return decode(img, name)
        except UnreadableImage as exc:
            raise HTTPException(status_code=422, detail=f"the uploaded image cannot be decoded: {exc}") from exc
