"""Two-stage ranking: the order function, the index's search path (self-retrieval, re-rank off, filters,
tie-break), the faiss cache validation, the encoder's fingerprint check, and multi-label relevance."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from scenes import write_scenes
from rshash.evaluation.protocols import RetrievalTask, evaluate
from rshash.index import Index
from rshash.model_dir import ModelDirError
from rshash.ranking import cosine_similarity, quantize_descriptors, rerank_scores, two_stage_order

BITS = 32


# ---------------------------------------------------------------------------- the order function


def test_hamming_order_breaks_ties_by_id():
    ham = np.array([[3, 1, 1, 0, 3]])
    ids = np.array([50, 40, 30, 20, 10])
    order = two_stage_order(ham, ids, 8, rerank=False)[0]
    assert ids[order].tolist() == [20, 30, 40, 10, 50]


def test_rerank_reorders_the_shortlist_only():
    ham = np.array([[0, 1, 2, 3, 4]])
    sim = np.array([[0.0, 0.2, 0.9, 1.0, 1.0]])
    ids = np.arange(5)
    # weight 1: the shortlist (first 3 by Hamming) is ordered by similarity alone; the rest keeps Hamming order.
    assert two_stage_order(ham, ids, 8, sim, shortlist=3, weight=1.0)[0].tolist() == [2, 1, 0, 3, 4]
    # weight 0: Hamming first, similarity breaks ties only.
    tied = np.array([[1, 1, 0]])
    assert two_stage_order(tied, np.arange(3), 8, np.array([[0.1, 0.5, 0.0]]), weight=0.0)[0].tolist() == [2, 1, 0]
    # equal scores and similarities: smaller id first
    assert two_stage_order(np.array([[1, 1]]), np.array([7, 3]), 8, np.array([[0.5, 0.5]]))[0].tolist() == [1, 0]


def test_gate_reranks_only_queries_far_from_their_codes_neighbours():
    """Query 0's 10th Hamming neighbour is 1 bit away (a tight cluster): Hamming order kept; query 1's is 6 bits
    away: re-ranked by similarity."""
    from rshash.ranking import GATE_RANK

    ham = np.array([[0] + [1] * (GATE_RANK + 1), [6] * (GATE_RANK + 2)])
    ham[0, -1] = 7
    sim = np.tile(np.linspace(0.0, 1.0, GATE_RANK + 2), (2, 1))  # the farthest by Hamming is the most similar
    ids = np.arange(GATE_RANK + 2)
    gated = two_stage_order(ham, ids, 16, sim, weight=0.9, gate=0.25)
    assert gated[0].tolist() == two_stage_order(ham[:1], ids, 16, sim[:1], weight=0.0)[0].tolist()
    assert gated[1].tolist() == two_stage_order(ham[1:], ids, 16, sim[1:], weight=0.9)[0].tolist()
    assert gated[1][0] == GATE_RANK + 1 and gated[0][0] == 0


@pytest.mark.parametrize("prefer, gate", [(None, None), (7, None), (None, 0.2), (3, 0.3)])
def test_one_query_orders_as_in_a_batch(prefer, gate):
    """A search orders one query (its own code path): the same order as that query's row of a batch."""
    rng = np.random.default_rng(4)
    ham = rng.integers(0, 8, (3, 60))  # 8-bit codes over 60 items: many ties
    sim = np.round(rng.uniform(-1, 1, (3, 60)), 1)  # tied similarities too
    ids = rng.permutation(60) + 100
    prefer = None if prefer is None else int(ids[prefer])
    batch = two_stage_order(ham, ids, 8, sim, shortlist=25, weight=0.6, prefer=prefer, gate=gate)
    for q in range(3):
        one = two_stage_order(ham[q : q + 1], ids, 8, sim[q : q + 1], shortlist=25, weight=0.6, prefer=prefer, gate=gate)
        assert one.shape == (1, 60) and one[0].tolist() == batch[q].tolist()


def test_scores_blend_and_weight_bounds():
    assert rerank_scores(np.array([4]), np.array([1.0]), 8, 0.5)[0] == pytest.approx(0.25)
    with pytest.raises(ValueError, match="weight"):
        rerank_scores(np.array([0]), np.array([0.0]), 8, 1.5)


