"""The search core under concurrency: per-call IVF probes (nothing shared is set by a search), searches that
run in parallel, full rebuilds in the background while searches go on, and the public committed generation."""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from rshash.index import Index
from rshash.index.backends.faiss import CodeIndex
from rshash.index.store import NewImage
from rshash.index.synthetic import ClusteredCodes
from rshash.model_config import ModelConfig

BITS = 64
DIMS = 8


@pytest.fixture
def model_dir(tmp_path) -> Path:
    """A model directory with only its config: enough to create and search an index by code or id."""
    path = tmp_path / "model"
    path.mkdir()
    config = ModelConfig(bits=BITS, descriptor_dims=DIMS, input_size=224, fingerprint="0123456789abcdef")
    (path / "config.json").write_text(json.dumps(config.to_dict()))
    return path


def _add(index: Index, codes: np.ndarray, seed: int = 0) -> list[int]:
    """Commit rows with these packed codes (and random descriptors) as one change."""
    rng = np.random.default_rng(seed)
    start = len(index)
    rows = [
        NewImage(f"/img/{seed}-{start + i}.png", "a" if i % 2 else "b", 8, 8, "0" * 64, "t", c.tobytes(),
                 rng.integers(-127, 128, DIMS, dtype=np.int8).tobytes())
        for i, c in enumerate(codes)
    ]
    return index._store.add(rows)


def _code(packed: np.ndarray) -> np.ndarray:
    return np.unpackbits(packed)[:BITS].astype(bool)


# ---------------------------------------------------------------------------- per-call parameters


def test_ivf_search_sets_nothing_on_the_shared_index():
    source = ClusteredCodes(bits=BITS, centres=100, seed=1)
    codes, queries = source.sample(4000), source.sample(30)
    index = CodeIndex.build("ivf", BITS, np.arange(len(codes)), codes)
    exact = CodeIndex.build("flat", BITS, np.arange(len(codes)), codes)
    nlist = index.index.nlist
    assert nlist > 1 and index.index.nprobe == nlist
    for k, nprobe in [(1, None), (5, 1), (50, 2), (3, None)]:
        index.search(codes[0], k, nprobe=nprobe)
        index.range_search(codes[0], 3)
        assert index.index.nprobe == nlist  # a search never changes the index
    # the per-call value is honoured: one list misses some true neighbours, every list none
    missed = {n: sum(not np.array_equal(index.search(q, 20, nprobe=n)[0], exact.search(q, 20)[0]) for q in queries)
              for n in (1, nlist)}
    assert missed[nlist] == 0 and missed[1] > 0, missed


def test_concurrent_ivf_searches_with_different_k_match_sequential_ones():
    source = ClusteredCodes(bits=BITS, centres=200, seed=2)
    codes, queries = source.sample(20_000), source.sample(40)
    index = CodeIndex.build("ivf", BITS, np.arange(len(codes)), codes)
    jobs = [(q, k) for q in queries for k in (1, 20, 200)]
    expected = [index.search(q, k) for q, k in jobs]
    with ThreadPoolExecutor(max_workers=6) as pool:
        got = list(pool.map(lambda job: index.search(*job), jobs))
    for (d0, i0), (d1, i1) in zip(expected, got):
        assert np.array_equal(d0, d1) and np.array_equal(i0, i1)


# ---------------------------------------------------------------------------- no lock between searches


@pytest.mark.parametrize("kind", ["flat", "ivf"])
def test_searches_run_in_parallel(tmp_path, model_dir, monkeypatch, kind):
    """Two searches are inside faiss at once (a process-wide lock would make them wait for each other)."""
    index = Index.create(tmp_path / "index", model_dir, kind=kind)
    codes = ClusteredCodes(bits=BITS, centres=20, seed=3).sample(300)
    _add(index, codes)
    index.search(1, k=5)  # loaded before the race
    inside = threading.Barrier(2, timeout=10)
    real = CodeIndex.search

    def meeting(self, *args, **kwargs):
        inside.wait()  # both searches must get here before either goes on
        return real(self, *args, **kwargs)

    monkeypatch.setattr(CodeIndex, "search", meeting)
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(lambda i: index.search(i, k=5), [1, 2]))
    assert [len(r) for r in results] == [5, 5]
    index.close()


# ---------------------------------------------------------------------------- rebuilds off the request path


