"""Milvus as the code backend (Milvus Lite, a local file): equal to faiss flat on the same codes, updates and
resync from SQLite, the Index facade and the CLI on it, and nothing imports pymilvus unless asked."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from scenes import write_scenes
from rshash.index import Index
from rshash.index.backends import backend_meta
from rshash.index.backends.faiss import CodeIndex
from rshash.index.synthetic import ClusteredCodes

BITS = 64


@pytest.fixture(scope="module")
def milvus(tmp_path_factory):
    """The Milvus backend module with a Lite file it has opened once; skipped where Lite cannot start."""
    try:
        from rshash.index.backends import milvus
    except ImportError as exc:
        pytest.skip(f"pymilvus / milvus-lite not installed (pip install -e '.[milvus]'): {exc}")
    probe = str(tmp_path_factory.mktemp("milvus-probe") / "probe.db")
    try:
        milvus.CLIENTS.acquire(probe)
    except Exception as exc:  # noqa: BLE001 - any failure to start the Lite server means: cannot test here
        pytest.skip(f"Milvus Lite cannot start on this machine: {exc!r}")
    milvus.CLIENTS.release(probe)
    return milvus


@pytest.fixture(scope="module")
def codes():
    data = ClusteredCodes(bits=BITS, centres=200, seed=3)
    base, queries = data.sample(3000), data.sample(30)
    return np.arange(1, len(base) + 1, dtype=np.int64) * 3, base, queries  # ids need not be dense


@pytest.fixture()
def backend(milvus, tmp_path):
    b = milvus.MilvusBackend(str(tmp_path / "codes.db"), "test_codes")
    yield b
    b.close()


def _assert_same_knn(milvus_result, faiss_result, codes_by_id, query, k):
    """Distances equal rank by rank; ids equal except among ties at the k-th distance (which must be real)."""
    (dm, im), (df, i_f) = milvus_result, faiss_result
    assert len(im) == len(i_f) == k
    assert dm.dtype == np.int32 and im.dtype == np.int64
    assert dm.tolist() == sorted(df.tolist())
    last = dm[-1]
    assert set(im[dm < last].tolist()) == set(i_f[df < last].tolist())
    true = np.bitwise_count(np.stack([codes_by_id[i] for i in im]) ^ query).sum(axis=1)
    assert true.tolist() == dm.tolist()


def _check_equal(index, flat, ids, base, queries, k=20):
    codes_by_id = dict(zip(ids.tolist(), base))
    for q in np.concatenate([queries, base[:10]]):
        _assert_same_knn(index.search(q, k), flat.search(q, k), codes_by_id, q, k)
    for q in queries[:10]:
        for radius in (0, 6, 12):
            dm, im = index.range_search(q, radius)
            df, i_f = flat.range_search(q, radius)
            assert dm.tolist() == df.tolist() and im.tolist() == i_f.tolist()  # both by distance, then id


def test_lite_flat_search_and_range_equal_faiss_flat(backend, codes):
    ids, base, queries = codes
    index = backend.build("flat", BITS, ids, base)
    flat = CodeIndex.build("flat", BITS, ids, base)
    assert index.ntotal == len(ids) and index.matches(ids, base)
    _check_equal(index, flat, ids, base, queries)
    assert index.search(queries[0], 0)[1].size == 0 and index.range_search(queries[0], -1)[1].size == 0


def test_add_remove_and_resync_from_the_source_of_truth(backend, codes):
    ids, base, queries = codes
    index = backend.build("flat", BITS, ids[:2000], base[:2000])
    index.remove(ids[:300])
    index.add(ids[2000:], base[2000:])
    index.add(ids[2000:2100], base[2000:2100])  # replayed twice (another process caught up too): no duplicates
    keep_ids, keep = ids[300:], base[300:]
    assert index.ntotal == len(keep_ids) and index.matches(keep_ids, keep)
    _check_equal(index, CodeIndex.build("flat", BITS, keep_ids, keep), keep_ids, keep, queries)

    # Out of step (a row lost, a stale one left): detected, and re-synced in place from SQLite's rows.
    index.remove(ids[500:510])
    index.add(ids[:1], base[:1])
    assert not index.matches(keep_ids, keep)
    reopened = backend.load("flat", BITS)
    assert reopened is not None and not reopened.matches(keep_ids, keep)
    resynced = backend.build("flat", BITS, keep_ids, keep)
    assert resynced.matches(keep_ids, keep)
    assert backend.load("ivf", BITS) is None  # another kind's index: not reused


def test_more_hits_than_milvus_returns_at_once(backend, codes, monkeypatch, milvus):
    ids, base, queries = codes
    index = backend.build("flat", BITS, ids, base)
    flat = CodeIndex.build("flat", BITS, ids, base)
    monkeypatch.setattr(milvus, "MAX_TOPK", 50)  # exercise the exact-scan fallbacks on small data
    radius = next(r for r in range(BITS + 1) if len(flat.range_search(queries[0], r)[1]) > 60)
    dm, im = index.range_search(queries[0], radius)
    df, i_f = flat.range_search(queries[0], radius)
    assert len(im) > 50 and dm.tolist() == df.tolist() and im.tolist() == i_f.tolist()
    dm, im = index.search(queries[1], 80)
    assert dm.tolist() == flat.search(queries[1], 80)[0].tolist()


@pytest.mark.parametrize("near", [0, 200])
@pytest.mark.parametrize("most", [None, 60])  # 60: ties beyond what Milvus returns at once (an exact scan here)
def test_ties_at_the_kth_distance_are_cut_by_id(backend, milvus, monkeypatch, near, most):
    """The backends' tie rule (tests/test_backends.py) on Milvus Lite: the 50 smallest (distance, id) pairs."""
    from test_backends import L, first_pairs, tied_codes

    ids, base, query = tied_codes(same=200 if near == 0 else 30, near=near)
    index = backend.build("flat", BITS, ids, base)
    if most is not None:
        monkeypatch.setattr(milvus, "MAX_TOPK", most)
    distances, found = index.search(query, L)
    expected_d, expected = first_pairs(ids, base, query, L)
    assert found.tolist() == expected.tolist() and distances.tolist() == expected_d.tolist()


