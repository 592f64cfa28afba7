"""Data parallelism under ``torchrun``, in one place (docs/scaling.md).

A single process sees rank 0 of world 1 and every helper here is then the identity (or a no-op): the one-process
code paths run exactly the code they ran before. Under ``torchrun --nproc_per_node=N`` (``WORLD_SIZE`` > 1):

* :func:`init` joins the process group once (gloo; NCCL when the run's device is CUDA) and leaves it at exit;
  the collectives below join lazily if nobody did;
* :class:`GlobalBatchShards` deals each rank its contiguous share of every *global* batch of the one-process
  order (``--batch-size`` stays the global batch), so the union of the ranks' batches at a step is the batch
  one process would have taken;
* inside :func:`sharded_step` (one training step), the training-set memories are written from every rank's rows
  (:func:`set_rows`), random draws are made for the whole global batch and sliced (:func:`draw_for_shard`,
  :func:`local_rows`), and statistics over the batch are summed over ranks (:func:`batch_sum`,
  :func:`gather_batch`);
* :class:`GradientSync` averages gradients (the one-process mean over the global batch), BatchNorm running
  statistics and the logged loss terms after each backward pass; :func:`convert_sync_batchnorm` makes
  BatchNorm normalise with the statistics of the global batch (on any device);
* :func:`batch_shard_range` and :func:`all_gather_rows` shard an encoding and gather it back in dataset order.

Only rank 0 writes files and shows progress (:func:`is_main_process`).
"""

from __future__ import annotations

import atexit
import contextlib
import os
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch
from torch import nn
from torch.utils.data import Sampler

from .meters import sum_dtype
from .rng import derive_seed

_sharding = False  # True inside sharded_step(): the batch in hand is this rank's share of one global batch


_alone = False  # True inside alone(): this process computes as the only one


def rank() -> int:
    return 0 if _alone else int(os.environ.get("RANK", "0"))


def world_size() -> int:
    return 1 if _alone else int(os.environ.get("WORLD_SIZE", "1"))


@contextlib.contextmanager
def alone() -> Iterator[None]:
    """Inside this block the process computes as if it were the only one (no collective operation, no shard): for
    work that one process of several does by itself, such as ``saat reproduce``'s timing probe."""
    global _alone
    before, _alone = _alone, True
    try:
        yield
    finally:
        _alone = before


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity mask, e.g. under taskset or a container's cpuset), else the
    machine's count."""
    try:
        return max(len(os.sched_getaffinity(0)), 1)
    except (AttributeError, OSError):  # no affinity on macOS and Windows
        return os.cpu_count() or 1


