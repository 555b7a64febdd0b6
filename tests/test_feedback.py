"""Examples with yes and no: the classifier blend, the index's feedback search (Python, CLI, HTTP), and the
simulated user of issue 17 on vectors where the marks carry information the positives' similarity lacks."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from fastapi.testclient import TestClient

from rshash.cli import main as cli_main
from rshash.evaluation.simulated_user import CONDITIONS, mark, ranking, simulate, table_of, Session
from rshash.feedback import blend, classifier_weight, features, feedback_scores
from rshash.index import Index
from rshash.index.search import MAX_EXAMPLES
from rshash.ranking import quantize_descriptors
from rshash.service.app import create_app

BITS = 32


def _vectors(seed: int = 0):
    """Two classes that share codes (the positives' Hamming order cannot tell them apart) and differ along
    one descriptor direction that the positives' cosine barely sees; 300 distractors of a third kind."""
    rng = np.random.default_rng(seed)
    n = 200
    codes = np.packbits(np.tile(rng.random(BITS) < 0.5, (n + 300, 1)) ^ (rng.random((n + 300, BITS)) < 0.03), axis=1)
    desc = rng.normal(size=(n + 300, 64)).astype(np.float32)
    desc[:, 0] += 6.0  # a shared component that dominates cosine
    desc[:100, 1] += 1.5  # class 1 (relevant) vs class 2: one direction
    desc[100:200, 1] -= 1.5
    desc[200:, 2] += 4.0  # distractors
    labels = np.r_[np.ones(100, int), 2 * np.ones(100, int), np.zeros(300, int)]
    return codes, quantize_descriptors(desc), labels


def test_the_classifier_weight_grows_with_the_marks_and_blends_standardised_scores():
    assert classifier_weight(0) == 0 and classifier_weight(10, half=10) == 0.5
    assert classifier_weight(5) < classifier_weight(15) < 1
    base, decision = np.array([0.1, 0.2, 0.3]), np.array([-1.0, 0.0, 5.0])
    scores, alpha = blend(base, decision, 1000)
    assert alpha > 0.98 and np.argsort(scores)[0] == 2  # the classifier rules with many marks
    scores, _ = blend(base, decision, 0)
    assert np.argsort(scores).tolist() == [0, 1, 2]  # no marks: the positives' scores
    unchanged, used = feedback_scores(base, np.zeros((3, 4)), np.ones((2, 4)), np.zeros((0, 4)))
    assert unchanged.tolist() == base.tolist() and used.classifier_weight == 0.0
    rng = np.random.default_rng(3)  # the index's decision values are the classifier's on the feature rows
    codes, desc, w = rng.integers(0, 256, (40, 2), np.uint8), rng.integers(-127, 128, (40, 16)).astype(np.int8), \
        rng.normal(size=16 + 12).astype(np.float32)
    from rshash.feedback import decision
    from rshash.ranking import cosine_similarity

    cos = cosine_similarity(w[None, :16], desc)[0]
    assert decision(codes, 12, w, 0.5, cos) == pytest.approx(features(codes, desc, 12) @ w + 0.5, abs=1e-5)
    assert decision(codes, 12, w[16:], 0.5) == pytest.approx(features(codes, None, 12) @ w[16:] + 0.5, abs=1e-5)
    f = features(np.packbits(np.ones((2, BITS), bool), axis=1), np.array([[3, 4], [0, 0]], np.int8), BITS)
    assert f.shape == (2, 2 + BITS) and np.linalg.norm(f[0, :2]) == pytest.approx(1.0)
    assert np.linalg.norm(f[0, 2:]) == pytest.approx(1.0)


def test_marks_lift_the_ranking_where_the_positives_alone_cannot():
    codes, desc, labels = _vectors()
    table = table_of(codes, desc)
    database = np.arange(5, 500)
    relevant = labels == 1
    result = simulate(table, database, relevant, [0, 1, 2, 3, 4], BITS, 0.25, thresholds=(-1.0, 10.0))
    assert set(result) == set(CONDITIONS) | {"find_all", "same_items"}
    same = result["same_items"]  # on the items left after the two rounds, the marks lift the ranking too
    assert same["refined_2rounds"][0] > same["5pos"][0] and same["refined_2rounds"] == result["refined_2rounds"]
    precision, recall, f1 = result["find_all"][10.0]  # every candidate: all relevant ones, at their share
    assert recall == 1.0 and precision == pytest.approx(relevant[database].sum() / len(database), abs=0.05)
    assert result["find_all"][-1.0][2] > f1  # a threshold keeps the best-scored: a better F1
    assert result["refined_2rounds"][0] > result["5pos"][0] + 0.1  # the marks carry what the examples lack
    assert result["5pos_5neg"][0] >= result["5pos"][0]
    order = ranking(table, database, Session([0, 1, 2, 3, 4]), BITS, 0.25)
    assert sorted(order.tolist()) == database.tolist()  # every database item, none of the examples
    marked = mark(order, relevant, Session([0]))
    assert len(marked.positives) <= 6 and len(marked.negatives) <= 5
    assert set(marked.negatives).isdisjoint(np.flatnonzero(relevant))
    again = ranking(table, database, marked, BITS, 0.25)
    assert set(again.tolist()).isdisjoint(marked.marked)  # marked items leave the ranking


@pytest.fixture(scope="module")
def feedback_index(raster_index_dir, tmp_path_factory):
    return shutil.copytree(raster_index_dir, tmp_path_factory.mktemp("feedback") / "index")


def test_index_cli_and_http_feedback_search(feedback_index, capsys):
    with Index.open(feedback_index) as index:
        positives = index.search_examples([1, 2], k=10)
        assert {h.id for h in positives}.isdisjoint({1, 2})
        refined = index.search_examples([1, 2], [positives[0].id, positives[1].id], k=len(index))
        ids = [h.id for h in refined]
        assert len(ids) == len(index) - 4 and set(ids).isdisjoint({1, 2, positives[0].id, positives[1].id})
        assert [h.score for h in refined] == sorted(h.score for h in refined)
        with pytest.raises(ValueError, match="positive"):
            index.search_examples([], [3])
        with pytest.raises(ValueError, match=f"at most {MAX_EXAMPLES}"):
            index.search_examples(list(range(1, 60)), list(range(60, 120)))
    assert cli_main(["search", "--index", str(feedback_index), "--id", "1", "--id", "2", "--not-id",
                     str(positives[0].id), "--k", "5", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["query"]["not_ids"] == [positives[0].id] and positives[0].id not in [r["id"] for r in out["results"]]
    with TestClient(create_app(feedback_index), base_url="http://127.0.0.1:8000") as client:
        body = client.get("/api/geo/search", params={"id": [1, 2], "not_id": [positives[0].id], "k": 5}).json()
        assert body["query"]["not_ids"] == [positives[0].id]
        assert positives[0].id not in [r["id"] for r in body["results"]] and 1 <= len(body["results"]) <= 5
        too_many = client.get("/api/geo/search", params={"id": list(range(1, 52)), "not_id": list(range(52, 102))})
        assert too_many.status_code == 422
        assert client.get("/api/geo/search", params={"not_id": [3]}).status_code == 422  # no positive


def test_find_all_is_one_layer_of_merged_areas(feedback_index):
    with TestClient(create_app(feedback_index), base_url="http://127.0.0.1:8000") as client:
        everything = client.get("/api/geo/find_all", params={"id": [1], "threshold": 20}).json()
        assert everything["count"] == len(everything["scores"]) == 20  # every other chip of the 21
        assert everything["scores"] == sorted(everything["scores"])
        assert everything["capped"] is False  # every candidate was diffused: nothing lies beyond
        areas = everything["areas"]["features"]
        assert sum(f["properties"]["chips"] for f in areas) == 20
        assert len(areas) == 2  # the two rasters' chips touch within each raster: one area each
        strict = client.get("/api/geo/find_all", params={"id": [1], "threshold": -1.0, "not_id": [2]}).json()
        assert strict["count"] == sum(s <= -1.0 for s in strict["scores"]) < 19
        assert set(strict["ids"]).isdisjoint({1, 2})
        doc = client.get("/api/geo/find_all", params={"id": [1], "threshold": 20, "format": "geojson"})
        assert doc.headers["content-type"] == "application/geo+json" and doc.json()["type"] == "FeatureCollection"
        assert client.get("/api/geo/find_all", params={"threshold": 0}).status_code == 422


def test_find_all_from_the_command_line_writes_the_areas(feedback_index, tmp_path, capsys):
    """``rshash search --find-all``: the same chips and areas as the HTTP find-all, the areas as GeoJSON."""
    out = tmp_path / "found.geojson"
    assert cli_main(["search", "--index", str(feedback_index), "--id", "1", "--not-id", "2", "--find-all",
                     "--threshold", "0", "--geojson", str(out), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    with TestClient(create_app(feedback_index), base_url="http://127.0.0.1:8000") as client:
        body = client.get("/api/geo/find_all", params={"id": [1], "not_id": [2], "threshold": 0}).json()
    assert printed["ids"] == body["ids"] and printed["count"] == body["count"] > 0
    assert json.loads(out.read_text()) == body["areas"] and printed["capped"] is False
    assert cli_main(["search", "--index", str(feedback_index), "--id", "1", "--threshold", "0"]) != 0
    assert "--threshold goes with --find-all" in capsys.readouterr().err
    assert cli_main(["search", "--index", str(feedback_index), "--id", "1", "--find-all", "--csv",
                     str(tmp_path / "x")]) != 0
    assert "give --geojson" in capsys.readouterr().err
    assert cli_main(["search", "--index", str(feedback_index), "--id", "1", "--find-all", "--k", "5"]) != 0
    assert "no --k, --radius or --offset" in capsys.readouterr().err


def test_feedback_over_nothing_returns_nothing(feedback_index):
    with Index.open(feedback_index) as index:
        assert index.search_examples([1], [2], ids=[1, 2]) == []  # the only allowed items are the examples
        assert index.search_examples([1], [2], ids=[]) == []


def _random_table(n: int, seed: int):
    """A vector table of ``n`` random 64-bit codes and 16-d int8 descriptors (ids 1..n), its flat code index, and
    a maker of the example whose id is row ``i`` + 1."""
    from rshash.index.backends.faiss import CodeIndex
    from rshash.index.search import QueryVectors
    from rshash.index.vectors import VectorTable
    from rshash.ranking import descriptor_norms

    rng = np.random.default_rng(seed)
    codes = rng.integers(0, 256, (n, 8), dtype=np.uint8)
    descriptors = rng.integers(-127, 128, (n, 16)).astype(np.int8)
    ids = np.arange(1, n + 1, dtype=np.int64)
    table = VectorTable(ids, codes, descriptors, descriptor_norms(descriptors))
    example = lambda i: QueryVectors(codes[i], descriptors[i], (int(ids[i]),))  # noqa: E731
    return table, CodeIndex.build("flat", 64, ids, codes), example


def test_feedback_similarity_is_the_mean_over_positives():
    """rank_feedback scores every candidate with one row for all positives (the mean of their unit descriptors):
    the same as averaging each positive's cosine similarity."""
    from rshash.index.search import SearchParams, rank_feedback
    from rshash.ranking import cosine_similarity, rerank_scores

    n = 300
    table, index, example = _random_table(n, 1)
    pos = [example(i) for i in (3, 50, 120)]
    params = SearchParams(k=n, weight=0.5, exclude=(4, 51, 121))
    ranked, _ = rank_feedback(pos, [], params, index, table, None, 64, diffusion=None)  # the positives' score alone
    rows = table.positions(ranked.ids)
    per_positive = cosine_similarity(np.stack([p.descriptor for p in pos]), table.descriptors[rows], table.norms[rows])
    np.testing.assert_allclose(ranked.similarities, per_positive.mean(axis=0), atol=1e-5)
    hamming = np.stack([np.bitwise_count(table.codes[rows] ^ p.code).sum(axis=1) for p in pos])
    mean_score = rerank_scores(hamming, per_positive, 64, 0.5).mean(axis=0)
    assert np.all(np.diff(mean_score) >= -1e-9)  # the order is the mean two-stage score's (standardised)


def test_a_table_scored_whole_ranks_as_the_chunked_path():
    """An index scored whole reads its cached unit descriptors in one product; the same candidates given as
    allowed ids take the chunked int8 path: the same order and scores, with negatives too."""
    from rshash.index.search import SearchParams, rank_feedback

    table, index, example = _random_table(500, 2)
    pos = [example(i) for i in (3, 50)]
    neg = [example(i) for i in (7, 80, 300)]
    params = SearchParams(k=50, weight=0.9, exclude=(4, 51, 8, 81, 301))
    whole, _ = rank_feedback(pos, neg, params, index, table, None, 64)
    chunked, _ = rank_feedback(pos, neg, params, index, table, table.ids, 64)
    np.testing.assert_array_equal(whole.ids, chunked.ids)
    np.testing.assert_allclose(whole.scores, chunked.scores, atol=1e-6)
    np.testing.assert_allclose(whole.similarities, chunked.similarities, atol=1e-6)


def test_the_map_slider_starts_at_the_default_threshold():
    """The map's find-all slider opens at the threshold the HTTP API and Python use (chosen on validation)."""
    import re
    from importlib.resources import files

    from rshash.feedback import FIND_ALL_THRESHOLD

    html = files("rshash").joinpath("static/map.html").read_text()
    value = re.search(r'<input id="threshold"[^>]*value="([^"]+)"', html).group(1)
    assert float(value) == FIND_ALL_THRESHOLD
