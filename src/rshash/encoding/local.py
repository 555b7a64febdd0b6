"""The local engine: ONNX Runtime in this process, the next batch loaded in a thread meanwhile."""

from __future__ import annotations

import queue
import threading
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
    """Encodes with an :class:`~rshash.encoder.Encoder` here; loading runs ``depth`` batches ahead."""

    def __init__(self, encoder: "Encoder", depth: int = 1):
        self.encoder = encoder
        self.depth = depth

    def __enter__(self) -> "LocalEngine":
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def encode(self, work: Sequence[Any], loader: Loader, batch_size: int) -> Iterator[Encoded]:
        chunks = (work[start : start + batch_size] for start in range(0, len(work), batch_size))
        for loaded in prefetch((loader(chunk) for chunk in chunks), self.depth):
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
            yield Encoded(items, codes, descriptors, outcomes)
