"""Service hardening (issue 11): Host names, uploads bounded in memory, large decodes bounded, a format
allowlist, the label filter and radius pushed into the index (one search, metadata for the final k only,
"(unlabelled)" matches), the re-rank switch, labels cached per index generation, and ``--workers``."""

from __future__ import annotations

import asyncio
import io
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import pytest
from PIL import Image
from test_service import BITS, Serving, assert_error, build_archive, local_client, shared_model, upload

from rshash.data.datasets import ImageRecord
from rshash.data.synthetic import synthetic_scene
from rshash.index import Index
from rshash.service import create_app
from rshash.service import deps as deps_module
from rshash.service.limits import served_hosts
from rshash.service.routers import images as images_router
from rshash.service.schemas import UNLABELLED


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> SimpleNamespace:
    """The test_service archive plus an unlabelled PNG and a PCX file (indexable, but not a served format)."""
    a = build_archive(tmp_path_factory.mktemp("hardening"), shared_model(tmp_path_factory))
    extra = a.root / "extra"
    extra.mkdir()
    a.unlabelled = extra / "no_class.png"
    Image.fromarray(synthetic_scene("water", 20, 64)).save(a.unlabelled)
    a.pcx = extra / "scene.pcx"
    Image.fromarray(synthetic_scene("roads", 21, 64)).save(a.pcx, format="PCX")
    with Index.open(a.index_dir) as index:
        index.add_paths([a.unlabelled, a.pcx], progress=False)  # bare paths: no label
        a.unlabelled_id, a.pcx_id = (_id_of(index, p) for p in (a.unlabelled, a.pcx))
    return a


@pytest.fixture(scope="module")
def client(archive):
    with local_client(create_app(archive.index_dir)) as c:
        yield c


def _id_of(index: Index, path: Path) -> int:
    return next(i for i in range(1, 200) if (m := index.get(i)) is not None and Path(m.path) == path.absolute())


def image_bytes(fmt: str, size: int = 48) -> bytes:
    out = io.BytesIO()
    Image.fromarray(synthetic_scene("forest", 3, size)).save(out, format=fmt)
    return out.getvalue()


# ---------------------------------------------------------------------------- Host header


def test_foreign_host_header_is_refused(archive):
    with local_client(create_app(archive.index_dir, allowed_hosts=["archive.lan"])) as c:
        for base in ("http://127.0.0.1:8000", "http://localhost", "http://[::1]:8000", "http://archive.lan"):
            c.base_url = base
            assert c.get("/healthz").status_code == 200, base
        c.base_url = "http://attacker.example"  # a DNS-rebinding page names its own host
        for url in ("/healthz", "/api/stats", "/api/search?id=1", "/api/images/1", "/"):
            assert c.get(url).status_code == 400, url
        assert c.post("/api/search", files=upload(image_bytes("PNG"))).status_code == 400


def test_served_hosts():
    assert served_hosts() == ["127.0.0.1", "localhost", "[::1]"]
    assert served_hosts("::1") == ["127.0.0.1", "localhost", "[::1]"]
    assert served_hosts("10.0.0.5", ["Archive.LAN", "fe80::1"])[3:] == ["10.0.0.5", "archive.lan", "[fe80::1]"]
    assert served_hosts("0.0.0.0", ["*"]) == ["*"]


# ---------------------------------------------------------------------------- uploads bounded in memory


