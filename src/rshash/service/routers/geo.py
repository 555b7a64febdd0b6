"""Places: the map page and the geo API over an index of raster chips.

* ``GET /map``                                   the map page (Leaflet, vendored; no tiles, no CDN)
* ``GET /api/geo/rasters``                       indexed rasters with lon/lat bounds and overlay URLs
* ``GET /api/geo/rasters/{id}/overlay.png``      the raster warped to Web Mercator (PNG, cached on disk)
* ``GET /api/geo/chips/{id}/thumbnail``          a chip read again from its raster (JPEG)
* ``GET /api/geo/search``                        by ``lon`` & ``lat`` (the chip there), ``box`` (read and
  encoded now) or ``id`` (repeatable, at most 100: examples searched together); filters ``aoi``, ``radius``;
  ``k``, ``offset``, ``max_overlap``; ``format=json|geojson|csv``
* ``POST /api/geo/search``                       by uploaded image(s) (multipart ``image``, repeatable: examples)
* ``DELETE /api/geo/rasters/{id}``               remove an indexed raster and its chips

Errors name files by their name only; a raster that cannot be read is 503, a request out of bounds 422.
"""

from __future__ import annotations

import dataclasses
import io
import threading
import time
from pathlib import Path
from dataclasses import dataclass
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, File, HTTPException, Query, Request, UploadFile
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, JSONResponse, Response
from PIL import Image
from rasterio.errors import RasterioError
from shapely.errors import GEOSException
from starlette.concurrency import run_in_threadpool

from ...geo import footprints
from ...feedback import FIND_ALL_THRESHOLD
from ...geo.dates import parse_range
from ...geo.overlays import MAX_SIDE, OverlayCache, overlay_plan, render_overlay
from ...geo.catalog import parse_box, parse_lonlat
from ...geo.places import PlaceNotIndexed
from ...geo.queries import GeoQuery
from ...geo.search import MAX_AOI_CHIPS, MAX_OVERLAP, GeoHit
from ...geo.source import RasterError
from ...index.search import MAX_EXAMPLES
from ..deps import PAGE_WINDOW, Service, ServiceDep, check_page
from ..errors import geo_error
from ..schemas import DEFAULT_K, K_MAX, UPLOAD_ERRORS
from ..uploads import EncodeSlotRoute, decode_upload, read_upload, upload_name
from .about import STATIC_DIR

router = APIRouter(tags=["places"])

_STATE_LOCK = threading.Lock()
IMAGE_HEADERS = {"Cache-Control": "public, max-age=3600", "X-Content-Type-Options": "nosniff"}


def _overlays(request: Request, service: Service) -> OverlayCache:
    """The app's overlay cache (made on first use)."""
    with _STATE_LOCK:
        cache = getattr(request.app.state, "overlays", None)
        if cache is None:
            cache = request.app.state.overlays = OverlayCache(service.index.path)
    return cache


#: Geo errors a route turns into a 4xx / 503 (see :func:`~rshash.service.errors.geo_error`).
GEO_ERRORS = (PlaceNotIndexed, RasterError, ValueError, RasterioError, GEOSException)


@router.get("/map", include_in_schema=False)
def map_page() -> FileResponse:
    return FileResponse(STATIC_DIR / "map.html", media_type="text/html")


@router.get("/api/geo/rasters")
def rasters(service: ServiceDep) -> dict:
    """Indexed rasters: id, name, size, CRS, ground resolution, chips, lon/lat bounds, and the overlay's URL
    with the lon/lat corners to place it at (null for a raster without a CRS)."""
    out = []
    for r in service.index.rasters():
        overlay = None
        if r["bounds"] is not None:
            plan = overlay_plan(r, MAX_SIDE)
            overlay = {"url": f"/api/geo/rasters/{r['id']}/overlay.png", "bounds": list(plan.bounds),
                       "width": plan.width, "height": plan.height}
        out.append({k: r[k] for k in ("id", "name", "width", "height", "crs", "gsd", "bands", "chips", "bounds",
                                     "datetime", "datetime_end")}
                   | {"overlay": overlay})
    boxes = [r["bounds"] for r in out if r["bounds"] is not None]
    extent = None if not boxes else [min(b[0] for b in boxes), min(b[1] for b in boxes),
                                     max(b[2] for b in boxes), max(b[3] for b in boxes)]
    return {"rasters": out, "bounds": extent, "chips": sum(r["chips"] for r in out)}


