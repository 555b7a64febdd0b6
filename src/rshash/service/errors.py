"""Every error as ``{"detail": "one clear message"}`` with a 4xx (or 5xx) status."""

from __future__ import annotations

import logging

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from rasterio.errors import RasterioError
from shapely.errors import GEOSException

from ..data.images import UnreadableImage
from ..geo.places import PlaceNotIndexed
from ..geo.source import RasterError
from .decoding import FormatNotAllowed, TooManyPixels
from .deps import strip_paths

log = logging.getLogger("rshash.service")


def image_error(exc: UnreadableImage, otherwise: int, prefix: str = "") -> HTTPException:
    """The HTTP error for an image that cannot be used: 413 too many pixels, 422 format refused, else ``otherwise``."""
    if isinstance(exc, TooManyPixels):
        status = 413
    elif isinstance(exc, FormatNotAllowed):
        status = 422
    else:
        status = otherwise
    return HTTPException(status_code=status, detail=f"{prefix}{exc}")


def geo_error(exc: Exception) -> HTTPException:
    """The HTTP error for a failed geo request, its message with file names only (never the server's paths):
    404 nothing indexed there or a raster unknown; 422 a request out of bounds (a box or an area of interest
    too large, a bad box or point, ...); 503 a raster that cannot be read on the server."""
    detail = strip_paths(str(exc))
    if isinstance(exc, RasterioError):
        return HTTPException(status_code=503, detail=f"a raster cannot be read on the server: {detail}")
    if isinstance(exc, GEOSException):
        return HTTPException(status_code=422, detail=f"the geometry cannot be computed: {detail}")
    if isinstance(exc, (PlaceNotIndexed, RasterError)):
        return HTTPException(status_code=404, detail=detail)
    return HTTPException(status_code=422, detail=detail)  # BoxTooLarge, AreaTooLarge and other ValueErrors


def add_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    # Raster I/O and geometry errors escaping a route: 503 / 422 with a JSON message, never a 500.
    app.add_exception_handler(RasterioError, _geo_error)
    app.add_exception_handler(GEOSException, _geo_error)
    app.add_exception_handler(Exception, _server_error)


async def _geo_error(request: Request, exc: Exception) -> Response:
    log.warning("%s %s: %s: %s", request.method, request.url.path, type(exc).__name__, exc)
    return await _http_error(request, geo_error(exc))


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    parts = []
    for err in exc.errors():
        where = [str(p) for p in err.get("loc", ()) if p not in ("query", "body", "path", "form")]
        name = ".".join(where) or "request"
        if err.get("type") == "missing":
            parts.append(f"{name} is required")
        else:
            parts.append(f"{name}: {err.get('msg', 'invalid')}" + _got(err))
    return JSONResponse({"detail": "; ".join(parts) or "invalid request"}, status_code=422)


async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
    detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
    return JSONResponse({"detail": detail}, status_code=exc.status_code, headers=getattr(exc, "headers", None))


async def _server_error(request: Request, exc: Exception) -> JSONResponse:
    log.exception("error serving %s %s", request.method, request.url.path)
    return JSONResponse({"detail": f"internal error ({type(exc).__name__}); see the server log"}, status_code=500)


def _got(err: dict) -> str:
    value = err.get("input")
    if isinstance(value, (str, int, float)) and len(str(value)) <= 40:
        return f", got {value!r}"
    return ""
