"""The index's source of truth: one SQLite database (``meta.sqlite``) in WAL mode.

Every change (a batch of added images, a removal) is one transaction that also
bumps a ``generation`` counter, and every row remembers the generation that
added it; removals are logged with theirs. A faiss cache saved at generation
``g`` can therefore be brought up to date by replaying only what changed after
``g``, and a process killed at any moment leaves whole committed batches only.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence, TypeVar

import numpy as np

from ..geo.tables import upgrade_rasters

#: Bumped when the schema changes; newer indexes are refused, older ones from ``MIGRATABLE_FROM`` on are
#: upgraded in place when opened (:func:`migrate`). 3: ``rasters`` gained status, reason, tiling, datetime,
#: datetime_end.
FORMAT_VERSION = 3
#: The oldest format :func:`migrate` upgrades; older ones must be rebuilt.
MIGRATABLE_FROM = 2

DB_NAME = "meta.sqlite"

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS images (
    id INTEGER PRIMARY KEY AUTOINCREMENT,  -- never reused, so ids stay stable after removals
    path TEXT NOT NULL UNIQUE,
    label TEXT,
    width INTEGER NOT NULL,
    height INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    added_at TEXT NOT NULL,
    generation INTEGER NOT NULL,
    code BLOB NOT NULL,        -- packed binary code (bits / 8 bytes)
    descriptor BLOB NOT NULL   -- int8 re-rank descriptor (descriptor_dims bytes), same transaction as the code
);
CREATE INDEX IF NOT EXISTS images_label ON images(label);
CREATE INDEX IF NOT EXISTS images_generation ON images(generation);
CREATE TABLE IF NOT EXISTS removed (id INTEGER PRIMARY KEY, generation INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS removed_generation ON removed(generation);
"""


class IndexFormatError(ValueError):
    """The directory is not an index this version of rshash can read."""


def migrate(conn: sqlite3.Connection, version: int) -> None:
    """Upgrade an index database of format ``version`` to :data:`FORMAT_VERSION` inside the caller's write
    transaction: 2 -> 3 adds the new ``rasters`` columns (status ``complete``, tiling NULL meaning "unknown,
    keep its chips", no dates) where the index has rasters."""
    if version < 3:
        upgrade_rasters(conn)
    conn.execute("UPDATE meta SET value = ? WHERE key = 'format_version'", (str(FORMAT_VERSION),))


@dataclass(frozen=True)
class NewImage:
    """A row to insert: everything but the id and generation, which the store assigns."""

    path: str
    label: str | None
    width: int
    height: int
    sha256: str
    added_at: str
    code: bytes
    descriptor: bytes


@dataclass(frozen=True)
class ImageMeta(NewImage):
    """What the index knows about one image: a stored row and its id.

    ``code`` is the packed binary code, ``descriptor`` the int8 re-rank descriptor.
    """

    id: int = -1


@dataclass
class CodeDelta:
    """Codes added and ids removed after some generation, read in one snapshot."""

    generation: int
    total: int  # rows in the index at ``generation``
    ids: np.ndarray  # int64 (N,)
    codes: np.ndarray  # uint8 (N, bits/8)
    descriptors: np.ndarray  # int8 (N, descriptor_dims)
    removed: np.ndarray  # int64 (M,)


_META_COLUMNS = "id, path, label, width, height, sha256, added_at, code, descriptor"


