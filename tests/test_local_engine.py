"""The local engine: several single-threaded encodes at once give the same rows, in work order."""

from __future__ import annotations

import numpy as np
import pytest

from rshash.encoder import Encoder
from rshash.encoding.items import Loaded
from rshash.encoding.local import LocalEngine
from rshash.encoding.report import UNREADABLE, Outcome


def pixels_loader(size: int):
    """A loader of work ``(name, seed)``: seeded pixels, or an outcome for seed < 0."""

    def load(work):
        out = []
        for name, seed in work:
            if seed < 0:
                out.append(Outcome(name, UNREADABLE, "bad"))
            else:
                px = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
                out.append(Loaded(name, "sha", size, size, px))
        return out

    return load


def run(engine: LocalEngine, work, batch_size: int):
    names, codes, descriptors, outcomes = [], [], [], []
    for batch in engine.encode(work, pixels_loader(engine.encoder.input_size), batch_size):
        names += [it.path for it in batch.items]
        codes.append(batch.codes)
        descriptors.append(batch.descriptors)
        outcomes += [o.path for o in batch.outcomes]
    return names, np.concatenate(codes), np.concatenate(descriptors), outcomes


def test_two_workers_give_the_same_codes_in_work_order(small_model_dir):
    encoder = Encoder(small_model_dir, threads=2)
    work = [(f"item{i}", -1 if i == 5 else i) for i in range(23)]
    one = run(LocalEngine(encoder, workers=1), work, batch_size=4)
    two = LocalEngine(encoder, workers=2)
    assert two.encoder is not encoder and two.encoder.threads == 1 and two.encoder is encoder.with_threads(1)
    got = run(two, work, batch_size=4)
    assert got[0] == one[0] == [f"item{i}" for i in range(23) if i != 5]
    np.testing.assert_array_equal(got[1], one[1])
    np.testing.assert_allclose(got[2], one[2], atol=1e-6)
    assert got[3] == one[3] == ["item5"]


def test_a_loader_error_comes_after_the_batches_loaded_before_it(small_model_dir):
    encoder = Encoder(small_model_dir, threads=2)
    inner = pixels_loader(encoder.input_size)
    calls = {"n": 0}

    def loader(work):
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError("read failed")
        return inner(work)

    seen = []
    with pytest.raises(OSError, match="read failed"):
        for batch in LocalEngine(encoder, workers=2).encode([(f"i{i}", i) for i in range(20)], loader, 4):
            seen += [it.path for it in batch.items]
    assert seen == [f"i{i}" for i in range(8)]
