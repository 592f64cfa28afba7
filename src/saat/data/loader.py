"""``make_loader``: a DataLoader over a split with batches fetched in one call and reproducible shuffling;
``FirstItems`` (a split's first n items) and ``to_device_batch`` (uint8 batch -> float [0, 1] on a device)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, Sampler, SequentialSampler, default_collate

from ..utils.rng import derive_seed, seeded_generator


def epoch_seed(seed: int, epoch: int) -> int:
    """A well-mixed 63-bit seed for (seed, epoch), so neighbouring epochs get unrelated permutations."""
    return derive_seed(seed, epoch)


class EpochShuffleSampler(Sampler[int]):
    """A permutation of ``range(n)`` that depends only on (seed, epoch).

    Iterating twice in the same epoch gives the same order (a resumed run sees the same batches); call
    ``set_epoch`` (as with ``DistributedSampler``) or build a new loader per epoch for a new order.
    """

    def __init__(self, n: int, seed: int = 0, epoch: int = 0) -> None:
        self.n, self.seed, self.epoch = int(n), int(seed), int(epoch)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __iter__(self) -> Iterator[int]:
        generator = seeded_generator(self.seed, self.epoch)
        return iter(torch.randperm(self.n, generator=generator).tolist())

    def __len__(self) -> int:
        return self.n


def _collate(batch):
    """Batches from ``__getitems__`` arrive ready-made; a split without it falls back to ``default_collate``."""
    if isinstance(batch, tuple):
        return batch
    return default_collate(batch)


def make_loader(split: Dataset, batch_size: int, *, shuffle: bool = False, seed: int = 0, epoch: int = 0,
                num_workers: int = 0, sampler: Sampler | None = None, drop_last: bool = False) -> DataLoader:
    """A DataLoader yielding ``(x uint8 (B,3,S,S), y float32 (B,C), idx int64 (B,))``.

    Each batch is one ``split.__getitems__`` call (one tensor index for in-memory splits). With
    ``shuffle=True`` the order is a permutation seeded by (seed, epoch); ``sampler`` (e.g. a
    ``DistributedSampler``) replaces the default and gets ``set_epoch(epoch)`` if it has one. The loader never
    touches the global torch RNG. Convert images on the device: ``x.float() / 255``.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if isinstance(num_workers, bool) or not isinstance(num_workers, (int, np.integer)) or num_workers < 0:
        raise ValueError(f"num_workers must be a non-negative integer, got {num_workers!r}")
    for name, value in (("seed", seed), ("epoch", epoch)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
    if sampler is None:
        sampler = EpochShuffleSampler(len(split), seed, epoch) if shuffle else SequentialSampler(split)
    elif hasattr(sampler, "set_epoch"):
        sampler.set_epoch(epoch)
    batches = BatchSampler(sampler, int(batch_size), drop_last)
    return DataLoader(split, batch_sampler=batches, collate_fn=_collate, num_workers=int(num_workers),
                      generator=seeded_generator(seed, epoch))


def set_loader_epoch(loader: DataLoader, epoch: int) -> None:
    """Move a loader made by ``make_loader`` to ``epoch`` (same order as ``make_loader(..., epoch=epoch)``)."""
    sampler = loader.batch_sampler.sampler
    if hasattr(sampler, "set_epoch"):
        sampler.set_epoch(epoch)


class FirstItems(Dataset):
    """The first ``n`` items of a split (indices unchanged, so memories stay aligned), with its batched fetch."""

    def __init__(self, split, n: int):
        self.split, self.n = split, min(int(n), len(split))

    def __len__(self) -> int:
        return self.n

    def __getitems__(self, indices):
        return self.split.__getitems__(indices)


def to_device_batch(batch, device: torch.device, channels_last: bool = False):
    """uint8 images -> float [0, 1] on the device (converted per batch), labels and indices alongside. Float
    images (a :class:`~saat.data.splits.FloatTensorSplit`) are taken as already in [0, 1] and copied."""
    x, y, idx = batch
    if x.is_floating_point():
        x = x.to(device, torch.float32, copy=True)
    else:
        x = x.to(device, non_blocking=True).float().div_(255.0)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x, y.to(device, non_blocking=True).float(), idx.to(device, non_blocking=True)
