"""Binary codes: bool matrices <-> packed bytes (faiss binary indexes take packed uint8)."""

from __future__ import annotations

import numpy as np


def pack_codes(bits: np.ndarray) -> np.ndarray:
    """``(N, K) bool`` -> ``(N, K/8) uint8`` (bit 0 is the most significant bit of byte 0)."""
    bits = np.asarray(bits, dtype=bool)
    if bits.ndim != 2 or bits.shape[1] % 8:
        raise ValueError(f"expected (N, K) with K a multiple of 8, got {bits.shape}")
    return np.packbits(bits, axis=1)


def unpack_codes(packed: np.ndarray, bits: int) -> np.ndarray:
    return np.unpackbits(np.asarray(packed, dtype=np.uint8), axis=1, count=bits).astype(bool)


def hamming_matrix(queries: np.ndarray, database: np.ndarray) -> np.ndarray:
    """All-pairs Hamming distances between packed codes, ``(Q, N) int32``."""
    q = np.asarray(queries, dtype=np.uint8)
    d = np.asarray(database, dtype=np.uint8)
    out = np.zeros((q.shape[0], d.shape[0]), dtype=np.int32)
    for byte in range(q.shape[1]):
        out += np.bitwise_count(q[:, byte, None] ^ d[None, :, byte])
    return out
