"""Images -> binary codes and descriptors with the exported ONNX encoder (the fast inference path)."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator, NamedTuple, Sequence

import numpy as np

from .data.datasets import SkipReport, load_batch
from .model_config import ModelConfig, read_config
from .model_dir import resolve_model_dir, verify_encoder
from .onnx_export import DEFAULT_THREADS, open_session, run_session_all
from .progress import progress_bar


class Encoded(NamedTuple):
    """One batch through the encoder."""

    codes: np.ndarray  # bool (N, bits)
    descriptors: np.ndarray  # float32 (N, dims), L2-normalised
    outputs: np.ndarray  # float32 (N, bits) sigmoid outputs


class Encoder:
    """A trained model's encoder: pixels -> codes (bit = sigmoid output >= 0.5) and descriptors.

    The ONNX file is checked against the model's fingerprint before use, so a
    swapped or damaged encoder never makes codes.
    """

    def __init__(self, model_dir: str | Path, threads: int = DEFAULT_THREADS):
        self.model_dir = Path(model_dir)
        root = resolve_model_dir(model_dir)  # config and encoder from one version, even if replaced meanwhile
        self.config: ModelConfig = read_config(root)
        self._onnx = verify_encoder(root, self.config)  # kept: sessions with other thread counts open from it
        self.threads = threads
        self._siblings: dict[int, Encoder] = {}
        self.session = open_session(self._onnx, threads)
        assert self.config.input_size is not None and self.config.fingerprint is not None  # checked by read_config
        self.bits: int = self.config.bits
        self.input_size: int = self.config.input_size
        self.fingerprint: str = self.config.fingerprint
        self.descriptor_dims: int = self.config.descriptor_dims
        self.class_names: list[str] = list(self.config.class_names)

    def with_threads(self, threads: int) -> "Encoder":
        """The same encoder (the bytes checked at load) with a session of ``threads`` intra-op threads.

        Batches encoded by several single-threaded sessions at once use the cores better than one session
        splitting each operator over threads (no barrier stalls when a reader thread shares the cores); the
        results are the same bits.
        """
        if threads == self.threads:
            return self
        if threads not in self._siblings:
            other = object.__new__(Encoder)
            other.__dict__.update(self.__dict__)
            other.threads, other.session, other._siblings = threads, open_session(self._onnx, threads), {}
            self._siblings[threads] = other
        return self._siblings[threads]

    def encode(self, pixels: np.ndarray) -> Encoded:
        """``uint8 (N, S, S, 3)`` -> codes, descriptors and sigmoid outputs."""
        if pixels.ndim != 4 or pixels.shape[1:] != (self.input_size, self.input_size, 3):
            raise ValueError(f"expected (N, {self.input_size}, {self.input_size}, 3) uint8, got {pixels.shape}")
        outputs, descriptors = run_session_all(self.session, np.ascontiguousarray(pixels, dtype=np.uint8))
        return Encoded(outputs >= 0.5, descriptors, outputs)

    def codes(self, pixels: np.ndarray) -> np.ndarray:
        """``uint8 (N, S, S, 3)`` -> ``bool (N, bits)``."""
        return self.encode(pixels).codes

    def iter_paths(
        self, paths: Sequence[str], batch_size: int = 32, report: SkipReport | None = None, progress: bool = True
    ) -> Iterator[tuple[list[int], Encoded]]:
        """Yield ``(indices into paths, encoded batch)``; unreadable files go to ``report``."""
        report = report if report is not None else SkipReport()
        with progress_bar(total=len(paths), desc="encode", unit="img", disable=not progress) as bar:
            for start in range(0, len(paths), batch_size):
                chunk = paths[start : start + batch_size]
                pixels, ok = load_batch(chunk, self.input_size, report)
                if ok:
                    yield [start + i for i in ok], self.encode(pixels)
                bar.update(len(chunk))
