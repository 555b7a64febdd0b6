"""A trained model on disk: one directory, replaced atomically.

Layout::

    MODEL_DIR/
      config.json    ModelConfig (rshash.model_config) with input_size, fingerprint and format_version
      weights.pt     state dict of the HashingModel
      encoder.onnx   uint8 pixels (N, S, S, 3) -> sigmoid outputs (N, bits), descriptors (N, dims)
      split.json     the split the model was trained on (reusable with --split)
      metrics.json   training metrics (losses, validation scores, timings)

``MODEL_DIR`` is a symlink to a versioned sibling (``.MODEL_DIR.vN``), so a retrain
replaces the whole directory in one atomic step and a crash never leaves no model
(:func:`rshash.io_utils.versioned_directory`).

The fingerprint is a hash of what makes the codes: the bytes of ``encoder.onnx``
and the config. It ties indexes to the model that made their codes (an index refuses
to open with another model), a retrain that produces the same encoder gets the
same fingerprint, and a swapped or damaged ``encoder.onnx`` is refused when loaded
(:func:`verify_encoder`).

Torch is imported only by :func:`save_model_dir` and :func:`load_model`, so reading
and verifying a model (search, serving) stays light.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .io_utils import versioned_directory
from .model_config import (
    CONFIG_NAME,
    FORMAT_VERSION,
    ModelConfig,
    ModelDirError,
    ModelNotFoundError,
    read_config,
)

if TYPE_CHECKING:  # torch is imported only where a model is built: search and serving stay light
    from .model import HashingModel

__all__ = [
    "FORMAT_VERSION",
    "ModelDirError",
    "ModelNotFoundError",
    "content_fingerprint",
    "load_model",
    "read_config",
    "resolve_model_dir",
    "save_model_dir",
    "verify_encoder",
]


def save_model_dir(
    out_dir: str | Path,
    model: HashingModel,
    metrics: dict[str, Any] | None = None,
    split_file: str | Path | None = None,
) -> str:
    """Write the whole model directory, replacing any previous one atomically; return the fingerprint."""
    import torch

    from .model import PixelEncoder
    from .onnx_export import export_onnx

    model = model.eval()
    size = model.backbone.input_size
    config = replace(model.config, input_size=size, fingerprint=None)
    with versioned_directory(out_dir) as tmp:
        torch.save(model.state_dict(), tmp / "weights.pt")
        onnx = export_onnx(PixelEncoder(model), torch.zeros(1, size, size, 3, dtype=torch.uint8), tmp / "encoder.onnx",
                           outputs=PixelEncoder.OUTPUTS)
        config = replace(config, fingerprint=content_fingerprint(onnx, config))
        (tmp / CONFIG_NAME).write_text(json.dumps(config.to_dict(), indent=1))
        (tmp / "metrics.json").write_text(json.dumps(metrics or {}, indent=1))
        if split_file is not None:
            shutil.copyfile(split_file, tmp / "split.json")
    assert config.fingerprint is not None
    return config.fingerprint


def content_fingerprint(onnx: bytes, config: ModelConfig) -> str:
    """Hash of the encoder's bytes and the config (without its fingerprint field, and without the paths of its
    training sources: where the data lay does not change the codes; their resolutions and bands do)."""
    h = hashlib.sha256(onnx)
    d = config.to_dict(fingerprint=False)
    if "sources" in d:  # absent for models saved before sources were recorded: their fingerprints are unchanged
        d["sources"] = [{k: v for k, v in s.items() if k != "path"} for s in d["sources"]]
    h.update(json.dumps(d, sort_keys=True).encode())
    return h.hexdigest()[:16]


def resolve_model_dir(model_dir: str | Path) -> Path:
    """The version of ``model_dir`` it shows now: read several files from it and they belong together
    even if the directory is replaced meanwhile."""
    return Path(os.path.realpath(model_dir))


def verify_encoder(model_dir: str | Path, config: ModelConfig) -> bytes:
    """The bytes of ``encoder.onnx``, after checking them against the config's fingerprint."""
    path = Path(model_dir) / "encoder.onnx"
    if not path.is_file():
        raise ModelDirError(f"model directory has no encoder.onnx: {model_dir}")
    onnx = path.read_bytes()
    if content_fingerprint(onnx, config) != config.fingerprint:
        raise ModelDirError(
            f"{path} or its config.json was changed after training (fingerprint mismatch): the model is damaged "
            "or its files were swapped; train again or restore the directory"
        )
    return onnx


def load_model(model_dir: str | Path) -> HashingModel:
    """Rebuild the PyTorch model (for fine-tuning or evaluation in torch)."""
    import torch

    from .model import HashingModel

    root = resolve_model_dir(model_dir)
    model = HashingModel(read_config(root), pretrained=False)
    model.load_state_dict(torch.load(root / "weights.pt", map_location="cpu", weights_only=True))
    return model.eval()
