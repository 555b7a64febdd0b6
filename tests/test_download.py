"""Dataset download: resumable HTTP, zip/sha256/pixel verification, safe atomic install, CLI."""

from __future__ import annotations

import hashlib
import io
import re
import threading
import zipfile
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
from PIL import Image

from rshash.cli import main
from rshash.commands import data as data_cmd
from rshash.data.download import (
    PIXELS_FILENAME,
    VerificationError,
    download_dataset,
    download_file,
    extract_zip,
    read_pixel_manifest,
)

# name -> (format, width, height): a TIFF/PNG mix with one odd size, like UCMD's 257x257 harbor10.
IMAGES = {
    "fields/fields00": ("tif", 8, 8),
    "fields/fields01": ("png", 9, 7),
    "water/water00": ("tif", 8, 8),
    "water/water01": ("tif", 8, 8),
}


@pytest.fixture(autouse=True)
def _quiet(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RSHASH_PROGRESS", "0")


def _image_bytes(arr: np.ndarray, fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format={"tif": "TIFF", "png": "PNG"}[fmt])
    return buf.getvalue()


def _arrays() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {name: rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for name, (_, w, h) in IMAGES.items()}


def _build_zip(arrays: dict[str, np.ndarray], extra: dict[str, bytes] | None = None) -> bytes:
    """A UCMD-shaped zip (stored, so a flipped byte is a CRC error rather than a zlib one)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for name, arr in arrays.items():
            fmt = IMAGES[name][0]
            zf.writestr(f"UCMerced_LandUse/Images/{name}.{fmt}", _image_bytes(arr, fmt))
        for name, data in (extra or {}).items():
            zf.writestr(name, data)
    return buf.getvalue()


def _write_manifest(path: Path, arrays: dict[str, np.ndarray]) -> Path:
    lines = [
        f"{hashlib.sha256(a.tobytes()).hexdigest()}  {name}  {a.shape[1]}x{a.shape[0]}"
        for name, a in arrays.items()
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


@dataclass
class FakeServer:
    """What the loopback server serves and what it saw."""

    payload: bytes = b""
    honor_range: bool = True
    drop_after: int | None = None  # send only this many bytes once, then hang up
    ranges: list[str | None] = field(default_factory=list)
    bytes_sent: int = 0
    url: str = ""


def _handler(state: FakeServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server API
            requested = self.headers.get("Range")
            state.ranges.append(requested)
            start = int(re.fullmatch(r"bytes=(\d+)-", requested).group(1)) if requested else 0
            total = len(state.payload)
            if not state.honor_range or not requested:
                start = 0
                self.send_response(200)
            elif start >= total:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{total}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            else:
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{total - 1}/{total}")
            body = state.payload[start:]
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if state.drop_after is not None:
                body, state.drop_after = body[: state.drop_after], None
            self.wfile.write(body)
            state.bytes_sent += len(body)

        def log_message(self, *args: object) -> None:
            pass

    return Handler


@pytest.fixture
def server() -> Iterator[FakeServer]:
    state = FakeServer()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}/UCMerced_LandUse.zip"
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture
def dataset(server: FakeServer, tmp_path: Path) -> tuple[FakeServer, Path]:
    """Server loaded with a good zip; returns it and the matching pixel manifest."""
    arrays = _arrays()
    server.payload = _build_zip(arrays)
    return server, _write_manifest(tmp_path / "pixels.sha256", arrays)


def _install(server: FakeServer, manifest: Path | None, to: Path, **kw: object):
    return download_dataset(to, server.url, pixel_manifest=manifest, retry_wait=0, timeout=5, **kw)


def _leftovers(parent: Path) -> list[str]:
    """Hidden temp dirs or half-written files that a failed install must not leave."""
    return sorted(p.name for p in parent.iterdir() if p.name.startswith(".") or p.suffix == ".part")


def test_full_download_verifies_and_extracts(dataset, tmp_path: Path) -> None:
    server, manifest = dataset
    to = tmp_path / "out" / "UCMerced_LandUse"
    result = _install(server, manifest, to)
    assert (result.files, result.pixels_verified) == (4, 4)
    assert sorted(p.relative_to(to).as_posix() for p in to.rglob("*.*")) == sorted(
        [f"Images/{n}.{f}" for n, (f, _, _) in IMAGES.items()] + [PIXELS_FILENAME]
    )
    assert server.ranges == [None] and server.bytes_sent == len(server.payload)
    assert sorted(p.name for p in to.parent.iterdir()) == ["UCMerced_LandUse"]  # zip removed, no temp dirs


def test_resume_fetches_only_the_rest(dataset, tmp_path: Path) -> None:
    server, manifest = dataset
    to = tmp_path / "ucm"
    have = len(server.payload) // 3
    (tmp_path / "ucm.zip.part").write_bytes(server.payload[:have])
    _install(server, manifest, to, keep_zip=True)
    assert server.ranges == [f"bytes={have}-"]
    assert server.bytes_sent == len(server.payload) - have
    assert (tmp_path / "ucm.zip").read_bytes() == server.payload


def test_complete_part_file_is_not_refetched(dataset, tmp_path: Path) -> None:
    server, manifest = dataset
    (tmp_path / "ucm.zip.part").write_bytes(server.payload)
    _install(server, manifest, tmp_path / "ucm")
    assert server.ranges == [f"bytes={len(server.payload)}-"] and server.bytes_sent == 0


def test_server_ignoring_range_restarts_cleanly(dataset, tmp_path: Path) -> None:
    server, _ = dataset
    server.honor_range = False
    (tmp_path / "x.zip.part").write_bytes(b"stale bytes from another file")
    download_file(server.url, tmp_path / "x.zip", retry_wait=0)
    assert (tmp_path / "x.zip").read_bytes() == server.payload


def test_part_longer_than_file_restarts(dataset, tmp_path: Path) -> None:
    server, _ = dataset
    (tmp_path / "x.zip.part").write_bytes(server.payload + b"junk")
    download_file(server.url, tmp_path / "x.zip", retry_wait=0)
    assert (tmp_path / "x.zip").read_bytes() == server.payload
    assert server.ranges == [f"bytes={len(server.payload) + 4}-", None]


def test_dropped_connection_resumes_automatically(dataset, tmp_path: Path) -> None:
    server, manifest = dataset
    server.drop_after = 100
    _install(server, manifest, tmp_path / "ucm")
    assert server.ranges == [None, "bytes=100-"]
    assert server.bytes_sent == len(server.payload)


def test_failed_download_keeps_part_and_says_so(dataset, tmp_path: Path) -> None:
    server, manifest = dataset
    server.drop_after = 100
    with pytest.raises(RuntimeError, match=r"100 bytes kept in .*ucm\.zip\.part; rerun to resume"):
        _install(server, manifest, tmp_path / "ucm", retries=0)
    assert (tmp_path / "ucm.zip.part").stat().st_size == 100
    assert not (tmp_path / "ucm").exists()


def _assert_nothing_installed(parent: Path) -> None:
    assert not (parent / "ucm").exists()
    assert not [n for n in _leftovers(parent) if n != "ucm.zip.part"]


def test_corrupt_zip_is_rejected_and_deleted(dataset, tmp_path: Path) -> None:
    server, manifest = dataset
    payload = bytearray(server.payload)
    payload[200] ^= 0xFF  # inside the first member's stored data
    server.payload = bytes(payload)
    with pytest.raises(VerificationError, match=r"corrupt \(CRC mismatch\).*deleted, rerun"):
        _install(server, manifest, tmp_path / "ucm")
    _assert_nothing_installed(tmp_path)
    assert not (tmp_path / "ucm.zip").exists()


def test_not_a_zip_is_rejected(server: FakeServer, tmp_path: Path) -> None:
    server.payload = b"<html>404 page pretending to be a zip</html>"
    with pytest.raises(VerificationError, match="not a valid zip file"):
        _install(server, None, tmp_path / "ucm")
    _assert_nothing_installed(tmp_path)


def test_wrong_sha256_is_rejected(dataset, tmp_path: Path) -> None:
    server, manifest = dataset
    with pytest.raises(VerificationError, match=r"SHA-256 is [0-9a-f]{64}, expected 0{64}"):
        _install(server, manifest, tmp_path / "ucm", sha256="0" * 64)
    _assert_nothing_installed(tmp_path)
    right = hashlib.sha256(server.payload).hexdigest().upper()
    assert _install(server, manifest, tmp_path / "ucm", sha256=right).pixels_verified == 4


def test_wrong_and_missing_pixels_are_reported(dataset, tmp_path: Path) -> None:
    server, manifest = dataset
    lines = manifest.read_text().splitlines()
    lines[1] = "f" * 64 + lines[1][64:]  # fields/fields01 has other pixels
    lines.append("a" * 64 + "  water/water99  8x8")  # listed but not in the zip
    manifest.write_text("\n".join(lines) + "\n")
    with pytest.raises(VerificationError) as err:
        _install(server, manifest, tmp_path / "ucm")
    message = str(err.value)
    assert "1 image(s) missing: water/water99" in message
    assert "1 image(s) differ: fields/fields01: pixel SHA-256" in message
    assert "nothing was installed" in message
    _assert_nothing_installed(tmp_path)
    assert (tmp_path / "ucm.zip").exists()  # a valid zip is kept: no re-download to retry


def test_pixel_check_is_extension_agnostic(dataset, tmp_path: Path) -> None:
    """The manifest names images without extension, so a lossless re-encode (e.g. WebP) passes."""
    server, manifest = dataset
    arrays = _arrays()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, arr in arrays.items():
            out = io.BytesIO()
            Image.fromarray(arr).save(out, format="WEBP", lossless=True)
            zf.writestr(f"UCMerced_LandUse/Images/{name}.webp", out.getvalue())
    server.payload = buf.getvalue()
    assert _install(server, manifest, tmp_path / "ucm").pixels_verified == len(read_pixel_manifest(manifest))


@pytest.mark.parametrize("evil", ["../evil.txt", "/abs/evil.txt", "UCMerced_LandUse/../../evil.txt"])
def test_unsafe_member_paths_are_refused(evil: str, tmp_path: Path) -> None:
    archive = tmp_path / "evil.zip"
    archive.write_bytes(_build_zip(_arrays(), extra={evil: b"x"}))
    (tmp_path / "target").mkdir()
    with pytest.raises(VerificationError, match="unsafe path in zip"):
        extract_zip(archive, tmp_path / "target")
    assert not list((tmp_path / "target").iterdir())
    assert not (tmp_path / "evil.txt").exists()


def test_existing_dataset_needs_force(dataset, tmp_path: Path) -> None:
    server, manifest = dataset
    to = tmp_path / "ucm"
    to.mkdir()
    (to / "mine.txt").write_text("keep")
    with pytest.raises(RuntimeError, match="already exists.*--force"):
        _install(server, manifest, to)
    assert server.ranges == []
    _install(server, manifest, to, force=True)
    assert not (to / "mine.txt").exists() and (to / "Images").is_dir()


def test_cli_download_and_info(dataset, tmp_path: Path, monkeypatch, capsys) -> None:
    server, manifest = dataset
    monkeypatch.setitem(data_cmd.DATASETS, "ucmerced", (server.url, manifest, tmp_path / "default"))
    to = tmp_path / "ucm"
    assert main(["data", "download", "ucmerced", "--to", str(to)]) == 0
    assert "installed 4 files" in capsys.readouterr().out
    (to / "Images" / "water" / "broken.png").write_bytes(b"not an image")
    assert main(["data", "info", str(to)]) == 0
    out = capsys.readouterr().out
    assert "5 images, 2 classes" in out
    assert re.search(r"water\s+3", out) and re.search(r"8x8\s+3", out) and re.search(r"9x7\s+1", out)
    assert "unreadable files: 1" in out and "broken.png" in out


def test_cli_reports_errors_clearly(dataset, tmp_path: Path, capsys) -> None:
    server, _ = dataset
    to = tmp_path / "ucm"
    argv = ["data", "download", "ucmerced", "--to", str(to), "--url", server.url, "--no-verify-pixels"]
    assert main([*argv, "--sha256", "0" * 64]) == 2
    assert "rshash data: error:" in capsys.readouterr().err and not to.exists()
    assert main(argv) == 0
    assert "pixel check skipped" in capsys.readouterr().out