@router.get("/api/geo/rasters/{raster_id}/overlay.png", response_class=Response,
            responses={200: {"content": {"image/png": {}}, "description": "RGBA PNG in Web Mercator"}})
async def overlay(request: Request, service: ServiceDep, raster_id: Annotated[int, PathParam(ge=1)]) -> Response:
    """The raster as indexed (bands, stretch), warped to Web Mercator; transparent outside its data."""
    cache = _overlays(request, service)

    def render() -> bytes:
        readers = service.index.geo.readers
        try:
            row = readers.row(raster_id)
        except RasterError as exc:
            raise geo_error(exc) from exc
        data = cache.get(row, MAX_SIDE)
        if data is None:
            try:
                with readers.source(raster_id, 64) as source:
                    data = render_overlay(source, row, MAX_SIDE)
            except GEO_ERRORS as exc:
                raise geo_error(exc) from exc
            cache.put(row, MAX_SIDE, data)
        return data

    async with service.large_decodes():
        data = await run_in_threadpool(render)
    return Response(data, media_type="image/png", headers=IMAGE_HEADERS)


@router.get("/api/geo/chips/{id}/thumbnail", response_class=Response,
            responses={200: {"content": {"image/jpeg": {}}, "description": "JPEG"}})
def chip_thumbnail(service: ServiceDep, id: Annotated[int, PathParam(ge=0)]) -> Response:
    """A chip's pixels (as they were encoded), read again from its raster, as a small JPEG."""
    key = ("chip", id)
    data = service.thumbnails.get(key)
    if data is None:
        try:
            pixels = service.index.geo.chip_pixels(id, service.settings.thumbnail_size)
        except GEO_ERRORS as exc:
            raise geo_error(exc) from exc
        buf = io.BytesIO()
        Image.fromarray(pixels).save(buf, format="JPEG", quality=85)
        data = buf.getvalue()
        service.thumbnails.put(key, data)
    return Response(data, media_type="image/jpeg", headers=IMAGE_HEADERS)


Format = Literal["json", "geojson", "csv"]

AoiParam = Annotated[str | None, Query(description="area of interest LONMIN,LATMIN,LONMAX,LATMAX (at most "
                                       f"{MAX_AOI_CHIPS:,} chips; one covering every chip is no filter)")]
RadiusParam = Annotated[int | None, Query(ge=0, description="only results within this Hamming distance")]
KParam = Annotated[int | None, Query(ge=1, le=K_MAX, description=f"number of results (default {DEFAULT_K}; "
                                     f"with a radius, everything within it up to {K_MAX})")]
OffsetParam = Annotated[int, Query(ge=0, le=PAGE_WINDOW, description=f"results to skip (a page): offset + k at "
                                   f"most {PAGE_WINDOW}; pages share one order")]
OverlapParam = Annotated[float, Query(ge=0, le=1, description="near-duplicate threshold (overlap fraction)")]
FormatParam = Annotated[Format, Query(description="json (default), geojson (FeatureCollection) or csv")]
DatetimeParam = Annotated[str | None, Query(max_length=64, description="only chips of rasters acquired then (STAC "
                                            "style): 2020, 2020-04-15, 2009/2012, 2015/.. (unknown dates left out)")]


@dataclass(frozen=True)
class GeoOptions:
    """The checked options of one geo search."""

    k: int
    offset: int
    radius: int | None
    aoi: tuple[float, float, float, float] | None
    max_overlap: float
    rerank: bool
    format: str
    datetime: str | None = None


def _options(
    service: ServiceDep,
    aoi: AoiParam = None,
    radius: RadiusParam = None,
    k: KParam = None,
    offset: OffsetParam = 0,
    max_overlap: OverlapParam = MAX_OVERLAP,
    rerank: bool = True,
    format: FormatParam = "json",
    datetime: DatetimeParam = None,
) -> GeoOptions:
    """The search options both geo search routes take (a dependency: query parameters, checked)."""
    if radius is not None and radius > service.index.bits:
        raise HTTPException(status_code=422, detail=f"radius must be in 0..{service.index.bits} (the code length)")
    if k is None:
        k = DEFAULT_K if radius is None else K_MAX
    check_page(k, offset)
    try:
        area = None if aoi is None else parse_box(aoi)
        if datetime is not None:
            parse_range(datetime)
    except ValueError as exc:
        raise geo_error(exc) from exc
    return GeoOptions(k, offset, radius, area, max_overlap, rerank, format, datetime)