class Store:
    """Thread-safe access to ``meta.sqlite``: one write connection behind a lock (explicit transactions), and
    a read-only connection per thread for reads, so searches read metadata in parallel with each other and
    with a writer (WAL)."""

    def __init__(self, db_path: str | Path):
        self.path = Path(db_path)
        self._conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=60)
        self._lock = threading.RLock()
        self._local = threading.local()  # this thread's read connection
        self._readers: dict[int, sqlite3.Connection] = {}  # by thread id, closed with the store
        self._readers_lock = threading.Lock()
        self._closed = False
        # WAL: readers never block the writer and a killed writer loses only its open transaction.
        self._conn.execute("PRAGMA journal_mode=WAL")
        # FULL: a committed batch survives a power loss too, so a saved faiss cache is never newer than SQLite.
        self._conn.execute("PRAGMA synchronous=FULL")
        # Rows of other tables that point at an item (a raster chip's geo row) go with it when it is deleted.
        self._conn.execute("PRAGMA foreign_keys=ON")

    @classmethod
    def create(cls, db_path: str | Path, meta: dict[str, str | int]) -> "Store":
        """A new database with the schema and ``meta`` (plus format_version and generation 0).

        Built under a temporary name and renamed, so a crash never leaves a half-made index.
        """
        db_path = Path(db_path)
        tmp = db_path.with_name(f".{db_path.name}.creating")
        tmp.unlink(missing_ok=True)
        store = cls(tmp)
        with store._transaction() as conn:
            for statement in _SCHEMA.split(";"):  # executescript would commit mid-transaction
                if statement.strip():
                    conn.execute(statement)
            rows = {"format_version": FORMAT_VERSION, "generation": 0, **meta}
            conn.executemany("INSERT INTO meta VALUES (?, ?)", [(k, str(v)) for k, v in rows.items()])
        store.close()  # the last connection checkpoints the WAL into the main file
        os.replace(tmp, db_path)
        return cls(db_path)

    @classmethod
    def open(cls, db_path: str | Path) -> "Store":
        """An existing database, refusing one written by a newer format."""
        if not Path(db_path).is_file():
            raise FileNotFoundError(f"not an rshash index (no {DB_NAME}): {Path(db_path).parent}")
        store = None
        try:
            store = cls(db_path)
            version = int(store.meta()["format_version"])
        except (sqlite3.DatabaseError, KeyError, ValueError) as exc:
            if store is not None:
                store.close()
            raise IndexFormatError(f"unreadable index database {db_path}: {exc}") from exc
        if MIGRATABLE_FROM <= version < FORMAT_VERSION:
            with store._transaction() as conn:
                migrate(conn, version)
            version = FORMAT_VERSION
        if version != FORMAT_VERSION:
            store.close()
            newer = "newer" if version > FORMAT_VERSION else "older"
            raise IndexFormatError(
                f"index format version {version} is {newer} than this rshash supports ({FORMAT_VERSION}): "
                f"{Path(db_path).parent}" + ("; upgrade rshash" if version > FORMAT_VERSION else "; rebuild the index")
            )
        return store

    def close(self) -> None:
        with self._readers_lock:
            self._closed = True
            readers, self._readers = list(self._readers.values()), {}
        for conn in readers:
            conn.close()
        with self._lock:
            self._conn.close()

    def _reader(self) -> sqlite3.Connection:
        """This thread's read-only connection (opened on first use; those of finished threads are dropped)."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            return conn
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=60)
        conn.execute("PRAGMA query_only=ON")
        with self._readers_lock:
            if self._closed:
                conn.close()
                raise sqlite3.ProgrammingError("Cannot operate on a closed database.")
            alive = {t.ident for t in threading.enumerate()}
            for ident in [i for i in self._readers if i not in alive]:
                self._readers.pop(ident).close()
            self._readers[threading.get_ident()] = conn
        self._local.conn = conn
        return conn

    @contextmanager
    def _snapshot(self) -> Iterator[sqlite3.Connection]:
        """One read transaction on this thread's read connection: a consistent snapshot."""
        conn = self._reader()
        if conn.in_transaction:  # nested in this thread's snapshot: the same one
            yield conn
            return
        conn.execute("BEGIN")
        try:
            yield conn
        finally:
            conn.execute("COMMIT")

    @contextmanager
    def _transaction(self, write: bool = True) -> Iterator[sqlite3.Connection]:
        """One transaction: ``BEGIN IMMEDIATE`` for writes, a consistent snapshot for reads."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    # ------------------------------------------------------------------ meta

    def meta(self) -> dict[str, str]:
        return dict(self._reader().execute("SELECT key, value FROM meta"))

    def set_meta(self, key: str, value: str | int) -> None:
        with self._transaction() as conn:
            conn.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, str(value)))

    def generation(self) -> int:
        """The number of committed changes: cheap, so searches can check it every time."""
        return int(self._reader().execute("SELECT value FROM meta WHERE key = 'generation'").fetchone()[0])

    @staticmethod
    def _bump(conn: sqlite3.Connection) -> int:
        conn.execute("UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'generation'")
        return int(conn.execute("SELECT value FROM meta WHERE key = 'generation'").fetchone()[0])

    # ------------------------------------------------------------------ rows

    def count(self) -> int:
        return int(self._reader().execute("SELECT COUNT(*) FROM images").fetchone()[0])

    def checksums(self, paths: Sequence[str]) -> dict[str, tuple[int, str]]:
        """``path -> (id, sha256)`` for those of ``paths`` already indexed."""
        out: dict[str, tuple[int, str]] = {}
        with self._snapshot() as conn:
            for start in range(0, len(paths), 500):  # stay under SQLite's bound-parameter limit
                chunk = list(paths[start : start + 500])
                marks = ",".join("?" * len(chunk))
                for path, id_, sha in conn.execute(
                    f"SELECT path, id, sha256 FROM images WHERE path IN ({marks})", chunk
                ):
                    out[path] = (id_, sha)
        return out

    def add(
        self,
        rows: Sequence[NewImage],
        replace_ids: Sequence[int] = (),
        on_insert: Callable[[sqlite3.Connection, list[int]], None] | None = None,
    ) -> list[int]:
        """Insert ``rows`` (removing ``replace_ids`` first) as one committed change; return the new ids.

        ``on_insert(conn, ids)`` runs inside the same transaction after the rows are inserted (e.g. to add
        the chips' geo rows), so the items and what it writes are committed together or not at all.
        """
        with self._transaction() as conn:
            generation = self._bump(conn)
            self._delete(conn, replace_ids, generation)
            ids = []
            for r in rows:
                cur = conn.execute(
                    "INSERT INTO images (path, label, width, height, sha256, added_at, generation, code, descriptor) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (r.path, r.label, r.width, r.height, r.sha256, r.added_at, generation, r.code, r.descriptor),
                )
                ids.append(int(cur.lastrowid))
            if on_insert is not None:
                on_insert(conn, ids)
        return ids

    def run(self, fn: Callable[[sqlite3.Connection], T], write: bool = False) -> T:
        """``fn(conn)`` in one transaction (a write one if ``write``, else a snapshot on this thread's read
        connection) and its result: for tables kept beside the items (rasters, chips) that do not change the
        items, so no generation is bumped."""
        with self._transaction() if write else self._snapshot() as conn:
            return fn(conn)

    def remove(self, ids: Sequence[int]) -> list[int]:
        """Delete ``ids`` as one committed change; return those that existed."""
        with self._transaction() as conn:
            present = self._existing(conn, ids)
            if present:
                self._delete(conn, present, self._bump(conn))
        return present

    @staticmethod
    def _existing(conn: sqlite3.Connection, ids: Sequence[int]) -> list[int]:
        return [int(i) for i in ids if conn.execute("SELECT 1 FROM images WHERE id = ?", (int(i),)).fetchone()]

    @staticmethod
    def _delete(conn: sqlite3.Connection, ids: Sequence[int], generation: int) -> None:
        for id_ in ids:
            conn.execute("DELETE FROM images WHERE id = ?", (int(id_),))
            conn.execute("INSERT OR REPLACE INTO removed VALUES (?, ?)", (int(id_), generation))

    def get(self, ids: Sequence[int]) -> dict[int, ImageMeta]:
        """Metadata of those ``ids`` that exist."""
        out: dict[int, ImageMeta] = {}
        with self._snapshot() as conn:
            for start in range(0, len(ids), 500):
                chunk = [int(i) for i in ids[start : start + 500]]
                marks = ",".join("?" * len(chunk))
                for row in conn.execute(f"SELECT {_META_COLUMNS} FROM images WHERE id IN ({marks})", chunk):
                    out[row[0]] = ImageMeta(*row[1:], id=row[0])
        return out

    def label_counts(self) -> dict[str | None, int]:
        return dict(self._reader().execute("SELECT label, COUNT(*) FROM images GROUP BY label ORDER BY label"))

    def ids_with_labels(self, labels: Sequence[str | None]) -> np.ndarray:
        """Sorted ids of the rows whose label is one of ``labels`` (``None``: unlabelled)."""
        named = sorted({str(x) for x in labels if x is not None})
        clauses = [f"label IN ({','.join('?' * len(named))})"] if named else []
        if any(x is None for x in labels):
            clauses.append("label IS NULL")
        if not clauses:
            return np.zeros(0, dtype=np.int64)
        rows = self._reader().execute(f"SELECT id FROM images WHERE {' OR '.join(clauses)} ORDER BY id", named)
        return np.fromiter((r[0] for r in rows), dtype=np.int64)

    def codes_since(self, generation: int | None, nbytes: int, dims: int) -> CodeDelta:
        """Codes added and ids removed after ``generation`` (``None``: everything), as one snapshot."""
        since = -1 if generation is None else generation
        with self._snapshot() as conn:
            current = int(conn.execute("SELECT value FROM meta WHERE key = 'generation'").fetchone()[0])
            total = conn.execute("SELECT COUNT(*) FROM images").fetchone()[0]
            n = conn.execute("SELECT COUNT(*) FROM images WHERE generation > ?", (since,)).fetchone()[0]
            ids = np.empty(n, dtype=np.int64)
            codes = np.empty((n, nbytes), dtype=np.uint8)
            descriptors = np.empty((n, dims), dtype=np.int8)
            cursor = conn.execute("SELECT id, code, descriptor FROM images WHERE generation > ? ORDER BY id", (since,))
            filled = 0
            # Chunked so a 10M-row rebuild never holds 10M Python tuples at once.
            while chunk := cursor.fetchmany(65536):
                m = len(chunk)
                ids[filled : filled + m] = [r[0] for r in chunk]
                blob = b"".join(r[1] for r in chunk)
                codes[filled : filled + m] = np.frombuffer(blob, dtype=np.uint8).reshape(m, nbytes)
                blob = b"".join(r[2] for r in chunk)
                descriptors[filled : filled + m] = np.frombuffer(blob, dtype=np.int8).reshape(m, dims)
                filled += m
            removed = [r[0] for r in conn.execute("SELECT id FROM removed WHERE generation > ?", (since,))]
        if generation is None:
            removed = []
        return CodeDelta(current, total, ids, codes, descriptors, np.asarray(removed, dtype=np.int64))
