"""``rshash quantize``: an int8 encoder in a new model directory, verified on load, close to the float one."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from rshash.cli import main
from rshash.data.synthetic import make_synthetic_dataset


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    from rshash.model import HashingModel, ModelConfig
    from rshash.model_dir import save_model_dir

    root = tmp_path_factory.mktemp("quant")
    make_synthetic_dataset(root / "data", classes=2, per_class=6, size=64)
    save_model_dir(root / "model", HashingModel(ModelConfig(bits=32)))
    paths = sorted(str(p) for p in (root / "data").rglob("*.png"))
    split = {"seed": 0, "fractions": {}, "assignment": {p: "train" for p in paths}}
    (root / "model" / "split.json").write_text(json.dumps(split))
    return root


def test_int8_encoder_is_a_new_verified_model_close_to_the_float_one(model, capsys):
    from rshash.data.datasets import load_batch
    from rshash.encoder import Encoder

    out = model / "model-int8"
    assert main(["quantize", "--model", str(model / "model"), "--out", str(out), "--calibration", "8"]) == 0
    assert "int8 encoder" in capsys.readouterr().out
    float_enc, int8_enc = Encoder(model / "model"), Encoder(out)
    assert int8_enc.config.encoder_precision == "int8" and int8_enc.fingerprint != float_enc.fingerprint
    assert json.loads((out / "config.json").read_text())["quantized_from"] == float_enc.fingerprint
    pixels, _ = load_batch(sorted(str(p) for p in (model / "data").rglob("*.png")), 224)
    a, b = float_enc.encode(pixels), int8_enc.encode(pixels)
    # a random head's outputs sit near 0.5 (where any error flips bits), so compare the outputs themselves
    assert np.abs(a.outputs - b.outputs).mean() < 0.02
    assert np.mean(np.sum(a.descriptors * b.descriptors, axis=1)) > 0.8  # unfitted projection: the raw ReLU features
    # quantising twice is refused; an index built with one refuses the other (different fingerprints)
    assert main(["quantize", "--model", str(out), "--out", str(model / "again")]) == 2
    assert "already has a int8 encoder" in capsys.readouterr().err


def test_keep_float_leaves_the_chosen_convolutions_in_float(model):
    import onnx

    from rshash.quantize import float_convolutions, quantize_model

    onnx_bytes = (model / "model" / "encoder.onnx").read_bytes()
    ends, depthwise = float_convolutions(onnx_bytes, "ends"), float_convolutions(onnx_bytes, "ends+depthwise")
    assert float_convolutions(onnx_bytes, "none") == [] and len(ends) == 2 and set(ends) < set(depthwise)
    with pytest.raises(ValueError, match="keep"):
        float_convolutions(onnx_bytes, "everything")
    out = model / "model-int8-ends"
    quantize_model(model / "model", out, [str(p) for p in sorted((model / "data").rglob("*.png"))][:4], keep_float="ends")
    graph = onnx.load(str(out / "encoder.onnx")).graph
    convs = {n.name: n for n in graph.node if n.op_type == "Conv"}
    dequantized = {n.output[0] for n in graph.node if n.op_type == "DequantizeLinear"}
    for name in ends:  # a float convolution reads float weights, not dequantized int8 ones
        assert convs[name].input[1] not in dequantized
    assert json.loads((out / "config.json").read_text())["float_convolutions"] == "ends"
