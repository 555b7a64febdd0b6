"""An image archive made searchable by binary code: :class:`Index`.

Layout of an index directory::

    INDEX_DIR/
      meta.sqlite                   source of truth: per-image metadata + packed codes, meta table
      cache-<kind>-g<generation>.faiss   derived faiss index, rebuilt from SQLite when missing or stale

The API mirrors faiss (``create``/``open``, ``add``, ``remove``, ``search``,
``range_search``, ``len``) but speaks images: queries are image files, pixel
arrays, binary codes or ids already in the index, and results carry paths and labels.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Iterator, Union

import numpy as np

from ..codes import pack_codes
from ..data.datasets import ImageRecord, SkipReport, load_records
from ..data.images import UnreadableImage, decode_rgb, load_rgb, resize_rgb
from ..progress import progress_bar
from .faiss_index import CodeIndex, check_kind
from .store import DB_NAME, FORMAT_VERSION, ImageMeta, NewImage, Store

if TYPE_CHECKING:  # the encoder imports torch (seconds); searching by id or code never needs it
    from ..encoder import Encoder

log = logging.getLogger(__name__)

#: An image file, ``uint8 (H, W, 3)`` RGB pixels, a ``bool (bits,)`` code, or an id in the index.
Query = Union[str, Path, np.ndarray, int]
ModelSource = Union["Encoder", str, Path]

_CACHE_RE = re.compile(r"cache-(?P<kind>[a-z]+)-g(?P<generation>\d+)\.faiss")
#: Temp files of cache writes killed midway are removed once this old (seconds).
_STALE_TMP_AGE = 3600


class ModelMismatchError(ValueError):
    """The model does not make the codes this index holds (other weights or code length)."""


@dataclass(frozen=True)
class Hit:
    """One search result, nearest first."""

    rank: int
    id: int
    distance: int
    path: str
    label: str | None


@dataclass
class AddReport(SkipReport):
    """What :meth:`Index.add_paths` did; ``skipped`` lists ``(path, reason)`` of unreadable files."""

    added: int = 0
    unchanged: int = 0  # already indexed with the same content checksum: nothing done
    updated: int = 0  # indexed path whose content changed: re-encoded under a new id

    def summary(self) -> str:
        return (
            f"{self.added} added, {self.updated} updated, {self.unchanged} unchanged, "
            f"{len(self.skipped)} unreadable skipped"
        )

    def to_dict(self) -> dict:
        return {
            "added": self.added,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "skipped": [{"path": p, "reason": r} for p, r in self.skipped],
        }


@dataclass
class _Pending:
    """A decoded image waiting for its batch to be encoded and committed."""

    record: ImageRecord
    sha256: str
    height: int
    width: int
    pixels: np.ndarray
    replaces: int | None  # id of the stale row for this path, if its content changed


def _model_identity(model: ModelSource) -> tuple[str, int, Path]:
    """``(fingerprint, bits, model_dir)`` of an Encoder or a model directory (without loading it)."""
    if isinstance(model, (str, Path)):
        config_path = Path(model) / "config.json"
        if not config_path.is_file():
            raise FileNotFoundError(f"not an rshash model directory (no config.json): {model}")
        config = json.loads(config_path.read_text())
        return str(config["fingerprint"]), int(config["bits"]), Path(model).absolute()
    return model.fingerprint, model.bits, model.model_dir.absolute()


def _as_records(items: Iterable[str | Path | ImageRecord] | str | Path) -> list[ImageRecord]:
    """Absolute-path records, duplicates dropped; a single str/Path is a folder or manifest."""
    if isinstance(items, (str, Path)):
        items = load_records(items)
    seen: dict[str, ImageRecord] = {}
    for item in items:
        record = item if isinstance(item, ImageRecord) else ImageRecord(str(item))
        path = os.path.abspath(record.path)
        seen.setdefault(path, ImageRecord(path, record.label, record.split))
    return list(seen.values())


def _read_bytes(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise UnreadableImage(f"{path}: cannot read file ({exc})") from exc


class Index:
    """Binary codes of an image archive, searchable by Hamming distance.

    Use :meth:`create` or :meth:`open`. Thread-safe; several processes may read
    while one writes (each search first catches up with committed changes).
    """

    def __init__(self, path: Path, store: Store, model: ModelSource | None):
        self.path = path
        self._store = store
        meta = store.meta()
        self.bits = int(meta["bits"])
        self.fingerprint = meta["fingerprint"]
        self.model_dir = Path(meta["model_dir"])
        self._kind = check_kind(meta["kind"])
        self._encoder: Encoder | None = None
        self._codes: CodeIndex | None = None
        self._codes_generation: int | None = None
        self._lock = threading.RLock()
        self._attach_model(model)

    # ------------------------------------------------------------------ lifecycle

    @classmethod
    def create(cls, path: str | Path, model: ModelSource, kind: str = "flat") -> "Index":
        """A new, empty index in ``path`` for codes of ``model`` (an Encoder or a model directory)."""
        path = Path(path)
        check_kind(kind)
        if (path / DB_NAME).exists():
            raise ValueError(f"an index already exists in {path}: open it (rshash index adds to it)")
        fingerprint, bits, model_dir = _model_identity(model)
        path.mkdir(parents=True, exist_ok=True)
        for stale in path.glob("cache-*.faiss"):  # left by a deleted index; would not match this one
            stale.unlink()
        meta = {
            "fingerprint": fingerprint,
            "bits": bits,
            "kind": kind,
            "model_dir": str(model_dir),
            "created_at": _now(),
        }
        Store.create(path / DB_NAME, meta).close()
        return cls.open(path, model)

    @classmethod
    def open(cls, path: str | Path, model_dir: ModelSource | None = None) -> "Index":
        """An existing index. ``model_dir`` (a directory or an Encoder) overrides the recorded one.

        Raises :class:`ModelMismatchError` if the model's fingerprint or bits differ
        from the index's, and ``IndexFormatError`` for an index newer than this code.
        """
        path = Path(path)
        store = Store.open(path / DB_NAME)
        try:
            return cls(path, store, model_dir)
        except BaseException:
            store.close()
            raise

    @classmethod
    def open_or_create(cls, path: str | Path, model: ModelSource | None = None, kind: str | None = None) -> "Index":
        """Open ``path`` if it holds an index (switching its kind if ``kind`` differs), else create one."""
        if (Path(path) / DB_NAME).exists():
            index = cls.open(path, model)
            if kind is not None and kind != index.kind:
                index.set_kind(kind)
            return index
        if model is None:
            raise ValueError(f"no index in {path} yet: a model is needed to create one (--model)")
        return cls.create(path, model, kind or "flat")

    def close(self) -> None:
        self._store.close()

    def __enter__(self) -> "Index":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ model

    def _attach_model(self, model: ModelSource | None) -> None:
        """Check the given (or recorded, if present) model now; load its encoder only when needed."""
        if model is None:
            if not (self.model_dir / "config.json").is_file():
                return  # searching by code or id still works; images need a model
            model = self.model_dir
        fingerprint, bits, model_dir = _model_identity(model)
        if bits != self.bits:
            raise ModelMismatchError(
                f"model {model_dir} makes {bits}-bit codes but the index {self.path} holds {self.bits}-bit codes"
            )
        if fingerprint != self.fingerprint:
            raise ModelMismatchError(
                f"model {model_dir} (fingerprint {fingerprint}) is not the model the index {self.path} was built "
                f"with (fingerprint {self.fingerprint}, from {self.model_dir}); codes of different models are "
                "not comparable: pass that model, or build a new index"
            )
        self.model_dir = model_dir
        if not isinstance(model, (str, Path)):
            self._encoder = model

    @property
    def encoder(self) -> "Encoder":
        """The model's encoder, loaded on first use."""
        if self._encoder is None:
            from ..encoder import Encoder

            if not (self.model_dir / "config.json").is_file():
                raise FileNotFoundError(
                    f"the model this index was built with is missing ({self.model_dir}): pass it explicitly "
                    "(Index.open(path, model_dir=...), CLI --model)"
                )
            encoder = Encoder(self.model_dir)
            self._attach_model(encoder)  # the directory may have been overwritten since open
            self._encoder = encoder
        return self._encoder

    # ------------------------------------------------------------------ adding and removing

    def add_paths(
        self,
        items: Iterable[str | Path | ImageRecord] | str | Path,
        batch_size: int = 32,
        progress: bool = True,
    ) -> AddReport:
        """Encode and add images (paths, :class:`ImageRecord` s, or a folder / CSV manifest).

        Each batch is committed on its own, so an interrupted run keeps its finished
        batches and a rerun skips them: a path already indexed with the same content
        checksum is left alone, one whose content changed is re-encoded.
        """
        if batch_size < 1:
            raise ValueError(f"batch size must be >= 1, got {batch_size}")
        records = _as_records(items)
        report = AddReport()
        encoder = self.encoder
        with progress_bar(total=len(records), desc="index", unit="img", disable=not progress) as bar:
            for batch, pending in self._prepared_batches(records, batch_size, encoder.input_size, report):
                with self._lock:
                    self._commit(pending, encoder, report)
                bar.update(len(batch))
        self._sync_and_save()
        return report

    def _prepared_batches(
        self, records: list[ImageRecord], batch_size: int, size: int, report: AddReport
    ) -> Iterator[tuple[list[ImageRecord], list[_Pending]]]:
        """Batches with their decoded images, the next one decoded in a thread while this one encodes.

        Decoding and resizing release the GIL, so this overlaps ~25% of the per-image
        time with the encoder. Only reads happen in the thread; commits stay in the caller.
        """
        batches = [records[start : start + batch_size] for start in range(0, len(records), batch_size)]
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="rshash-decode") as pool:
            upcoming = pool.submit(self._prepare, batches[0], size, report) if batches else None
            for i, batch in enumerate(batches):
                pending = upcoming.result()
                if i + 1 < len(batches):
                    upcoming = pool.submit(self._prepare, batches[i + 1], size, report)
                yield batch, pending

    def _prepare(self, batch: list[ImageRecord], size: int, report: AddReport) -> list[_Pending]:
        """Read, checksum and decode a batch; count unchanged files and skip unreadable ones."""
        known = self._store.checksums([r.path for r in batch])
        pending = []
        for record in batch:
            try:
                data = _read_bytes(record.path)
                sha = hashlib.sha256(data).hexdigest()
                old = known.get(record.path)
                if old is not None and old[1] == sha:
                    report.unchanged += 1
                    continue
                rgb = decode_rgb(data, record.path)
            except UnreadableImage as exc:
                report.add(record.path, str(exc))
                continue
            replaces = old[0] if old is not None else None
            pending.append(_Pending(record, sha, rgb.shape[0], rgb.shape[1], resize_rgb(rgb, size), replaces))
        return pending

    def _commit(self, pending: list[_Pending], encoder: "Encoder", report: AddReport) -> None:
        """Encode a batch and commit it to SQLite in one transaction."""
        if not pending:
            return
        codes = pack_codes(encoder.codes(np.stack([p.pixels for p in pending])))
        added_at = _now()
        rows = [
            NewImage(p.record.path, p.record.label, p.width, p.height, p.sha256, added_at, code.tobytes())
            for p, code in zip(pending, codes)
        ]
        replaced = [p.replaces for p in pending if p.replaces is not None]
        self._store.add(rows, replace_ids=replaced)
        report.updated += len(replaced)
        report.added += len(rows) - len(replaced)

    def remove(self, ids: Iterable[int]) -> list[int]:
        """Remove images by id; return the ids that were present."""
        with self._lock:
            removed = self._store.remove([int(i) for i in ids])
        if removed:
            self._sync_and_save()
        return removed

    def set_kind(self, kind: str) -> None:
        """Switch the search structure (flat / multihash / ivf); the cache is rebuilt, the data untouched."""
        with self._lock:
            self._store.set_meta("kind", check_kind(kind))
            self._kind = kind
            self._codes = self._codes_generation = None

    # ------------------------------------------------------------------ search

    def search(self, query: Query, k: int = 20) -> list[Hit]:
        """The ``k`` nearest images to ``query`` by Hamming distance (an int is :meth:`search_by_id`)."""
        if _is_id(query):
            return self.search_by_id(int(query), k)
        code = self._query_code(query)
        with self._lock:
            distances, ids = self._searcher().search(code, k)
        return self._hits(distances, ids)

    def search_by_id(self, id: int, k: int = 20, exclude_self: bool = True) -> list[Hit]:
        """The ``k`` nearest images to an indexed one ("more like this"), itself excluded by default."""
        code = self._stored_code(id)
        with self._lock:
            distances, ids = self._searcher().search(code, k + int(exclude_self))
        if exclude_self:
            keep = ids != id
            distances, ids = distances[keep][:k], ids[keep][:k]
        return self._hits(distances, ids)

    def range_search(self, query: Query, radius: int) -> list[Hit]:
        """Every image within Hamming distance ``radius`` (inclusive) of ``query``, nearest first; exact."""
        code = self._stored_code(int(query)) if _is_id(query) else self._query_code(query)
        with self._lock:
            distances, ids = self._searcher().range_search(code, radius)
        return self._hits(distances, ids)

    def code_of(self, query: Query) -> np.ndarray:
        """The ``bool (bits,)`` code of a query (encoding images with the model)."""
        from ..codes import unpack_codes

        packed = self._stored_code(int(query)) if _is_id(query) else self._query_code(query)
        return unpack_codes(packed[None], self.bits)[0]

    def _query_code(self, query: Query) -> np.ndarray:
        """A query as one packed code ``uint8 (bits/8,)``."""
        if isinstance(query, (str, Path)):
            return self._encode_pixels(load_rgb(query))
        if isinstance(query, np.ndarray) and query.dtype == bool:
            if query.size != self.bits:
                raise ValueError(f"query code has {query.size} bits, the index holds {self.bits}-bit codes")
            return pack_codes(query.reshape(1, self.bits))[0]
        if isinstance(query, np.ndarray) and query.dtype == np.uint8 and query.ndim == 3 and query.shape[2] == 3:
            return self._encode_pixels(query)
        raise ValueError(
            "a query is an image path, uint8 (H, W, 3) RGB pixels, a bool (bits,) code or an indexed id, "
            f"got {type(query).__name__}" + (f" {query.dtype} {query.shape}" if isinstance(query, np.ndarray) else "")
        )

    def _encode_pixels(self, rgb: np.ndarray) -> np.ndarray:
        encoder = self.encoder
        return pack_codes(encoder.codes(resize_rgb(rgb, encoder.input_size)[None]))[0]

    def _stored_code(self, id: int) -> np.ndarray:
        meta = self.get(id)
        if meta is None:
            raise ValueError(f"no image with id {id} in the index {self.path}")
        return np.frombuffer(meta.code, dtype=np.uint8)

    def _hits(self, distances: np.ndarray, ids: np.ndarray) -> list[Hit]:
        """Attach paths and labels (a row removed meanwhile by another process is dropped)."""
        metas = self._store.get(ids.tolist())
        hits = [(int(d), metas[int(i)]) for d, i in zip(distances, ids) if int(i) in metas]
        return [Hit(rank, m.id, d, m.path, m.label) for rank, (d, m) in enumerate(hits, start=1)]

    # ------------------------------------------------------------------ the faiss cache

    def _searcher(self) -> CodeIndex:
        """The faiss index, caught up with every committed change (call with the lock held)."""
        generation = self._store.generation()
        if self._codes is None or self._codes_generation != generation:
            if self._sync():
                self._save_cache()  # a full rebuild is worth keeping for the next process
        assert self._codes is not None
        return self._codes

    def _sync(self) -> bool:
        """Load the newest usable cache and replay later changes, or rebuild; ``True`` if rebuilt."""
        if self._codes is None:
            self._codes, self._codes_generation = self._load_cache(self._store.generation())
        nbytes = self.bits // 8
        if self._codes is not None:
            delta = self._store.codes_since(self._codes_generation, nbytes)
            if self._codes.remove(delta.removed):
                self._codes.add(delta.ids, delta.codes)
                if self._codes.ntotal == delta.total and not self._codes.needs_rebuild():
                    self._codes_generation = delta.generation
                    return False
        start = time.perf_counter()
        delta = self._store.codes_since(None, nbytes)
        self._codes = CodeIndex.build(self._kind, self.bits, delta.ids, delta.codes)
        self._codes_generation = delta.generation
        elapsed = time.perf_counter() - start
        log.debug("rebuilt %s search index of %d codes in %.2fs", self._kind, len(delta.ids), elapsed)
        return True

    def _sync_and_save(self) -> None:
        with self._lock:
            self._sync()
            self._save_cache()

    def _cache_path(self, generation: int) -> Path:
        return self.path / f"cache-{self._kind}-g{generation}.faiss"

    def _load_cache(self, generation: int) -> tuple[CodeIndex | None, int | None]:
        """The newest saved cache of this kind not newer than ``generation`` (unusable files are ignored)."""
        candidates = []
        for f in self.path.glob(f"cache-{self._kind}-g*.faiss"):
            m = _CACHE_RE.fullmatch(f.name)
            if m and int(m["generation"]) <= generation:
                candidates.append((int(m["generation"]), f))
        for cache_generation, f in sorted(candidates, reverse=True):
            try:
                return CodeIndex.load(self._kind, f), cache_generation
            except RuntimeError as exc:  # truncated or corrupt: rebuild instead
                log.warning("ignoring unreadable search cache %s: %s", f, exc)
        return None, None

    def _save_cache(self) -> None:
        """Write the cache for the current generation and delete older ones (best effort)."""
        if self._codes is None or self._codes_generation is None:
            return
        target = self._cache_path(self._codes_generation)
        try:
            if not target.exists():
                self._codes.save(target)
            self._remove_old_caches(keep=target)
        except OSError as exc:  # e.g. a read-only archive: searching still works from memory
            log.warning("could not save the search cache in %s: %s", self.path, exc)

    def _remove_old_caches(self, keep: Path) -> None:
        for f in self.path.glob("cache-*.faiss"):
            if f != keep:
                f.unlink(missing_ok=True)
        for f in self.path.glob(".cache-*.tmp"):  # from writes killed midway
            if time.time() - f.stat().st_mtime > _STALE_TMP_AGE:
                f.unlink(missing_ok=True)

    # ------------------------------------------------------------------ inspection

    @property
    def kind(self) -> str:
        return self._kind

    def __len__(self) -> int:
        return self._store.count()

    def get(self, id: int) -> ImageMeta | None:
        """Metadata of one image (``None`` if no such id)."""
        return self._store.get([int(id)]).get(int(id))

    def stats(self) -> dict:
        """Size, model, kind and storage footprint (JSON-serialisable)."""
        db_bytes = sum(f.stat().st_size for f in self.path.glob(f"{DB_NAME}*"))
        cache_bytes = sum(f.stat().st_size for f in self.path.glob("cache-*.faiss"))
        count = len(self)
        meta = self._store.meta()
        return {
            "path": str(self.path),
            "images": count,
            "bits": self.bits,
            "kind": self._kind,
            "fingerprint": self.fingerprint,
            "model_dir": str(self.model_dir),
            "format_version": FORMAT_VERSION,
            "generation": int(meta["generation"]),
            "created_at": meta.get("created_at"),
            "labels": {k if k is not None else "(unlabelled)": v for k, v in self._store.label_counts().items()},
            "db_bytes": db_bytes,
            "cache_bytes": cache_bytes,
            "bytes_per_image": round((db_bytes + cache_bytes) / count, 1) if count else None,
        }


def _is_id(query: object) -> bool:
    return isinstance(query, (int, np.integer)) and not isinstance(query, (bool, np.bool_))


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")

