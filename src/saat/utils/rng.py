"""Seeds, in one place. One run seed drives every random choice; each choice draws from its own stream, derived
from (seed, key...) so that adding a random choice somewhere never shifts another one's numbers.

``derive_seed(seed, *key)`` mixes the seed with integer or string keys (strings are CRC-32 hashed) through numpy's
``SeedSequence``; ``seeded_generator(seed, *key)`` is a CPU ``torch.Generator`` seeded with it (for draws whose
numbers the host needs: orders, code constructions, shapes). With no key, ``seeded_generator(seed)`` is seeded with
the run seed itself (the attacks' crafting streams). ``SeededStream(seed, *key)`` is the same stream drawn on the
device the draw is used on (noise, random starts, targets, augmentations in hot loops): one generator per device,
each seeded with the same seed, so on the CPU it gives exactly ``seeded_generator``'s numbers and on a GPU nothing
is drawn on the host and copied (a GPU's generator gives other numbers than the CPU's: a seed is reproducible per
device type, not across them). ``seeded_init`` seeds networks' initial weights the same way without touching the
global stream outside its block. ``numpy_generator(seed, *key)`` seeds a numpy ``Generator`` by the same rule, for
host-side statistics in numpy (the bootstrap intervals of ``saat.retrieval.bootstrap``).
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


def numpy_generator(seed: int, *key: int | str, bits: int = 63) -> np.random.Generator:
    """A numpy ``Generator`` for the stream ``key`` under ``seed`` (the seed itself when no key is given): the seed
    rule of :func:`seeded_generator`, for draws made in numpy."""
    return np.random.default_rng(derive_seed(seed, *key, bits=bits) if key else int(seed))


class SeededStream:
    """The random stream ``key`` under ``seed`` (the seed itself when no key is given), drawn on the device that
    asks: :meth:`on` gives a ``torch.Generator`` on that device, made on first use and seeded with the stream's
    seed. The CPU generator is ``seeded_generator(seed, *key)``'s, number for number.

    Its state (:meth:`state_dict`) holds one generator state per device type that has drawn (``"cpu"``,
    ``"cuda"``, ...); a resumed run restores the state of its own device type and starts any other fresh, as the
    original run did. :meth:`load_state_dict` also takes a bare CPU generator state (checkpoints written before
    the streams moved to the device)."""

    def __init__(self, seed: int, *key: int | str, bits: int = 63):
        self.seed = derive_seed(seed, *key, bits=bits) if key else int(seed)
        self._generators: dict[str, torch.Generator] = {}
        self._pending: dict[str, torch.Tensor] = {}

    def on(self, device: torch.device | str) -> torch.Generator:
        """The stream's generator on ``device`` (one per device type: a process draws on one GPU)."""
        kind = torch.device(device).type
        gen = self._generators.get(kind)
        if gen is None:
            gen = torch.Generator(device=device).manual_seed(self.seed)
            if kind in self._pending:
                gen.set_state(self._pending.pop(kind))
            self._generators[kind] = gen
        return gen

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {**self._pending, **{kind: gen.get_state() for kind, gen in self._generators.items()}}

    def load_state_dict(self, state: dict[str, torch.Tensor] | torch.Tensor) -> None:
        if isinstance(state, torch.Tensor):  # a CPU generator's state, as checkpoints held it before
            state = {"cpu": state}
        self._generators.clear()
        self._pending = {str(kind): value for kind, value in state.items()}


@contextlib.contextmanager
def seeded_init(seed: int, *key: int | str, bits: int = 63) -> Iterator[None]:
    """Inside the block, torch's global CPU generator is seeded for the stream ``key`` under ``seed`` (the seed
    itself when no key is given), so that modules built there get reproducible initial weights; the global
    generator is restored afterwards, so nothing outside the block sees a difference."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(seed, *key, bits=bits) if key else int(seed))
        yield