def share_threads() -> int:
    """Give this process its share of the machine's cores for torch's and numba's thread pools: the usable CPUs
    divided by the processes of this run on the machine, at least 1 (torchrun itself sets OMP_NUM_THREADS=1 for
    every process, which leaves all but N cores idle in the CPU parts of the work: encoding on the CPU, the
    retrieval kernels). Returns the share; called by :func:`init`."""
    share = max(usable_cpus() // local_world_size(), 1)
    # Only a change is applied: calling torch.set_num_threads even with the current count changes which kernels
    # some CPU operators pick (measured: one bit of one query of an attack moved), and a process must compute what
    # one process with the same thread count computes.
    if torch.get_num_threads() != share:
        torch.set_num_threads(share)
    try:
        import numba
    except ImportError:  # numba is a dependency of the retrieval kernels; nothing to share without it
        return share
    if numba.get_num_threads() != min(share, numba.config.NUMBA_NUM_THREADS):
        numba.set_num_threads(min(share, numba.config.NUMBA_NUM_THREADS))
    return share


def local_world_size() -> int:
    """How many processes of this run share the machine: torchrun's ``LOCAL_WORLD_SIZE`` (set per node), else the
    world size (1 in one process)."""
    return max(int(os.environ.get("LOCAL_WORLD_SIZE", world_size())), 1)


def is_main_process() -> bool:
    return rank() == 0


def is_distributed() -> bool:
    """Whether this process is one of several (``torchrun`` with more than one process)."""
    return world_size() > 1


# --------------------------------------------------------------------------------------------- the process group


def _td():
    import torch.distributed as td

    if not td.is_available():
        raise RuntimeError(f"WORLD_SIZE is {world_size()} but this PyTorch build has no torch.distributed; run "
                           "one process (plain 'saat ...') or install a PyTorch with distributed support")
    return td


def init(device: torch.device | str | None = None) -> None:
    """Join the torchrun process group (once; a no-op in one process): NCCL when ``device`` is CUDA, else gloo
    (``device`` None: NCCL when CUDA is available), after giving the process its share of the cores
    (:func:`share_threads`). The group is destroyed when the process exits."""
    if not is_distributed():
        return
    td = _td()
    if td.is_initialized():
        return
    share_threads()
    device = torch.device(device) if device is not None else None
    cuda = device.type == "cuda" if device is not None else torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(device if device is not None and device.index is not None else local_rank())
    td.init_process_group(backend="nccl" if cuda else "gloo")
    atexit.register(_destroy)


def _destroy() -> None:
    import torch.distributed as td

    if td.is_available() and td.is_initialized():
        td.destroy_process_group()


def device_for_rank(device: torch.device) -> torch.device:
    """Under torchrun, a CUDA device without an index means this process's GPU, ``cuda:LOCAL_RANK``. An explicit
    ``cuda:K`` with several processes is refused: it would put every rank on GPU K (NCCL then fails or hangs)."""
    if is_distributed() and device.type == "cuda":
        if device.index is None:
            return torch.device("cuda", local_rank())
        raise ValueError(f"--device {device} under torchrun would put all {world_size()} processes on GPU "
                         f"{device.index}: use --device cuda (each process takes cuda:LOCAL_RANK), and choose the "
                         "GPUs with CUDA_VISIBLE_DEVICES")
    return device


def _comm_device() -> torch.device:
    td = _td()
    if td.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _to_comm(t: torch.Tensor) -> torch.Tensor:
    """``t`` on the device the backend communicates from (CPU for gloo, this rank's GPU for NCCL)."""
    init()
    return t.to(_comm_device())


def barrier() -> None:
    """Wait for every rank (a no-op in one process)."""
    if not is_distributed():
        return
    init()
    td = _td()
    if td.get_backend() == "nccl":
        td.barrier(device_ids=[torch.cuda.current_device()])
    else:
        td.barrier()


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """The element-wise sum of ``t`` over ranks (a new tensor on ``t``'s device; ``t`` itself in one process)."""
    if not is_distributed():
        return t
    buf = _to_comm(t).clone()
    _td().all_reduce(buf)
    return buf.to(t.device)


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` on every rank (picklable objects; ``obj`` itself in one process)."""
    if not is_distributed():
        return obj
    init()
    box = [obj]
    _td().broadcast_object_list(box, src=src, device=_comm_device())
    return box[0]


def gather_objects(obj: Any) -> list:
    """Every rank's ``obj`` (picklable), in rank order; ``[obj]`` in one process."""
    if not is_distributed():
        return [obj]
    init()
    got = [None] * world_size()
    _td().all_gather_object(got, obj)
    return got


def all_gather_rows(t: torch.Tensor, *, equal: bool = False) -> torch.Tensor:
    """Every rank's ``t`` (same trailing shape and dtype, any number of rows) concatenated in rank order, on every
    rank; ``t`` itself in one process. ``equal=True`` promises the same number of rows on every rank (one
    collective instead of two)."""
    if not is_distributed():
        return t
    td = _td()
    local = _to_comm(t.contiguous())
    if equal:
        sizes = [local.shape[0]] * world_size()
    else:
        counts = torch.zeros(world_size(), dtype=torch.long, device=local.device)
        counts[rank()] = local.shape[0]
        td.all_reduce(counts)
        sizes = counts.tolist()
    largest = max(sizes)
    if largest == 0:
        return t
    padded = local.new_zeros((largest, *local.shape[1:]))
    padded[: local.shape[0]] = local
    parts = [torch.empty_like(padded) for _ in sizes]
    td.all_gather(parts, padded)
    return torch.cat([p[:n] for p, n in zip(parts, sizes)]).to(t.device)


def broadcast_module(module: nn.Module, src: int = 0) -> None:
    """Rank ``src``'s parameters and buffers in every rank's ``module`` (as DistributedDataParallel does when it
    wraps a model), so that all ranks start from the same weights."""
    if not is_distributed():
        return
    td = _td()
    with torch.no_grad():
        for t in [*module.parameters(), *module.buffers()]:
            buf = _to_comm(t.detach())
            td.broadcast(buf, src=src)
            t.copy_(buf.to(t.device))


# ---------------------------------------------------------------------------------------------------- sharding


def shard_range(n: int, *, rank_: int | None = None, world: int | None = None) -> range:
    """This rank's contiguous share of ``range(n)``: shares differ by at most one item, earlier ranks larger."""
    r = rank() if rank_ is None else rank_
    w = world_size() if world is None else world
    base, extra = divmod(int(n), w)
    start = r * base + min(r, extra)
    return range(start, start + base + (1 if r < extra else 0))


def batch_shard_range(n: int, batch_size: int, *, rank_: int | None = None, world: int | None = None) -> range:
    """This rank's contiguous share of ``range(n)`` in whole batches of ``batch_size`` (the last one may be short):
    every item is then encoded in the batch one process would encode it in, so the gathered result is the
    one-process result bit for bit."""
    batches = shard_range(-(-int(n) // int(batch_size)), rank_=rank_, world=world)
    return range(min(batches.start * batch_size, n), min(batches.stop * batch_size, n))


class GlobalBatchShards(Sampler[int]):
    """This rank's share of the global batches of ``order`` (a sampler or sequence of indices, e.g. the
    ``EpochShuffleSampler`` one process would use).

    ``order`` is cut into global batches of ``batch_size`` (the last one dropped if short and ``drop_last``, as
    ``BatchSampler`` does), and rank r yields the r-th contiguous 1/N of each. Batching the result by
    :attr:`local_batch_size` gives, at every step, rank r's share of the step's global batch: the union over
    ranks is the one-process batch. Every global batch must split evenly (ValueError otherwise).
    ``set_epoch`` is passed on to ``order``.
    """

    def __init__(self, order: Iterable[int], batch_size: int, *, drop_last: bool, rank_: int | None = None,
                 world: int | None = None):
        self.order, self.batch_size, self.drop_last = order, int(batch_size), bool(drop_last)
        self.rank = rank() if rank_ is None else int(rank_)
        self.world = world_size() if world is None else int(world)
        n = len(order)  # type: ignore[arg-type]
        sizes = [self.batch_size] * (n // self.batch_size)
        if n % self.batch_size and not self.drop_last:
            sizes.append(n % self.batch_size)
        uneven = [s for s in sizes if s % self.world]
        if uneven:
            raise ValueError(f"a global batch of {uneven[0]} images does not split evenly over {self.world} "
                             f"processes: use a --batch-size that is a multiple of {self.world} (and, when the "
                             "training set fits in one batch, a training-set size that is)")
        self.sizes = sizes

    @property
    def local_batch_size(self) -> int:
        return max(self.batch_size // self.world, 1)

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.order, "set_epoch"):
            self.order.set_epoch(epoch)

    def __iter__(self) -> Iterator[int]:
        order = list(self.order)
        start = 0
        for size in self.sizes:
            share = size // self.world
            yield from order[start + self.rank * share: start + (self.rank + 1) * share]
            start += size

    def __len__(self) -> int:
        return sum(self.sizes) // self.world


# ------------------------------------------------------------------------------------- inside one training step


@contextlib.contextmanager
def sharded_step() -> Iterator[None]:
    """Inside the block, the batch in hand is this rank's contiguous share (in rank order, all shares equal) of one
    global batch, so the helpers below act on the global batch. Outside it (and in one process) they are the
    identity: attacks and evaluations that every rank repeats stay one-process computations."""
    global _sharding
    previous, _sharding = _sharding, is_distributed()
    try:
        yield
    finally:
        _sharding = previous


def global_count(n_local: int) -> int:
    """Items in the global batch of which this rank holds ``n_local``."""
    return n_local * world_size() if _sharding else n_local


def local_rows(t: torch.Tensor) -> torch.Tensor:
    """This rank's rows of a tensor made for the whole global batch (``t`` itself outside a sharded step)."""
    if not _sharding:
        return t
    share = t.shape[0] // world_size()
    return t[rank() * share: (rank() + 1) * share]


def draw_for_shard(draw: Callable[[int], torch.Tensor], n_local: int) -> torch.Tensor:
    """``draw(n)`` makes n rows of a random draw; this rank's rows of the draw for the whole global batch. Every
    rank's generator then advances exactly as one process's does, and the rows are the ones one process would
    give these items."""
    return local_rows(draw(global_count(n_local)))


def set_rows(idx: torch.Tensor, *updates: tuple[torch.Tensor, torch.Tensor]) -> None:
    """``memory[idx] = rows`` for each ``(memory, rows)`` — in a sharded step with every rank's ``idx`` and rows,
    so all ranks keep the memory one process would hold after the global batch (one all_gather)."""
    if not _sharding:
        for memory, rows in updates:
            memory[idx] = rows
        return
    n = idx.shape[0]
    packed = torch.cat([_to_comm(idx.reshape(n, 1)).to(torch.float64)]
                       + [_to_comm(rows.detach().reshape(n, -1)).to(torch.float64) for _, rows in updates], dim=1)
    gathered = all_gather_rows(packed, equal=True)
    all_idx = gathered[:, 0].to(torch.long)
    col = 1
    for memory, rows in updates:
        width = rows[0].numel() if n else memory[0].numel()
        values = gathered[:, col: col + width].reshape(-1, *memory.shape[1:])
        memory[all_idx.to(memory.device)] = values.to(device=memory.device, dtype=memory.dtype)
        col += width


def batch_sum(value):
    """The sum of ``value`` (a number or a tensor computed from this rank's share) over the global batch; the value
    itself outside a sharded step. No gradient flows through the sum."""
    if not _sharding:
        return value
    if torch.is_tensor(value):
        return all_reduce_sum(value.detach())
    total = all_reduce_sum(torch.tensor([value], dtype=torch.float64)).item()
    return type(value)(total)


class _GatherRows(torch.autograd.Function):
    """all_gather with a backward: every rank's gradient for the gathered tensor is summed, and each rank keeps
    the rows it contributed (the gradient of the sum over ranks of the losses built on the gathered tensor)."""

    @staticmethod
    def forward(ctx, t):
        ctx.n = t.shape[0]
        return all_gather_rows(t, equal=True)

    @staticmethod
    def backward(ctx, grad):
        grad = all_reduce_sum(grad.contiguous())
        start = rank() * ctx.n
        return grad[start: start + ctx.n]


def gather_batch(t: torch.Tensor) -> torch.Tensor:
    """The whole global batch's rows of ``t`` (rank order) with gradients flowing back to each rank's own rows;
    ``t`` itself outside a sharded step. A loss term computed on it appears in full on every rank, and after
    :class:`GradientSync` averages, each parameter gets that term's gradient once."""
    if not _sharding:
        return t
    return _GatherRows.apply(t)


def _gather_with_grad(t: torch.Tensor) -> torch.Tensor:
    """Every rank's ``t`` (equal shapes) in rank order, with gradients (:class:`_GatherRows`), in any context."""
    return _GatherRows.apply(t)


# ------------------------------------------------------------------------------------- gradients and BatchNorm


def _batch_norms(module: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


class GradientSync:
    """Call after ``loss.backward()`` on every rank: averages the gradients of ``model`` over ranks (each rank's
    loss is the mean over its equal share, so the average is the one-process mean over the global batch), the
    running statistics of its BatchNorm layers (unless they are synchronised: ``sync_bn``), and the logged loss
    terms (returned as 0-d tensors on the device, never read on the host here: the global batch's values). One
    all_reduce per dtype."""

    def __init__(self, model: nn.Module, *, sync_bn: bool = False):
        self.model = model
        self.stats = [] if sync_bn else [b for m in _batch_norms(model) if m.track_running_stats
                                         for b in (m.running_mean, m.running_var)]

    def __call__(self, terms: dict) -> dict[str, torch.Tensor]:
        world = world_size()
        names = list(terms)
        device = next((v.device for v in terms.values() if torch.is_tensor(v)), torch.device("cpu"))
        term_dtype = sum_dtype(device)  # float64 (float32 on MPS)
        values = torch.stack([terms[k].detach().reshape(()).to(term_dtype) if torch.is_tensor(terms[k])
                              else torch.tensor(float(terms[k]), dtype=term_dtype, device=device) for k in names])
        tensors = [p.grad for p in self.model.parameters() if p.grad is not None] + self.stats
        by_dtype: dict[torch.dtype, list[torch.Tensor]] = {}
        for t in tensors:
            by_dtype.setdefault(t.dtype, []).append(t)
        # The loss terms ride with the float32 (or float64) group: one collective per dtype in all.
        carrier = next((d for d in (torch.float32, torch.float64) if d in by_dtype), None)
        with torch.no_grad():
            if carrier is None:
                values = all_reduce_sum(values) / world
            for dtype, group in by_dtype.items():
                parts = [t.reshape(-1) for t in group]
                if dtype == carrier:
                    parts.append(values.to(device=parts[0].device, dtype=dtype))
                flat = all_reduce_sum(torch.cat(parts)).div_(world)
                offset = 0
                for t in group:
                    t.copy_(flat[offset: offset + t.numel()].view_as(t))
                    offset += t.numel()
                if dtype == carrier:
                    values = flat[offset:].to(term_dtype)
        return dict(zip(names, values.unbind()))


def seed_rank_stream(seed: int, epoch: int) -> None:
    """Under torchrun, seed torch's global generator per (seed, epoch, rank) at the start of an epoch, so that
    what draws from it (dropout masks) differs between ranks and a resumed epoch draws what it drew before.
    A no-op in one process."""
    if is_distributed():
        torch.manual_seed(derive_seed(seed, "ddp-rank-stream", epoch, rank()))


class SyncBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm whose training-mode statistics are those of the global batch (all ranks' shares), on any device
    (PyTorch's ``nn.SyncBatchNorm`` runs on GPUs only; CUDA models use it). Each rank's count, mean and sum of
    squared deviations are gathered (one collective, with gradients) and merged exactly; in eval mode, or in one
    process, it is BatchNorm."""

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and is_distributed()):
            return super().forward(x)
        self._check_input_dim(x)
        dims = [0, *range(2, x.dim())]
        shape = [1, x.shape[1]] + [1] * (x.dim() - 2)
        xf = x.float()
        c = x.shape[1]
        count = float(x.numel() // c)
        local_var, local_mean = torch.var_mean(xf, dim=dims, correction=0)
        stats = _gather_with_grad(torch.cat([local_mean, local_var * count, xf.new_full((1,), count)])[None])
        counts = stats[:, 2 * c:].detach()  # (ranks, 1)
        total = counts.sum()
        mean = (counts * stats[:, :c]).sum(0) / total
        var = (stats[:, c: 2 * c] + counts * (stats[:, :c] - mean).pow(2)).sum(0) / total
        y = (xf - mean.view(shape)) * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
                unbiased = var.detach() * (total / (total - 1).clamp_min(1))
                self.running_mean.mul_(1 - factor).add_(mean.detach(), alpha=factor)
                self.running_var.mul_(1 - factor).add_(unbiased, alpha=factor)
        return y.to(x.dtype)


def convert_sync_batchnorm(model: nn.Module, device: torch.device) -> nn.Module:
    """``model`` with every BatchNorm synchronised over ranks (same parameters, buffers and state_dict keys);
    ``model`` unchanged in one process."""
    if not is_distributed():
        return model
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)

    def convert(module: nn.Module) -> nn.Module:
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(module, SyncBatchNorm):
            new = SyncBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                                module.track_running_stats)
            if module.affine:
                new.weight, new.bias = module.weight, module.bias
            if module.track_running_stats:
                new.running_mean, new.running_var = module.running_mean, module.running_var
                new.num_batches_tracked = module.num_batches_tracked
            new.train(module.training)
            return new
        for name, child in module.named_children():
            module.add_module(name, convert(child))
        return module

    return convert(model)
