"""Which model made an index's codes: identify a model without loading it, and refuse one that differs;
the ground resolutions it was trained at, as the index records them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Sequence, Union

from ..model_config import model_gsds, model_rerank_weight, read_config
from ..ranking import DEFAULT_WEIGHT

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


#: Index meta keys: the ground resolutions (metres) the model was trained at, among which ``gsd="auto"`` picks
#: the nearest: ``model_gsds`` a JSON list (ascending), ``model_gsd`` the first of them as a number (what
#: indexes before several were recorded have; absent when the model records none).
MODEL_GSD_KEY = "model_gsd"
MODEL_GSDS_KEY = "model_gsds"


def model_resolutions(model: ModelSource) -> list[float]:
    """The ground resolutions (metres) an Encoder or model directory was trained at (UCMD's 0.3 m for a model
    that records no sources; empty when its sources' resolutions are unknown)."""
    return model_gsds(read_config(model) if isinstance(model, (str, Path)) else model.config)


def gsd_meta(gsds: Sequence[float]) -> dict[str, str]:
    """The index meta rows that record a model's ground resolutions."""
    values = sorted(float(g) for g in gsds)
    return {MODEL_GSDS_KEY: json.dumps(values), **({MODEL_GSD_KEY: str(values[0])} if values else {})}


def recorded_gsds(meta: dict[str, str]) -> list[float] | None:
    """The model resolutions an index's meta records; None when it records none (an index made before
    they were recorded at creation, with no raster yet)."""
    if MODEL_GSDS_KEY in meta:
        return [float(g) for g in json.loads(meta[MODEL_GSDS_KEY])]
    return [float(meta[MODEL_GSD_KEY])] if MODEL_GSD_KEY in meta else None


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


#: Index meta key: the re-rank weight of the index's model (:func:`rshash.model_config.model_rerank_weight`).
RERANK_WEIGHT_KEY = "rerank_weight"


def model_weight(model: ModelSource) -> float:
    """The re-rank weight of an Encoder or a model directory (not loaded)."""
    return model_rerank_weight(read_config(model) if isinstance(model, (str, Path)) else model.config)


def recorded_weight(meta: dict, model_dir: Path) -> float:
    """The re-rank weight an index searches with: recorded at creation; for an index made before it was, its
    model's (the default for a labelled model when the model cannot be read)."""
    if RERANK_WEIGHT_KEY in meta:
        return float(meta[RERANK_WEIGHT_KEY])
    try:
        return model_weight(model_dir)
    except (OSError, ValueError):
        return DEFAULT_WEIGHT
