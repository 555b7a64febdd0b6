"""Milvus as the code backend: :class:`MilvusCodes` (one collection) and :class:`MilvusBackend` (its source).

A collection holds ``(id INT64 primary key, code BINARY_VECTOR(bits))`` with the HAMMING metric and one
vector index: ``BIN_FLAT`` (kind ``flat``, exact; the only one Milvus Lite builds) or ``BIN_IVF_FLAT``
(kind ``ivf``, on a Milvus server; lists probed per call). It is a :class:`~.base.CodeBackend` like the faiss
:class:`~.faiss.CodeIndex`, and :class:`MilvusBackend` a :class:`~.base.CodeBackends`, so :mod:`..live` and
:mod:`..search` use them unchanged.

The collection is derived from SQLite and written in place: adds are upserts and removals deletes, so
replaying a change twice (two processes catching up with one server) is harmless, and a resync upserts
every row of SQLite and deletes the ids SQLite no longer has, so searches meanwhile never lose a row that
stays. Limits: Milvus returns at most :data:`MAX_TOPK` hits per search; a larger ``k``, a range with more
hits, or codes tied at the ``k``-th distance beyond that many fall back to an exact scan of the collection here.
Opening an index checks the collection against SQLite by its row count and the digest its last writer recorded
(:data:`STATE_SUFFIX`), not by streaming every code out (only a collection without a record is compared code by
code); a searching process replays SQLite's changes into its own table and never writes to the collection.
Milvus cuts ties at the ``k``-th distance anywhere, so a search asks it for more and cuts by id here
(:func:`~.base.k_smallest`). Milvus Lite is one process per ``.db`` file
(a second process cannot open it): several processes need a Milvus server.
"""

from __future__ import annotations

import logging
import threading
import warnings
from typing import TYPE_CHECKING

import numpy as np

with warnings.catch_warnings():  # milvus-lite 2.5 imports pkg_resources, deprecated by setuptools
    warnings.simplefilter("ignore", UserWarning)
    from pymilvus import DataType, MilvusClient

from .base import by_distance_then_id, empty_result, ivf_lists, ivf_probes, k_smallest
from .uri import is_remote

if TYPE_CHECKING:
    from ..vectors import VectorTable

#: Milvus's limit on hits per search (``topk``) and rows per range search.
MAX_TOPK = 16384
#: Rows per insert / delete / iterator page.
BATCH = 10_000
INDEX_TYPES = {"flat": "BIN_FLAT", "ivf": "BIN_IVF_FLAT"}
ID, CODE = "id", "code"
#: Beside each collection, a one-row collection recording what it holds (a digest of its ids and codes, written by
#: the process that last wrote them), so that opening an index compares that digest with SQLite's instead of
#: streaming every code out of Milvus. Milvus Lite 2.5 has no collection properties, and every collection needs
#: a vector field: a 2-d placeholder.
STATE_SUFFIX, DIGEST, TOTAL, PLACEHOLDER = "__rshash_state", "digest", "total", "placeholder"


def content_digest(ids: np.ndarray, codes: np.ndarray) -> str:
    """SHA-256 of ``(id, code)`` pairs in id order: what a collection must hold at one generation."""
    import hashlib

    ids = np.asarray(ids, dtype=np.int64)
    codes = np.asarray(codes, dtype=np.uint8)
    if len(ids) > 1 and not bool(np.all(ids[1:] > ids[:-1])):  # a vector table's ids are sorted already
        order = np.argsort(ids, kind="stable")
        ids, codes = ids[order], codes[order]
    h = hashlib.sha256(np.ascontiguousarray(ids).tobytes())
    h.update(np.ascontiguousarray(codes).tobytes())
    return h.hexdigest()

logging.getLogger("pymilvus").setLevel(logging.ERROR)  # iterator notices about Lite's client-side timestamps


