"""The realistic code generator: it reproduces the flip rates it was fitted on and is seeded."""

from __future__ import annotations

import numpy as np

from rshash.index.synthetic import RealisticCodes


def fitted(seed: int = 0) -> RealisticCodes:
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, (400, 16)).astype(np.float32)
    descriptors = rng.normal(0, 1, (400, 8)).astype(np.float32)
    # pairs: row i and a copy of it with some bits' logits pushed across zero
    flips = np.linspace(0.0, 0.3, 16)
    copy = np.where(rng.random((400, 16)) < flips, -logits, logits)
    logits2 = np.concatenate([logits, copy])
    desc2 = np.concatenate([descriptors, descriptors + rng.normal(0, 0.5, descriptors.shape)])
    pairs = np.stack([np.arange(400), np.arange(400) + 400], axis=1)
    return RealisticCodes(logits2, desc2, pairs, seed=seed)


def test_generated_items_flip_bits_at_the_measured_rates():
    gen = fitted()
    codes, descriptors, seeds = gen.sample(40000)
    assert codes.shape == (40000, 2) and descriptors.dtype == np.int8 and descriptors.shape == (40000, 8)
    seed_bits = np.packbits(gen.logits[seeds] > 0, axis=1)
    flipped = np.unpackbits(codes ^ seed_bits, axis=1).mean(axis=0)
    np.testing.assert_allclose(flipped, gen.flip_rate, atol=0.01)
    assert gen.flip_rate[0] < 0.01 and gen.flip_rate[-1] > 0.25  # the fitted rates span what the pairs show
    np.testing.assert_allclose(gen.descriptor_noise, 0.5, atol=0.06)


def test_the_same_seed_gives_the_same_items():
    a, b = fitted(seed=3).sample(1000), fitted(seed=3).sample(1000)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a[0], fitted(seed=4).sample(1000)[0])


def test_a_saved_vector_table_opens_memory_mapped_with_the_same_rows(tmp_path):
    from rshash.index.vectors import VectorTable
    from rshash.ranking import descriptor_norms

    codes, descriptors, _ = fitted().sample(500)
    ids = np.arange(500, dtype=np.int64) * 3
    table = VectorTable(ids, codes, descriptors, descriptor_norms(descriptors))
    table.save(tmp_path / "vectors")
    opened = VectorTable.open(tmp_path / "vectors")
    assert isinstance(opened.descriptors, np.memmap) and len(opened) == 500
    pos = opened.positions(np.array([9, 10, 1497]))
    np.testing.assert_array_equal(pos, [3, 499])
    np.testing.assert_array_equal(opened.hamming(codes[0], pos), table.hamming(codes[0], pos))
    np.testing.assert_allclose(opened.similarity(descriptors[0], pos), table.similarity(descriptors[0], pos))
