"""An image archive made searchable by binary code: :class:`Index`.

Layout of an index directory::

    INDEX_DIR/
      meta.sqlite                   source of truth: per-image metadata + packed codes, meta table
      cache-<kind>-g<generation>.faiss   derived faiss index, rebuilt from SQLite when missing or stale

The API mirrors faiss (``create``/``open``, ``add``, ``remove``, ``search``,
``range_search``, ``len``) but speaks images: queries are image files, pixel
arrays, binary codes or ids already in the index, and results carry paths and labels.
The in-memory search structures and the cache file are kept by :mod:`.live`.
Rasters, searches by place and the GeoParquet export are its other half, :mod:`.rasters`.
"""

from __future__ import annotations

import shutil
import threading
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Sequence

import numpy as np

from ..codes import unpack_codes
from ..data.datasets import ImageRecord
from ..encoding.commit import ingest, now
from ..encoding.items import ImageFiles
from ..encoding.local import LocalEngine
from ..encoding.report import AddReport
from ..model_config import has_model, read_config
from ..ranking import DEFAULT_SHORTLIST
from .backends import backend_meta, check_backend_kind, open_backend
from .backends.faiss import check_kind
from .live import LiveCodes
from .model_check import ModelMismatchError, ModelSource, check_model, model_identity  # noqa: F401 (re-exported)
from .model_check import RERANK_WEIGHT_KEY, gsd_meta, model_resolutions, model_weight, recorded_weight
from .query import Queries, Query
from .rasters import RasterMethods
from .search import Hit, QueryVectors, Searcher, SearchParams, check_examples
from .store import DB_NAME, FORMAT_VERSION, ImageMeta, Store
from .vectors import VectorTable

if TYPE_CHECKING:  # the encoder imports torch (seconds); searching by id or code never needs it
    from ..encoder import Encoder
    from ..encoding.commit import Engine
    from ..encoding.items import ItemSource


