"""Fetch a dataset zip over HTTP, resumably, and install it only once it is proven intact.

Three independent checks guard against a bad copy: the zip's own CRCs, an
optional SHA-256 of the whole zip, and the SHA-256 of every image's *decoded*
RGB pixels against a packaged manifest (so a re-encoded but pixel-identical
copy passes, and a silently altered one does not). The dataset is extracted
into a temporary sibling directory and moved into place only after all checks
pass, so a failure never leaves a half-installed dataset behind.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import re
import shutil
import stat
import time
import urllib.error
import urllib.request
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from ..io_utils import atomic_directory
from ..progress import progress_bar
from .datasets import _class_root
from .images import IMAGE_SUFFIXES, UnreadableImage, load_rgb

log = logging.getLogger(__name__)

UCMERCED_URL = "http://weegee.vision.ucmerced.edu/datasets/UCMerced_LandUse.zip"
UCMERCED_PIXELS = Path(__file__).with_name("ucmerced_pixels.sha256")
#: Name the manifest gets inside an installed dataset (as in the shared UCMD copy).
PIXELS_FILENAME = "pixels.sha256"

_CHUNK = 1 << 16
_MAX_EXAMPLES = 10


class DownloadError(RuntimeError):
    """The transfer failed; any partial ``.part`` file is kept so a rerun resumes."""


class VerificationError(RuntimeError):
    """The downloaded data is not what was expected; nothing was installed."""


# --------------------------------------------------------------------------- HTTP


def _content_range_start(header: str | None) -> int | None:
    """Start offset of a ``Content-Range: bytes START-END/TOTAL`` header, if well formed."""
    match = re.match(r"\s*bytes\s+(\d+)-\d+/(\d+|\*)", header or "")
    return int(match.group(1)) if match else None


def _open(url: str, offset: int, timeout: float) -> http.client.HTTPResponse:
    """GET ``url`` asking for the bytes from ``offset`` on (a plain GET when 0)."""
    headers = {"User-Agent": "rshash-downloader", "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    return urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)


def _copy_with_progress(resp: BinaryIO, out: BinaryIO, offset: int, length: int | None, desc: str) -> int:
    """Stream the response body to ``out``; return the bytes written."""
    total = offset + length if length is not None else None
    written = 0
    with progress_bar(total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024, desc=desc) as bar:
        while chunk := resp.read(_CHUNK):
            out.write(chunk)
            written += len(chunk)
            bar.update(len(chunk))
    return written


def _part_is_whole(exc: urllib.error.HTTPError, offset: int) -> bool:
    """A 416 whose ``Content-Range: bytes */TOTAL`` says the ``.part`` is already complete."""
    total = (exc.headers.get("Content-Range") or "").rpartition("/")[2]
    return total.isdigit() and int(total) == offset


def _open_resumed(url: str, part: Path, timeout: float) -> tuple[http.client.HTTPResponse | None, int]:
    """Open the rest of ``url`` after ``part``: ``(response, offset)``; ``(None, size)`` when complete.

    Falls back to offset 0 (a full download) when the server ignores ``Range``
    or answers with a range we did not ask for.
    """
    offset = part.stat().st_size if part.exists() else 0
    if not offset:
        return _open(url, 0, timeout), 0
    try:
        resp = _open(url, offset, timeout)
    except urllib.error.HTTPError as exc:
        if exc.code != 416:
            raise
        if _part_is_whole(exc, offset):
            return None, offset
        log.info("partial file is longer than the server's file; restarting the download")
        return _open(url, 0, timeout), 0
    if resp.status != 206:
        log.info("server ignored the range request; restarting the download")
        return resp, 0
    if _content_range_start(resp.headers.get("Content-Range")) == offset:
        return resp, offset
    resp.close()
    log.info("server answered with another byte range; restarting the download")
    return _open(url, 0, timeout), 0


def _fetch_once(url: str, part: Path, timeout: float) -> None:
    """One attempt: continue ``part`` from its current size (or restart it), to the end."""
    resp, offset = _open_resumed(url, part, timeout)
    if resp is None:
        return
    with resp:
        length = resp.headers.get("Content-Length")
        expected = int(length) if length and length.isdigit() else None
        with part.open("ab" if offset else "wb") as out:
            written = _copy_with_progress(resp, out, offset, expected, part.name.removesuffix(".part"))
    if expected is not None and written < expected:
        raise ConnectionError(f"connection closed after {offset + written} of {offset + expected} bytes")


def _is_transient(exc: BaseException) -> bool:
    """Worth retrying: dropped connections, timeouts and server-side (5xx) errors."""
    if isinstance(exc, urllib.error.HTTPError):
        return exc.code >= 500
    return isinstance(exc, (OSError, http.client.HTTPException))


def download_file(
    url: str, dest: str | Path, *, retries: int = 3, retry_wait: float = 2.0, timeout: float = 60.0
) -> Path:
    """Download ``url`` to ``dest`` via ``dest.part``, resuming from whatever is already there.

    A server that ignores ``Range`` (answers 200) makes the download restart
    from scratch rather than append a second copy. Transient failures are
    retried (resuming) ``retries`` times; after that the ``.part`` file stays
    for the next run.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    for attempt in range(retries + 1):
        try:
            _fetch_once(url, part, timeout)
            break
        except Exception as exc:  # noqa: BLE001 - classified just below
            have = part.stat().st_size if part.exists() else 0
            if not _is_transient(exc) or attempt == retries:
                raise DownloadError(
                    f"cannot download {url}: {type(exc).__name__}: {exc}"
                    + (f" ({have} bytes kept in {part}; rerun to resume)" if have else "")
                ) from exc
            wait = retry_wait * 2**attempt
            log.warning("download attempt %d failed with %d bytes so far (%s); retrying in %.0f s",
                        attempt + 1, have, exc, wait)
            time.sleep(wait)
    part.replace(dest)
    return dest