@pytest.mark.parametrize("kind", ["multihash", "ivf"])
def test_a_full_rebuild_runs_in_the_background_while_searches_go_on(tmp_path, model_dir, monkeypatch, kind):
    """Another process commits a change the structure cannot take in place (a removal from multihash, IVF lists
    outgrown): searches keep answering from the previous structures, never with removed images, while a
    background thread rebuilds; then the new structures are used, with the same order as an exact index."""
    source = ClusteredCodes(bits=BITS, centres=30, seed=4)
    first = source.sample(200)
    reader = Index.create(tmp_path / "index", model_dir, kind=kind)
    _add(reader, first)
    reader.search(1, k=10)  # the reader's structures, at this generation
    before = reader._live.generation
    assert before == reader.generation

    writer = Index.open(tmp_path / "index")
    writer.remove([3])
    new_ids = _add(writer, source.sample(600), seed=1) if kind == "ivf" else []
    assert reader.generation > before  # committed, seen through the public generation

    release = threading.Event()
    real_build = CodeIndex.build

    def slow_build(*args, **kwargs):
        assert threading.current_thread() is not threading.main_thread(), "rebuilt on the request path"
        assert release.wait(30)
        return real_build(*args, **kwargs)

    monkeypatch.setattr(CodeIndex, "build", staticmethod(slow_build))
    query = _code(first[3])
    hits = reader.search(query, k=10)  # answered at once, from the previous structures
    assert reader._live.rebuilding and reader._live.generation == before
    assert 3 not in [h.id for h in hits] and len(hits) == 10  # a removed image is never returned
    assert all(h.id not in new_ids for h in hits)  # not found before the rebuild is in (stale, but committed)

    release.set()
    assert reader._live.wait(30)
    assert reader._live.generation == reader.generation
    monkeypatch.setattr(CodeIndex, "build", staticmethod(real_build))
    exact = Index.open(tmp_path / "index")
    exact.set_kind("flat")
    for q in (1, 2, 50, query):
        assert reader.search(q, k=10) == exact.search(q, k=10)  # same order, ties by id
        assert reader.search(q, k=10, rerank=False) == exact.search(q, k=10, rerank=False)
    for index in (reader, writer, exact):
        index.close()


def test_small_changes_are_replayed_inline(tmp_path, model_dir):
    index = Index.create(tmp_path / "index", model_dir, kind="flat")
    codes = ClusteredCodes(bits=BITS, centres=10, seed=5).sample(100)
    _add(index, codes)
    index.search(1, k=3)
    other = Index.open(tmp_path / "index")
    other.remove([2])
    (added,) = _add(other, codes[:1], seed=2)
    hits = index.search(_code(codes[0]), k=3)
    assert not index._live.rebuilding and index._live.generation == index.generation
    assert {1, added} <= {h.id for h in hits} and 2 not in [h.id for h in index.search(_code(codes[1]), k=3)]
    other.close()
    index.close()


def test_generation_is_public_and_counts_commits(tmp_path, model_dir):
    index = Index.create(tmp_path / "index", model_dir)
    assert index.generation == 0 == index.stats()["generation"]
    _add(index, ClusteredCodes(bits=BITS, centres=5, seed=6).sample(10))
    index.remove([1])
    assert index.generation == 2 == index.stats()["generation"]
    index.close()


# ---------------------------------------------------------------------------- the shortlist boundary


def test_every_kind_shortlists_the_same_tied_codes(tmp_path, model_dir):
    """Codes tied at the shortlist's last distance are cut by id on every kind, so the re-ranked results (which
    depend on which tied codes made the shortlist) are the same on flat, multihash, ivf and the filtered path."""
    from test_backends import tied_codes

    _, codes, query = tied_codes(same=30, near=200, far=1500, seed=3)
    order = np.random.default_rng(3).permutation(len(codes))  # tied codes spread over the ids
    results = {}
    for kind in ("flat", "multihash", "ivf"):
        with Index.create(tmp_path / kind, model_dir, kind=kind) as index:
            _add(index, codes[order])
            index.remove([int(order.argmin()) + 1])  # replayed in place where the kind allows it
            _add(index, codes[:1], seed=1)
            for options in ({}, {"labels": ["a", "b"]}, {"rerank": False}):
                results[kind, *options] = [(h.id, h.distance) for h in
                                           index.search(_code(query), k=50, shortlist=50, **options)]
    for options in ((), ("labels",), ("rerank",)):
        assert results["multihash", *options] == results["ivf", *options] == results["flat", *options]
    assert results["flat",] == results["flat", "labels"]