class Index(RasterMethods):
    """Binary codes of an image archive, searchable by Hamming distance.

    Use :meth:`create` or :meth:`open`. Thread-safe; several processes may read
    while one writes (each search first catches up with committed changes). Searches
    run in parallel (no lock between them); a full rebuild of the search structures that
    a change from another process makes necessary runs in the background while searches
    go on with the previous ones.
    """

    def __init__(self, path: Path, store: Store, model: ModelSource | None, encoder_threads: int | None = None):
        self.path = path
        #: ONNX Runtime threads of the encoder this index loads (None: ``RSHASH_THREADS``, default 2); indexing
        #: runs its own single-threaded sessions side by side either way (see ``encoding.local``).
        self.encoder_threads = encoder_threads
        self._store = store
        meta = store.meta()
        self.bits = int(meta["bits"])
        self.fingerprint = meta["fingerprint"]
        self.model_dir = Path(meta["model_dir"])
        self._kind = check_kind(meta["kind"])
        self._encoder: Encoder | None = None
        self.descriptor_dims = int(meta["descriptor_dims"])
        #: Descriptor weight of the two-stage re-rank when a search gives none: its model's (see
        #: :func:`rshash.model_config.model_rerank_weight`).
        self.rerank_weight = recorded_weight(meta, self.model_dir)
        self.backend = meta.get("backend", "faiss")  # where the Hamming shortlist comes from (see .backends)
        self._live = LiveCodes(store, self._kind, self.bits, self.descriptor_dims, open_backend(path, meta), path)
        self._lock = threading.RLock()  # writes in this process (add, remove, set_kind)
        self.queries = Queries(store, self.bits, lambda: self.encoder, f"the index {path}")
        self._searcher = Searcher(store, self._live, self.bits, self.rerank_weight)
        self._attach_model(model)

    # ------------------------------------------------------------------ lifecycle

    @classmethod
    def create(cls, path: str | Path, model: ModelSource, kind: str = "flat", backend: str = "faiss",
               uri: str | None = None) -> "Index":
        """A new, empty index in ``path`` for codes of ``model`` (an Encoder or a model directory).

        ``backend``: ``faiss`` (embedded, default) or ``milvus`` with ``uri`` a Milvus Lite file (``*.db``;
        default ``INDEX_DIR/milvus.db``) or a server address (``http://host:19530``); see :mod:`.backends`.
        """
        path = Path(path)
        check_kind(kind)
        backend_rows = backend_meta(backend, uri, kind)
        if (path / DB_NAME).exists():
            raise ValueError(f"an index already exists in {path}: open it (rshash index adds to it)")
        fingerprint, bits, dims, model_dir = model_identity(model)
        path.mkdir(parents=True, exist_ok=True)
        for stale in path.glob("cache-*.faiss"):  # left by a deleted index; would not match this one
            stale.unlink()
        for stale in path.glob("vectors-g*"):  # the same for a saved vector table
            shutil.rmtree(stale, ignore_errors=True)
        meta = {
            "fingerprint": fingerprint,
            "bits": bits,
            "descriptor_dims": dims,
            "kind": kind,
            "model_dir": str(model_dir),
            "created_at": now(),
            **gsd_meta(model_resolutions(model)),
            RERANK_WEIGHT_KEY: str(model_weight(model)),
            **backend_rows,
        }
        Store.create(path / DB_NAME, meta).close()
        return cls.open(path, model)

    @classmethod
    def open(cls, path: str | Path, model_dir: ModelSource | None = None, *,
             encoder_threads: int | None = None) -> "Index":
        """An existing index. ``model_dir`` (a directory or an Encoder) overrides the recorded one.
        ``encoder_threads``: ONNX Runtime threads of the encoder it loads for image queries (None: the default).

        Raises :class:`ModelMismatchError` if the model's fingerprint or bits differ
        from the index's, and ``IndexFormatError`` for an index newer than this code.
        """
        path = Path(path)
        store = Store.open(path / DB_NAME)
        try:
            return cls(path, store, model_dir, encoder_threads)
        except BaseException:
            store.close()
            raise

    @classmethod
    def open_or_create(cls, path: str | Path, model: ModelSource | None = None, kind: str | None = None,
                       backend: str | None = None, uri: str | None = None) -> "Index":
        """Open ``path`` if it holds an index (switching its kind if ``kind`` differs), else create one."""
        if (Path(path) / DB_NAME).exists():
            index = cls.open(path, model)
            if backend is not None and backend != index.backend:
                index.close()
                raise ValueError(f"the index {path} uses the {index.backend} backend, not {backend}: "
                                 "build a new index for another backend")
            if kind is not None and kind != index.kind:
                index.set_kind(kind)
            return index
        if model is None:
            raise ValueError(f"no index in {path} yet: a model is needed to create one (--model)")
        return cls.create(path, model, kind or "flat", backend or "faiss", uri)

    def close(self) -> None:
        if "geo" in self.__dict__:  # open rasters of geo searches
            self.__dict__["geo"].close()
        self._live.close()
        self._store.close()

    def __enter__(self) -> "Index":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ model

    def _attach_model(self, model: ModelSource | None) -> None:
        """Check the given (or recorded, if present) model now; load its encoder only when needed."""
        if model is None:
            if not has_model(self.model_dir):
                return  # searching by code or id still works; images need a model
            model = self.model_dir
        self.model_dir = check_model(model, self.path, self.bits, self.fingerprint, self.model_dir)
        if not isinstance(model, (str, Path)):
            self._encoder = model

    @property
    def encoder(self) -> "Encoder":
        """The model's encoder, loaded on first use."""
        if self._encoder is None:
            from ..encoder import Encoder

            if not has_model(self.model_dir):
                raise FileNotFoundError(
                    f"the model this index was built with is missing ({self.model_dir}): pass it explicitly "
                    "(Index.open(path, model_dir=...), CLI --model)"
                )
            from ..onnx_export import DEFAULT_THREADS

            encoder = Encoder(self.model_dir, self.encoder_threads or DEFAULT_THREADS)
            self._attach_model(encoder)  # the directory may have been overwritten since open
            self._encoder = encoder
        return self._encoder

    # ------------------------------------------------------------------ adding and removing

    def add(self, source: "ItemSource", engine: "str | Engine" = "local", *, address: str | None = None,
            workers: int | None = None, batch_size: int = 32, progress: bool = True,
            report: AddReport | None = None) -> AddReport:
        """Encode and add the items of ``source`` (:mod:`rshash.encoding`): one pipeline for every source and
        engine, each batch committed on its own (an interrupted run keeps its finished batches; a rerun skips
        them). ``engine="ray"`` loads and encodes on Ray (``address``: ``auto``, ``ray://HOST:PORT`` or None
        for ``$RAY_ADDRESS`` / a local Ray; ``workers``: encoder actors) and commits here the same way."""
        report = report if report is not None else AddReport()
        running = self._engine(engine, address, workers) if isinstance(engine, str) else engine
        with running:
            ingest(self._store, source, running, self._lock, report, batch_size=batch_size, progress=progress)
        self._live.update_now()
        return report

    def _engine(self, engine: str, address: str | None, workers: int | None) -> "Engine":
        if engine == "ray":
            from ..encoding.ray_engine import RayEngine

            if not has_model(self.model_dir):
                self.encoder  # raises the missing-model error
            return RayEngine(self.model_dir, self.fingerprint, address, workers)
        if engine != "local" or address is not None or workers is not None:
            raise ValueError(f"engine is 'local' or 'ray' (address and workers only with 'ray'), got {engine!r}")
        return LocalEngine(self.encoder)

    def _input_size(self) -> int:
        """The model's input size, without loading the encoder where it is not loaded (Ray encodes elsewhere)."""
        if self._encoder is not None:
            return self._encoder.input_size
        return int(read_config(self.model_dir).input_size or self.encoder.input_size)

    def add_paths(
        self,
        items: Iterable[str | Path | ImageRecord] | str | Path,
        batch_size: int = 32,
        progress: bool = True,
        engine: str = "local",
        address: str | None = None,
        workers: int | None = None,
    ) -> AddReport:
        """Encode and add images (paths, :class:`ImageRecord` s, or a folder / CSV manifest).

        A path already indexed with the same content checksum is left alone, one whose content changed is
        re-encoded. ``engine``, ``address``, ``workers``: see :meth:`add`.
        """
        running = self._engine(engine, address, workers)  # arguments checked before a folder is read
        return self.add(ImageFiles(items, self._input_size()), running, batch_size=batch_size, progress=progress)

    def remove(self, ids: Iterable[int]) -> list[int]:
        """Remove images by id; return the ids that were present."""
        with self._lock:
            removed = self._store.remove([int(i) for i in ids])
        if removed:
            self._live.update_now()
        return removed

    def set_kind(self, kind: str) -> None:
        """Switch the search structure (flat / multihash / ivf); the cache is rebuilt, the data untouched."""
        check_backend_kind(self.backend, self._store.meta().get("milvus_uri"), check_kind(kind))
        with self._lock:
            self._store.set_meta("kind", check_kind(kind))
            self._kind = kind
            self._live.reset(kind)

    # ------------------------------------------------------------------ search

    def search(
        self,
        query: Query,
        k: int | None = 20,
        *,
        radius: int | None = None,
        rerank: bool = True,
        labels: Sequence[str | None] | None = None,
        shortlist: int = DEFAULT_SHORTLIST,
        weight: float | None = None,
        ids: Iterable[int] | None = None,
        offset: int = 0,
        ties: int = 0,
    ) -> list[Hit]:
        """The best ``k`` images for ``query`` (an image path, uint8 RGB pixels, a bool code or an indexed id).

        Two stages: a Hamming shortlist of ``shortlist`` items, then a re-rank by the
        stored descriptors (``rerank=False``: Hamming order only); ties by id. An id
        query never returns itself; an image that is in the index comes back first.
        ``radius``: every image within that Hamming distance (inclusive, exact), at most
        ``k`` of them (``k=None``: all, only with a radius; the ``shortlist`` nearest are re-ranked, the rest
        follow in Hamming order). ``weight``: the descriptor's weight in the re-rank (None: the model's,
        :attr:`rerank_weight`). ``labels``: only images with one of these labels
        (``None`` in the list: unlabelled ones), filtered inside the index. ``ids``: only these items (e.g.
        the chips in an area of interest), filtered the same way. ``offset``: skip that many results (a page;
        ``offset + k <= shortlist``). ``ties``: re-rank up to that many more candidates at the shortlist's last
        Hamming distance (codes that collapse onto a few values tie by the thousand at archive scale; see
        docs/SCALING.md; one query only). A list of several queries is an examples search (at most
        :data:`~.search.MAX_EXAMPLES`): :meth:`search_examples` without negatives, at its weight unless one is
        given.
        """
        params = SearchParams(k, radius, rerank, labels, shortlist=shortlist, weight=weight, offset=offset, ties=ties)
        params.check(self.bits)
        vectors = self.queries.vectors(query)
        return self._searcher.search(vectors, params, ids=ids, prefer=self.queries.indexed_id_of_file(query))

    def search_examples(self, positives: Sequence[Query], negatives: Sequence[Query] = (), k: int | None = 20, *,
                        ids: Iterable[int] | None = None, **options: Any) -> list[Hit]:
        """Items like the ``positives`` and unlike the ``negatives`` (each an indexed id, an image path, uint8 RGB
        pixels or a code; at most :data:`~.search.MAX_EXAMPLES` together, counted before any is encoded).

        Relevance feedback (:func:`~.search.rank_feedback`): every item of an index up to 10^5 (or of ``ids`` up
        to 10^6) and the positives' shortlists are candidates, scored by the positives' mean two-stage score
        (the multi-example score of :meth:`search`) and, with negatives, blended with a logistic regression
        fitted on the examples (:mod:`rshash.feedback`); the examples themselves are never returned. ``options``
        (``radius``, ``rerank``, ``labels``, ``shortlist``, ``weight``, ``offset``) as in :meth:`search`; a hit's
        ``score`` is the standardised feedback score (lower is better)."""
        positives, negatives = list(positives), list(negatives)
        check_examples(len(positives) + len(negatives))
        if not positives:
            raise ValueError("give at least one positive example")
        params = SearchParams(k, **options)
        params.check(self.bits)
        pos = [self.queries.vectors(q) for q in positives]
        neg = [self.queries.vectors(q) for q in negatives]
        return self._searcher.search(pos, params, ids=ids, negatives=neg, feedback=True)

    def search_by_id(self, id: int, k: int | None = 20, exclude_self: bool = True, **options) -> list[Hit]:
        """The ``k`` best images for an indexed one ("more like this"), itself excluded unless
        ``exclude_self=False`` (then it comes first among exact ties; its stored descriptor re-ranks either way)."""
        if exclude_self:
            return self.search(int(id), k, **options)
        vectors = replace(self.queries.vectors(int(id)), exclude=())  # its stored code and descriptor
        ids = options.pop("ids", None)
        return self._searcher.search(vectors, SearchParams(k, **options), ids=ids, prefer=int(id))

    def range_search(self, query: Query, radius: int, k: int | None = None, **options) -> list[Hit]:
        """Every image within Hamming distance ``radius`` (inclusive) of ``query``, best first; exact."""
        return self.search(query, k, radius=radius, **options)

    def code_of(self, query: Query) -> np.ndarray:
        """The ``bool (bits,)`` code of a query (encoding images with the model)."""
        return unpack_codes(self.queries.code_and_descriptor(query)[0][None], self.bits)[0]

    def query_vectors(self, query: Query | QueryVectors | Sequence[Query]) -> "QueryVectors | tuple[QueryVectors, ...]":
        """A query as vectors (:meth:`Queries.vectors <.query.Queries.vectors>`): its packed code, int8
        descriptor (None for a bare code) and the indexed ids it is made of (excluded from its results). A list
        or tuple is several positive examples: a tuple of their vectors."""
        return self.queries.vectors(query)

    # ------------------------------------------------------------------ inspection

    @property
    def kind(self) -> str:
        return self._kind

    @property
    def generation(self) -> int:
        """The committed generation: the number of changes committed to this index (by any process)."""
        return self._store.generation()

    @property
    def _table(self) -> VectorTable | None:
        """The in-memory codes and descriptors (``None`` before the first search); benchmarks time the re-rank."""
        return self._live.table

    def __len__(self) -> int:
        return self._store.count()

    def get(self, id: int) -> ImageMeta | None:
        """Metadata of one image (``None`` if no such id)."""
        return self._store.get([int(id)]).get(int(id))

    def stats(self) -> dict:
        """Size, model, kind and storage footprint (JSON-serialisable)."""
        db_bytes = sum(f.stat().st_size for f in self.path.glob(f"{DB_NAME}*"))
        cache_bytes = sum(f.stat().st_size for f in [*self.path.glob("cache-*.faiss"), *self.path.glob("vectors-g*/*")])
        count = len(self)
        meta = self._store.meta()
        return {
            "path": str(self.path),
            "images": count,
            "bits": self.bits,
            "kind": self._kind,
            "backend": self.backend,
            "fingerprint": self.fingerprint,
            "model_dir": str(self.model_dir),
            "format_version": FORMAT_VERSION,
            "generation": int(meta["generation"]),
            "created_at": meta.get("created_at"),
            "model_gsd": self.model_gsds,
            "labels": {k if k is not None else "(unlabelled)": v for k, v in self._store.label_counts().items()},
            "db_bytes": db_bytes,
            "cache_bytes": cache_bytes,
            "bytes_per_image": round((db_bytes + cache_bytes) / count, 1) if count else None,
        }

