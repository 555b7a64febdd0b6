"""Any query as vectors: :class:`Queries` turns a file, pixels, a bare code, an indexed id or several examples
into :class:`~.search.QueryVectors` (a packed code, an int8 descriptor where it has one, and the indexed ids it
is made of). Geo queries (a point, a box) come through :mod:`rshash.geo.search`, which reads pixels or ids and
asks this module for their vectors; a search then goes query -> vectors -> candidates -> re-rank -> hits
(:mod:`.search`) without returning to the :class:`~.archive.Index` facade.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence, Union

import numpy as np

from ..codes import pack_codes
from ..data.images import load_rgb, resize_rgb
from ..ranking import quantize_descriptors
from .search import QueryVectors, check_examples
from .store import Store

if TYPE_CHECKING:  # the encoder imports onnxruntime; ids and codes never need it
    from ..encoder import Encoder

#: An image file, ``uint8 (H, W, 3)`` RGB pixels, a ``bool (bits,)`` code, or an id in the index.
Query = Union[str, Path, np.ndarray, int]


def is_id(query: object) -> bool:
    """Whether a query is an indexed id (an integer, not a bool)."""
    return isinstance(query, (int, np.integer)) and not isinstance(query, (bool, np.bool_))


class Queries:
    """Queries of one index as vectors; the encoder is asked for (``encoder()``) only for pixels and files."""

    def __init__(self, store: Store, bits: int, encoder: Callable[[], "Encoder"], where: str = "the index"):
        self._store = store
        self.bits = bits
        self._encoder = encoder
        self._where = where

    @property
    def input_size(self) -> int:
        return self._encoder().input_size

    def vectors(self, query: "Query | QueryVectors | Sequence[Query]") -> "QueryVectors | tuple[QueryVectors, ...]":
        """A query as vectors. A list or tuple is several positive examples: a tuple of their vectors (at most
        :data:`~.search.MAX_EXAMPLES`, counted before any is encoded), searched together by
        :meth:`~.search.Searcher.search`."""
        if isinstance(query, QueryVectors):
            return query
        if isinstance(query, (list, tuple)):
            check_examples(len(query))
            return tuple(self.vectors(q) for q in query)
        code, descriptor = self.code_and_descriptor(query)
        return QueryVectors(code, descriptor, (int(query),) if is_id(query) else ())

    def code_and_descriptor(self, query: Query) -> tuple[np.ndarray, np.ndarray | None]:
        """A query as a packed code ``uint8 (bits/8,)`` and an int8 descriptor (None for a bare code)."""
        if is_id(query):
            meta = self._store.get([int(query)]).get(int(query))
            if meta is None:
                raise ValueError(f"no image with id {int(query)} in {self._where}")
            return np.frombuffer(meta.code, dtype=np.uint8), np.frombuffer(meta.descriptor, dtype=np.int8)
        if isinstance(query, (str, Path)):
            return self.encode_pixels(load_rgb(query))
        if isinstance(query, np.ndarray) and query.dtype == bool:
            if query.size != self.bits:
                raise ValueError(f"query code has {query.size} bits, the index holds {self.bits}-bit codes")
            return pack_codes(query.reshape(1, self.bits))[0], None
        if isinstance(query, np.ndarray) and query.dtype == np.uint8 and query.ndim == 3 and query.shape[2] == 3:
            return self.encode_pixels(query)
        raise ValueError(
            "a query is an image path, uint8 (H, W, 3) RGB pixels, a bool (bits,) code or an indexed id, "
            f"got {type(query).__name__}" + (f" {query.dtype} {query.shape}" if isinstance(query, np.ndarray) else "")
        )

    def encode_pixels(self, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        encoder = self._encoder()
        encoded = encoder.encode(resize_rgb(rgb, encoder.input_size)[None])
        return pack_codes(encoded.codes)[0], quantize_descriptors(encoded.descriptors)[0]

    def indexed_id_of_file(self, query: object) -> int | None:
        """The id under which a query file is indexed with its current content, if it is (it wins exact ties)."""
        if not isinstance(query, (str, Path)):
            return None
        path = os.path.abspath(query)
        known = self._store.checksums([path]).get(path)
        if known is None:
            return None
        try:
            return known[0] if hashlib.sha256(Path(path).read_bytes()).hexdigest() == known[1] else None
        except OSError:
            return None
