"""The one schema of a model's ``config.json``: :class:`ModelConfig` and :func:`read_config`.

Torch-free, so that searching and serving (which read a model's code length,
fingerprint and input size) never import torch. Everything that reads or writes
a model's config goes through this module: the model (``model.py``), the model
directory (``model_dir.py``), the ONNX encoder and the index.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Sequence

from .io_utils import recover_directory
from .ranking import default_weight

#: Version of the model directory layout; bump on incompatible change.
FORMAT_VERSION = 2

#: Backbone stages whose pooled outputs are the hierarchical levels, and the stage the backbone is cut at.
DEFAULT_TAPS = ("stage3", "stage4", "stage5", "stage6", "head")
DEFAULT_CUT = "stage5"

CONFIG_NAME = "config.json"

#: Ground resolution (metres) of UCMD's 1 ft orthophotos: what a model that records no sources was trained at.
UCMD_GSD_M = 0.3
#: Band meaning of RGB imagery (image folders are decoded as RGB; the raster reader reads red, green, blue).
RGB_BANDS = ("red", "green", "blue")
#: Kinds of training source: a labelled image folder (or manifest), or georeferenced rasters.
SOURCE_KINDS = ("folder", "rasters")
#: What a model saved before sources were recorded was trained on (``sources`` absent from its config).
LEGACY_SOURCES = ({"kind": "folder", "path": None, "gsd": UCMD_GSD_M, "bands": list(RGB_BANDS)},)


class ModelDirError(ValueError):
    """The directory is not a usable rshash model."""


class ModelNotFoundError(ModelDirError, FileNotFoundError):
    """There is no model (no ``config.json``) at the given path."""


@dataclass
class ModelConfig:
    """Everything needed to rebuild a model, and what a saved one records (``config.json``).

    ``input_size`` (the encoder's pixel size) and ``fingerprint`` (see
    :func:`rshash.model_dir.content_fingerprint`) are set when the model is saved.
    """

    bits: int = 32
    backbone: str = "efficientnet-lite0"
    taps: Sequence[str] = DEFAULT_TAPS
    cut: str = DEFAULT_CUT
    cell: str = "lstm"
    width: int = 256
    dropout: float = 0.2
    descriptor_dims: int = 128
    encoder_precision: str = "float32"  # "int8": a statically quantised encoder (rshash quantize)
    class_names: list[str] = field(default_factory=list)
    format_version: int = FORMAT_VERSION
    input_size: int | None = None
    fingerprint: str | None = None
    #: Training sources, each ``{"kind", "path", "gsd" (metres or None), "bands"}`` (:func:`training_source`);
    #: empty for models saved before they were recorded (read as :data:`LEGACY_SOURCES` by :func:`model_sources`).
    sources: list[dict[str, Any]] = field(default_factory=list)
    #: A whitening head's input beside (``grid_levels``) or instead of the pooled levels: the ``grid_tap`` map
    #: averaged over a ``grid x grid`` grid of cells (:func:`rshash.model.grid_pool`; 0: none): where things are
    #: in the chip, what finds the same place at another date.
    grid: int = 0
    grid_tap: str = "stage5"
    grid_levels: bool = True

    def to_dict(self, fingerprint: bool = True) -> dict[str, Any]:
        """JSON-ready; unset ``input_size`` / ``fingerprint`` are left out (as is the fingerprint if not wanted),
        and so are fields added later while at their default (``_LATER_DEFAULTS``), so adding one does not
        change the fingerprints of the models saved before it."""
        d = asdict(self)
        d["taps"] = list(self.taps)
        for key in ("input_size", "fingerprint"):
            if d[key] is None or (key == "fingerprint" and not fingerprint):
                del d[key]
        for key, default in _LATER_DEFAULTS.items():
            if d.get(key) == default:
                del d[key]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelConfig":
        """From a config dict (unknown keys are ignored)."""
        known = {k: v for k, v in d.items() if k in _FIELDS}
        known["taps"] = tuple(known.get("taps", DEFAULT_TAPS))
        known["class_names"] = list(known.get("class_names", []))
        sources = known.get("sources", [])
        if not isinstance(sources, list):
            raise ValueError(f"'sources' must be a list, got {sources!r}")
        known["sources"] = [check_source(s) for s in sources]
        return cls(**known)


_FIELDS = {f.name for f in fields(ModelConfig)}
#: Fields added after format 2 was first written, with the default that older configs imply.
_LATER_DEFAULTS: dict[str, Any] = {"encoder_precision": "float32", "sources": [], "grid": 0, "grid_tap": "stage5",
                                   "grid_levels": True}
#: Fields a saved model must have, with their JSON types.
_REQUIRED = {"bits": int, "descriptor_dims": int, "input_size": int, "fingerprint": str}


def check_source(source: Any) -> dict[str, Any]:
    """A training source as a config records it, checked (ValueError with what is wrong)."""
    if not isinstance(source, dict):
        raise ValueError(f"a training source must be an object, got {source!r}")
    kind, path, gsd, bands = (source.get(k) for k in ("kind", "path", "gsd", "bands"))
    if kind not in SOURCE_KINDS:
        raise ValueError(f"training source kind must be one of {', '.join(SOURCE_KINDS)}, got {kind!r}")
    if path is not None and not isinstance(path, str):
        raise ValueError(f"training source path must be a string or null, got {path!r}")
    if gsd is not None and (isinstance(gsd, bool) or not isinstance(gsd, (int, float)) or not gsd > 0):
        raise ValueError(f"training source gsd must be a positive number of metres or null, got {gsd!r}")
    if not isinstance(bands, list) or not bands or not all(isinstance(b, str) and b for b in bands):
        raise ValueError(f"training source bands must be a non-empty list of band names, got {bands!r}")
    return {"kind": kind, "path": path, "gsd": None if gsd is None else float(gsd), "bands": list(bands)}


def training_source(kind: str, path: str | Path | None, gsd: float | None,
                    bands: Sequence[str] = RGB_BANDS) -> dict[str, Any]:
    """One entry of :attr:`ModelConfig.sources` (checked)."""
    return check_source({"kind": kind, "path": None if path is None else str(path),
                         "gsd": gsd, "bands": list(bands)})


def model_sources(config: ModelConfig) -> list[dict[str, Any]]:
    """The model's training sources; a model that records none was trained on UCMD (0.3 m, RGB)."""
    return [dict(s, bands=list(s["bands"])) for s in (config.sources or LEGACY_SOURCES)]


