"""Baselines on tiny Gaussian-cluster features: code shapes, retrieval far above chance, hand-worked losses."""

import math

import numpy as np
import pytest
import torch

from rshash.baselines import (
    DEEP_METHODS, ITQ, LSH, CSQLoss, DPSHLoss, HashNetLoss, MiLANLoss, hash_centres, head_codes, knn_report,
    make_objective, train_deep,
)
from rshash.baselines.csq import hadamard
from rshash.codes import hamming_matrix, pack_codes
from rshash.evaluation.protocols import RetrievalTask, evaluate_codes
from rshash.evaluation.ranking import ranking_report
from rshash.evaluation.protocols import RetrievalTask, evaluate
from rshash.training.hashing import HashTrainConfig

CLASSES, PER_CLASS = 6, 30
CHANCE = 1 / CLASSES


def clusters(dim: int = 32, seed: int = 0, spread: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian clusters with anisotropic noise: ``(N, dim)`` features and ``(N,)`` labels."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 3, (CLASSES, dim))
    labels = np.repeat(np.arange(CLASSES), PER_CLASS)
    noise = rng.normal(0, spread, (len(labels), dim)) * rng.uniform(0.3, 2.0, dim)
    return centres[labels] + noise, labels


def halves(labels: np.ndarray) -> RetrievalTask:
    """Even items are the database (and training set), odd items the queries."""
    idx = np.arange(len(labels))
    return RetrievalTask("t", "odd query even", idx[1::2], idx[0::2], train=idx[0::2])


# ---------------------------------------------------------------------------- unsupervised


@pytest.mark.parametrize("hasher", [LSH, ITQ])
def test_unsupervised_codes_shape_and_retrieval(hasher):
    x, labels = clusters()
    task = halves(labels)
    codes = hasher(16, seed=0).fit(x[task.train]).codes(x)
    assert codes.shape == (len(x), 16) and codes.dtype == bool
    assert evaluate_codes(codes, labels, task)["map_all"] > 3 * CHANCE


def test_itq_at_least_as_good_as_lsh_on_clustered_data():
    x, labels = clusters(dim=64, spread=2.0)
    task = halves(labels)
    scores = {h.__name__: evaluate_codes(h(16, seed=0).fit(x[task.train]).codes(x), labels, task)["map_all"]
              for h in (LSH, ITQ)}
    assert scores["ITQ"] >= scores["LSH"], scores


def test_itq_rejects_more_bits_than_dimensions_and_unfitted_use():
    x, _ = clusters(dim=8)
    with pytest.raises(ValueError, match="bits <= min"):
        ITQ(16).fit(x)
    with pytest.raises(RuntimeError, match="not fitted"):
        LSH(8).codes(x)


def test_knn_cosine_reference():
    x, labels = clusters()
    assert knn_report(x, labels, halves(labels))["map_all"] > 3 * CHANCE


def test_ranking_report_matches_the_hamming_evaluation_on_codes():
    rng = np.random.default_rng(1)
    codes = rng.random((40, 16)) < 0.5
    labels = rng.integers(0, 3, 40)
    packed = pack_codes(codes)
    dist = hamming_matrix(packed[:10], packed[10:])
    halves = RetrievalTask("h", "10 vs 30", np.arange(10), np.arange(10, 40))
    assert ranking_report(dist, labels[:10], labels[10:]) == evaluate(codes, labels, halves, rerank=False)
    square = hamming_matrix(packed, packed)
    mine = ranking_report(square, labels, labels, np.eye(40, dtype=bool))
    everyone = RetrievalTask("all", "all vs all", np.arange(40), np.arange(40), exclude_self=True)
    assert mine == pytest.approx(evaluate(codes, labels, everyone, rerank=False))


# ---------------------------------------------------------------------------- deep (objective modules)


def test_dpsh_hand_worked():
    # h = 2u - 1 = (1, 1) and (-1, -1): theta = <h1, h2> / 2 = -1; codes are binary so no quantization cost
    u = torch.tensor([[1.0, 1.0], [0.0, 0.0]])
    same = DPSHLoss(bits=2)(u, torch.tensor([0, 0]), None)
    assert same["total"].item() == pytest.approx(math.log(1 + math.exp(-1)) + 1, rel=1e-6)  # -log sigmoid(-1)
    diff = DPSHLoss(bits=2)(u, torch.tensor([0, 1]), None)
    assert diff["total"].item() == pytest.approx(math.log(1 + math.exp(-1)), rel=1e-6)  # -log(1 - sigmoid(-1))
    assert same["quant"].item() == 0.0


def test_hashnet_balances_similar_and_dissimilar_pairs():
    # h = (.5, .5), (.5, .5), (-.5, -.5); alpha = 10 / 2 bits: theta = +-2.5 -> each pair costs log(1 + e^-2.5);
    # the loss is mean(similar) + mean(dissimilar) however many pairs each side has
    u = torch.tensor([[0.75, 0.75], [0.75, 0.75], [0.25, 0.25]])
    loss = HashNetLoss(bits=2)
    out = loss(u, torch.tensor([0, 0, 1]), None)
    assert out["total"].item() == pytest.approx(2 * math.log(1 + math.exp(-2.5)), rel=1e-4)
    assert loss.step.item() == 1 and loss.scale() > 0.5  # continuation sharpens h step by step
    assert HashNetLoss(bits=2, continuation=False)(u, torch.tensor([0, 0, 1]), None)["total"].item() == pytest.approx(
        out["total"].item(), rel=1e-6)


def test_csq_hand_worked_and_centres():
    loss = CSQLoss(bits=2, num_classes=2)  # Hadamard(2) centres: (1, 1) and (1, -1)
    half = loss(torch.tensor([[0.5, 0.5]]), torch.tensor([0]), None)
    assert half["total"].item() == pytest.approx(math.log(2) + 1e-4, rel=1e-5)  # BCE ln 2; h = 0 -> quant 1e-4 * 1
    close = loss(torch.tensor([[0.9, 0.1]]), torch.tensor([1]), None)
    assert close["total"].item() == pytest.approx(-math.log(0.9) + 1e-4 * 0.2**2, rel=1e-5)
    h = hadamard(16)
    assert np.array_equal(h @ h.T, 16 * np.eye(16))
    c = hash_centres(21, 16)
    assert c.shape == (21, 16) and set(np.unique(c)) == {-1.0, 1.0}
    dist = (c[:, None] != c[None]).sum(-1)[~np.eye(21, dtype=bool)]
    assert dist.min() >= 8  # Hadamard rows and their negations are >= bits/2 apart
    assert hash_centres(21, 24, seed=3).shape == (21, 24)  # not a power of 2: random centres


def test_milan_hand_worked():
    # anchor = positive = (1, 0), negative (0, 1): ||a-p|| = 0, ||a-n|| = sqrt 2; push: (u - .5)^2 = .25; balanced codes
    u = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    out = MiLANLoss(bits=2, margin=2.0, w_push=0.1, w_balance=1.0)(u, torch.tensor([0, 0, 1]), None)
    assert out["triplet"].item() == pytest.approx(2 - math.sqrt(2), abs=1e-4)
    assert out["push"].item() == pytest.approx(-0.025)
    assert out["balance"].item() == 0.0
    assert out["total"].item() == pytest.approx(2 - math.sqrt(2) - 0.025, abs=1e-4)


def test_unknown_method_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown deep hashing method"):
        make_objective("nope", 16, 4)


@pytest.fixture(scope="module")
def levels_data():
    """Two 'levels' (a noisy low level and a clustered high level) in two 'views'."""
    rng = np.random.default_rng(0)
    high, labels = clusters(dim=24, seed=1)
    low = rng.normal(0, 1, (len(labels), 8)) + 0.5 * high[:, :8]
    flat = np.concatenate([low, high], axis=1)
    levels = np.stack([flat, flat + rng.normal(0, 0.3, flat.shape)], axis=1).astype(np.float32)
    return levels, [8, 24], labels


@pytest.mark.parametrize("method", sorted(DEEP_METHODS))
def test_deep_baseline_codes_retrieve_same_cluster(method, levels_data):
    levels, dims, labels = levels_data
    task = halves(labels)
    train, val = task.train[: len(task.train) * 3 // 4], task.train[len(task.train) * 3 // 4:]
    config = HashTrainConfig(bits=16, width=32, epochs=6, classes_per_batch=CLASSES, images_per_class=4, eval_every=3)
    head, info = train_deep(method, levels, dims, levels, labels, train, val, CLASSES, config)
    codes = head_codes(head, levels, dims)
    assert codes.shape == (len(labels), 16) and codes.dtype == bool
    assert evaluate_codes(codes, labels, task)["map_all"] > 3 * CHANCE, info
