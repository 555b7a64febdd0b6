"""A faster encoder: static int8 quantisation of a model's ONNX encoder (ONNX Runtime's tools).

The convolutions of the backbone are quantised (weights per channel, int8; activations uint8,
calibrated on images of the model's training split); the small hashing head and the descriptor
projection stay in float. The result is a new model directory with its own fingerprint (its codes
differ from the float model's in a few bits, so an index built with one refuses the other).
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Sequence

import numpy as np

from .data.datasets import SkipReport, load_batch
from .io_utils import versioned_directory
from .model_config import read_config
from .model_dir import content_fingerprint, verify_encoder

log = logging.getLogger(__name__)

#: Operators quantised: the backbone's convolutions carry almost all of the compute.
QUANTIZED_OPS = ("Conv",)
#: Activation ranges from this percentile of the calibration values: on UCMD protocol A it lost 0.015 mAP@all
#: against 0.037 for plain min/max calibration (benchmarks/scale.py).
CALIBRATION_PERCENTILE = 99.99
#: Which convolutions may stay in float (see :func:`float_convolutions`), and the default.
FLOAT_CONV_CHOICES = ("none", "ends", "ends+depthwise")
DEFAULT_FLOAT_CONVS = "none"


class _Calibration:
    """ONNX Runtime calibration reader over image files, decoded as the encoder's input."""

    def __init__(self, paths: Sequence[str], size: int, batch_size: int):
        self._chunks = iter([paths[i : i + batch_size] for i in range(0, len(paths), batch_size)])
        self._size = size
        self.skipped = SkipReport()

    def get_next(self) -> dict[str, np.ndarray] | None:
        for chunk in self._chunks:
            pixels, ok = load_batch(chunk, self._size, self.skipped)
            if ok:
                return {"input": pixels}
        return None

    def rewind(self) -> None:  # part of the reader protocol; one pass is all static calibration needs
        pass


def calibration_paths(model_dir: str | Path, count: int, seed: int = 0) -> list[str]:
    """``count`` seeded images of the model's training split (``split.json``)."""
    split_file = Path(model_dir) / "split.json"
    if not split_file.is_file():
        raise ValueError(f"{model_dir} has no split.json: pass calibration images explicitly")
    train = sorted(p for p, s in json.loads(split_file.read_text())["assignment"].items() if s == "train")
    if not train:
        raise ValueError(f"{split_file} has no training images to calibrate on")
    rng = np.random.default_rng(seed)
    return [train[i] for i in np.sort(rng.choice(len(train), size=min(count, len(train)), replace=False))]


def float_convolutions(onnx: bytes, keep: str) -> list[str]:
    """Names of the convolutions left in float: ``keep`` is ``none``, ``ends`` (the stem and head convolutions)
    or ``ends+depthwise`` (those and every depthwise convolution)."""
    import onnx as onnx_lib

    if keep not in FLOAT_CONV_CHOICES:
        raise ValueError(f"keep is one of {', '.join(FLOAT_CONV_CHOICES)}, got {keep!r}")
    convs = [n for n in onnx_lib.load_from_string(onnx).graph.node if n.op_type == "Conv"]
    if keep == "none" or not convs:
        return []
    names = {convs[0].name, convs[-1].name}
    if keep == "ends+depthwise":
        names |= {n.name for n in convs if any(a.name == "group" and a.i > 1 for a in n.attribute)}
    return sorted(names)


def quantize_model(model_dir: str | Path, out_dir: str | Path, calibration: Sequence[str], batch_size: int = 16,
                   keep_float: str = DEFAULT_FLOAT_CONVS) -> str:
    """Write ``out_dir``: ``model_dir`` with an int8 encoder; return its fingerprint. ``keep_float``: which
    convolutions stay in float (see :func:`float_convolutions`)."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quant_pre_process, quantize_static
    from onnxruntime.quantization.calibrate import CalibrationDataReader

    config = read_config(model_dir)
    if config.encoder_precision != "float32":
        raise ValueError(f"{model_dir} already has a {config.encoder_precision} encoder")
    onnx = verify_encoder(model_dir, config)
    if not calibration:
        raise ValueError("quantisation needs calibration images")
    reader = type("Reader", (_Calibration, CalibrationDataReader), {})(list(calibration), config.input_size, batch_size)
    with tempfile.TemporaryDirectory() as work, versioned_directory(out_dir) as tmp:
        source, prepared = Path(work) / "float.onnx", Path(work) / "prepared.onnx"
        source.write_bytes(onnx)
        quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
        quantize_static(str(prepared), str(tmp / "encoder.onnx"), reader, quant_format=QuantFormat.QDQ,
                        per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        op_types_to_quantize=list(QUANTIZED_OPS), calibrate_method=CalibrationMethod.Percentile,
                        nodes_to_exclude=float_convolutions(onnx, keep_float),
                        extra_options={"CalibPercentile": CALIBRATION_PERCENTILE})
        if reader.skipped.skipped:
            log.warning("calibration: %s", reader.skipped.summary())
        for name in ("weights.pt", "split.json", "metrics.json"):
            if (Path(model_dir) / name).is_file():
                shutil.copyfile(Path(model_dir) / name, tmp / name)
        quantized = replace(config, encoder_precision="int8", fingerprint=None)
        fingerprint = content_fingerprint((tmp / "encoder.onnx").read_bytes(), quantized)
        provenance = {"quantized_from": config.fingerprint, "calibration_images": len(calibration),
                      "float_convolutions": keep_float}
        (tmp / "config.json").write_text(json.dumps(quantized.to_dict() | provenance | {"fingerprint": fingerprint}, indent=1))
    return fingerprint
