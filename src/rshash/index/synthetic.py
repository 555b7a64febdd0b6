"""Synthetic binary codes shaped like a trained model's, for index tests and benchmarks.

Real codes are not uniform: images of one scene type land near one code and
differ by a few bits. Uniform random codes would make every index look bad
(no near neighbours) or flatter sub-linear ones unrealistically, so codes here
are cluster centres with per-cluster bit noise.
"""

from __future__ import annotations

import numpy as np

#: Codes generated per chunk, to bound the temporary noise matrix (chunk x bits float32).
_CHUNK = 262_144


class ClusteredCodes:
    """Packed codes: ``centres`` random centres, each bit flipped with a per-centre probability."""

    def __init__(self, bits: int = 64, centres: int = 4000, flip: tuple[float, float] = (0.02, 0.12), seed: int = 0):
        if bits % 8:
            raise ValueError(f"bits must be a multiple of 8, got {bits}")
        self.bits = bits
        self._rng = np.random.default_rng(seed)
        self.centres = np.packbits(self._rng.random((centres, bits)) < 0.5, axis=1)
        self.flip = self._rng.uniform(*flip, size=centres).astype(np.float32)

    def sample(self, n: int) -> np.ndarray:
        """``n`` codes, ``uint8 (n, bits/8)``, from uniformly chosen centres."""
        out = np.empty((n, self.bits // 8), dtype=np.uint8)
        for start in range(0, n, _CHUNK):
            m = min(_CHUNK, n - start)
            centre = self._rng.integers(0, len(self.centres), size=m)
            noise = self._rng.random((m, self.bits), dtype=np.float32) < self.flip[centre, None]
            out[start : start + m] = self.centres[centre] ^ np.packbits(noise, axis=1)
        return out


class RealisticCodes:
    """Codes and descriptors like a real archive's: real items of the model (seeds) plus same-place noise.

    Fitted on real model outputs: ``logits`` (pre-sigmoid, ``(S, bits)``) and float ``descriptors`` of the seeds,
    and ``pairs`` of row indices that show the same place twice (another view or acquisition: ``(a, b)``, ``a``
    the reference). Each generated item is a uniformly drawn seed whose logits get Gaussian noise per bit, with a
    per-bit scale chosen so the expected flip rate over the seeds equals the bit's flip rate measured on the pairs
    (bits near 0.5 flip more often than confident ones, as real codes do), and whose descriptor gets Gaussian noise
    with the per-dimension spread of the pairs' differences; descriptors are then quantised as an index stores
    them. ``noise_scale`` multiplies both noises (1: the pairs' spread; a benchmark calibrates it where items of one
    kind cluster more tightly than independent noise around their seed gives). Seeded: the same arguments give the
    same items.
    """

    def __init__(self, logits: np.ndarray, descriptors: np.ndarray, pairs: np.ndarray, seed: int = 0,
                 noise_scale: float = 1.0):
        from scipy.special import ndtr

        logits = np.asarray(logits, dtype=np.float32)
        descriptors = np.asarray(descriptors, dtype=np.float32)
        pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
        if len(logits) != len(descriptors) or not len(pairs) or logits.shape[1] % 8:
            raise ValueError("logits and descriptors need one row per seed, pairs at least one pair, bits % 8 == 0")
        self.bits, self.dims = logits.shape[1], descriptors.shape[1]
        self.logits, self.descriptors = logits, descriptors
        a, b = pairs[:, 0], pairs[:, 1]
        self.flip_rate = ((logits[a] > 0) != (logits[b] > 0)).mean(axis=0)  # (bits,)
        self.descriptor_noise = (descriptors[b] - descriptors[a]).std(axis=0)  # (dims,)
        margin = np.abs(logits)  # flip when the noise crosses the margin: P = Phi(-|logit| / scale)
        self.logit_noise = np.zeros(self.bits, dtype=np.float32)
        for j in range(self.bits):
            lo, hi = 1e-6, 1e3
            for _ in range(60):  # bisection on the mean flip probability (monotone in the scale)
                mid = np.sqrt(lo * hi)
                lo, hi = (mid, hi) if ndtr(-margin[:, j] / mid).mean() < self.flip_rate[j] else (lo, mid)
            self.logit_noise[j] = np.sqrt(lo * hi)
        self.noise_scale = float(noise_scale)
        self._rng = np.random.default_rng(seed)

    def sample(self, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(packed codes uint8 (n, bits/8), int8 descriptors (n, dims), seed rows (n,))``."""
        from ..ranking import quantize_descriptors

        codes = np.empty((n, self.bits // 8), dtype=np.uint8)
        descriptors = np.empty((n, self.dims), dtype=np.int8)
        seeds = np.empty(n, dtype=np.int64)
        for start in range(0, n, _CHUNK):
            m = min(_CHUNK, n - start)
            s = self._rng.integers(0, len(self.logits), size=m)
            noise = self._rng.standard_normal((m, self.bits), dtype=np.float32) * (self.logit_noise * self.noise_scale)
            codes[start : start + m] = np.packbits(self.logits[s] + noise > 0, axis=1)
            d = self.descriptors[s] + self._rng.standard_normal((m, self.dims), dtype=np.float32) * (
                self.descriptor_noise * self.noise_scale)
            descriptors[start : start + m] = quantize_descriptors(d)
            seeds[start : start + m] = s
        return codes, descriptors, seeds
