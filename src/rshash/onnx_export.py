"""Export PyTorch modules to ONNX and run them with ONNX Runtime.

On 2 CPU cores ONNX Runtime runs EfficientNet-Lite0 ~4-5x faster than eager
PyTorch, so every inference path (feature caching, indexing, serving) uses it.
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

from typing import TYPE_CHECKING

import numpy as np
import onnxruntime as ort

from .io_utils import atomic_write_bytes

if TYPE_CHECKING:  # torch only for export: running an exported encoder must not pay its import
    import torch
    from torch import nn

DEFAULT_THREADS = int(os.environ.get("RSHASH_THREADS", "2"))


def export_onnx(
    module: "nn.Module", example: "torch.Tensor", path: str | Path | None = None, outputs: tuple[str, ...] = ("output",)
) -> bytes:
    """Export ``module`` (eval mode, batch axis dynamic); write atomically to ``path`` if given."""
    import torch

    module = module.eval()
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module, (example,), buf, input_names=["input"], output_names=list(outputs),
            dynamic_axes={"input": {0: "batch"}, **{name: {0: "batch"} for name in outputs}},
            opset_version=17, dynamo=False,
        )
    data = buf.getvalue()
    if path is not None:
        atomic_write_bytes(path, data)
    return data


def open_session(model: str | Path | bytes, threads: int = DEFAULT_THREADS) -> ort.InferenceSession:
    """An ONNX Runtime CPU session limited to ``threads`` intra-op threads.

    Its threads do not spin-wait for work between operators: spinning made a served upload cost 22 ms of CPU
    instead of 16 (the idle thread burns a core), and batches are as fast without it (benchmarks/scale.py).
    """
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.log_severity_level = 3
    source = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(source, opts, providers=["CPUExecutionProvider"])


def run_session(session: ort.InferenceSession, batch: np.ndarray) -> np.ndarray:
    """First output of a single-input session."""
    return run_session_all(session, batch)[0]


def run_session_all(session: ort.InferenceSession, batch: np.ndarray) -> list[np.ndarray]:
    return session.run(None, {session.get_inputs()[0].name: batch})
