"""The pretrained backbone: stage maps, loaded weights (a check that can fail), ONNX agreement."""

import numpy as np
import pytest
import torch

from rshash.backbone import create_backbone
from rshash.data.datasets import load_batch, scan_folder
from rshash.model import HashingModel, ModelConfig, PixelEncoder, pool_map
from rshash.onnx_export import export_onnx, open_session, run_session_all


@pytest.fixture(scope="module")
def pretrained():
    return create_backbone()


def test_stage_maps_are_hierarchical(pretrained):
    with torch.no_grad():
        maps = pretrained(torch.rand(1, 3, 224, 224))
    assert len(maps) >= 3
    sides = [m.shape[-1] for m in maps]
    assert sides == sorted(sides, reverse=True) and sides[0] > sides[-1]
    assert [m.shape[1] for m in maps] == [pretrained.channels[t] for t in pretrained.taps]


def test_unknown_backbone_and_stage_are_clear_errors():
    with pytest.raises(ValueError, match="unknown backbone"):
        create_backbone("resnet-9000")
    with pytest.raises(ValueError, match="unknown stage"):
        create_backbone(taps=("stage3", "stage99"))


def _knn_accuracy(backbone, pixels: np.ndarray, labels: np.ndarray) -> float:
    x = torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():
        feats = torch.nn.functional.normalize(backbone(x)[-1].mean((2, 3)), dim=1).numpy()
    sim = feats @ feats.T
    np.fill_diagonal(sim, -np.inf)
    return float((labels[sim.argmax(1)] == labels).mean())


@pytest.mark.ucmd
def test_pretrained_weights_beat_random_weights_on_ucmd(pretrained, ucmd_dir):
    records = [r for r in scan_folder(ucmd_dir) if r.label in ("beach", "forest", "freeway", "harbor", "parkinglot", "baseballdiamond")]
    records = [r for i, r in enumerate(records) if i % 10 < 6]  # fixed subset: 6 classes x 60 images... thinned
    records = records[::3]
    pixels, ok = load_batch([r.path for r in records], 224)
    labels = np.array([records[i].label for i in ok])
    good = _knn_accuracy(pretrained, pixels, labels)
    bad = _knn_accuracy(create_backbone(pretrained=False), pixels, labels)
    # measured: pretrained ~0.9+, random ~0.4; chance is 1/6
    assert good > 0.75 > bad, (good, bad)


def test_onnx_matches_torch(pretrained):
    model = HashingModel(ModelConfig(bits=16), backbone=pretrained).eval()
    encoder = PixelEncoder(model)
    pixels = np.random.default_rng(0).integers(0, 256, (3, 224, 224, 3), dtype=np.uint8)
    session = open_session(export_onnx(encoder, torch.zeros(1, 224, 224, 3, dtype=torch.uint8),
                                       outputs=PixelEncoder.OUTPUTS))
    with torch.no_grad():
        expected = [t.numpy() for t in encoder(torch.from_numpy(pixels))]
    got = run_session_all(session, pixels)
    assert got[0].shape == (3, 16) and got[1].shape == (3, 128)  # sigmoid outputs, descriptors
    assert max(np.abs(g - e).max() for g, e in zip(got, expected)) < 1e-4
    assert np.allclose(np.linalg.norm(got[1], axis=1), 1.0, atol=1e-5)


def test_pool_map_is_avg_and_max():
    m = torch.arange(8.0).reshape(1, 2, 2, 2)
    assert pool_map(m).tolist() == [[1.5, 5.5, 3.0, 7.0]]
