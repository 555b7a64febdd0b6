"""End to end on synthetic scenes: train -> model dir -> ONNX encoder codes retrieve same-class images."""

import json

import numpy as np
import pytest

from rshash.cli import main
from rshash.codes import pack_codes
from rshash.data.datasets import load_batch, scan_folder
from rshash.data.synthetic import make_synthetic_dataset
from rshash.encoder import Encoder
from rshash.evaluation.protocols import RetrievalTask, evaluate
from rshash.model_dir import ModelDirError, read_config


@pytest.fixture(scope="module", params=["default", "lstm"])
def trained(tmp_path_factory, request):
    """The default recipe (a whitening head) and the paper's LSTM head trained with the losses."""
    root = tmp_path_factory.mktemp(f"synth-{request.param}")
    make_synthetic_dataset(root / "data", classes=5, per_class=16, size=64, seed=3)
    out = root / "model"
    cell = [] if request.param == "default" else ["--cell", request.param]
    code = main([
        "train", "--data", str(root / "data"), "--out", str(out), "--bits", "16", "--views", "2",
        "--finetune-epochs", "1", "--hash-epochs", "15", "--test-fraction", "0.25",
        "--cache-dir", str(root / "cache"), *cell,
    ])
    assert code == 0
    return root, out


def test_model_directory_is_complete(trained):
    _, out = trained
    for name in ("config.json", "weights.pt", "encoder.onnx", "split.json", "metrics.json"):
        assert (out / name).is_file(), name
    config = read_config(out)
    assert config.bits == 16 and len(config.class_names) == 5
    assert config.cell == ("whiten" if "synth-default" in str(out) else "lstm")
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["sizes"]["test"] == 20
    split = json.loads((out / "split.json").read_text())["assignment"]
    assert sorted(set(split.values())) == ["test", "train", "val"]


def test_learned_codes_retrieve_same_class_far_above_chance(trained):
    root, out = trained
    records = scan_folder(root / "data")
    split = json.loads((out / "split.json").read_text())["assignment"]
    encoder = Encoder(out)
    pixels, ok = load_batch([r.path for r in records], encoder.input_size)
    encoded = encoder.encode(pixels)
    labels = np.array([records[i].label for i in ok])
    test = np.array([split[records[i].path] == "test" for i in ok])
    task = RetrievalTask("split", "test vs the rest", np.flatnonzero(test), np.flatnonzero(~test))
    rep = evaluate(encoded.codes, labels, task, rerank=False)
    reranked = evaluate(encoded.codes, labels, task, encoded.descriptors)
    assert reranked["map_all"] > 0.6, reranked
    # chance mAP with 5 balanced classes is ~0.2
    assert rep["map_all"] > 0.6, rep


def test_wrong_format_version_is_refused(trained, tmp_path):
    _, out = trained
    config = json.loads((out / "config.json").read_text())
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "config.json").write_text(json.dumps(config | {"format_version": 999}))
    with pytest.raises(ModelDirError, match="format version"):
        Encoder(bad)


def test_missing_data_is_a_clear_cli_error(tmp_path, capsys):
    code = main(["train", "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "m")])
    assert code == 2
    assert "does not exist" in capsys.readouterr().err


def test_too_many_bits_for_a_small_folder_is_a_clear_error(trained, tmp_path, capsys):
    """The default 128 bits need more independent dimensions than 60 training images x 2 views give: a clear
    message and no model, not a crash."""
    root, _ = trained
    code = main(["train", "--data", str(root / "data"), "--out", str(tmp_path / "m"), "--views", "2",
                 "--finetune-epochs", "1", "--test-fraction", "0.25", "--cache-dir", str(root / "cache")])
    assert code == 2
    assert "fewer bits" in capsys.readouterr().err
    assert not (tmp_path / "m").exists()
