"""The web app and HTTP API (rshash serve): every endpoint, every kind of bad input (each
answered with a 4xx JSON {"detail": ...} while the server keeps serving), images served
only by id, concurrent searches, and the serve command itself."""

from __future__ import annotations

import dataclasses
import io
import re
import struct
import subprocess
import sys
import threading
import time
import warnings
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import httpx
import numpy as np
import pytest
from PIL import Image

from rshash.data import images as images_module
from rshash.data.synthetic import make_synthetic_dataset, synthetic_scene
from rshash.index import Index
from rshash.service import create_app
from rshash.service.routers.about import STATIC_DIR
from rshash.service.schemas import DEFAULT_K

with warnings.catch_warnings():  # "Using httpx with starlette.testclient is deprecated": not ours to fix
    warnings.filterwarnings("ignore", message=".*starlette.testclient.*")
    from fastapi.testclient import TestClient

BITS = 32
CLASSES = ["agricultural", "water", "roads"]


def local_client(app) -> TestClient:
    """A test client naming the server as a browser on this machine would (the app refuses foreign Host names)."""
    return TestClient(app, base_url="http://127.0.0.1:8000")


def shared_model(tmp_path_factory) -> Path:
    """A model dir (ImageNet backbone + random hash head), made once per test session (~3 s)."""
    from rshash.model import HashingModel, ModelConfig
    from rshash.model_dir import save_model_dir

    model = tmp_path_factory.getbasetemp() / "service-model"
    if not (model / "config.json").is_file():
        save_model_dir(model, HashingModel(ModelConfig(bits=BITS, class_names=CLASSES)))
    return model


def build_archive(root: Path, model: Path) -> SimpleNamespace:
    """An index over 12 synthetic PNGs + 1 TIFF + 1 file deleted after indexing."""
    images = root / "images"
    make_synthetic_dataset(images, classes=3, per_class=4, size=64)
    tif = images / "water" / "water_tif.tif"
    Image.fromarray(synthetic_scene("water", 10, 64)).save(tif)
    gone = images / "roads" / "roads_gone.png"
    Image.fromarray(synthetic_scene("roads", 10, 64)).save(gone)
    with Index.create(root / "index", model) as index:
        index.add_paths(images, progress=False)
    gone.unlink()
    return SimpleNamespace(root=root, index_dir=root / "index", images=images, model=model, tif=tif, gone=gone)


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> SimpleNamespace:
    return build_archive(tmp_path_factory.mktemp("service"), shared_model(tmp_path_factory))


@pytest.fixture(scope="module")
def client(archive) -> TestClient:
    with local_client(create_app(archive.index_dir)) as c:  # the context runs startup/shutdown (closes the index)
        yield c


@pytest.fixture(scope="module")
def index(client) -> Index:
    return client.app.state.service.index


def id_of(index: Index, path: Path) -> int:
    for i in range(1, 100):
        meta = index.get(i)
        if meta is not None and Path(meta.path) == path.absolute():
            return i
    raise KeyError(path)


def upload(path_or_bytes, name: str = "query.png") -> dict:
    data = path_or_bytes.read_bytes() if isinstance(path_or_bytes, Path) else path_or_bytes
    return {"image": (name, data, "application/octet-stream")}


def assert_error(response: httpx.Response, status: int | tuple[int, ...], *phrases: str) -> str:
    """A 4xx JSON error with one string detail that mentions ``phrases``."""
    statuses = (status,) if isinstance(status, int) else status
    assert response.status_code in statuses, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/json")
    detail = response.json()["detail"]
    assert isinstance(detail, str) and detail
    for phrase in phrases:
        assert phrase.lower() in detail.lower(), detail
    return detail


def assert_alive(client: TestClient) -> None:
    r = client.get("/healthz")
    assert r.status_code == 200 and r.json()["status"] == "ok"