def test_lite_refuses_ivf_and_unknown_settings():
    with pytest.raises(ValueError, match="Milvus Lite supports only BIN_FLAT"):
        backend_meta("milvus", None, "ivf")
    with pytest.raises(ValueError, match="no kind 'multihash'"):
        backend_meta("milvus", "http://milvus.example:19530", "multihash")
    with pytest.raises(ValueError, match="ending in .db"):
        backend_meta("milvus", "codes.sqlite", "flat")
    with pytest.raises(ValueError, match="unknown search backend"):
        backend_meta("qdrant", None, "flat")
    server = backend_meta("milvus", "http://milvus.example:19530", "ivf")  # a server builds BIN_IVF_FLAT
    assert server["milvus_uri"] == "http://milvus.example:19530" and server["milvus_collection"].startswith("rshash_")


# ---------------------------------------------------------------------------- the Index facade and CLI


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    return write_scenes(tmp_path_factory.mktemp("milvus-images"), ("a", "b"), per_class=8, seed=7)


def _results(hits):
    return [(h.id, h.distance, round(h.score, 6)) for h in hits]


def test_index_on_milvus_returns_what_the_faiss_index_returns(milvus, small_model_dir, images, tmp_path):
    with Index.create(tmp_path / "faiss", small_model_dir) as faiss_index, \
            Index.create(tmp_path / "milvus", small_model_dir, backend="milvus") as milvus_index:
        faiss_index.add_paths(images, progress=False)
        milvus_index.add_paths(images, progress=False)
        assert milvus_index.stats()["backend"] == "milvus" and (tmp_path / "milvus" / "milvus.db").exists()
        assert not list((tmp_path / "milvus").glob("cache-*.faiss"))
        for i in range(1, len(faiss_index) + 1):
            path = faiss_index.get(i).path
            assert _results(milvus_index.search(path, k=5)) == _results(faiss_index.search(path, k=5))
            assert _results(milvus_index.search(i, k=len(faiss_index), rerank=False)) == \
                _results(faiss_index.search(i, k=len(faiss_index), rerank=False))
            assert _results(milvus_index.range_search(i, 10)) == _results(faiss_index.range_search(i, 10))
        milvus_index.remove([2, 9])
        faiss_index.remove([2, 9])
        assert _results(milvus_index.search(1, k=20)) == _results(faiss_index.search(1, k=20))
        expected = _results(faiss_index.search(3, k=20))
    with Index.open(tmp_path / "milvus") as reopened:  # the recorded backend, the collection reused
        assert reopened.backend == "milvus" and len(reopened) == 14
        assert _results(reopened.search(3, k=20)) == expected
    with pytest.raises(ValueError, match="uses the milvus backend"):
        Index.open_or_create(tmp_path / "milvus", backend="faiss")
    with pytest.raises(ValueError, match="Milvus Lite supports only BIN_FLAT"):
        Index.create(tmp_path / "ivf", small_model_dir, kind="ivf", backend="milvus")