def test_int8_descriptors_keep_cosine_and_self_similarity_is_one():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 128)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    q = quantize_descriptors(x)
    assert q.dtype == np.int8 and q.nbytes == 50 * 128
    exact = x @ x.T
    assert np.abs(cosine_similarity(q, q) - exact).max() < 0.02
    assert np.allclose(np.diag(cosine_similarity(q, q)), 1.0)


def test_multilabel_relevance_counts_a_shared_label():
    codes = np.array([[0, 0], [0, 0], [1, 1], [1, 1]], dtype=bool).repeat(4, axis=1)  # 8 bits
    single = np.array([0, 1, 1, 2])
    multi = np.array([[1, 1, 0], [0, 1, 0], [0, 1, 0], [0, 0, 1]], dtype=bool)  # item 0: labels {0, 1}
    task = RetrievalTask("t", "query 0 against 1..3", np.array([0]), np.array([1, 2, 3]))
    assert evaluate(codes, single, task, rerank=False)["p_at_10"] == 0.0  # class 0 has no other member
    # item 1 (distance 0) and item 2 (distance 8) share label 1 with the query: AP = (1/1 + 2/2) / 2
    assert evaluate(codes, multi, task, rerank=False)["map_all"] == pytest.approx(1.0)


# ---------------------------------------------------------------------------- the index


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    from rshash.model import HashingModel, ModelConfig
    from rshash.model_dir import save_model_dir

    path = tmp_path_factory.mktemp("model") / "model"
    save_model_dir(path, HashingModel(ModelConfig(bits=BITS)))
    return path


@pytest.fixture(scope="module")
def index(tmp_path_factory, model_dir) -> Index:
    root = write_scenes(tmp_path_factory.mktemp("images"), ("a", "b"), per_class=10, seed=4)
    (root / "loose.png").write_bytes((root / "a" / "0.png").read_bytes())  # an unlabelled copy
    idx = Index.create(tmp_path_factory.mktemp("index") / "i", model_dir)
    idx.add_paths(_records(root), progress=False)
    return idx


def _records(root: Path):
    from rshash.data.datasets import ImageRecord

    recs = [ImageRecord(str(p), p.parent.name) for p in sorted(root.glob("*/*.png"))]
    return recs + [ImageRecord(str(root / "loose.png"))]


def test_every_image_finds_itself_first(index):
    for i in range(1, len(index) + 1):
        meta = index.get(i)
        hits = index.search(meta.path, k=3)
        assert hits[0].id == i  # also the unlabelled, pixel-identical copy of a/0.png: its own path first
        assert hits[0].distance == 0 and hits[0].similarity == pytest.approx(1.0)


def test_rerank_off_is_hamming_order_with_id_tiebreak(index):
    meta = index.get(5)
    hits = index.search(meta.path, k=len(index), rerank=False)
    assert [(h.distance, h.id) for h in hits] == sorted((h.distance, h.id) for h in hits)
    assert all(h.similarity is None for h in hits)
    reranked = index.search(meta.path, k=len(index))
    assert [h.score for h in reranked] == sorted(h.score for h in reranked)
    assert {h.id for h in reranked} == {h.id for h in hits}


def test_label_filter_is_inside_the_index(index):
    hits = index.search(1, k=50, labels=["b"])
    assert len(hits) == 10 and {h.label for h in hits} == {"b"}
    unlabelled = index.search(1, k=5, labels=[None])
    assert [h.label for h in unlabelled] == [None]
    assert {h.label for h in index.search(1, k=50, radius=BITS, labels=["a", None])} == {"a", None}
    assert 1 not in {h.id for h in index.search(1, k=50, radius=BITS, labels=["a"])}


