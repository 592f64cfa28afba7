"""Seeds, in one place. One run seed drives every random choice; each choice draws from its own stream, derived
from (seed, key...) so that adding a random choice somewhere never shifts another one's numbers.

``derive_seed(seed, *key)`` mixes the seed with integer or string keys (strings are CRC-32 hashed) through numpy's
``SeedSequence``; ``seeded_generator(seed, *key)`` is a CPU ``torch.Generator`` seeded with it (drawn on the CPU and
moved, so a seed gives the same numbers on every device). With no key, ``seeded_generator(seed)`` is seeded with
the run seed itself (the attacks' crafting streams). ``seeded_init`` seeds networks' initial weights the same way
without touching the global stream outside its block.
"""

from __future__ import annotations

import contextlib
import zlib
from collections.abc import Iterator

import numpy as np
import torch


def derive_seed(seed: int, *key: int | str, bits: int = 63) -> int:
    """A ``bits``-bit seed for the stream named by ``key`` under ``seed``."""
    words = [int(seed), *(zlib.crc32(k.encode()) if isinstance(k, str) else int(k) for k in key)]
    state = int(np.random.SeedSequence(words).generate_state(1, dtype=np.uint64)[0])
    return state >> (64 - bits)


def seeded_generator(seed: int, *key: int | str, bits: int = 63) -> torch.Generator:
    """A CPU generator for the stream ``key`` under ``seed`` (the run seed itself when no key is given)."""
    return torch.Generator().manual_seed(derive_seed(seed, *key, bits=bits) if key else int(seed))


@contextlib.contextmanager
def seeded_init(seed: int, *key: int | str, bits: int = 63) -> Iterator[None]:
    """Inside the block, torch's global CPU generator is seeded for the stream ``key`` under ``seed`` (the seed
    itself when no key is given), so that modules built there get reproducible initial weights; the global
    generator is restored afterwards, so nothing outside the block sees a difference."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(seed, *key, bits=bits) if key else int(seed))
        yield
