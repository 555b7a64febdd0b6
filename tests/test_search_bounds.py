"""Search answers that are right and requests that are bounded (issue 16, items 1, 3 and 5):

several examples search the union of their shortlists; ``search_by_id(exclude_self=False)`` keeps the re-rank;
``k=None`` needs a radius; a radius re-ranks the shortlist only; pages share one order; the geo search fetches a
bounded number of hits; a whole-world area of interest is no filter and a huge one is refused; the HTTP API
counts ids and images before any work, caches ``/healthz``, serves chips by the geo routes, turns raster and
geometry errors into 4xx / 503 without server paths, searches places by uploaded images and removes rasters;
the store reads on a connection per thread.
"""

from __future__ import annotations

import io
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from rshash.geo import footprints
from rshash.geo.search import AreaTooLarge, GeoSearch
from rshash.index import Index
from rshash.index.search import MAX_EXAMPLES, Hit
from rshash.index.store import NewImage, Store
from rshash.index.vectors import VectorTable
from rshash.service.app import create_app
from test_search_core import BITS, DIMS, model_dir  # noqa: F401 (a config-only model directory fixture)

BASE = "http://127.0.0.1:8000"


@pytest.fixture
def two_clusters(tmp_path, model_dir) -> Index:
    """40 rows: ids 1..20 near the all-zeros code, ids 21..40 near the all-ones code (1 to 3 bits flipped)."""
    index = Index.create(tmp_path / "index", model_dir)
    rng = np.random.default_rng(0)
    rows = []
    for n, base in enumerate([np.zeros(BITS, bool)] * 20 + [np.ones(BITS, bool)] * 20):
        code = base.copy()
        code[rng.choice(BITS, n % 3 + 1, replace=False)] ^= True
        rows.append(NewImage(f"/img/{n}.png", "a" if n < 20 else "b", 8, 8, "0" * 64, "t",
                             np.packbits(code).tobytes(), rng.integers(-127, 128, DIMS, dtype=np.int8).tobytes()))
    index._store.add(rows)
    yield index
    index.close()


# ---------------------------------------------------------------------------- several examples


def test_two_examples_search_the_union_of_their_shortlists(two_clusters):
    index = two_clusters
    hits = index.search([1, 21], k=10, shortlist=5)
    ids = {h.id for h in hits}
    assert ids & set(range(2, 21)) and ids & set(range(22, 41)), ids  # not the first example's neighbourhood only
    assert ids.isdisjoint({1, 21})
    codes = {i: np.unpackbits(np.frombuffer(index.get(i).code, np.uint8)).astype(bool) for i in (1, 21)}
    for h in hits:  # the distance shown is the smaller over the examples
        mine = np.unpackbits(np.frombuffer(index.get(h.id).code, np.uint8)).astype(bool)
        assert h.distance == min(int((mine != codes[e]).sum()) for e in (1, 21))
    assert [h.rank for h in hits] == list(range(1, len(hits) + 1))


def test_one_example_in_a_list_is_the_single_search(two_clusters):
    assert two_clusters.search([3], k=7) == two_clusters.search(3, k=7)
    assert two_clusters.search([3], k=7, rerank=False) == two_clusters.search(3, k=7, rerank=False)


def test_at_most_max_examples(two_clusters):
    with pytest.raises(ValueError, match=f"at most {MAX_EXAMPLES} examples"):
        two_clusters.search([1] * (MAX_EXAMPLES + 1), k=5)


# ---------------------------------------------------------------------------- search_by_id, k, radius, pages


def test_search_by_id_with_itself_keeps_the_rerank(two_clusters):
    hits = two_clusters.search_by_id(5, k=6, exclude_self=False)
    assert hits[0].id == 5 and hits[0].similarity == pytest.approx(1.0)
    assert all(h.similarity is not None for h in hits)
    assert [h.id for h in hits[1:]] == [h.id for h in two_clusters.search_by_id(5, k=5)]


def test_k_none_needs_a_radius(two_clusters):
    with pytest.raises(ValueError, match="needs a radius"):
        two_clusters.search(1, k=None)
    assert len(two_clusters.search(1, k=None, radius=BITS)) == 39  # with a radius: all within it


def test_a_radius_re_ranks_the_shortlist_only(two_clusters, monkeypatch):
    sizes = []
    original = VectorTable.similarity

    def similarity(self, descriptor, positions):
        sizes.append(len(positions))
        return original(self, descriptor, positions)

    monkeypatch.setattr(VectorTable, "similarity", similarity)
    hits = two_clusters.search(1, k=3, radius=BITS, shortlist=6)
    assert len(hits) == 3 and sizes and max(sizes) <= 6, sizes


