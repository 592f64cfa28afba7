"""``make_loader``: a DataLoader over a split with batches fetched in one call and reproducible shuffling;
``FirstItems`` (a split's first n items) and ``to_device_batch`` (uint8 batch -> float [0, 1] on a device).

The input pipeline's rules live here once (docs/data.md#the-input-pipeline): :func:`resolve_num_workers` (worker
processes: an explicit count wins; by default ``min(8, usable CPUs)`` divided by the processes torchrun runs on this
machine for splits that decode image files, 0 for in-memory splits), :func:`pin_memory_for` (page-locked batches when
they go to a CUDA device) and :class:`SeedWorker` (a worker's torch, NumPy and ``random`` generators seeded from
(seed, epoch, worker id)). Batches come in sampler order whatever the worker count, so results do not depend on it."""

from __future__ import annotations

import pickle
import random
from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, Sampler, SequentialSampler, Subset, default_collate

from ..utils import dist
from ..utils.dist import usable_cpus
from ..utils.rng import derive_seed, seeded_generator
from .splits import FileSplit

MAX_AUTO_WORKERS = 8  # the default's ceiling (each worker holds its own prefetched batches)


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
    if isinstance(batch, (tuple, _Failure)):
        return batch
    return default_collate(batch)


def base_split(split: Dataset) -> Dataset:
    """The split under :class:`FirstItems` and ``torch.utils.data.Subset`` wrappers."""
    while isinstance(split, (FirstItems, Subset)):
        split = split.split if isinstance(split, FirstItems) else split.dataset
    return split


