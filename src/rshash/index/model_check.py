"""Which model made an index's codes: identify a model without loading it, and refuse one that differs."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Union

from ..model_config import read_config

if TYPE_CHECKING:  # the encoder imports onnxruntime; checking a model directory never needs it
    from ..encoder import Encoder

ModelSource = Union["Encoder", str, Path]


class ModelMismatchError(ValueError):
    """The model does not make the codes this index holds (other weights or code length)."""


def model_identity(model: ModelSource) -> tuple[str, int, int, Path]:
    """``(fingerprint, bits, descriptor dims, model_dir)`` of an Encoder or a model directory (not loaded)."""
    if isinstance(model, (str, Path)):
        config = read_config(model)  # no config.json: ModelNotFoundError, a FileNotFoundError
        assert config.fingerprint is not None  # read_config checks it
        return config.fingerprint, config.bits, config.descriptor_dims, Path(model).absolute()
    return model.fingerprint, model.bits, model.descriptor_dims, model.model_dir.absolute()


def check_model(model: ModelSource, index_path: Path, bits: int, fingerprint: str, recorded: Path) -> Path:
    """The model's directory, after checking that it makes ``bits``-bit codes with ``fingerprint``."""
    found, found_bits, _, model_dir = model_identity(model)
    if found_bits != bits:
        raise ModelMismatchError(
            f"model {model_dir} makes {found_bits}-bit codes but the index {index_path} holds {bits}-bit codes"
        )
    if found != fingerprint:
        raise ModelMismatchError(
            f"model {model_dir} (fingerprint {found}) is not the model the index {index_path} was built "
            f"with (fingerprint {fingerprint}, from {recorded}); codes of different models are "
            "not comparable: pass that model, or build a new index"
        )
    return model_dir