OptionsDep = Annotated[GeoOptions, Depends(_options)]


@router.get("/api/geo/search", responses={200: {"content": {"application/json": {}, "application/geo+json": {},
                                                             "text/csv": {}}}})
def search(
    service: ServiceDep,
    lon: Annotated[float | None, Query(ge=-180, le=180, description="query point longitude (with lat)")] = None,
    lat: Annotated[float | None, Query(ge=-90, le=90, description="query point latitude (with lon)")] = None,
    box: Annotated[str | None, Query(description="query box LONMIN,LATMIN,LONMAX,LATMAX, read and encoded now")] = None,
    id: Annotated[list[int] | None, Query(description=f"indexed item(s); several (at most {MAX_EXAMPLES}): "
                                          "examples searched together")] = None,
    raster: Annotated[int | None, Query(ge=1, description="with lon/lat or box: the raster to use")] = None,
    not_id: Annotated[list[int] | None, Query(description="indexed item(s) marked 'no' (repeatable): relevance "
                                              "feedback, the query's examples being 'yes'; with the ids at most "
                                              f"{MAX_EXAMPLES}")] = None,
    options: OptionsDep = None,
) -> Response:
    """Places like a point, a box or indexed chips (and unlike ``not_id`` ones): rank, distance, lon/lat,
    footprint, raster and window."""
    started = time.perf_counter()
    given = sum((lon is not None or lat is not None, box is not None, bool(id)))
    if given != 1 or (lon is None) != (lat is None):
        raise HTTPException(status_code=422, detail="give one query: lon and lat, box, or id (repeatable)")
    count = len(id or []) + len(not_id or [])
    if count > MAX_EXAMPLES:  # counted before any is read
        raise HTTPException(status_code=422, detail=f"at most {MAX_EXAMPLES} examples per search, got {count}")
    try:
        query = _query(service, lon, lat, box, id, raster)
        negatives = _query(service, None, None, None, not_id, None) if not_id else None
    except GEO_ERRORS as exc:
        raise geo_error(exc) from exc
    return _answer(service, query, options, started, negatives)


@router.get("/api/geo/find_all", responses={200: {"content": {"application/json": {}, "application/geo+json": {}}}})
def find_all(
    service: ServiceDep,
    lon: Annotated[float | None, Query(ge=-180, le=180, description="query point longitude (with lat)")] = None,
    lat: Annotated[float | None, Query(ge=-90, le=90, description="query point latitude (with lon)")] = None,
    box: Annotated[str | None, Query(description="query box LONMIN,LATMIN,LONMAX,LATMAX, read and encoded now")] = None,
    id: Annotated[list[int] | None, Query(description="indexed item(s) marked 'yes' (examples)")] = None,
    not_id: Annotated[list[int] | None, Query(description="indexed item(s) marked 'no'")] = None,
    raster: Annotated[int | None, Query(ge=1, description="with lon/lat or box: the raster to use")] = None,
    threshold: Annotated[float, Query(ge=-20, le=20, description="keep candidates whose standardised score is at "
                                      "most this (lower: fewer, surer)")] = FIND_ALL_THRESHOLD,
    aoi: AoiParam = None,
    datetime: DatetimeParam = None,
    rerank: bool = True,
    format: Annotated[Literal["json", "geojson"], Query(description="json (default) or geojson (the areas)")] = "json",
) -> Response:
    """Every place like the examples (and unlike the 'no' marks) above a score threshold, as one layer: touching
    chips merged into areas, with the chip count of each, and every candidate's score for a threshold slider."""
    started = time.perf_counter()
    given = sum((lon is not None or lat is not None, box is not None, bool(id)))
    if given != 1 or (lon is None) != (lat is None):
        raise HTTPException(status_code=422, detail="give one query: lon and lat, box, or id (repeatable)")
    count = len(id or []) + len(not_id or [])
    if count > MAX_EXAMPLES:
        raise HTTPException(status_code=422, detail=f"at most {MAX_EXAMPLES} examples per search, got {count}")
    try:
        area = None if aoi is None else parse_box(aoi)
        if datetime is not None:
            parse_range(datetime)
        query = _query(service, lon, lat, box, id, raster)
        negatives = _query(service, None, None, None, not_id, None) if not_id else None
        found = service.index.geo.find_all(query, negatives, threshold=threshold, aoi=area, datetime=datetime,
                                           rerank=rerank)
    except GEO_ERRORS as exc:
        raise geo_error(exc) from exc
    if format == "geojson":
        return JSONResponse(found["areas"], media_type="application/geo+json",
                            headers={"Content-Disposition": 'attachment; filename="found.geojson"'})
    return JSONResponse(found | {"query": dict(query.described), "not_ids": list(not_id or []),
                                 "query_ms": round((time.perf_counter() - started) * 1000, 3)})