def test_pages_share_one_order(two_clusters):
    whole = two_clusters.search(2, k=12, shortlist=20)
    first = two_clusters.search(2, k=6, shortlist=20)
    second = two_clusters.search(2, k=6, offset=6, shortlist=20)
    assert [h.id for h in first + second] == [h.id for h in whole]
    assert [h.rank for h in second] == list(range(7, 13))
    with pytest.raises(ValueError, match="offset \\+ k"):
        two_clusters.search(2, k=6, offset=16, shortlist=20)


# ---------------------------------------------------------------------------- geo search bounds


class _Recorder:
    """A Searcher stand-in: records each search's fetch and allowed ids, returns that many (fake) hits."""

    def __init__(self):
        self.calls: list[tuple[int | None, object]] = []

    def search(self, vectors, params, *, ids=None, prefer=None, negatives=(), feedback=False):
        self.calls.append((params.k, None if ids is None else list(ids)))
        return [Hit(i + 1, 10_000 + i, 0, "p", None, 0.0) for i in range(params.k or 0)]


def test_geo_widening_is_bounded(raster_index_dir, monkeypatch):
    with Index.open(raster_index_dir) as index:
        geo = index.geo
        recorder = _Recorder()
        monkeypatch.setattr(geo, "searcher", recorder)
        monkeypatch.setattr(GeoSearch, "_places", lambda self, hits, own, max_overlap: [])  # every hit dropped
        assert geo.search(geo.id_query([1]), k=1000) == []
        fetches = [k for k, _ in recorder.calls]
        assert len(fetches) <= 2 and max(fetches) <= 1000, fetches
        recorder.calls.clear()
        geo.search(geo.id_query([1]), k=20)
        fetches = [k for k, _ in recorder.calls]
        assert fetches[0] == 4 * 20 + 200 and len(fetches) <= 2 and max(fetches) <= 1000, fetches


def test_whole_world_aoi_is_no_filter_and_a_huge_one_is_refused(raster_index_dir, monkeypatch):
    with Index.open(raster_index_dir) as index:
        geo = index.geo
        assert geo.aoi_ids((-180, -90, 180, 90)) is None
        everything = len(geo.ids_in_box((-180, -90, 180, 90)))
        monkeypatch.setattr("rshash.geo.search.MAX_AOI_CHIPS", 3)
        # a box covering part of the chips' extent holding more than 3 chips
        extent = geo.chip_extent()
        half = (extent[0], extent[1], extent[0] + 0.99 * (extent[2] - extent[0]), extent[3])
        assert len(geo.ids_in_box(half)) > 3 and everything > 3
        with pytest.raises(AreaTooLarge, match="more than 3 chips"):
            geo.search(geo.id_query([1]), k=5, aoi=half)


def test_several_geo_examples_carry_every_vector(raster_index_dir):
    with Index.open(raster_index_dir) as index:
        query = index.geo.id_query([1, 12])
        assert len(query.examples) == 2
        places = index.search_places([1, 12], k=30, max_overlap=None)
        assert places and {p.id for p in places}.isdisjoint({1, 12})


# ---------------------------------------------------------------------------- store


def test_reads_do_not_wait_for_the_write_lock(two_clusters):
    store: Store = two_clusters._store
    done = threading.Event()
    with store._lock:  # a long write in progress
        thread = threading.Thread(target=lambda: (store.get([1, 2]), store.count(), done.set()))
        thread.start()
        thread.join(10)
    assert done.is_set()


# ---------------------------------------------------------------------------- HTTP


@pytest.fixture(scope="module")
def geo_index(raster_index_dir, tmp_path_factory) -> Path:
    return shutil.copytree(raster_index_dir, tmp_path_factory.mktemp("bounds") / "index")


@pytest.fixture(scope="module")
def client(geo_index):
    with TestClient(create_app(geo_index), base_url=BASE) as c:
        yield c


def test_limits_are_in_the_api_reference(client):
    intro = client.get("/openapi.json").json()["info"]["description"]
    assert f"at most {MAX_EXAMPLES} ids" in intro and "offset + k at most 1000" in intro and "k at most 1000" in intro