# --------------------------------------------------------------------------- zip checks


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def verify_zip(path: str | Path, sha256: str | None = None) -> None:
    """Check the optional whole-file SHA-256, then every member's CRC."""
    path = Path(path)
    if sha256:
        actual = file_sha256(path)
        if actual.lower() != sha256.strip().lower():
            raise VerificationError(f"{path.name}: SHA-256 is {actual}, expected {sha256.strip().lower()}")
    try:
        with zipfile.ZipFile(path) as zf:
            bad = zf.testzip()
    except (zipfile.BadZipFile, zlib.error, OSError, EOFError) as exc:
        raise VerificationError(f"{path.name}: not a valid zip file ({exc})") from exc
    if bad is not None:
        raise VerificationError(f"{path.name}: member {bad!r} is corrupt (CRC mismatch)")


def _member_parts(info: zipfile.ZipInfo) -> tuple[str, ...]:
    """Path components of a member, refusing anything that could land outside the target."""
    name = info.filename.replace("\\", "/")
    parts = PurePosixPath(name).parts
    if name.startswith("/") or ".." in parts or (parts and ":" in parts[0]):
        raise VerificationError(f"unsafe path in zip: {info.filename!r}")
    if stat.S_ISLNK(info.external_attr >> 16):
        raise VerificationError(f"symbolic link in zip is not allowed: {info.filename!r}")
    return tuple(p for p in parts if p not in ("", "."))


def _common_top(names: list[tuple[str, ...]]) -> int:
    """1 when every member sits under one top folder (stripped on extraction), else 0."""
    tops = {parts[0] for parts in names if len(parts) > 1}
    files_at_top = any(len(parts) == 1 for parts in names)
    return 1 if len(tops) == 1 and not files_at_top else 0


def extract_zip(path: str | Path, target: str | Path) -> int:
    """Extract into ``target``, dropping a single top-level folder; return the file count.

    Every member path is validated (no absolute paths, ``..``, drive letters or
    symlinks) and checked against free disk space before anything is written.
    """
    target = Path(target).resolve()
    with zipfile.ZipFile(path) as zf:
        members = [(info, _member_parts(info)) for info in zf.infolist()]
        members = [(info, parts) for info, parts in members if parts and parts[0] != "__MACOSX"]
        strip = _common_top([parts for info, parts in members if not info.is_dir()])
        needed = sum(info.file_size for info, _ in members)
        free = shutil.disk_usage(target).free
        if needed > free:
            raise VerificationError(f"extracting needs {needed} bytes but only {free} are free in {target}")
        count = 0
        for info, parts in members:
            if info.is_dir() or len(parts) <= strip:
                continue
            out = target.joinpath(*parts[strip:])
            if not out.resolve().is_relative_to(target):
                raise VerificationError(f"unsafe path in zip: {info.filename!r}")
            out.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as src, out.open("wb") as dst:
                shutil.copyfileobj(src, dst, _CHUNK)
            count += 1
    return count


# --------------------------------------------------------------------------- pixel checks


@dataclass(frozen=True)
class PixelEntry:
    """One manifest line: decoded-pixel SHA-256 and size of ``<class>/<stem>``."""

    sha256: str
    name: str
    size: str  # "WxH"


def read_pixel_manifest(path: str | Path) -> dict[str, PixelEntry]:
    """Parse ``<sha256>  <class>/<stem>  <W>x<H>`` lines (blank and ``#`` lines ignored)."""
    entries: dict[str, PixelEntry] = {}
    for lineno, line in enumerate(Path(path).read_text().splitlines(), start=1):
        if not line.strip() or line.startswith("#"):
            continue
        fields = line.split()
        if len(fields) != 3 or not re.fullmatch(r"[0-9a-fA-F]{64}", fields[0]):
            raise ValueError(f"{path}:{lineno}: expected '<sha256>  <name>  <W>x<H>', got {line!r}")
        entries[fields[1]] = PixelEntry(fields[0].lower(), fields[1], fields[2])
    return entries