def png_header(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims ``width x height`` pixels (a decompression bomb's shape)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


# ---------------------------------------------------------------------------- about, page, docs


def test_healthz_and_stats(client, index):
    assert client.get("/healthz").json() == {"status": "ok", "images": 14}
    stats = client.get("/api/stats").json()
    assert stats["images"] == 14 and stats["bits"] == BITS and stats["kind"] == "flat"
    assert stats["fingerprint"] == index.fingerprint
    assert {c["name"]: c["count"] for c in stats["classes"]} == {"agricultural": 4, "roads": 5, "water": 5}
    assert stats["can_search_by_image"] is True
    assert stats["max_upload_bytes"] == 20 * 1024 * 1024 and stats["default_k"] == DEFAULT_K
    assert "/" not in stats["index"]  # the directory's name, not the server's path


def test_page_and_static_files_are_self_contained(client):
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert 'id="file-input"' in page.text and "/static/app.js" in page.text
    for name in ("app.js", "style.css", "docs.js", "docs.html", "index.html"):
        r = client.get(f"/static/{name}")
        assert r.status_code == 200, name
    # Nothing of ours loads from another host (vendor/: Leaflet as published, whose comments and default
    # attribution name its web site; the map page replaces that attribution).
    for f in (f for f in STATIC_DIR.rglob("*") if f.is_file() and "vendor" not in f.parts and f.suffix != ".png"):
        text = f.read_text()
        assert not re.search(r"(src|href)\s*=\s*[\"']?(https?:)?//", text), f.name
        assert "http://" not in text and "https://" not in text, f.name


def test_docs_offline_and_openapi(client):
    docs = client.get("/docs")
    assert docs.status_code == 200 and "/static/docs.js" in docs.text
    assert "cdn.jsdelivr" not in docs.text and "unpkg" not in docs.text
    schema = client.get("/openapi.json").json()
    assert {"/api/search", "/api/images/{id}", "/api/images/{id}/thumbnail", "/api/stats", "/healthz"} <= set(
        schema["paths"]
    )
    assert set(schema["paths"]["/api/search"]) == {"get", "post"}
    assert client.get("/redoc").status_code == 404  # FastAPI's ReDoc page would load from a CDN


# ---------------------------------------------------------------------------- search


def check_results(body: dict, k: int) -> list[dict]:
    results = body["results"]
    assert body["count"] == len(results) <= k and body["query_ms"] >= 0
    assert [r["rank"] for r in results] == list(range(1, len(results) + 1))
    assert [r["score"] for r in results] == sorted(r["score"] for r in results)  # best first
    if not body["rerank"]:  # Hamming order, ties by id
        assert [(r["distance"], r["id"]) for r in results] == sorted((r["distance"], r["id"]) for r in results)
    for r in results:
        assert not r["path"].startswith("/") and r["path"].count("/") == 1  # display name only
        assert r["thumbnail_url"] == f"/api/images/{r['id']}/thumbnail"
        assert r["image_url"] == f"/api/images/{r['id']}"
        assert 0 <= r["distance"] <= BITS
    return results


def test_search_by_id_excludes_itself_and_matches_the_index(client, index, archive):
    qid = id_of(index, archive.images / "water" / "water_001.png")
    body = client.get(f"/api/search?id={qid}&k=5").json()
    results = check_results(body, 5)
    assert body["query"] == {"id": qid} and body["k"] == 5 and len(results) == 5
    assert qid not in [r["id"] for r in results]
    expected = index.search(qid, 5)
    assert [(r["id"], r["distance"]) for r in results] == [(h.id, h.distance) for h in expected]
    default = client.get(f"/api/search?id={qid}").json()
    assert default["k"] == DEFAULT_K and default["count"] == 13  # everything but itself


def test_search_by_id_on_the_event_loop_or_in_the_threadpool_answers_the_same(client, index, archive, monkeypatch):
    """A small index is searched by id on the event loop; a large one (here: the threshold lowered) in the
    threadpool, as are radius searches. The answers are the same, errors too."""
    from rshash.service import deps

    qid = id_of(index, archive.images / "water" / "water_001.png")
    service = client.app.state.service
    service.shape()  # what the first search by id in the threadpool counts
    assert service.quick_search(None) and not service.quick_search(3)
    urls = [f"/api/search?id={qid}&k=5", f"/api/search?id={qid}&k=3&offset=2&rerank=false",
            "/api/search?id=999999", f"/api/search?id={qid}&label=nonsense"]
    quick = [client.get(url) for url in urls]
    monkeypatch.setattr(deps, "TABLE_SCAN_ROWS", 0)
    assert not service.quick_search(None)
    pooled = [client.get(url) for url in urls]
    for a, b in zip(quick, pooled):
        assert a.status_code == b.status_code
        assert {**a.json(), "query_ms": 0} == {**b.json(), "query_ms": 0}
    assert [a.status_code for a in quick] == [200, 200, 404, 422]


def test_search_by_upload_finds_the_same_image_first(client, index, archive):
    query = archive.images / "roads" / "roads_002.png"
    body = client.post("/api/search", files=upload(query, "roads_002.png"), data={"k": "4"}).json()
    results = check_results(body, 4)
    assert len(results) == 4 and results[0]["id"] == id_of(index, query) and results[0]["distance"] == 0
    assert body["query"] == {"filename": "roads_002.png", "width": 64, "height": 64}
    # k as a query parameter too; a TIFF upload works like any format Pillow reads
    tif = client.post("/api/search?k=2", files=upload(archive.tif, "scene.tif")).json()
    assert tif["count"] == 2 and tif["results"][0]["id"] == id_of(index, archive.tif)


def test_radius_and_class_filter(client, index, archive):
    qid = id_of(index, archive.images / "agricultural" / "agricultural_000.png")
    everything = client.get(f"/api/search?id={qid}&k=1000").json()["results"]
    radius = everything[len(everything) // 2]["distance"]
    within = client.get(f"/api/search?id={qid}&radius={radius}").json()
    assert within["radius"] == radius and within["k"] == 1000
    assert {r["id"] for r in within["results"]} == {r["id"] for r in everything if r["distance"] <= radius}
    capped = client.get(f"/api/search?id={qid}&radius={BITS}&k=3").json()
    assert capped["count"] == 3
    # the class filter is applied inside the index: k of that class, in the unfiltered order
    water = client.get(f"/api/search?id={qid}&k=3&label=water").json()
    assert water["label"] == "water" and water["count"] == 3
    assert all(r["label"] == "water" for r in water["results"])
    all_water = [r["id"] for r in everything if r["label"] == "water"][:3]
    assert [r["id"] for r in water["results"]] == all_water == [h.id for h in index.search(qid, 3, labels=["water"])]
    posted = client.post(
        "/api/search", files=upload(archive.images / "water" / "water_000.png"), data={"label": "roads", "k": "10"}
    ).json()
    assert posted["count"] == 5 and {r["label"] for r in posted["results"]} == {"roads"}


# ---------------------------------------------------------------------------- images


def test_original_image_served_as_is_or_converted(client, index, archive):
    png = archive.images / "agricultural" / "agricultural_003.png"
    r = client.get(f"/api/images/{id_of(index, png)}")
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert r.content == png.read_bytes() and r.headers["x-content-type-options"] == "nosniff"
    r = client.get(f"/api/images/{id_of(index, archive.tif)}")  # TIFF: browsers cannot show it
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    converted = np.asarray(Image.open(io.BytesIO(r.content)).convert("RGB"))
    assert np.array_equal(converted, np.asarray(Image.open(archive.tif).convert("RGB")))


def test_thumbnail_is_a_small_cached_jpeg(client, index, archive):
    big = archive.root / "big"
    big.mkdir(exist_ok=True)
    Image.fromarray(synthetic_scene("forest", 1, 300)).resize((400, 300)).save(big / "wide.jpg")
    service = client.app.state.service
    with Index.open(archive.index_dir) as writer:  # a second handle, as another process would add images
        writer.add_paths([big / "wide.jpg"], progress=False)
    wide = id_of(index, big / "wide.jpg")
    hits = service.thumbnails.hits
    for _ in range(2):
        r = client.get(f"/api/images/{wide}/thumbnail")
        assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
        thumb = Image.open(io.BytesIO(r.content))
        assert thumb.format == "JPEG" and thumb.size == (128, 96)
    assert service.thumbnails.hits == hits + 1
    # removed from the index: no longer served, even from the cache
    with Index.open(archive.index_dir) as writer:
        writer.remove([wide])
    assert_error(client.get(f"/api/images/{wide}/thumbnail"), 404, f"no image with id {wide}")
    assert_error(client.get(f"/api/images/{wide}"), 404, "no image")


def test_missing_file_is_404_without_server_paths(client, index, archive):
    gone = id_of(index, archive.gone)
    for url in (f"/api/images/{gone}", f"/api/images/{gone}/thumbnail"):
        detail = assert_error(client.get(url), 404, "cannot be read", "roads_gone.png")
        assert str(archive.root) not in detail
    assert_alive(client)


# ---------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "url, status, phrase",
    [
        ("/api/search?id=1&k=0", 422, "k: input should be greater than or equal to 1"),
        ("/api/search?id=1&k=1001", 422, "k: input should be less than or equal to 1000"),
        ("/api/search?id=1&k=abc", 422, "k: input should be a valid integer"),
        ("/api/search?id=1&radius=-1", 422, "radius"),
        (f"/api/search?id=1&radius={BITS + 1}", 422, f"radius must be in 0..{BITS}"),
        ("/api/search?id=1&label=volcano", 422, "unknown class 'volcano'"),
        ("/api/search", 422, "id is required"),
        ("/api/search?id=abc", 422, "id: input should be a valid integer"),
        ("/api/search?id=9999", 404, "no image with id 9999"),
        ("/api/images/9999", 404, "no image with id 9999"),
        ("/api/images/9999/thumbnail", 404, "no image with id 9999"),
        ("/api/images/-1", 404, "no image with id -1"),
        ("/api/images/abc", 422, "id: input should be a valid integer"),
        ("/api/nothing", 404, "not found"),
    ],
)
def test_bad_parameters(client, url, status, phrase):
    assert_error(client.get(url), status, phrase)
    assert_alive(client)


@pytest.mark.parametrize(
    "url",
    [
        "/api/images/..%2F..%2F..%2Fetc%2Fpasswd",
        "/api/images/..%2F..%2F..%2Fetc%2Fpasswd/thumbnail",
        "/api/images/1%2F..%2F..%2F..%2Fetc%2Fpasswd",
        "/api/images/%2Fetc%2Fpasswd",
        "/api/images/..%5C..%5Cetc%5Cpasswd",
        "/static/..%2F..%2Fservice%2Fapp.py",
        "/static/%2E%2E/service/app.py",
        "/api/images/1/../../../../etc/passwd",
    ],
)
def test_path_traversal_is_refused(client, url):
    r = client.get(url)
    assert r.status_code in (404, 422), (url, r.status_code)
    assert "root:" not in r.text and "def create_app" not in r.text
    assert isinstance(r.json()["detail"], str)
    assert_alive(client)


def test_bad_uploads(client, archive):
    good = (archive.images / "water" / "water_000.png").read_bytes()
    cases = [
        (upload(b"hello, I am not an image", "notes.txt"), 422, "not an image this server can read"),
        (upload(good[: len(good) // 3], "cut.png"), 422, "cannot be decoded"),
        (upload(b"\x89PNG\r\n\x1a\n" + b"\0" * 200, "garbage.png"), 422, "not an image"),
        (upload(b"", "empty.png"), 422, "empty"),
        (upload(png_header(100_000, 100_000), "bomb.png"), 413, "too many pixels"),
        (upload(png_header(9_000, 9_000), "big.png"), 413, "9000x9000"),
    ]
    for files, status, phrase in cases:
        assert_error(client.post("/api/search", files=files), status, phrase)
        assert_alive(client)
    assert_error(client.post("/api/search", data={"k": "3"}), 422, "image is required")
    assert_error(client.post("/api/search", files=upload(good), data={"k": "0"}), 422, "k:")
    assert_error(client.post("/api/search?radius=99", files=upload(good)), 422, "radius must be")
    assert_error(client.post("/api/search", content=b"{}", headers={"content-type": "application/json"}), 422)
    assert_alive(client)
    assert client.post("/api/search", files=upload(good)).status_code == 200


def test_pixel_limits(archive, monkeypatch):
    good = (archive.images / "water" / "water_000.png").read_bytes()  # 64 x 64
    with local_client(create_app(archive.index_dir, max_pixels=1000)) as small:
        assert_error(small.post("/api/search", files=upload(good)), 413, "64x64", "limit is 1,000 pixels")
        assert_alive(small)
        monkeypatch.setattr(images_module, "MAX_PIXELS", 100)  # the decoder's own bomb guard
        service = small.app.state.service
        service.settings = dataclasses.replace(service.settings, max_pixels=10**9)
        assert_error(small.post("/api/search", files=upload(good)), 413, "pixels")
        assert_alive(small)


def test_upload_size_limit(archive):
    good = (archive.images / "water" / "water_000.png").read_bytes()
    limit = 0.05  # MB: ~52 KB of image, plus room for the multipart envelope
    with local_client(create_app(archive.index_dir, max_upload_mb=limit)) as small:
        assert small.post("/api/search", files=upload(good)).status_code == 200
        big = b"\x89PNG" + bytes(200_000)
        assert_error(small.post("/api/search", files=upload(big)), 413, "upload too large", "0.05 MB")
        assert_alive(small)
        # over the image limit but within the envelope's slack: refused by the bounded read
        slightly = b"\x89PNG" + bytes(int(limit * 1024 * 1024) + 100)
        assert_error(small.post("/api/search", files=upload(slightly)), 413, "upload too large")
        # a streamed body without Content-Length is cut off as it arrives
        boundary = "rshashboundary"
        head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"x.png\"\r\n"
                "Content-Type: image/png\r\n\r\n").encode()

        def stream():
            yield head
            for _ in range(100):
                yield bytes(10_000)
            yield f"\r\n--{boundary}--\r\n".encode()

        r = small.post(
            "/api/search", content=stream(), headers={"content-type": f"multipart/form-data; boundary={boundary}"}
        )
        assert_error(r, 413, "upload too large")
        assert_alive(small)


def test_model_missing_search_by_image_is_503_search_by_id_works(archive, tmp_path):
    index = Index.open(archive.index_dir)
    index.model_dir = tmp_path / "moved-away"  # as if the model directory had been deleted
    with local_client(create_app(index=index)) as c:
        assert c.get("/api/stats").json()["can_search_by_image"] is False
        good = archive.images / "water" / "water_000.png"
        detail = assert_error(c.post("/api/search", files=upload(good)), 503, "unavailable", "moved-away", "--model")
        assert str(tmp_path) not in detail
        assert c.get("/api/search?id=1&k=2").json()["count"] == 2
        assert_alive(c)
    index.close()


# ---------------------------------------------------------------------------- concurrency


def test_concurrent_searches_are_consistent(client, index, archive):
    ids = [id_of(index, p) for p in sorted(archive.images.glob("*/*.png"))[:6]]
    expected = {i: client.get(f"/api/search?id={i}&k=5").json()["results"] for i in ids}
    query = archive.images / "agricultural" / "agricultural_001.png"
    expected_upload = client.post("/api/search?k=5", files=upload(query)).json()["results"]

    def by_id(n: int) -> bool:
        i = ids[n % len(ids)]
        return client.get(f"/api/search?id={i}&k=5").json()["results"] == expected[i]

    def by_upload(_: int) -> bool:
        return client.post("/api/search?k=5", files=upload(query)).json()["results"] == expected_upload

    with ThreadPoolExecutor(max_workers=8) as pool:
        futures = [pool.submit(by_id, n) for n in range(120)] + [pool.submit(by_upload, n) for n in range(8)]
        assert all(f.result() for f in futures)
    assert_alive(client)


# ---------------------------------------------------------------------------- the command


def test_create_app_arguments(archive):
    with pytest.raises(ValueError, match="either index_dir or an open index"):
        create_app()
    with pytest.raises(ValueError, match="max_upload_mb"):
        create_app(archive.index_dir, max_upload_mb=0)
    with pytest.raises(FileNotFoundError):
        create_app(archive.root / "no-such-index")


class Serving:
    """``rshash serve --port 0 ARGS`` in a child process: its printed address, its output, its exit status."""

    def __init__(self, index_dir: Path, *args: str):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "rshash.cli", "serve", "--index", str(index_dir), "--port", "0", "--no-access-log",
             *args],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        self.lines: list[str] = []
        self.reader = threading.Thread(target=lambda: self.lines.extend(self.proc.stdout), daemon=True)
        self.reader.start()
        self.code: int | None = None

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def __enter__(self) -> httpx.Client:
        """A client of the server once it answers /healthz."""
        url = None
        deadline = time.monotonic() + 60
        while url is None and time.monotonic() < deadline and self.proc.poll() is None:
            url = next((m[1] for line in list(self.lines) if (m := re.search(r"at (http://127\.0\.0\.1:\d+)/", line))),
                       None)
            time.sleep(0.1)
        self.http = httpx.Client(base_url=url or "http://127.0.0.1:1", timeout=10)
        while url and time.monotonic() < deadline:
            try:
                if self.http.get("/healthz").status_code == 200:
                    return self.http
            except httpx.TransportError:
                time.sleep(0.1)
        self.__exit__()
        raise AssertionError(f"rshash serve did not start:\n{self.output}")

    def __exit__(self, *exc: object) -> None:
        self.http.close()
        self.proc.terminate()
        self.code = self.proc.wait(timeout=20)
        self.reader.join(timeout=5)


def test_serve_command_starts_answers_and_stops(archive):
    """``rshash serve --port 0`` prints its real address, serves, and shuts down gracefully on SIGTERM."""
    serving = Serving(archive.index_dir)
    with serving as http:
        assert http.get("/api/search", params={"id": 1, "k": 3}).json()["count"] == 3
        assert_error(http.get("/api/images/..%2F..%2Fetc%2Fpasswd"), 404)
    # uvicorn shuts down gracefully, then re-raises the signal it caught: exit status -SIGTERM
    assert serving.code in (0, -15), serving.output
    assert "Application shutdown complete" in serving.output


def test_serve_socket_is_tcp_so_responses_are_not_delayed():
    """A socket made with proto 0 gets no TCP_NODELAY from asyncio: each keep-alive answer then
    waits ~40 ms for a delayed ACK (measured: 44 ms instead of 1.3 ms per request)."""
    import socket

    from rshash.commands.serve import bind

    sock = bind("127.0.0.1", 0)
    try:
        assert sock.proto == socket.IPPROTO_TCP and sock.getsockname()[1] > 0
    finally:
        sock.close()


def test_serve_command_refuses_a_missing_index(tmp_path, capsys):
    from rshash.cli import main

    assert main(["serve", "--index", str(tmp_path / "nothing")]) == 2
    assert "not an rshash index" in capsys.readouterr().err