def test_healthz_counts_once_per_generation(client, monkeypatch):
    calls = []
    original = Store.count
    monkeypatch.setattr(Store, "count", lambda self: calls.append(1) or original(self))
    first, second = client.get("/healthz").json(), client.get("/healthz").json()
    assert first == second and first["images"] > 0
    assert len(calls) <= 1


def test_too_many_ids_refused_before_any_work(client, monkeypatch):
    service = client.app.state.service
    reads = []
    monkeypatch.setattr(type(service.index), "get", lambda self, i: reads.append(i))
    r = client.get("/api/geo/search", params=[("id", 1)] * (MAX_EXAMPLES + 1))
    assert r.status_code == 422 and f"at most {MAX_EXAMPLES}" in r.json()["detail"] and not reads


def test_plain_search_of_a_chip_serves_chip_urls_and_drops_its_own_neighbours(client, geo_index):
    with Index.open(geo_index) as index:
        own = index.geo.chips([1])[1]["footprint"]
    body = client.get("/api/search", params={"id": 1, "k": 10}).json()
    assert body["count"] > 0
    for r in body["results"]:
        assert r["thumbnail_url"] == f"/api/geo/chips/{r['id']}/thumbnail"
        with Index.open(geo_index) as index:
            assert footprints.overlap(index.geo.chips([r["id"]])[r["id"]]["footprint"], own) <= 0.01
    first = body["results"][0]
    for url in (first["thumbnail_url"], first["image_url"]):
        assert client.get(url).status_code == 200


def test_pages_over_http(client):
    whole = client.get("/api/search", params={"id": 2, "k": 8}).json()["results"]
    pages = [client.get("/api/search", params={"id": 2, "k": 4, "offset": o}).json()["results"] for o in (0, 4)]
    assert [r["id"] for r in pages[0] + pages[1]] == [r["id"] for r in whole]
    r = client.get("/api/search", params={"id": 2, "k": 10, "offset": 995})
    assert r.status_code == 422 and "offset + k" in r.json()["detail"]


def test_raster_and_geometry_errors_are_json_without_server_paths(client, monkeypatch):
    from rasterio.errors import RasterioIOError
    from shapely.errors import GEOSException

    geo = client.app.state.service.index.geo

    def unreadable(*args, **kwargs):
        raise RasterioIOError("/srv/secret/data/scene.tif: not recognized as a supported file format")

    monkeypatch.setattr(type(geo), "chip_pixels", unreadable)
    r = client.get("/api/geo/chips/3/thumbnail")
    assert r.status_code == 503 and "scene.tif" in r.json()["detail"] and "/srv/secret" not in r.json()["detail"]

    def invalid(*args, **kwargs):
        raise GEOSException("TopologyException: side location conflict")

    monkeypatch.setattr(type(geo), "_places", invalid)
    r = client.get("/api/geo/search", params={"id": 1})
    assert r.status_code == 422 and "geometry" in r.json()["detail"]


def _png(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def test_geo_search_by_uploaded_images(client):
    files = [("image", (f"q{i}.png", _png(i), "image/png")) for i in range(2)]
    r = client.post("/api/geo/search", params={"k": 5}, files=files)
    assert r.status_code == 200, r.text
    body = r.json()
    assert 0 < body["count"] <= 5 and [q["filename"] for q in body["query"]["images"]] == ["q0.png", "q1.png"]
    assert all(res["lon"] is not None for res in body["results"])
    one = client.post("/api/geo/search", params={"format": "geojson", "k": 3}, files=files[:1])
    assert one.status_code == 200 and one.json()["type"] == "FeatureCollection"
    many = [("image", ("q.png", b"x", "image/png"))] * (MAX_EXAMPLES + 1)
    r = client.post("/api/geo/search", files=many)
    assert r.status_code == 422 and f"at most {MAX_EXAMPLES}" in r.json()["detail"]


def test_delete_a_raster(raster_index_dir, tmp_path):
    if not hasattr(Index, "remove_raster"):
        pytest.skip("Index.remove_raster is not there")
    index_dir = shutil.copytree(raster_index_dir, tmp_path / "index")
    with TestClient(create_app(index_dir), base_url=BASE) as c:
        rasters = c.get("/api/geo/rasters").json()["rasters"]
        target = rasters[0]
        r = c.delete(f"/api/geo/rasters/{target['id']}")
        assert r.status_code == 200 and r.json()["chips"] == target["chips"]
        assert target["id"] not in [x["id"] for x in c.get("/api/geo/rasters").json()["rasters"]]
        assert c.delete(f"/api/geo/rasters/{target['id']}").status_code == 404
