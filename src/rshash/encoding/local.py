"""The local engine: ONNX Runtime in this process; batches loaded in a reader thread, encoded by a few
single-threaded sessions at once, handed on in order."""

from __future__ import annotations

import queue
import threading
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Iterator, Sequence

import numpy as np

from .commit import Encoded
from .items import Loaded, Loader

if TYPE_CHECKING:  # the encoder imports onnxruntime
    from ..encoder import Encoder


def prefetch(items: Iterator[Any], depth: int = 1) -> Iterator[Any]:
    """Iterate ``items`` in a reader thread, ``depth`` items ahead of the consumer.

    Only reads happen in the thread (decoding, resizing and rasterio release the GIL, so they overlap the
    encoder); an exception there is raised here; when the consumer stops early the reader is told to stop
    and joined.
    """
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    end = object()

    def put(item: Any) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def read() -> None:
        try:
            for item in items:
                if not put(item):
                    return
            put(end)
        except BaseException as exc:  # handed to the consumer
            put(exc)

    thread = threading.Thread(target=read, name="rshash-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is end:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join()


class LocalEngine:
    """Encodes with an :class:`~rshash.encoder.Encoder` here.

    One reader thread loads batches in order (a raster handle is read by one thread at a time), up to
    ``workers`` batches ahead; ``workers`` threads encode them at once, each with a single-threaded ONNX
    Runtime session (default: ``RSHASH_THREADS``, 2: the same cores as one session of that many threads,
    without its operator barriers waiting on the reader); batches come out in work order.
    ``workers=1`` encodes with the encoder's own session.
    """

    def __init__(self, encoder: "Encoder", workers: int | None = None):
        from ..onnx_export import DEFAULT_THREADS  # here: an encoder exists, so onnxruntime is loaded already

        self.workers = max(1, int(workers if workers is not None else DEFAULT_THREADS))
        self.encoder = encoder if self.workers == 1 else encoder.with_threads(1)

    def __enter__(self) -> "LocalEngine":
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def _encode(self, loaded: list) -> Encoded:
        items = [x for x in loaded if isinstance(x, Loaded)]
        outcomes = [x for x in loaded if not isinstance(x, Loaded)]
        if items:
            encoded = self.encoder.encode(np.stack([it.pixels for it in items]))
            codes, descriptors = encoded.codes, encoded.descriptors
        else:
            codes = np.zeros((0, self.encoder.bits), dtype=bool)
            descriptors = np.zeros((0, self.encoder.descriptor_dims), dtype=np.float32)
        for it in items:
            it.pixels = None  # encoded: do not hold the pixels longer
        return Encoded(items, codes, descriptors, outcomes)

    def encode(self, work: Sequence[Any], loader: Loader, batch_size: int) -> Iterator[Encoded]:
        chunks = (work[start : start + batch_size] for start in range(0, len(work), batch_size))
        loaded = prefetch((loader(chunk) for chunk in chunks), self.workers)
        if self.workers == 1:
            yield from (self._encode(batch) for batch in loaded)
            return
        pending: deque[Future] = deque()
        failed: Exception | None = None
        with ThreadPoolExecutor(self.workers, thread_name_prefix="rshash-encode") as pool:
            try:
                batches = iter(loaded)
                while True:
                    try:
                        batch = next(batches)
                    except StopIteration:
                        break
                    except Exception as exc:  # a loader error: hand on the batches loaded before it first
                        failed = exc
                        break
                    pending.append(pool.submit(self._encode, batch))
                    if len(pending) >= self.workers:
                        yield pending.popleft().result()
                while pending:
                    yield pending.popleft().result()
            finally:
                for future in pending:  # stopped early: drop what has not started
                    future.cancel()
                loaded.close()
        if failed is not None:
            raise failed
