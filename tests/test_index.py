"""Archive index: add / re-add / remove, every query type, range search, refusal of wrong models
and formats, skip reports, the faiss cache as a derived file, and sub-linear kinds vs exact."""

from __future__ import annotations

import hashlib
import json
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rshash.cli import main as cli_main
from rshash.codes import hamming_matrix, unpack_codes
from rshash.commands.index import KIND_CHOICES, REPORT_NAME
from rshash.index import KINDS, Index, IndexFormatError, ModelMismatchError
from rshash.index.backends.faiss import CodeIndex
from rshash.index.synthetic import ClusteredCodes

BITS = 32


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory) -> Path:
    """A real model directory: ImageNet backbone + random hash head (~2 s)."""
    from rshash.model import HashingModel, ModelConfig
    from rshash.model_dir import save_model_dir

    path = tmp_path_factory.mktemp("model") / "model"
    save_model_dir(path, HashingModel(ModelConfig(bits=BITS, class_names=["field", "stripes"])))
    return path


def _scene(kind: str, seed: int, size: tuple[int, int]) -> np.ndarray:
    """Two visually different classes: smooth colour fields and stripes."""
    rng = np.random.default_rng(seed)
    h, w = size
    if kind == "field":
        img = np.ones((h, w, 3)) * rng.uniform(0, 255, 3) + rng.normal(0, 8, (h, w, 3))
    else:
        period = rng.integers(4, 12)
        stripes = (np.arange(w) // period % 2)[None, :, None] * 255.0
        img = np.broadcast_to(stripes, (h, w, 3)) + rng.normal(0, 8, (h, w, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def write_images(root: Path, per_class: int = 4, bad: bool = True) -> Path:
    """``root/<class>/*.png`` of varied sizes, plus one corrupt file when ``bad``."""
    for c, kind in enumerate(("field", "stripes")):
        (root / kind).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            size = (48 + 8 * i, 64)
            Image.fromarray(_scene(kind, 100 * c + i, size)).save(root / kind / f"{kind}{i}.png")
    if bad:
        (root / "field" / "corrupt.png").write_bytes(b"\x89PNG not really")
    return root


@pytest.fixture(scope="module")
def built(tmp_path_factory, model_dir) -> Index:
    """A read-only flat index of 8 good images (tests must not modify it)."""
    root = tmp_path_factory.mktemp("built")
    index = Index.create(root / "index", model_dir)
    index.add_paths(write_images(root / "images"), batch_size=3, progress=False)
    yield index
    index.close()


@pytest.fixture
def fresh(tmp_path, model_dir) -> tuple[Index, Path]:
    images = write_images(tmp_path / "images")
    index = Index.create(tmp_path / "index", model_dir)
    yield index, images
    index.close()


def _all_codes(index: Index) -> tuple[np.ndarray, np.ndarray]:
    """Ids and packed codes straight from SQLite, for brute-force expectations."""
    rows = sqlite3.connect(index.path / "meta.sqlite").execute("SELECT id, code FROM images ORDER BY id").fetchall()
    return np.array([r[0] for r in rows]), np.array([np.frombuffer(r[1], np.uint8) for r in rows])


def _id_of(index: Index, path: Path) -> int:
    with sqlite3.connect(index.path / "meta.sqlite") as db:
        return db.execute("SELECT id FROM images WHERE path = ?", (str(path),)).fetchone()[0]


def _expected_distances(index: Index, packed_query: np.ndarray) -> dict[int, int]:
    ids, codes = _all_codes(index)
    return dict(zip(ids.tolist(), hamming_matrix(packed_query[None], codes)[0].tolist()))


# ---------------------------------------------------------------------------- adding


def test_add_records_metadata_and_skips_unreadable(fresh):
    index, images = fresh
    report = index.add_paths(images, batch_size=3, progress=False)
    assert (report.added, report.unchanged, report.updated) == (8, 0, 0)
    assert len(report.skipped) == 1 and report.skipped[0][0].endswith("corrupt.png")
    assert "cannot decode" in report.skipped[0][1]
    assert len(index) == 8
    first = index.get(1)
    path = Path(first.path)
    assert path.is_absolute() and first.label == path.parent.name
    assert (first.width, first.height) == Image.open(path).size
    assert first.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert len(first.code) == BITS // 8 and first.added_at
    stats = index.stats()
    assert stats["images"] == 8 and stats["labels"] == {"field": 4, "stripes": 4}
    assert stats["kind"] == "flat" and stats["bits"] == BITS and stats["cache_bytes"] > 0
    assert index.get(999) is None


def test_readd_is_noop_and_changed_file_is_reencoded(fresh):
    index, images = fresh
    index.add_paths(images, progress=False)
    generation = index.stats()["generation"]
    again = index.add_paths(images, progress=False)
    assert (again.added, again.unchanged, again.updated) == (0, 8, 0)
    assert index.stats()["generation"] == generation  # nothing committed

    changed = images / "stripes" / "stripes0.png"
    old_id = _id_of(index, changed)
    Image.fromarray(_scene("field", 7, (64, 64))).save(changed)
    third = index.add_paths([changed], progress=False)
    assert (third.added, third.updated) == (0, 1)
    assert index.get(old_id) is None and len(index) == 8
    new = index.get(_id_of(index, changed))
    assert new.id > old_id and new.label is None  # plain paths carry no label


def test_remove(fresh):
    index, images = fresh
    index.add_paths(images, progress=False)
    assert index.remove([2, 3, 77]) == [2, 3]
    assert len(index) == 6 and index.get(2) is None
    assert {2, 3}.isdisjoint(h.id for h in index.search(index.code_of(1), k=20))
    assert index.remove([2]) == []
    with pytest.raises(ValueError, match="no image with id 2"):
        index.search_by_id(2)


# ---------------------------------------------------------------------------- searching


def test_search_by_image_path_and_pixels(built):
    meta = built.get(5)
    hits = built.search(meta.path, k=3)
    assert len(hits) == 3 and [h.rank for h in hits] == [1, 2, 3]
    assert any(h.id == 5 and h.distance == 0 for h in hits)
    pixels = np.asarray(Image.open(meta.path).convert("RGB"))
    assert built.search(pixels, k=3) == hits


def test_search_by_code_matches_brute_force(built):
    rng = np.random.default_rng(1)
    for _ in range(5):
        code = rng.random(BITS) < 0.5
        expected = _expected_distances(built, np.packbits(code))
        hits = built.search(code, k=5)  # a bare code has no descriptor: Hamming order
        distances = [h.distance for h in hits]
        assert distances == sorted(expected.values())[:5]
        assert all(expected[h.id] == h.distance for h in hits)
        assert hits[0].path and hits[0].label in ("field", "stripes")


def test_search_by_id_excludes_itself(built):
    hits = built.search_by_id(1, k=4, rerank=False)
    assert len(hits) == 4 and 1 not in [h.id for h in hits]
    expected = _expected_distances(built, np.frombuffer(built.get(1).code, np.uint8))
    assert [h.distance for h in hits] == sorted(d for i, d in expected.items() if i != 1)[:4]
    assert built.search(1, k=4, rerank=False) == hits
    assert 1 not in [h.id for h in built.search(1, k=4)]  # re-ranked too
    assert built.search_by_id(1, k=4, exclude_self=False)[0].distance == 0


def test_range_search_is_exact(built):
    query = np.frombuffer(built.get(3).code, np.uint8)
    expected = _expected_distances(built, query)
    for radius in (0, 2, 5, BITS):
        hits = built.range_search(3, radius, rerank=False)
        assert {h.id for h in hits} == {i for i, d in expected.items() if d <= radius and i != 3}  # itself excluded
        assert [(h.distance, h.id) for h in hits] == sorted((h.distance, h.id) for h in hits)
        assert {h.id for h in built.range_search(3, radius)} == {h.id for h in hits}
    assert built.range_search(unpack_codes(query[None], BITS)[0], BITS)[0].distance == 0


def test_bad_queries_are_clear_errors(built):
    with pytest.raises(ValueError, match="32-bit"):
        built.search(np.zeros(16, dtype=bool))
    with pytest.raises(ValueError, match="a query is"):
        built.search(np.zeros((4, 4), dtype=np.float32))
    with pytest.raises(ValueError, match="cannot read"):
        built.search("/no/such/image.png")


# ---------------------------------------------------------------------------- refusing wrong inputs


def _model_copy(model_dir: Path, dest: Path, **changes) -> Path:
    """A copy of the model whose config.json claims other ``changes`` (fingerprint, bits)."""
    shutil.copytree(model_dir, dest)
    config = json.loads((dest / "config.json").read_text())
    (dest / "config.json").write_text(json.dumps(config | changes))
    return dest


def test_mismatched_model_is_refused(built, model_dir, tmp_path):
    other = _model_copy(model_dir, tmp_path / "other", fingerprint="0123456789abcdef")
    with pytest.raises(ModelMismatchError, match="fingerprint 0123456789abcdef"):
        Index.open(built.path, other)
    shorter = _model_copy(model_dir, tmp_path / "short", bits=16)
    with pytest.raises(ModelMismatchError, match="16-bit codes"):
        Index.open(built.path, shorter)


def test_recorded_model_overwritten_is_refused(tmp_path, model_dir):
    recorded = _model_copy(model_dir, tmp_path / "model")
    Index.create(tmp_path / "index", recorded).close()
    _model_copy(model_dir, tmp_path / "retrained", fingerprint="feedfeedfeedfeed")
    shutil.rmtree(recorded)
    (tmp_path / "retrained").rename(recorded)
    with pytest.raises(ModelMismatchError, match="not the model"):
        Index.open(tmp_path / "index")


def test_missing_model_still_searches_by_code(tmp_path, model_dir, built):
    moved = _model_copy(model_dir, tmp_path / "model")
    index = Index.create(tmp_path / "index", moved)
    index.add_paths([built.get(1).path, built.get(2).path], progress=False)
    index.close()
    shutil.rmtree(moved)
    with Index.open(tmp_path / "index") as reopened:
        assert len(reopened.search(1, k=1)) == 1
        with pytest.raises(FileNotFoundError, match="--model"):
            reopened.search(built.get(1).path)


def test_newer_format_version_is_refused(tmp_path, model_dir):
    Index.create(tmp_path / "index", model_dir).close()
    with sqlite3.connect(tmp_path / "index" / "meta.sqlite") as db:
        db.execute("UPDATE meta SET value = '99' WHERE key = 'format_version'")
    with pytest.raises(IndexFormatError, match="version 99 is newer"):
        Index.open(tmp_path / "index")


def test_open_and_create_errors(tmp_path, model_dir):
    with pytest.raises(FileNotFoundError, match="not an rshash index"):
        Index.open(tmp_path)
    Index.create(tmp_path / "index", model_dir).close()
    with pytest.raises(ValueError, match="already exists"):
        Index.create(tmp_path / "index", model_dir)
    with pytest.raises(ValueError, match="unknown index kind"):
        Index.create(tmp_path / "other", model_dir, kind="hnsw")


# ---------------------------------------------------------------------------- the faiss cache


def test_cache_is_rebuilt_when_missing_or_corrupt(fresh):
    index, images = fresh
    index.add_paths(images, progress=False)
    expected = index.search_by_id(1, k=5)
    for damage in (lambda f: f.unlink(), lambda f: f.write_bytes(f.read_bytes()[:20])):
        (cache,) = index.path.glob("cache-*.faiss")
        damage(cache)
        with Index.open(index.path) as reopened:
            assert reopened.search_by_id(1, k=5) == expected
        assert len(list(index.path.glob("cache-*.faiss"))) == 1


def test_reader_catches_up_with_another_writer(fresh, built):
    index, images = fresh
    index.add_paths(images, progress=False)
    with Index.open(index.path) as reader:
        assert len(reader.search_by_id(1, k=20)) == 7
        index.add_paths([built.get(1).path], progress=False)  # a copy's path differs: a new image
        index.remove([2])
        ids = [h.id for h in reader.search_by_id(1, k=20)]
        assert len(ids) == 7 and 2 not in ids and 9 in ids


@pytest.mark.parametrize("kind", ["multihash", "ivf"])
def test_kinds_give_flat_results_on_a_small_index(built, tmp_path, kind):
    shutil.copytree(built.path, tmp_path / "index")
    with Index.open(tmp_path / "index") as index:
        flat = {i: index.search_by_id(i, k=5) for i in (1, 4, 7)}
        index.set_kind(kind)
        for i, hits in flat.items():
            assert index.search_by_id(i, k=5) == hits  # the same order on every kind (ties by id)
            assert index.search_by_id(i, k=5, rerank=False) == built.search_by_id(i, k=5, rerank=False)
            assert {h.id for h in index.range_search(i, 4)} == {h.id for h in built.range_search(i, 4)}
        assert index.stats()["kind"] == kind and list(index.path.glob(f"cache-{kind}-*.faiss"))


@pytest.mark.parametrize("kind", ["multihash", "ivf"])
def test_sublinear_kinds_vs_flat_on_structured_codes(kind):
    """Recall@20 (ties counted as hits) on 20k clustered 64-bit codes; range search exact."""
    source = ClusteredCodes(bits=64, centres=200, seed=3)
    codes, queries = source.sample(20_000), source.sample(100)
    ids = np.arange(100, 100 + len(codes), dtype=np.int64)
    flat = CodeIndex.build("flat", 64, ids, codes)
    approx = CodeIndex.build(kind, 64, ids, codes)
    recalls = []
    for q in queries:
        exact_d, _ = flat.search(q, 20)
        d, found = approx.search(q, 20)
        assert len(found) == 20 and np.all(np.isin(found, ids))
        recalls.append(min(20, np.count_nonzero(d <= exact_d[-1])) / 20)
        assert np.array_equal(np.sort(approx.range_search(q, 6)[1]), np.sort(flat.range_search(q, 6)[1]))
    assert np.mean(recalls) >= 0.95


def test_ivf_removal_and_growth():
    source = ClusteredCodes(bits=64, centres=50, seed=4)
    codes = source.sample(3000)
    index = CodeIndex.build("ivf", 64, np.arange(3000), codes)
    assert index.remove(np.arange(1000)) and index.ntotal == 2000
    _, found = index.search(codes[5], 3)
    assert 5 not in found
    index.add(np.arange(3000, 3000 + 60_000), source.sample(60_000))
    assert index.needs_rebuild()  # 4x the codes its lists were trained for


# ---------------------------------------------------------------------------- CLI


def test_cli_index_search_remove(tmp_path, model_dir, capsys):
    images = write_images(tmp_path / "images")
    out = tmp_path / "index"
    assert cli_main(["index", "--model", str(model_dir), "--images", str(images), "--out", str(out),
                     "--batch-size", "4", "--kind", "ivf"]) == 0
    assert "8 added" in capsys.readouterr().out
    report = json.loads((out / REPORT_NAME).read_text())
    assert report["added"] == 8 and report["skipped"][0]["path"].endswith("corrupt.png")

    query = images / "stripes" / "stripes1.png"
    assert cli_main(["search", "--index", str(out), str(query), "--k", "3", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert len(result["results"]) == 3 and result["results"][0]["distance"] == 0
    assert {"rank", "distance", "path", "label", "id"} <= set(result["results"][0])

    assert cli_main(["search", "--index", str(out), "--id", "1", "--radius", str(BITS)]) == 0
    table = capsys.readouterr().out.splitlines()
    # header + the 7 others: --id excludes the query itself, with --radius too
    assert table[0].split() == ["rank", "dist", "sim", "id", "label", "path"] and len(table) == 8
    assert all(row.split()[3] != "1" for row in table[1:])
    assert cli_main(["search", "--index", str(out), str(query), "--rerank", "off", "--label", "field", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert {r["label"] for r in result["results"]} == {"field"} and result["rerank"] is False

    assert cli_main(["index", "--out", str(out), "--remove", "1", "2"]) == 0
    assert "removed 2" in capsys.readouterr().out
    assert cli_main(["index", "--out", str(out), "--images", str(images)]) == 0  # recorded model, kind kept
    assert "2 added, 0 updated, 6 unchanged" in capsys.readouterr().out


def test_cli_errors_are_one_line(tmp_path, model_dir, capsys):
    assert cli_main(["index", "--images", str(tmp_path), "--out", str(tmp_path / "new")]) == 2
    assert "a model is needed" in capsys.readouterr().err
    assert cli_main(["search", "--index", str(tmp_path / "none"), "--id", "1"]) == 2
    assert "not an rshash index" in capsys.readouterr().err


def test_cli_kind_choices_match_the_library():
    assert tuple(KIND_CHOICES) == tuple(KINDS)