class _SharedClients:
    """One :class:`MilvusClient` per URI in this process: pymilvus keys connections by URI, so closing one of
    two clients of a URI would close both. Counted, closed with the last user."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._clients: dict[str, tuple[MilvusClient, int]] = {}

    def acquire(self, uri: str) -> MilvusClient:
        with self._lock:
            client, users = self._clients.get(uri) or (None, 0)
            if client is None:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", UserWarning)
                    client = MilvusClient(uri=uri)
            self._clients[uri] = (client, users + 1)
            return client

    def release(self, uri: str) -> None:
        with self._lock:
            client, users = self._clients.get(uri, (None, 0))
            if client is None:
                return
            if users > 1:
                self._clients[uri] = (client, users - 1)
                return
            del self._clients[uri]
            client.close()


CLIENTS = _SharedClients()


class MilvusCodes:
    """Packed codes in one Milvus collection, keyed by the index's SQLite row ids."""

    max_k = MAX_TOPK

    def __init__(self, client: MilvusClient, collection: str, kind: str, bits: int, nlist: int | None = None):
        self.client = client
        self.collection = collection
        self.kind = kind
        self.bits = bits
        self.nlist = nlist  # IVF lists (kind ivf)
        self.nprobe: int | None = None  # default lists per query; None: chosen from k as for faiss IVF

    # ------------------------------------------------------------------ construction

    @classmethod
    def create(cls, client: MilvusClient, collection: str, kind: str, bits: int, n: int) -> "MilvusCodes":
        """A new, empty collection (an existing one of that name is dropped)."""
        if client.has_collection(collection):
            client.drop_collection(collection)
        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False,
                                            description=f"rshash {bits}-bit codes")
        schema.add_field(ID, DataType.INT64, is_primary=True)
        schema.add_field(CODE, DataType.BINARY_VECTOR, dim=bits)
        params = client.prepare_index_params()
        nlist = ivf_lists(max(n, 1)) if kind == "ivf" else None
        params.add_index(field_name=CODE, index_type=INDEX_TYPES[kind], metric_type="HAMMING",
                         params={"nlist": nlist} if nlist else {})
        client.create_collection(collection, schema=schema, index_params=params, consistency_level="Strong")
        return cls(client, collection, kind, bits, nlist)

    @classmethod
    def open(cls, client: MilvusClient, collection: str, kind: str, bits: int) -> "MilvusCodes | None":
        """The existing collection if it has this kind's index over ``bits``-bit codes, else ``None``."""
        if not client.has_collection(collection):
            return None
        try:
            info = client.describe_index(collection, CODE)
        except Exception:  # noqa: BLE001 - no index on the field: not ours
            return None
        if info.get("index_type") != INDEX_TYPES[kind] or int(info.get("dim", -1)) != bits:
            return None
        nlist = int(info["nlist"]) if "nlist" in info else None
        return cls(client, collection, kind, bits, nlist)

    def save(self, path: object = None) -> None:
        """Nothing to write: Milvus persists the collection itself."""

    # ------------------------------------------------------------------ what it holds

    @property
    def state_collection(self) -> str:
        return self.collection + STATE_SUFFIX

    def record_state(self, ids: np.ndarray, codes: np.ndarray) -> None:
        """Record that the collection holds exactly ``codes`` under ``ids`` (see :data:`STATE_SUFFIX`)."""
        name = self.state_collection
        if not self.client.has_collection(name):
            schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False,
                                                description="rshash: what the codes collection holds")
            schema.add_field(ID, DataType.INT64, is_primary=True)
            schema.add_field(DIGEST, DataType.VARCHAR, max_length=64)
            schema.add_field(TOTAL, DataType.INT64)
            schema.add_field(PLACEHOLDER, DataType.FLOAT_VECTOR, dim=2)
            params = self.client.prepare_index_params()
            params.add_index(field_name=PLACEHOLDER, index_type="FLAT", metric_type="L2")
            self.client.create_collection(name, schema=schema, index_params=params, consistency_level="Strong")
        self.client.upsert(name, [{ID: 0, DIGEST: content_digest(ids, codes), TOTAL: int(len(ids)),
                                   PLACEHOLDER: [0.0, 0.0]}])

    def recorded_state(self) -> tuple[str, int] | None:
        """``(digest, total)`` last recorded, or None (never recorded, or changed since)."""
        name = self.state_collection
        if not self.client.has_collection(name):
            return None
        rows = self.client.query(name, filter=f"{ID} == 0", output_fields=[DIGEST, TOTAL])
        return (rows[0][DIGEST], int(rows[0][TOTAL])) if rows else None

    def _forget_state(self) -> None:
        """Before an in-place change: the record no longer holds until the writer records the new content."""
        if self.client.has_collection(self.state_collection):
            self.client.delete(self.state_collection, ids=[0])

    # ------------------------------------------------------------------ updates

    @property
    def ntotal(self) -> int:
        rows = self.client.query(self.collection, filter="", output_fields=["count(*)"])
        return int(rows[0]["count(*)"])

    def add(self, ids: np.ndarray, codes: np.ndarray, new: bool = False) -> None:
        """Insert or replace (upsert) ``codes`` under ``ids``; ``new``: ids known to be absent (plain insert)."""
        codes = np.ascontiguousarray(codes, dtype=np.uint8)
        if len(ids):
            self._forget_state()
        write = self.client.insert if new else self.client.upsert
        for start in range(0, len(ids), BATCH):
            rows = [{ID: int(i), CODE: c.tobytes()} for i, c in zip(ids[start : start + BATCH], codes[start : start + BATCH])]
            write(self.collection, rows)

    def remove(self, ids: np.ndarray) -> bool:
        if len(ids):
            self._forget_state()
        for start in range(0, len(ids), BATCH):
            self.client.delete(self.collection, ids=[int(i) for i in ids[start : start + BATCH]])
        return True

    def resync(self, ids: np.ndarray, codes: np.ndarray) -> None:
        """Make the collection hold exactly ``codes`` under ``ids``, in place."""
        stored_ids, _ = self.stored(with_codes=False)
        self.remove(np.setdiff1d(stored_ids, ids))
        self.add(ids, codes)

    def needs_rebuild(self) -> bool:
        return False  # Milvus builds and sizes its per-segment indexes itself

    def can_update(self, removing: int, total: int) -> bool:
        return True

    def matches(self, ids: np.ndarray, codes: np.ndarray) -> bool:
        """Whether the collection holds exactly ``codes`` under ``ids`` (sorted ids): its row count, then the
        recorded digest (:meth:`record_state`) if there is one, else every stored code compared (streamed out).
        (A record is removed before any change and written after it: with one, no row count is asked of Milvus.)"""
        state = self.recorded_state()
        if state is not None:
            return state == (content_digest(ids, codes), len(ids))
        if self.ntotal != len(ids):
            return False
        stored_ids, stored = self.stored()
        order = np.argsort(stored_ids, kind="stable")
        return bool(np.array_equal(stored_ids[order], ids) and np.array_equal(stored[order], codes))

    def stored(self, with_codes: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """Every ``(ids int64, codes uint8 (N, bits/8))`` in the collection, in its order."""
        fields = [CODE] if with_codes else [ID]
        iterator = self.client.query_iterator(self.collection, batch_size=BATCH, filter="", output_fields=fields)
        ids: list[int] = []
        codes: list[bytes] = []
        try:
            while batch := iterator.next():
                ids.extend(row[ID] for row in batch)
                if with_codes:
                    codes.extend(_code_bytes(row[CODE]) for row in batch)
        finally:
            iterator.close()
        packed = np.frombuffer(b"".join(codes), dtype=np.uint8).reshape(-1, self.bits // 8)
        return np.asarray(ids, dtype=np.int64), packed

    # ------------------------------------------------------------------ search

    def probes(self, k: int, nprobe: int | None = None) -> int | None:
        """IVF lists to probe for ``k`` results (:func:`~.base.ivf_probes`, as for faiss IVF); ``None`` for flat."""
        if self.nlist is None:
            return None
        nprobe = self.nprobe if nprobe is None else nprobe
        total = self.ntotal if nprobe is None else 0  # a round trip to the server: only when the rule needs it
        return ivf_probes(total, self.nlist, k, nprobe)

    def search(self, query: np.ndarray, k: int, nprobe: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` smallest ``(distance, id)`` pairs of what this kind scans for one packed code:
        ``(distances int32, ids int64)``, nearest first, ties by id.

        ``nprobe``: IVF lists probed by this call only (kind ``ivf``; ``flat`` ignores it).
        """
        if k <= 0:
            return empty_result()
        if k > MAX_TOPK:
            return self._scan_nearest(query, k)
        probes = self.probes(k, nprobe)
        found = k_smallest(lambda n: self._search(query, n, probes), k, MAX_TOPK)
        if found is not None and probes is not None and len(found[1]) < k and len(found[1]) < self.ntotal:
            found = k_smallest(lambda n: self._search(query, n, self.nlist), k, MAX_TOPK)  # too few lists probed
        return found if found is not None else self._scan_nearest(query, k)  # ties beyond what Milvus returns

    def range_search(self, query: np.ndarray, radius: int) -> tuple[np.ndarray, np.ndarray]:
        """All codes within Hamming distance ``radius`` (inclusive), by distance then id, exactly."""
        if radius < 0:
            return empty_result()
        # Milvus keeps range_filter <= distance < radius for HAMMING; every IVF list is probed (exact).
        params = {"radius": radius + 1, "range_filter": 0}
        distances, ids = self._search(query, MAX_TOPK, self.nlist, params)
        if len(ids) < MAX_TOPK:
            return distances, ids
        ids, codes = self.stored()  # more than Milvus returns at once: exact scan here
        d = _hamming(codes, query)
        keep = d <= radius
        return by_distance_then_id(d[keep], ids[keep])

    def _search(self, query: np.ndarray, k: int, nprobe: int | None, extra: dict | None = None,
                ) -> tuple[np.ndarray, np.ndarray]:
        params = dict(extra or {})
        if nprobe is not None:
            params["nprobe"] = int(nprobe)
        code = np.ascontiguousarray(query, dtype=np.uint8).reshape(-1).tobytes()
        hits = self.client.search(self.collection, data=[code], limit=int(k), anns_field=CODE,
                                   search_params={"metric_type": "HAMMING", "params": params})[0]
        distances = np.rint([h["distance"] for h in hits]).astype(np.int32)
        return by_distance_then_id(distances, np.asarray([h["id"] for h in hits], dtype=np.int64))

    def _scan_nearest(self, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        ids, codes = self.stored()
        distances, ids = by_distance_then_id(_hamming(codes, query), ids)
        return distances[:k], ids[:k]


class MilvusBackend:
    """Builds and reopens the :class:`MilvusCodes` of one index (what :class:`~..live.LiveCodes` asks for)."""

    name = "milvus"
    shared = True

    def __init__(self, uri: str, collection: str):
        self.uri = uri
        self.collection = collection
        self._client: MilvusClient | None = None
        self._lock = threading.Lock()

    @property
    def client(self) -> MilvusClient:
        with self._lock:
            if self._client is None:
                self._client = CLIENTS.acquire(self.uri)
            return self._client

    def build(self, kind: str, bits: int, ids: np.ndarray, codes: np.ndarray) -> MilvusCodes:
        """The collection holding exactly ``codes`` under ``ids``: re-synced in place if it exists with this
        kind's index, else created."""
        if kind == "ivf" and not is_remote(self.uri):
            raise ValueError("Milvus Lite supports only BIN_FLAT (kind flat); kind ivf needs a Milvus server")
        codes_index = MilvusCodes.open(self.client, self.collection, kind, bits)
        if codes_index is None:
            codes_index = MilvusCodes.create(self.client, self.collection, kind, bits, len(ids))
            codes_index.add(ids, codes, new=True)
        else:
            codes_index.resync(ids, codes)
        codes_index.record_state(ids, codes)
        return codes_index

    def load(self, kind: str, bits: int, generation: int | None = None) -> MilvusCodes | None:
        """The existing collection, if any, whatever ``generation`` (it holds the latest one written; the caller
        checks it against SQLite with ``matches``)."""
        return MilvusCodes.open(self.client, self.collection, kind, bits)

    def save(self, codes: MilvusCodes, kind: str, generation: int, table: "VectorTable | None" = None) -> None:
        """The collection is written in place; record what it holds now (``table``: the ids and codes of this
        generation, as the process that wrote them has them), so the next open needs no full scan."""
        if table is not None and codes.recorded_state() is None:
            codes.record_state(np.asarray(table.ids), np.asarray(table.codes))

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client = None
                CLIENTS.release(self.uri)


def _code_bytes(value: object) -> bytes:
    """A BINARY_VECTOR as returned by pymilvus 2.5 (``[bytes]``) or as bytes."""
    return value[0] if isinstance(value, list) else bytes(value)  # type: ignore[index,arg-type]


def _hamming(codes: np.ndarray, query: np.ndarray) -> np.ndarray:
    return np.bitwise_count(codes ^ np.asarray(query, dtype=np.uint8).reshape(1, -1)).sum(axis=1, dtype=np.int32)
