"""The one commit of an encoded batch, and :func:`ingest`: a source driven through an engine into the store.

Each batch's items (codes and descriptors) and the source's own rows (a raster's chips and R*Tree boxes) are
committed in one SQLite transaction, so an interrupted run keeps whole batches and a rerun skips them. The
writer checks every item against SQLite once more just before committing (an item committed meanwhile by
another writer, or by an earlier batch, is neither duplicated nor re-added), whatever engine loaded it.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Iterator, Protocol, Sequence

import numpy as np

from ..codes import pack_codes
from ..index.store import NewImage, Store
from ..progress import progress_bar
from ..ranking import quantize_descriptors
from .items import ItemSource, Loaded, Loader
from .report import Outcome

if TYPE_CHECKING:
    from .items import CommitHook
    from .report import AddReport


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass
class Encoded:
    """A batch as an engine yields it: the loaded items with their codes and descriptors, and the outcomes of
    the items of the batch that were not loaded."""

    items: list[Loaded]
    codes: np.ndarray  # bool (N, bits)
    descriptors: np.ndarray  # float32 (N, dims)
    outcomes: list[Outcome]

    @property
    def size(self) -> int:
        return len(self.items) + len(self.outcomes)

    def head(self, n: int) -> "Encoded":
        """The first ``n`` items (outcomes kept)."""
        return Encoded(self.items[:n], self.codes[:n], self.descriptors[:n], self.outcomes)


class Engine(Protocol):
    """Loads work with a loader and encodes what loaded, batch by batch (:class:`~.local.LocalEngine`,
    :class:`~.ray_engine.RayEngine`). A context manager: resources held across several sources."""

    def __enter__(self) -> "Engine": ...

    def __exit__(self, *exc: object) -> None: ...

    def encode(self, work: Sequence[object], loader: Loader, batch_size: int) -> Iterator[Encoded]: ...


def commit_batch(store: Store, batch: Encoded, report: "AddReport", hook: "CommitHook | None" = None) -> None:
    """Count the outcomes and commit the encoded items (with the hook's rows) in one transaction."""
    for outcome in batch.outcomes:
        report.note(outcome)
    if not batch.items:
        return
    current = store.checksums([item.path for item in batch.items])
    hook_replaces = set(hook.replace_ids()) if hook is not None else set()
    keep, replaces = [], []
    for i, item in enumerate(batch.items):
        old = current.get(item.path)
        if old is not None and old[1] == item.sha256:
            report.unchanged += 1
            continue
        keep.append(i)
        if old is not None and old[0] not in hook_replaces:
            replaces.append(old[0])
    if not keep:
        return
    items = [batch.items[i] for i in keep]
    codes, descriptors = pack_codes(batch.codes[keep]), quantize_descriptors(batch.descriptors[keep])
    added_at = now()
    rows = [NewImage(it.path, it.label, it.width, it.height, it.sha256, added_at, code.tobytes(), desc.tobytes())
            for it, code, desc in zip(items, codes, descriptors)]
    on_insert = None if hook is None else (lambda conn, ids: hook.on_insert(conn, ids, items))
    store.add(rows, replace_ids=[*replaces, *sorted(hook_replaces)], on_insert=on_insert)
    if hook is not None:
        hook.committed()
    report.updated += len(replaces)
    report.added += len(rows) - len(replaces)


def ingest(store: Store, source: ItemSource, engine: Engine, lock: threading.RLock, report: "AddReport", *,
           batch_size: int = 32, progress: bool = True, budget: int | None = None) -> int:
    """Plan, load, encode and commit ``source`` batch by batch; return the number of items added.

    ``budget``: stop after that many new items (``report.limited`` is set).
    """
    if batch_size < 1:
        raise ValueError(f"batch size must be >= 1, got {batch_size}")
    work = source.plan(store, report)
    added_before = report.added
    with progress_bar(total=len(work), desc=source.desc, unit=source.unit, disable=not progress) as bar:
        if not work:
            return 0
        batches = engine.encode(work, source.loader(), batch_size)
        try:
            for batch in batches:
                limited = budget is not None and report.added - added_before + len(batch.items) > budget
                if limited:
                    batch = batch.head(budget - (report.added - added_before))
                    report.limited = True
                with lock:
                    commit_batch(store, batch, report, source.hook)
                bar.update(batch.size)
                if limited:
                    break
        finally:
            close = getattr(batches, "close", None)
            if close is not None:
                close()
    return report.added - added_before
