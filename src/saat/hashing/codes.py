"""Seeded construction of the fixed +-1 codes the centre-based losses need (docs/hashing.md#hashing-methods), and the
sign rule.

Everything here runs on CPU with an explicit ``torch.Generator`` so that one seed gives the same codes on
every device; callers register the results as buffers and let ``.to(device)`` move them.
"""

from __future__ import annotations

import math

import torch

from ..utils import rng

# Codes up to this length are drawn exactly (uniformly among the admissible distinct codes, by enumerating
# them); longer ones are drawn i.i.d. and the rare duplicates redrawn.
_ENUMERATE_MAX_BITS = 16
_MAX_REDRAW_ROUNDS = 1000


def seeded_generator(seed: int, purpose: str, *counters: int) -> torch.Generator:
    """The generator of one fixed-code construction: :func:`saat.utils.rng.seeded_generator` with 64-bit seeds
    (the hashing methods' streams since the first release)."""
    return rng.seeded_generator(seed, purpose, *counters, bits=64)


def sylvester_hadamard(k: int) -> torch.Tensor:
    """The k x k Sylvester Hadamard matrix (+-1, float32); k must be a power of 2. Rows are mutually orthogonal."""
    if k < 1 or k & (k - 1):
        raise ValueError(f"a Sylvester Hadamard matrix needs a power of 2, got {k}")
    h = torch.ones(1, 1)
    while h.shape[0] < k:
        h = torch.cat([torch.cat([h, h], 1), torch.cat([h, -h], 1)], 0)
    return h


def random_sign_codes(n: int, k: int, generator: torch.Generator, n_negative: int | None = None) -> torch.Tensor:
    """``n`` random +-1 codes of ``k`` bits (float32), pairwise distinct whenever enough codes exist.

    ``n_negative=None``: Bernoulli(0.5) bits. ``n_negative=j``: exactly j bits of every code are -1, at uniformly
    random positions. When fewer than n admissible codes exist (e.g. k = 1), duplicates are unavoidable and kept.
    """
    if n_negative is None:
        capacity = 2**k
    else:
        if not 0 <= n_negative <= k:
            raise ValueError(f"n_negative must be in [0, {k}], got {n_negative}")
        capacity = math.comb(k, n_negative)
    if k <= _ENUMERATE_MAX_BITS and capacity >= n:
        # Exact: a uniformly random set of n distinct admissible codes (each one marginally Bernoulli / balanced).
        ints = torch.arange(2**k)
        bits = (ints[:, None] >> torch.arange(k)) & 1  # 1 -> +1, 0 -> -1
        if n_negative is not None:
            bits = bits[(bits == 0).sum(1) == n_negative]
        chosen = bits[torch.randperm(bits.shape[0], generator=generator)[:n]]
        return (chosen * 2 - 1).float()

    def draw(m: int) -> torch.Tensor:
        if n_negative is None:
            return (torch.rand(m, k, generator=generator) < 0.5).float() * 2 - 1
        codes = torch.ones(m, k)
        negative = torch.argsort(torch.rand(m, k, generator=generator), dim=1)[:, :n_negative]
        return codes.scatter_(1, negative, -1.0)

    codes = draw(n)
    if capacity < n:
        return codes
    for _ in range(_MAX_REDRAW_ROUNDS):
        duplicate = _later_duplicates(codes)
        if not duplicate.any():
            break
        codes[duplicate] = draw(int(duplicate.sum()))
    return codes


def _later_duplicates(codes: torch.Tensor) -> torch.Tensor:
    """Boolean mask of rows equal to an earlier row."""
    _, inverse = torch.unique(codes, dim=0, return_inverse=True)
    rows = torch.arange(codes.shape[0])
    first = torch.full((int(inverse.max()) + 1,), codes.shape[0]).scatter_reduce(0, inverse, rows, "amin")
    return first[inverse] != rows


def multi_label_targets(y: torch.Tensor, class_codes: torch.Tensor, tie_bits: torch.Tensor) -> torch.Tensor:
    """Per-item +-1 targets: the sign of the sum of the item's class codes; a 0 sum takes the fixed tie bit.

    y: (B, C) multi-hot; class_codes: (C, K) +-1; tie_bits: (K,) +-1. Single-label items get their class code.
    All-zero label rows come out as ``tie_bits``; the losses mask those rows out (they have no target).
    """
    total = y.to(class_codes.dtype) @ class_codes
    return torch.where(total > 0, 1.0, torch.where(total < 0, -1.0, tie_bits)).to(class_codes.dtype)
