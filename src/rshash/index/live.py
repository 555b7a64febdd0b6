"""The in-memory search structures of an index, kept in step with SQLite: :class:`LiveCodes`.

Both are derived from SQLite (the source of truth): the code index (the Hamming
shortlist, a :class:`~.backends.base.CodeBackend` from the index's
:class:`~.backends.base.CodeBackends`: faiss or Milvus) and the
:class:`~.vectors.VectorTable` (codes and descriptors by id, for the re-rank and
filtered searches).

Concurrency, for many searching threads and writers in this or other processes:

* searches share the structures (:meth:`LiveCodes.reading`): no lock between
  searches, and search parameters are per call (nothing in faiss is set by a search);
* a change committed meanwhile is replayed in place (adds, removals), briefly
  holding searches back (a readers-writer lock);
* a change that needs a full rebuild (IVF lists outgrown, a removal from
  ``multihash``) is rebuilt by a background thread while searches go on with the
  previous structures: committed data of an earlier generation (an image removed
  since is dropped when the results' metadata is read; one added since is found
  once the rebuild is in). The rebuilt structures then replace them in one step;
* on first use, and for writers in this process (:meth:`LiveCodes.update_now`),
  everything happens inline.

The backends persist the code index of a generation (faiss: a cache file, see
:class:`~.backends.faiss.FaissBackends`; Milvus: its collection); the next process
reuses it only if it holds exactly the ids and codes of that generation.
"""

from __future__ import annotations

import logging
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, NamedTuple

from .backends.base import CodeBackend, CodeBackends
from .rwlock import ReadWriteLock
from .store import DB_NAME, CodeDelta, Store
from .vectors import VectorTable, mapped, saved_table

log = logging.getLogger(__name__)


class Structures(NamedTuple):
    """What searches read, replaced as one reference."""

    codes: CodeBackend
    table: VectorTable
    generation: int


