"""A trained model on disk: one directory, written atomically.

Layout::

    MODEL_DIR/
      config.json    ModelConfig + fingerprint + format_version
      weights.pt     state dict of the HashingModel
      encoder.onnx   uint8 pixels (N, S, S, 3) -> sigmoid outputs (N, bits)
      split.json     the split the model was trained on (reusable with --split)
      metrics.json   training metrics (losses, validation scores, timings)

The fingerprint (hash of the weights) ties indexes to the model that made their
codes: an index refuses to open with another model.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

from typing import TYPE_CHECKING

from .io_utils import atomic_directory

if TYPE_CHECKING:  # torch is imported only where a model is built: search and serving stay light
    from .model import HashingModel

#: Version of the model directory layout; bump on incompatible change.
FORMAT_VERSION = 1


class ModelDirError(ValueError):
    """The directory is not a usable rshash model."""


def save_model_dir(
    out_dir: str | Path,
    model: HashingModel,
    metrics: dict[str, Any] | None = None,
    split_file: str | Path | None = None,
) -> str:
    """Write the whole model directory atomically; return the fingerprint."""
    import torch

    from .model import PixelEncoder
    from .onnx_export import export_onnx

    model = model.eval()
    with atomic_directory(out_dir) as tmp:
        torch.save(model.state_dict(), tmp / "weights.pt")
        fingerprint = hashlib.sha256((tmp / "weights.pt").read_bytes()).hexdigest()[:16]
        size = model.backbone.input_size
        export_onnx(PixelEncoder(model), torch.zeros(1, size, size, 3, dtype=torch.uint8), tmp / "encoder.onnx")
        config = model.config.to_dict() | {"fingerprint": fingerprint, "input_size": size}
        (tmp / "config.json").write_text(json.dumps(config, indent=1))
        (tmp / "metrics.json").write_text(json.dumps(metrics or {}, indent=1))
        if split_file is not None:
            shutil.copyfile(split_file, tmp / "split.json")
    return fingerprint


def read_config(model_dir: str | Path) -> dict[str, Any]:
    """Config of a model directory, with a clear error for anything unusable."""
    path = Path(model_dir) / "config.json"
    if not path.is_file():
        raise ModelDirError(f"not an rshash model directory (no config.json): {model_dir}")
    config = json.loads(path.read_text())
    version = config.get("format_version")
    if version != FORMAT_VERSION:
        raise ModelDirError(
            f"model format version {version} is not supported by this rshash (expects {FORMAT_VERSION}): {model_dir}"
        )
    return config


def load_model(model_dir: str | Path) -> HashingModel:
    """Rebuild the PyTorch model (for fine-tuning or evaluation in torch)."""
    import torch

    from .model import HashingModel, ModelConfig

    config = read_config(model_dir)
    model = HashingModel(ModelConfig.from_dict(config), pretrained=False)
    model.load_state_dict(torch.load(Path(model_dir) / "weights.pt", map_location="cpu", weights_only=True))
    return model.eval()