def resolve_num_workers(split: Dataset, requested: int | None = None, *, batches: int | None = None) -> int:
    """Worker processes for a loader over ``split``: ``requested`` when given (0 included); by default ``min(8,
    usable_cpus())`` divided by the processes of this run on the machine (at least 1) for a split that decodes
    image files (:class:`~saat.data.splits.FileSplit`, also under :class:`FirstItems` or ``Subset``), and 0 for
    an in-memory split (a batch is one tensor index there: workers would only add copies between processes).
    The default never exceeds ``batches``, the loader's batch count, when given. Raises a one-line ValueError for
    a ``requested`` that is not a non-negative integer."""
    if requested is not None:
        if isinstance(requested, bool) or not isinstance(requested, (int, np.integer)) or requested < 0:
            raise ValueError(f"num_workers must be a non-negative integer (or None for the default), got "
                             f"{requested!r}")
        return int(requested)
    if not isinstance(base_split(split), FileSplit):
        return 0
    workers = max(min(MAX_AUTO_WORKERS, usable_cpus()) // dist.local_world_size(), 1)
    return workers if batches is None else max(min(workers, int(batches)), 0)


def pin_memory_for(device: torch.device | str | None) -> bool:
    """Whether a loader's batches go to page-locked host memory: only when they are bound for a CUDA device, whose
    copies from pinned memory are asynchronous (``to_device_batch`` copies with ``non_blocking=True``); on the CPU
    or MPS pinning would only cost."""
    return device is not None and torch.device(device).type == "cuda"


def _held_off_host(split: Dataset) -> bool:
    """A split whose images already sit on an accelerator (a user's CUDA tensors): nothing to pin or copy."""
    images = getattr(base_split(split), "images", None)
    return isinstance(images, torch.Tensor) and images.device.type != "cpu"


class SeedWorker:
    """A loader's ``worker_init_fn``: seeds the worker's torch, NumPy and ``random`` generators with
    ``derive_seed(seed, "loader-worker", epoch, worker_id)``, so anything random drawn inside a worker repeats
    for the same (seed, epoch, worker). (Nothing the package runs in a worker draws: decoding is deterministic.)"""

    def __init__(self, seed: int, epoch: int) -> None:
        self.seed, self.epoch = int(seed), int(epoch)

    def worker_seed(self, worker_id: int) -> int:
        return derive_seed(self.seed, "loader-worker", self.epoch, int(worker_id))

    def __call__(self, worker_id: int) -> None:
        seed = self.worker_seed(worker_id)
        torch.manual_seed(seed)
        np.random.seed(seed % 2**32)
        random.seed(seed)


class _Failure:
    """An exception raised while a worker fetched a batch, carried to the main process as the batch and raised
    there as it was: a worker's own exception would surface as a multi-line "Caught ValueError in DataLoader worker
    process 0" with the worker's traceback instead of the one-line message (e.g. the undecodable image's path)."""

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


class _Fetch(Dataset):
    """``split`` as the workers see it: a batch, or the :class:`_Failure` of fetching it."""

    def __init__(self, split: Dataset) -> None:
        self.split = split

    def __len__(self) -> int:
        return len(self.split)

    def __getitems__(self, indices):
        try:
            getitems = getattr(self.split, "__getitems__", None)
            return getitems(indices) if getitems is not None else [self.split[i] for i in indices]
        except Exception as exc:  # raised in the main process by _WorkerLoader
            try:
                pickle.loads(pickle.dumps(exc))
            except Exception:  # it must cross to the main process: its type and message, then
                exc = RuntimeError(f"{type(exc).__name__}: {exc}")
            return _Failure(exc)


class _WorkerLoader(DataLoader):
    """The DataLoader of :func:`make_loader` with worker processes: a fetch's exception is raised as it was."""

    def __iter__(self):
        for batch in super().__iter__():
            if isinstance(batch, _Failure):
                raise batch.exc
            yield batch


def make_loader(split: Dataset, batch_size: int, *, shuffle: bool = False, seed: int = 0, epoch: int = 0,
                num_workers: int | None = None, sampler: Sampler | None = None, drop_last: bool = False,
                device: torch.device | str | None = None) -> DataLoader:
    """A DataLoader yielding ``(x uint8 (B,3,S,S), y float32 (B,C), idx int64 (B,))``.

    Each batch is one ``split.__getitems__`` call (one tensor index for in-memory splits). With
    ``shuffle=True`` the order is a permutation seeded by (seed, epoch); ``sampler`` (e.g. a
    ``DistributedSampler``) replaces the default and gets ``set_epoch(epoch)`` if it has one. The loader never
    touches the global torch RNG. Convert images on the device: ``x.float() / 255``.

    ``num_workers``: None for the default of :func:`resolve_num_workers` (file splits get workers, in-memory
    splits none). ``device``: where the batches go; a CUDA device gets pinned batches (:func:`pin_memory_for`).
    Workers are seeded by :class:`SeedWorker` and started afresh for each pass (not persistent); batches arrive in
    sampler order, so the result is the same for every worker count.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    for name, value in (("seed", seed), ("epoch", epoch)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
    if sampler is None:
        sampler = EpochShuffleSampler(len(split), seed, epoch) if shuffle else SequentialSampler(split)
    elif hasattr(sampler, "set_epoch"):
        sampler.set_epoch(epoch)
    batches = BatchSampler(sampler, int(batch_size), drop_last)
    workers = resolve_num_workers(split, num_workers, batches=_length(batches) if num_workers is None else None)
    pin = pin_memory_for(device) and not _held_off_host(split)
    if workers == 0:
        return DataLoader(split, batch_sampler=batches, collate_fn=_collate, pin_memory=pin,
                          generator=seeded_generator(seed, epoch))
    return _WorkerLoader(_Fetch(split), batch_sampler=batches, collate_fn=_collate, num_workers=workers,
                         pin_memory=pin, worker_init_fn=SeedWorker(seed, epoch), persistent_workers=False,
                         generator=seeded_generator(seed, epoch))


def _length(batches: BatchSampler) -> int | None:
    try:
        return len(batches)
    except TypeError:  # a sampler without a length
        return None


def set_loader_epoch(loader: DataLoader, epoch: int) -> None:
    """Move a loader made by ``make_loader`` to ``epoch`` (same order and worker seeds as ``make_loader(...,
    epoch=epoch)``)."""
    sampler = loader.batch_sampler.sampler
    if hasattr(sampler, "set_epoch"):
        sampler.set_epoch(epoch)
    if isinstance(loader.worker_init_fn, SeedWorker):
        loader.worker_init_fn.epoch = int(epoch)


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
