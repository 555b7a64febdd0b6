"""A large index's vector table is served memory-mapped from its directory, with the same results."""

from __future__ import annotations

import numpy as np

from rshash.index import Index
from rshash.index import vectors as vectors_module


def build(model_dir, path, n: int = 12):
    rng = np.random.default_rng(0)
    Index.create(path, model_dir).close()
    files = []
    from PIL import Image

    for i in range(n):
        f = path.parent / f"img{i}.png"
        Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(f)
        files.append(f)
    return files


def test_the_table_is_mapped_and_searches_the_same(small_model_dir, tmp_path, monkeypatch):
    files = build(small_model_dir, tmp_path / "index")
    with Index.open(tmp_path / "index") as index:
        index.add_paths(files[:10], progress=False)
        in_memory = [(h.id, h.score) for h in index.search(1, k=5)]
    monkeypatch.setattr(vectors_module, "MMAP_MIN_ROWS", 5)
    with Index.open(tmp_path / "index") as index:
        mapped = [(h.id, h.score) for h in index.search(1, k=5)]
        table = index._live.table
        assert isinstance(table.descriptors, np.memmap)
        assert index.stats()["images"] == 10
    assert mapped == in_memory
    first = sorted(p.name for p in (tmp_path / "index").glob("vectors-g*"))
    assert len(first) == 1
    inode = next((tmp_path / "index").glob("vectors-g*/descriptors.npy")).stat().st_ino
    with Index.open(tmp_path / "index") as index:  # the saved files are reused as they are
        index.search(2, k=3)
        assert isinstance(index._live.table.descriptors, np.memmap)
        assert next((tmp_path / "index").glob("vectors-g*/descriptors.npy")).stat().st_ino == inode
        index.add_paths(files[10:], progress=False)  # a new generation: in memory until the next open
        assert len(index._live.table) == 12
    with Index.open(tmp_path / "index") as index:
        assert len(index.search(1, k=20)) == 11
        assert isinstance(index._live.table.descriptors, np.memmap)
    second = sorted(p.name for p in (tmp_path / "index").glob("vectors-g*"))
    assert len(second) == 1 and second != first  # the older generation's files are gone


def test_a_small_table_stays_in_memory(small_model_dir, tmp_path):
    files = build(small_model_dir, tmp_path / "index", n=3)
    with Index.open(tmp_path / "index") as index:
        index.add_paths(files, progress=False)
        index.search(1, k=2)
        assert not isinstance(index._live.table.descriptors, np.memmap)
    assert not list((tmp_path / "index").glob("vectors-g*"))


def test_a_saved_table_of_the_current_generation_opens_without_reading_the_rows(small_model_dir, tmp_path, monkeypatch):
    """The next process opens a large index from the table saved for its generation (memory-mapped) and the
    saved code index, without reading every row of SQLite; a saved table that does not agree is not used."""
    from rshash.index.store import Store

    files = build(small_model_dir, tmp_path / "index")
    monkeypatch.setattr(vectors_module, "MMAP_MIN_ROWS", 5)
    with Index.open(tmp_path / "index") as index:
        index.add_paths(files[:10], progress=False)
        expected = [(h.id, h.score) for h in index.search(1, k=5)]  # the writer saves the table and the cache
    full_reads = []
    original = Store.codes_since

    def counting(self, generation, *args, **kwargs):
        full_reads.append(generation)
        return original(self, generation, *args, **kwargs)

    monkeypatch.setattr(Store, "codes_since", counting)
    with Index.open(tmp_path / "index") as index:
        assert [(h.id, h.score) for h in index.search(1, k=5)] == expected
        assert isinstance(index._live.table.descriptors, np.memmap)
    assert None not in full_reads  # no full read of SQLite's rows

    saved = next((tmp_path / "index").glob("vectors-g*"))
    np.save(saved / "ids.npy", np.load(saved / "ids.npy")[:-1])  # a table that disagrees (files out of step)
    np.save(saved / "codes.npy", np.load(saved / "codes.npy")[:-1])
    np.save(saved / "descriptors.npy", np.load(saved / "descriptors.npy")[:-1])
    np.save(saved / "norms.npy", np.load(saved / "norms.npy")[:-1])
    full_reads.clear()
    with Index.open(tmp_path / "index") as index:
        assert [(h.id, h.score) for h in index.search(1, k=5)] == expected
        assert len(index._live.table) == 10
    assert None in full_reads  # read from SQLite instead
