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