def model_gsds(config: ModelConfig) -> list[float]:
    """The ground resolutions (metres, ascending, distinct) the model was trained at; empty if none is known."""
    return sorted({float(s["gsd"]) for s in model_sources(config) if s["gsd"] is not None})


def model_rerank_weight(config: ModelConfig) -> float:
    """The descriptor weight of the model's two-stage re-rank: chosen on validation separately for models
    trained on labels (loss-trained heads; the learned-whitening head) and self-supervised ones
    (:func:`rshash.ranking.default_weight`)."""
    return default_weight(bool(config.class_names), config.cell == "whiten")


def read_config(model_dir: str | Path) -> ModelConfig:
    """The config of a saved model directory, checked; a clear :class:`ModelDirError` for anything unusable.

    :class:`ModelNotFoundError` (also a ``FileNotFoundError``) when there is no ``config.json``.
    """
    path = Path(model_dir) / CONFIG_NAME
    if not path.is_file() and recover_directory(model_dir) is None:
        raise ModelNotFoundError(f"not an rshash model directory (no {CONFIG_NAME}): {model_dir}")
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise ModelNotFoundError(f"not an rshash model directory (no {CONFIG_NAME}): {model_dir}") from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelDirError(f"unreadable {path}: {exc}") from exc
    if not isinstance(raw, dict):
        raise ModelDirError(f"{path} is not a JSON object")
    version = raw.get("format_version")
    if version != FORMAT_VERSION:
        raise ModelDirError(
            f"model format version {version} is not supported by this rshash (expects {FORMAT_VERSION}): {model_dir}"
        )
    for key, kind in _REQUIRED.items():
        value = raw.get(key)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise ModelDirError(f"{path}: {key!r} is missing or not a {kind.__name__} (got {value!r})")
    try:
        return ModelConfig.from_dict(raw)
    except (TypeError, ValueError) as exc:
        raise ModelDirError(f"{path}: {exc}") from exc


def has_model(model_dir: str | Path) -> bool:
    """Whether ``model_dir`` holds a model's config (after recovering an interrupted replacement)."""
    return (Path(model_dir) / CONFIG_NAME).is_file() or recover_directory(model_dir) is not None
