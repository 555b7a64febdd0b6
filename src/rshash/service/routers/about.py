"""About the server: ``/api/stats``, ``/healthz``, and the pages (``/`` the search page, ``/docs`` the API reference)."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse

from ... import __version__
from ..decoding import pixel_limit
from ..deps import ServiceDep
from ..schemas import DEFAULT_K, K_MAX, Health, StatsResponse

STATIC_DIR = Path(__file__).resolve().parent.parent.parent / "static"

router = APIRouter(tags=["about"])


@router.get("/api/stats", response_model=StatsResponse)
def stats(service: ServiceDep) -> dict:
    """Index size, code length, model fingerprint and classes with counts."""
    s = service.index.stats()
    settings = service.settings
    return {
        "index": Path(s["path"]).name,
        "images": s["images"],
        "bits": s["bits"],
        "kind": s["kind"],
        "fingerprint": s["fingerprint"],
        "created_at": s["created_at"],
        "classes": [{"name": str(n), "count": c} for n, c in s["labels"].items()],
        "can_search_by_image": service.model_available(),
        "max_upload_bytes": settings.max_upload_bytes,
        "max_pixels": pixel_limit(settings.max_pixels),
        "k_max": K_MAX,
        "default_k": DEFAULT_K,
        "thumbnail_size": settings.thumbnail_size,
        "version": __version__,
    }


@router.get("/healthz", response_model=Health)
def healthz(service: ServiceDep) -> dict:
    """``ok`` while the server answers and the index is readable (the item count is cached by generation)."""
    try:
        count = service.count()
    except Exception as exc:  # e.g. the database went away
        raise HTTPException(status_code=503, detail=f"index unreadable: {type(exc).__name__}") from exc
    return {"status": "ok", "images": count}


@router.get("/", include_in_schema=False)
def page() -> FileResponse:
    return FileResponse(STATIC_DIR / "index.html", media_type="text/html")


@router.get("/docs", include_in_schema=False)
def docs() -> FileResponse:
    return FileResponse(STATIC_DIR / "docs.html", media_type="text/html")