def test_cli_index_and_search_with_the_milvus_backend(milvus, small_model_dir, images, tmp_path, capsys):
    from rshash.cli import main

    uri = tmp_path / "elsewhere" / "archive.db"
    uri.parent.mkdir()
    out = tmp_path / "index"
    assert main(["index", "--model", str(small_model_dir), "--images", str(images / "a"), "--out", str(out),
                 "--backend", "milvus", "--uri", str(uri)]) == 0
    assert uri.exists()
    capsys.readouterr()
    assert main(["search", "--index", str(out), "--id", "1", "--k", "3", "--json"]) == 0
    hits = json.loads(capsys.readouterr().out)
    hits = hits["results"] if isinstance(hits, dict) else hits
    assert len(hits) == 3 and 1 not in [h["id"] for h in hits]


def test_nothing_imports_pymilvus_without_the_milvus_backend():
    code = "import rshash.cli, rshash.index; import sys; assert 'pymilvus' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_a_searching_process_does_not_write_to_the_shared_collection(milvus, small_model_dir, images, tmp_path,
                                                                      monkeypatch):
    """Two Index objects on one Lite collection (as two processes on one server): the writer's changes reach
    the reader's results through the writer's own writes; the reader's catch-up writes nothing to Milvus."""
    paths = sorted(str(p) for p in Path(images).rglob("*.png"))
    with Index.create(tmp_path / "index", small_model_dir, backend="milvus") as writer:
        writer.add_paths(paths[:8], progress=False)
        with Index.open(tmp_path / "index") as reader:
            assert len(reader.search(1, k=20)) == 7
            writer.add_paths(paths[8:12], progress=False)  # the writer writes to Milvus for real
            writer.remove([2])
            writes = []
            monkeypatch.setattr(milvus.MilvusCodes, "add", lambda self, *a, **k: writes.append("add"))
            monkeypatch.setattr(milvus.MilvusCodes, "remove", lambda self, *a, **k: writes.append("remove") or True)
            found = reader.search(1, k=20)
            assert writes == []  # the reader replayed the changes into its table only
            assert sorted(h.id for h in found) == [3, 4, 5, 6, 7, 8, 9, 10, 11, 12]


def test_reopening_compares_a_recorded_digest_instead_of_streaming_every_code(milvus, small_model_dir, images,
                                                                               tmp_path, monkeypatch):
    paths = sorted(str(p) for p in Path(images).rglob("*.png"))
    with Index.create(tmp_path / "index", small_model_dir, backend="milvus") as index:
        index.add_paths(paths[:10], progress=False)
        index.search(1, k=3)
        index.remove([4])  # an in-place change: recorded again by the writer
        expected = _results(index.search(1, k=20))

    def no_stream(self, with_codes=True):
        raise AssertionError("streamed every code out of Milvus")

    monkeypatch.setattr(milvus.MilvusCodes, "stored", no_stream)
    with Index.open(tmp_path / "index") as reopened:
        assert _results(reopened.search(1, k=20)) == expected
    monkeypatch.undo()
    # a collection changed behind rshash's back (a row deleted): the row count disagrees, it is resynced
    client = milvus.CLIENTS.acquire(str(tmp_path / "index" / "milvus.db"))
    try:
        collection = [c for c in client.list_collections() if not c.endswith(milvus.STATE_SUFFIX)][0]
        client.delete(collection, ids=[5])
    finally:
        milvus.CLIENTS.release(str(tmp_path / "index" / "milvus.db"))
    with Index.open(tmp_path / "index") as reopened:
        assert _results(reopened.search(1, k=20)) == expected
