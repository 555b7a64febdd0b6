"""Images -> binary codes with the exported ONNX encoder (the fast inference path)."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from .data.datasets import SkipReport, load_batch
from .model_dir import ModelDirError, read_config
from .onnx_export import DEFAULT_THREADS, open_session, run_session
from .progress import progress_bar


class Encoder:
    """A trained model's encoder: ``encode`` pixels to sigmoid outputs, ``codes`` to bits."""

    def __init__(self, model_dir: str | Path, threads: int = DEFAULT_THREADS):
        self.model_dir = Path(model_dir)
        self.config = read_config(model_dir)
        onnx_path = self.model_dir / "encoder.onnx"
        if not onnx_path.is_file():
            raise ModelDirError(f"model directory has no encoder.onnx: {model_dir}")
        self.session = open_session(onnx_path, threads)
        self.bits: int = int(self.config["bits"])
        self.input_size: int = int(self.config["input_size"])
        self.fingerprint: str = self.config["fingerprint"]
        self.class_names: list[str] = list(self.config.get("class_names", []))

    def encode(self, pixels: np.ndarray) -> np.ndarray:
        """``uint8 (N, S, S, 3)`` -> ``float32 (N, bits)`` sigmoid outputs."""
        if pixels.ndim != 4 or pixels.shape[1:] != (self.input_size, self.input_size, 3):
            raise ValueError(f"expected (N, {self.input_size}, {self.input_size}, 3) uint8, got {pixels.shape}")
        return run_session(self.session, np.ascontiguousarray(pixels, dtype=np.uint8))

    def codes(self, pixels: np.ndarray) -> np.ndarray:
        """``uint8 (N, S, S, 3)`` -> ``bool (N, bits)``."""
        return self.encode(pixels) >= 0.5

    def iter_paths(
        self, paths: Sequence[str], batch_size: int = 32, report: SkipReport | None = None, progress: bool = True
    ) -> Iterator[tuple[list[int], np.ndarray]]:
        """Yield ``(indices into paths, bool codes)`` per batch; unreadable files go to ``report``."""
        report = report if report is not None else SkipReport()
        with progress_bar(total=len(paths), desc="encode", unit="img", disable=not progress) as bar:
            for start in range(0, len(paths), batch_size):
                chunk = paths[start : start + batch_size]
                pixels, ok = load_batch(chunk, self.input_size, report)
                if ok:
                    yield [start + i for i in ok], self.codes(pixels)
                bar.update(len(chunk))