def test_a_cache_of_the_right_generation_but_other_content_is_rebuilt(index, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(index.path, copy)
    with Index.open(copy) as a:
        expected = a.search(2, k=5)
        a.remove([3])
        a.add_paths([index.get(3).path], progress=False)  # the same content under a new id
    (cache,) = copy.glob("cache-*.faiss")
    shutil.copyfile(next(index.path.glob("cache-*.faiss")), cache)  # stale content under the current name
    with Index.open(copy) as b:
        hits = b.search(2, k=5)
        assert [h.id for h in hits] == [h.id if h.id != 3 else len(index) + 1 for h in expected]


def test_a_swapped_encoder_is_refused(model_dir, tmp_path):
    from rshash.encoder import Encoder

    other = tmp_path / "model"
    shutil.copytree(model_dir, other)
    onnx = (other / "encoder.onnx").read_bytes()
    (other / "encoder.onnx").write_bytes(onnx[:-10] + bytes(10))
    with pytest.raises(ModelDirError, match="fingerprint mismatch"):
        Encoder(other)
    config = json.loads((model_dir / "config.json").read_text())
    assert Encoder(model_dir).fingerprint == config["fingerprint"]


def test_a_file_indexed_twice_finds_its_own_path_first(index):
    """The unlabelled copy of a/0.png has the same pixels: each path, queried, comes back first."""
    copy_id = len(index)  # loose.png, added last
    original = index.get(copy_id).sha256
    twin = next(i for i in range(1, copy_id) if index.get(i).sha256 == original)
    for i in (twin, copy_id):
        assert index.search(index.get(i).path, k=2)[0].id == i
        assert index.search(index.get(i).path, k=2, rerank=False)[0].id == i
    ids = np.array([5, 3])
    assert two_stage_order(np.array([[0, 0]]), ids, 8, np.array([[1.0, 1.0]]), prefer=5)[0].tolist() == [0, 1]


def test_the_reranks_weight_is_the_models_recorded_in_the_index(index, model_dir, tmp_path):
    """A labelled model re-ranks at LABELLED_WEIGHT, a self-supervised one at SELF_SUPERVISED_WEIGHT; the index
    records it at creation, an older index without the record takes its model's, and a search may override it."""
    import sqlite3

    from rshash.model import HashingModel, ModelConfig
    from rshash.model_dir import save_model_dir
    from rshash.ranking import LABELLED_WEIGHT, SELF_SUPERVISED_WEIGHT

    assert LABELLED_WEIGHT != SELF_SUPERVISED_WEIGHT
    assert index.rerank_weight == SELF_SUPERVISED_WEIGHT  # the fixture's model has no class names
    hits = index.search(1, k=10)
    expected = rerank_scores(np.array([h.distance for h in hits]), np.array([h.similarity for h in hits]), BITS,
                             SELF_SUPERVISED_WEIGHT)
    assert [h.score for h in hits] == pytest.approx(expected.tolist())
    at_zero = index.search(1, k=10, weight=0.0)
    assert [h.score for h in at_zero] == pytest.approx([h.distance / BITS for h in at_zero])

    labelled = tmp_path / "labelled"
    save_model_dir(labelled, HashingModel(ModelConfig(bits=BITS, class_names=["a", "b"])))
    created = Index.create(tmp_path / "li", labelled)
    assert created.rerank_weight == LABELLED_WEIGHT
    created.close()
    from rshash.model_config import model_rerank_weight
    from rshash.ranking import WHITENED_LABELLED_WEIGHT

    # the default recipe's whitening head has its own (chosen on validation); self-supervised ones keep theirs
    assert model_rerank_weight(ModelConfig(bits=BITS, cell="whiten", class_names=["a", "b"])) == WHITENED_LABELLED_WEIGHT
    assert model_rerank_weight(ModelConfig(bits=BITS, cell="whiten")) == SELF_SUPERVISED_WEIGHT
    assert WHITENED_LABELLED_WEIGHT != LABELLED_WEIGHT
    Index.create(tmp_path / "si", model_dir).close()
    with sqlite3.connect(tmp_path / "si" / "meta.sqlite") as conn:  # an index made before the weight was recorded
        conn.execute("DELETE FROM meta WHERE key = 'rerank_weight'")
    reopened = Index.open(tmp_path / "si")
    assert reopened.rerank_weight == SELF_SUPERVISED_WEIGHT  # its model's, not the labelled default
    reopened.close()