def asgi_post(app, chunks: list[bytes], boundary: str = "b0undary"):
    """One POST /api/search through the ASGI app; returns (task factory, received chunk sizes, sent messages)."""
    received: list[int] = []
    sent: list[dict] = []
    pending = list(chunks)
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
        "path": "/api/search", "raw_path": b"/api/search", "root_path": "", "query_string": b"k=3",
        "headers": [(b"host", b"127.0.0.1:8000"), (b"content-type", f"multipart/form-data; boundary={boundary}".encode())],
        "server": ("127.0.0.1", 8000), "client": ("127.0.0.1", 50000),
    }

    async def receive() -> dict:
        if pending:
            chunk = pending.pop(0)
            received.append(len(chunk))
            return {"type": "http.request", "body": chunk, "more_body": bool(pending)}
        await asyncio.sleep(3600)  # the client never disconnects
        return {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        sent.append(message)

    return (lambda: app(scope, receive, send)), received, sent


def multipart(data: bytes, boundary: str = "b0undary", piece: int = 10_000) -> list[bytes]:
    head = (f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="q.png"\r\n'
            "Content-Type: image/png\r\n\r\n").encode()
    return [head, *(data[i:i + piece] for i in range(0, len(data), piece)), f"\r\n--{boundary}--\r\n".encode()]


def status_of(sent: list[dict]) -> int:
    return next(m["status"] for m in sent if m["type"] == "http.response.start")


def test_upload_takes_its_slot_before_its_body_is_read(archive):
    """With every encode slot busy, a new upload waits unread: memory does not grow with waiting uploads."""
    app = create_app(archive.index_dir, max_encodes=1)

    async def main() -> None:
        slots = app.state.service.encode_slots()
        await slots.acquire()  # another upload holds the only slot
        run, received, sent = asgi_post(app, multipart(image_bytes("PNG", 64)))
        task = asyncio.create_task(run())
        await asyncio.sleep(0.3)
        assert received == [] and not task.done()  # not one byte buffered while waiting
        slots.release()
        await asyncio.wait_for(task, 60)
        assert status_of(sent) == 200 and sum(received) > 0

    try:
        asyncio.run(main())
    finally:
        app.state.service.index.close()


def test_upload_over_the_limit_is_cut_off_not_buffered_whole(archive):
    """No Content-Length: the bytes are counted as they arrive and the 413 comes before the rest is read."""
    limit_mb = 0.05
    app = create_app(archive.index_dir, max_upload_mb=limit_mb)
    chunks = multipart(bytes(2_000_000))  # 2 MB, in 10 kB network chunks

    async def main() -> tuple[list[int], list[dict]]:
        run, received, sent = asgi_post(app, chunks)
        await asyncio.wait_for(run(), 60)
        return received, sent

    try:
        received, sent = asyncio.run(main())
    finally:
        app.state.service.index.close()
    assert status_of(sent) == 413
    limit = int(limit_mb * 1024 * 1024) + 64 * 1024  # the image plus the multipart envelope's allowance
    assert limit < sum(received) <= limit + 10_000 + 200  # stopped at the first chunk past the limit
    assert len(received) < len(chunks) / 10


def test_large_image_decodes_are_bounded(archive, monkeypatch):
    """At most ``max_large_decodes`` thumbnails of large images are made at once; small ones are not held back."""
    with Index.open(archive.index_dir) as index:
        ids = [h.id for h in index.search(1, 6, rerank=False)]
    active = peak = 0
    lock = threading.Lock()
    real = images_router.make_thumbnail

    def slow_thumbnail(path, size):
        nonlocal active, peak
        with lock:
            active += 1
            peak = max(peak, active)
        time.sleep(0.15)
        with lock:
            active -= 1
        return real(path, size)

    monkeypatch.setattr(images_router, "make_thumbnail", slow_thumbnail)

    def burst(large_pixels: int) -> int:
        nonlocal peak
        peak = 0
        monkeypatch.setattr(deps_module, "LARGE_IMAGE_PIXELS", large_pixels)
        with local_client(create_app(archive.index_dir, max_large_decodes=1)) as c:  # fresh thumbnail cache
            with ThreadPoolExecutor(len(ids)) as pool:
                codes = list(pool.map(lambda i: c.get(f"/api/images/{i}/thumbnail").status_code, ids))
        assert codes == [200] * len(ids)
        return peak

    assert burst(large_pixels=0) == 1  # every image counts as large
    assert burst(large_pixels=10**9) > 1  # none does


# ---------------------------------------------------------------------------- format allowlist


@pytest.mark.parametrize("fmt", ["ICO", "PCX", "TGA", "PPM"])
def test_upload_in_a_format_not_served_is_422(client, fmt):
    data = image_bytes(fmt)
    Image.open(io.BytesIO(data)).load()  # a valid image Pillow reads, only not in the allowlist
    detail = assert_error(client.post("/api/search", files=upload(data, f"q.{fmt.lower()}")), 422,
                          "not an image this server can read", "JPEG, PNG, TIFF, WebP, BMP or GIF")
    assert f"q.{fmt.lower()}" in detail


@pytest.mark.parametrize("fmt", ["JPEG", "WEBP", "BMP", "GIF"])
def test_upload_in_each_served_format_works(client, fmt):
    r = client.post("/api/search?k=2", files=upload(image_bytes(fmt), f"q.{fmt.lower()}"))
    assert r.status_code == 200, r.text
    assert r.json()["query"]["width"] == 48


def test_indexed_file_in_a_format_not_served_is_422(client, archive):
    for url in (f"/api/images/{archive.pcx_id}", f"/api/images/{archive.pcx_id}/thumbnail"):
        assert_error(client.get(url), 422, f"image {archive.pcx_id}", "scene.pcx", "not an image this server can read")
    assert client.get(f"/api/search?id={archive.pcx_id}&k=2").status_code == 200  # still searchable by id


# ---------------------------------------------------------------------------- search pushed into the index


def test_unlabelled_class_filter_matches_unlabelled_images(client, archive):
    assert UNLABELLED in [c["name"] for c in client.get("/api/stats").json()["classes"]]
    body = client.get("/api/search", params={"id": 1, "k": 10, "label": UNLABELLED}).json()
    assert body["label"] == UNLABELLED
    assert {r["id"] for r in body["results"]} == {archive.unlabelled_id, archive.pcx_id}
    assert all(r["label"] is None for r in body["results"])
    posted = client.post("/api/search", files=upload(archive.unlabelled), data={"label": UNLABELLED}).json()
    assert posted["results"][0]["id"] == archive.unlabelled_id and posted["count"] == 2


def test_rerank_switch(client, index_of_client):
    """rerank (default true): best score first, with descriptor similarities; false: Hamming order, ties by id."""
    qid = 3
    on = client.get("/api/search", params={"id": qid, "k": 10}).json()
    off = client.get("/api/search", params={"id": qid, "k": 10, "rerank": "false"}).json()
    assert on["rerank"] is True and off["rerank"] is False
    assert [r["id"] for r in on["results"]] == [h.id for h in index_of_client.search(qid, 10)]
    assert [r["id"] for r in off["results"]] == [h.id for h in index_of_client.search(qid, 10, rerank=False)]
    assert all(isinstance(r["similarity"], float) for r in on["results"])
    assert [r["score"] for r in on["results"]] == sorted(r["score"] for r in on["results"])
    assert all(r["similarity"] is None for r in off["results"])
    assert [(r["distance"], r["id"]) for r in off["results"]] == sorted((r["distance"], r["id"]) for r in off["results"])
    assert all(r["score"] == pytest.approx(r["distance"] / BITS) for r in off["results"])
    # the whole index re-ranked or not: the same images, possibly in another order
    all_on = client.get("/api/search", params={"id": qid, "k": 1000}).json()["results"]
    all_off = client.get("/api/search", params={"id": qid, "k": 1000, "rerank": "0"}).json()["results"]
    assert sorted(r["id"] for r in all_on) == sorted(r["id"] for r in all_off)
    form = client.post("/api/search", files=upload(image_bytes("PNG")), data={"rerank": "false", "k": "3"}).json()
    assert form["rerank"] is False and all(r["similarity"] is None for r in form["results"])
    assert_error(client.get("/api/search", params={"id": qid, "rerank": "maybe"}), 422, "rerank")


@pytest.fixture
def index_of_client(client) -> Index:
    return client.app.state.service.index


@pytest.fixture
def store_reads(index_of_client, monkeypatch) -> list[int]:
    """Ids whose metadata the index reads from SQLite, per call of its store's ``get``."""
    store = index_of_client._store
    real = store.get
    reads: list[int] = []

    def counting(ids):
        reads.append(len(ids))
        return real(ids)

    monkeypatch.setattr(store, "get", counting)
    return reads


def test_radius_search_reads_metadata_for_the_final_k_only(client, store_reads):
    body = client.get("/api/search", params={"id": 2, "radius": BITS, "k": 3}).json()
    assert body["count"] == 3 and body["radius"] == BITS
    assert sum(store_reads) <= 3 + 1, store_reads  # the 3 results (+ the query's own row), not the archive


def test_label_filter_is_one_index_search(client, index_of_client, store_reads, monkeypatch):
    calls = []
    real = index_of_client.search
    monkeypatch.setattr(index_of_client, "search", lambda *a, **kw: calls.append(kw) or real(*a, **kw))
    body = client.get("/api/search", params={"id": 2, "k": 2, "label": "water"}).json()
    assert body["count"] == 2 and {r["label"] for r in body["results"]} == {"water"}
    assert len(calls) == 1 and calls[0]["labels"] == ["water"]  # no widening loop
    assert sum(store_reads) <= 2 + 1, store_reads


def test_known_labels_are_cached_until_the_index_changes(client, index_of_client, archive, monkeypatch):
    stats_calls = []
    real = index_of_client.stats
    monkeypatch.setattr(index_of_client, "stats", lambda: stats_calls.append(1) or real())
    for _ in range(5):
        assert client.get("/api/search", params={"id": 1, "k": 2, "label": "water"}).status_code == 200
    assert len(stats_calls) <= 1  # at most the first check reads the classes
    assert_error(client.get("/api/search", params={"id": 1, "label": "forest"}), 422, "unknown class 'forest'")
    before = len(stats_calls)
    forest = archive.root / "extra" / "forest.png"
    Image.fromarray(synthetic_scene("forest", 5, 64)).save(forest)
    with Index.open(archive.index_dir) as writer:  # another process adds a class
        writer.add_paths([ImageRecord(str(forest), "forest")], progress=False)
    body = client.get("/api/search", params={"id": 1, "label": "forest"}).json()
    assert body["count"] == 1 and body["results"][0]["label"] == "forest"
    assert len(stats_calls) == before + 1


# ---------------------------------------------------------------------------- rshash serve --workers


def test_serve_with_workers_and_allowed_host(archive):
    serving = Serving(archive.index_dir, "--workers", "2", "--allowed-host", "archive.lan")
    with serving as http:
        assert http.get("/api/search", params={"id": 1, "k": 3}).json()["count"] == 3
        assert http.get("/healthz", headers={"Host": "archive.lan:8000"}).status_code == 200
        assert http.get("/healthz", headers={"Host": "attacker.example"}).status_code == 400
    assert serving.output.count("Started server process") == 2, serving.output
    assert "2 workers" in serving.output
    assert serving.code in (0, -15), serving.output