async def search_by_images(
    service: ServiceDep,
    image: Annotated[list[UploadFile], File(description=f"query image(s) (JPEG, PNG, TIFF, WebP, BMP or GIF); "
                                            f"several (at most {MAX_EXAMPLES}): examples searched together")],
    options: OptionsDep = None,
) -> Response:
    """Places like uploaded image(s), encoded now (each within the upload limits; the whole request too)."""
    started = time.perf_counter()
    if len(image) > MAX_EXAMPLES:
        raise HTTPException(status_code=422, detail=f"at most {MAX_EXAMPLES} images per search, got {len(image)}")
    settings = service.settings
    pixels, names = [], []
    for upload in image:
        data = await read_upload(upload, settings.max_upload_bytes, settings.upload_too_large)
        names.append(upload_name(upload))
        pixels.append(await run_in_threadpool(decode_upload, data, names[-1], settings.max_pixels))
        del data
    await run_in_threadpool(service.load_encoder)

    def query() -> GeoQuery:
        try:
            found = service.index.geo.examples_query(pixels)
        except GEO_ERRORS as exc:
            raise geo_error(exc) from exc
        described = [{"filename": n.strip("'\""), "width": int(p.shape[1]), "height": int(p.shape[0])}
                     for n, p in zip(names, pixels)]
        return dataclasses.replace(found, described={"images": described})

    geo_query = await run_in_threadpool(query)
    return await run_in_threadpool(_answer, service, geo_query, options, started)


# The upload route holds an encode slot from before its body is read (see rshash.service.uploads).
router.add_api_route("/api/geo/search", search_by_images, methods=["POST"], responses=UPLOAD_ERRORS,
                     route_class_override=EncodeSlotRoute)


#: The largest window side (source pixels) the window route reads.
MAX_WINDOW = 4096


@router.get("/api/geo/rasters/{raster_id}/window.jpg", response_class=Response,
            responses={200: {"content": {"image/jpeg": {}}, "description": "JPEG"}, 404: {"description": "no raster"}})
def window_thumbnail(
    service: ServiceDep, raster_id: Annotated[int, PathParam(ge=1)],
    col: Annotated[int, Query(ge=-MAX_WINDOW, le=10**7)], row: Annotated[int, Query(ge=-MAX_WINDOW, le=10**7)],
    width: Annotated[int, Query(ge=1, le=MAX_WINDOW)], height: Annotated[int, Query(ge=1, le=MAX_WINDOW)],
) -> Response:
    """Any pixel window of an indexed raster as a small JPEG (read boundless): the same place in an acquisition
    that has no chip of it (see ``/api/geo/chips/{id}/dates``)."""
    try:
        pixels = service.index.geo.window_pixels(raster_id, (col, row, width, height), service.settings.thumbnail_size)
    except PlaceNotIndexed as exc:
        raise HTTPException(status_code=404, detail=str(exc)) from exc
    except GEO_ERRORS as exc:
        raise geo_error(exc) from exc
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=85)
    return Response(buf.getvalue(), media_type="image/jpeg", headers=IMAGE_HEADERS)


