"""The API's response models (they document ``/openapi.json`` and the offline ``/docs`` page) and limits."""

from __future__ import annotations

from pydantic import BaseModel, Field

DEFAULT_K = 20
K_MAX = 1000
#: The label the index reports for images without one; as a class filter it selects them.
UNLABELLED = "(unlabelled)"


class Result(BaseModel):
    rank: int = Field(description="1 = best")
    id: int = Field(description="the image's id in the index")
    distance: int = Field(description="Hamming distance between the codes")
    score: float = Field(
        description="ranking score, lower is better: with rerank, a blend of the Hamming distance and the "
        "descriptor distance; without, the Hamming distance / code length"
    )
    similarity: float | None = Field(description="cosine similarity of the descriptors (null without rerank)")
    label: str | None = Field(description="class of the indexed image, if known")
    path: str = Field(description="display name: parent folder / file name (never the server's full path)")
    thumbnail_url: str
    image_url: str


class SearchResponse(BaseModel):
    query: dict = Field(description='what was searched: {"id": N} or {"filename", "width", "height"}')
    k: int
    offset: int = Field(description="results skipped before these (a page)")
    radius: int | None
    label: str | None = Field(description=f"class filter, if any ({UNLABELLED!r}: images without a class)")
    rerank: bool = Field(description="whether the Hamming shortlist was re-ranked by descriptor similarity")
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


NOT_FOUND = {404: {"description": "no image with that id in the index"}}
INVALID = {422: {"description": "invalid parameter"}}
UPLOAD_ERRORS = {
    413: {"description": "upload over the size or pixel limit"},
    422: {"description": "invalid parameter, or not an image in an accepted format (JPEG, PNG, TIFF, WebP, BMP, GIF)"},
    503: {"description": "the model is unavailable: search by image impossible (search by id still works)"},
}
IMAGE_ERRORS = {
    **NOT_FOUND,
    422: {"description": "invalid id, or the file is not in a served format (JPEG, PNG, TIFF, WebP, BMP, GIF)"},
}