class LiveCodes:
    """The code index and vector table of one index directory, caught up with its SQLite store."""

    def __init__(self, store: Store, kind: str, bits: int, descriptor_dims: int,
                 backends: CodeBackends, vectors_dir: Path | None = None):
        self._store = store
        self._vectors_dir = vectors_dir  # where a large vector table is saved and memory-mapped from
        self._backends = backends  # builds, reloads and persists the code index
        self._kind = kind
        self._bits = bits
        self._dims = descriptor_dims
        self._state: Structures | None = None
        self._updates = ReadWriteLock()  # searches (shared) vs in-place replays (exclusive)
        self._sync = threading.Lock()  # one catch-up, rebuild start or swap at a time
        self._rebuild: threading.Thread | None = None
        self._epoch = 0  # bumped by reset() and inline rebuilds: a background rebuild started before is dropped

    # ------------------------------------------------------------------ reading

    @property
    def generation(self) -> int | None:
        """The generation the structures in memory hold (``None`` before first use)."""
        state = self._state
        return None if state is None else state.generation

    @property
    def table(self) -> VectorTable | None:
        state = self._state
        return None if state is None else state.table

    @property
    def rebuilding(self) -> bool:
        thread = self._rebuild
        return thread is not None and thread.is_alive()

    @contextmanager
    def reading(self) -> Iterator[tuple[CodeBackend, VectorTable]]:
        """The structures for one search, caught up with SQLite (or being rebuilt in the background)."""
        if self._refresh(background=True):
            self.save()
        with self._updates.read():
            state = self._state
            assert state is not None
            yield state.codes, state.table

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for a background rebuild to be in; ``False`` if it is still running after ``timeout`` s."""
        thread = self._rebuild
        if thread is not None:
            thread.join(timeout)
        return not self.rebuilding

    # ------------------------------------------------------------------ updating

    def update_now(self) -> None:
        """Catch up inline, rebuilding here if needed (a writer's path), and save the cache file."""
        self._refresh(background=False)
        self.save()

    def reset(self, kind: str) -> None:
        """Drop the structures (e.g. for another kind); the next search builds them again."""
        with self._sync:
            self._epoch += 1
            self._kind = kind
            self._state = None

    def close(self) -> None:
        """Drop the structures; a background rebuild still running is discarded."""
        self.reset(self._kind)
        self._backends.close()

    def _refresh(self, background: bool) -> bool:
        """Catch up with SQLite; ``True`` if a full rebuild was done inline (worth saving)."""
        state = self._state
        if state is not None and state.generation == self._store.generation():
            return False
        with self._sync:
            return self._catch_up(background)

    def _catch_up(self, background: bool) -> bool:
        """(With ``_sync`` held.) Replay what changed in place if the structure takes it, else rebuild."""
        state = self._state
        if state is None:  # nothing to serve yet: the saved cache or a build, here
            self._state, built = self._load_or_build()
            return built
        if background and self.rebuilding:
            return False  # serve the previous structures meanwhile
        delta = self._store.codes_since(state.generation, self._bits // 8, self._dims)
        if delta.generation == state.generation:
            return False
        if background and getattr(self._backends, "shared", False):
            # A shared index (Milvus) is changed by the writer that committed the change (update_now), never by
            # a searching process: a slow reader replaying an old change could otherwise re-add an id the
            # writer has just removed. Its vector table still follows SQLite.
            table = state.table.apply(delta)
            with self._updates.write():
                self._state = Structures(state.codes, table, delta.generation)
            return False
        if not self.rebuilding and state.codes.can_update(len(delta.removed), delta.total):
            table = state.table.apply(delta)
            with self._updates.write():
                complete = state.codes.remove(delta.removed)
                state.codes.add(delta.ids, delta.codes)
                self._state = Structures(state.codes, table, delta.generation)
            if complete and state.codes.ntotal == delta.total:
                return False
            log.warning("search index out of step with %s at generation %d: rebuilding it", DB_NAME, delta.generation)
        if background:
            self._start_rebuild()
            return False
        self._epoch += 1  # a background rebuild still running would be older than this one
        self._state = self._build(self._store.codes_since(None, self._bits // 8, self._dims))
        return True

    def _start_rebuild(self) -> None:
        thread = threading.Thread(target=self._rebuild_in_background, args=(self._epoch,),
                                  name=f"rshash-rebuild-{self._kind}", daemon=True)
        self._rebuild = thread
        thread.start()

    def _rebuild_in_background(self, epoch: int) -> None:
        try:
            state = self._build(self._store.codes_since(None, self._bits // 8, self._dims))
            with self._sync:
                if epoch != self._epoch:
                    return  # reset, closed or rebuilt inline meanwhile
                self._state = state  # searches in flight keep the structures they hold
            self.save()
        except Exception:  # noqa: BLE001 - a thread has no caller to raise to
            if epoch == self._epoch:
                log.exception("rebuilding the %s search index failed; searches use the previous one", self._kind)

    def _build(self, full: CodeDelta) -> Structures:
        start = time.perf_counter()
        codes = self._backends.build(self._kind, self._bits, full.ids, full.codes)
        log.debug("rebuilt %s search index of %d codes in %.2fs", self._kind, len(full.ids),
                  time.perf_counter() - start)
        return Structures(codes, self._table(full), full.generation)

    def _table(self, full: CodeDelta) -> VectorTable:
        return mapped(VectorTable.from_delta(full), self._vectors_dir, full.generation)

    def _load_or_build(self) -> tuple[Structures, bool]:
        """Everything read once; the saved cache if it holds exactly this generation's ids and codes. A large
        index whose vector table was saved for the current generation is opened from it without reading
        SQLite's rows (:meth:`_load_saved`)."""
        saved = self._load_saved()
        if saved is not None:
            return saved, False
        full = self._store.codes_since(None, self._bits // 8, self._dims)
        cached = self._backends.load(self._kind, self._bits, full.generation)
        if cached is not None and cached.matches(full.ids, full.codes):
            return Structures(cached, self._table(full), full.generation), False
        if cached is not None:
            log.warning("search cache of generation %d disagrees with %s: rebuilding it", full.generation, DB_NAME)
        return self._build(full), True

    def _load_saved(self) -> Structures | None:
        """The vector table saved for the committed generation (memory-mapped: nothing read until searched) with
        the backend's persisted code index, if that holds exactly the table's ids and codes and SQLite has as
        many rows; else None (the caller reads SQLite). Opening 10^6 items then costs milliseconds, not seconds."""
        generation = self._store.generation()
        table = saved_table(self._vectors_dir, generation)
        if table is None or len(table) != self._store.count():
            return None
        cached = self._backends.load(self._kind, self._bits, generation)
        if cached is None or not cached.matches(table.ids, table.codes):
            return None
        log.debug("opened %d codes of generation %d from the saved vector table", len(table), generation)
        return Structures(cached, table, generation)

    # ------------------------------------------------------------------ persisting

    def save(self) -> None:
        """Persist the code index of the generation in memory through the backends (best effort)."""
        state = self._state
        if state is None:
            return
        with self._updates.read():  # no replay changes the index while it is written
            if self._state is not state:
                return  # replaced meanwhile: whoever replaced it saves
            self._backends.save(state.codes, self._kind, state.generation, state.table)