@router.get("/api/geo/chips/{id}/dates", responses={404: {"description": "not a raster chip"}})
def same_place(service: ServiceDep, id: Annotated[int, PathParam(ge=1)]) -> dict:
    """The same place (footprint IoU >= 0.5) in every indexed acquisition, in date order (the chip included); an
    acquisition covering it without such a chip has ``id`` null and a window read on the fly."""
    try:
        rows = service.index.geo.same_place(id)
    except GEO_ERRORS as exc:
        raise HTTPException(status_code=404, detail=str(exc)) from exc
    def url(r: dict) -> str:
        if r["id"] is not None:
            return f"/api/geo/chips/{r['id']}/thumbnail"
        c, w_row, w, h = r["window"]
        return f"/api/geo/rasters/{r['raster_id']}/window.jpg?col={c}&row={w_row}&width={w}&height={h}"

    return {"id": id, "count": len(rows),
            "results": [r | {"raster": Path(r["raster"]).name, "thumbnail_url": url(r)} for r in rows]}


@router.delete("/api/geo/rasters/{raster_id}", responses={404: {"description": "no such raster"}})
def remove_raster(service: ServiceDep, raster_id: Annotated[int, PathParam(ge=1)]) -> dict:
    """Remove an indexed raster and all its chips (they stop being found at once)."""
    if not hasattr(service.index, "remove_raster"):
        raise HTTPException(status_code=501, detail="this version cannot remove rasters")
    try:
        chips = service.index.remove_raster(raster_id)
    except GEO_ERRORS as exc:
        raise HTTPException(status_code=404, detail=f"no raster {raster_id} in the index") from exc
    return {"removed": raster_id, "chips": int(chips)}


def _answer(service: Service, query: GeoQuery, o: GeoOptions, started: float,
            negatives: GeoQuery | None = None) -> Response:
    """Search and answer in the requested format."""
    try:
        hits = service.index.geo.search(query, o.k, aoi=o.aoi, radius=o.radius, max_overlap=o.max_overlap,
                                        rerank=o.rerank, offset=o.offset, datetime=o.datetime, negatives=negatives)
    except GEO_ERRORS as exc:
        raise geo_error(exc) from exc
    results = [_result(h) for h in hits]
    if o.format == "geojson":
        return JSONResponse(footprints.feature_collection(results), media_type="application/geo+json",
                            headers={"Content-Disposition": 'attachment; filename="hits.geojson"'})
    if o.format == "csv":
        return Response(footprints.results_csv(results), media_type="text/csv",
                        headers={"Content-Disposition": 'attachment; filename="hits.csv"'})
    described = dict(query.described) | {"footprints": [footprints.polygon_geometry(f) for f in query.footprints]}
    if negatives is not None:
        described["not_ids"] = [int(i) for i in negatives.described.get("ids", [negatives.described.get("id")])]
    return JSONResponse({
        "query": described, "k": o.k, "offset": o.offset, "radius": o.radius,
        "aoi": None if o.aoi is None else list(o.aoi), "max_overlap": o.max_overlap, "rerank": o.rerank,
        "datetime": o.datetime,
        "query_ms": round((time.perf_counter() - started) * 1000, 3), "count": len(results), "results": results,
    })


def _query(service: Service, lon: float | None, lat: float | None, box: str | None, ids: list[int] | None,
           raster: int | None) -> GeoQuery:
    geo_search = service.index.geo
    if lon is not None:
        return geo_search.point_query(*parse_lonlat((lon, lat)), raster=raster)
    if box is not None:
        service.load_encoder()  # 503 with a clear message when the model is missing
        return geo_search.box_query(parse_box(box), raster=raster)
    missing = [i for i in ids if service.index.get(i) is None]
    if missing:
        raise PlaceNotIndexed(f"no item with id {missing[0]} in the index")
    return geo_search.id_query(ids)


def _result(h: GeoHit) -> dict:
    """A hit as the API returns it: the raster by file name only (never the server's paths)."""
    name = Path(h.raster).name if h.raster else None
    return {
        "rank": h.rank, "id": h.id, "distance": h.distance, "score": h.score, "similarity": h.similarity,
        "lon": h.lon, "lat": h.lat, "footprint": h.footprint, "raster": name, "raster_id": h.raster_id,
        "window": None if h.window is None else list(h.window), "label": h.label,
        "datetime": h.datetime, "datetime_end": h.datetime_end,
        "thumbnail_url": f"/api/geo/chips/{h.id}/thumbnail" if h.window is not None else f"/api/images/{h.id}/thumbnail",
    }