def pixel_sha256(path: str | Path) -> tuple[str, str]:
    """SHA-256 of the decoded ``(H, W, 3) uint8`` pixels, and the size as ``WxH``."""
    arr = load_rgb(path)
    return hashlib.sha256(arr.tobytes()).hexdigest(), f"{arr.shape[1]}x{arr.shape[0]}"


def _images_by_name(root: Path) -> dict[str, Path]:
    """Image files keyed by ``<class>/<stem>`` (extension-agnostic), relative to the class root."""
    base = _class_root(root)
    return {
        p.relative_to(base).with_suffix("").as_posix(): p
        for p in sorted(base.rglob("*"))
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
    }


def _examples(items: list[str]) -> str:
    shown = "; ".join(items[:_MAX_EXAMPLES])
    return shown + (f"; ... and {len(items) - _MAX_EXAMPLES} more" if len(items) > _MAX_EXAMPLES else "")


def verify_pixels(root: str | Path, manifest: dict[str, PixelEntry]) -> int:
    """Check every manifest image under ``root`` decodes to the recorded pixels; return the count.

    Raises :class:`VerificationError` listing missing, unreadable and
    mismatching images (extra images not in the manifest are only logged).
    """
    found = _images_by_name(Path(root))
    missing = sorted(set(manifest) - set(found))
    extra = sorted(set(found) - set(manifest))
    if extra:
        log.warning("%d image(s) not in the pixel manifest: %s", len(extra), _examples(extra))
    bad: list[str] = []
    for name in progress_bar(iterable=sorted(set(manifest) & set(found)), desc="verifying pixels", unit="img"):
        entry = manifest[name]
        try:
            digest, size = pixel_sha256(found[name])
        except UnreadableImage as exc:
            bad.append(f"{name}: unreadable ({exc})")
            continue
        if size != entry.size:
            bad.append(f"{name}: size {size}, expected {entry.size}")
        elif digest != entry.sha256:
            bad.append(f"{name}: pixel SHA-256 {digest[:12]}..., expected {entry.sha256[:12]}...")
    problems = []
    if missing:
        problems.append(f"{len(missing)} image(s) missing: {_examples(missing)}")
    if bad:
        problems.append(f"{len(bad)} image(s) differ: {_examples(bad)}")
    if problems:
        raise VerificationError("pixel verification failed: " + " | ".join(problems))
    return len(manifest)


# --------------------------------------------------------------------------- whole flow


@dataclass(frozen=True)
class InstallResult:
    """What :func:`download_dataset` installed, for the CLI to report."""

    path: Path
    files: int
    pixels_verified: int | None


def _ensure_zip(url: str, zip_path: Path, sha256: str | None, **http: float) -> None:
    """Download (or reuse) the zip and verify it; a bad zip is deleted so a rerun refetches it."""
    if not zip_path.exists():
        download_file(url, zip_path, **http)
    try:
        verify_zip(zip_path, sha256)
    except VerificationError as exc:
        zip_path.unlink(missing_ok=True)
        raise VerificationError(f"{exc}; the download was deleted, rerun to fetch it again") from exc


def download_dataset(
    to: str | Path,
    url: str = UCMERCED_URL,
    *,
    sha256: str | None = None,
    pixel_manifest: str | Path | None = UCMERCED_PIXELS,
    force: bool = False,
    keep_zip: bool = False,
    retries: int = 3,
    retry_wait: float = 2.0,
    timeout: float = 60.0,
) -> InstallResult:
    """Download, verify and install a zipped image dataset as directory ``to``.

    The zip's single top folder is dropped, so ``to`` becomes the dataset root
    (e.g. ``to/Images/<class>/...`` for UCMD) that ``--data`` accepts. The zip
    is kept next to ``to`` while work is pending (``<to>.zip[.part]``) so an
    interrupted run resumes; it is removed after a successful install unless
    ``keep_zip``. ``pixel_manifest=None`` skips the pixel check.
    """
    to = Path(to).expanduser().resolve()
    if to.exists() and (not to.is_dir() or any(to.iterdir())) and not force:
        raise RuntimeError(f"{to} already exists and is not empty; pass --force to replace it")
    zip_path = to.with_name(to.name + ".zip")
    _ensure_zip(url, zip_path, sha256, retries=retries, retry_wait=retry_wait, timeout=timeout)
    manifest = read_pixel_manifest(pixel_manifest) if pixel_manifest is not None else None
    try:
        with atomic_directory(to) as tmp:
            files = extract_zip(zip_path, tmp)
            verified = verify_pixels(tmp, manifest) if manifest is not None else None
            if manifest is not None and not (tmp / PIXELS_FILENAME).exists():
                shutil.copyfile(pixel_manifest, tmp / PIXELS_FILENAME)
    except VerificationError as exc:
        raise VerificationError(f"{exc}; nothing was installed (the zip is kept at {zip_path})") from exc
    if not keep_zip:
        zip_path.unlink()
    return InstallResult(to, files, verified)
