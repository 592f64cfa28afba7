"""Bit packing of +-1 codes and 0/1 labels into little-endian uint64 words (+1 -> bit set).

Bit ``k`` of a code lands in word ``k // 64`` at bit position ``k % 64``. Labels are packed the same way, so
that two items are relevant iff the AND of their label words is non-zero.
"""

from __future__ import annotations

import numpy as np

_PACK_ROWS = 1 << 16  # rows packed at a time, so the temporary bool matrix stays small


def packed_words(n_bits: int) -> int:
    return max(1, (n_bits + 63) // 64)


def pack_bits(positive: np.ndarray) -> np.ndarray:
    """Pack a (n, K) array whose truthy entries are set bits into (n, ceil(K/64)) uint64 words."""
    n, k = positive.shape
    n_words = packed_words(k)
    out = np.zeros((n, n_words * 8), dtype=np.uint8)
    for start in range(0, n, _PACK_ROWS):
        block = np.asarray(positive[start:start + _PACK_ROWS]) > 0
        packed = np.packbits(block, axis=1, bitorder="little")
        out[start:start + len(block), :packed.shape[1]] = packed
    return out.view("<u8").astype(np.uint64, copy=False)


def pack_codes(codes: np.ndarray) -> np.ndarray:
    """Pack validated +-1 codes (numpy) into uint64 words."""
    return pack_bits(codes)


def pack_labels(labels: np.ndarray) -> np.ndarray:
    """Pack validated 0/1 multi-hot labels into uint64 words."""
    return pack_bits(labels)


def pack_codes_bytes(codes: np.ndarray) -> np.ndarray:
    """Pack +-1 codes into uint8 bytes with K padded to a multiple of 8 (the layout FAISS binary indexes use)."""
    n, k = codes.shape
    n_bytes = (k + 7) // 8
    return pack_bits(codes).view(np.uint8)[:, :n_bytes].copy()
