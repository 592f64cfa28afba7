"""The one training loop: iterate a loader, call a step function, back-propagate, step the optimiser.

Hashing training, SAAT and the other adversarial defenses differ only in their step function (what loss a batch
gives) and in whether the learning rate is stepped per iteration; everything else lives here once. Under torchrun
(docs/scaling.md) :func:`training_loader` deals each rank its share of every global batch and ``run_epoch(...,
sync=GradientSync(...))`` runs each step as a sharded step and averages gradients over the ranks.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

import torch

from ..data import EpochShuffleSampler, make_loader, to_device_batch
from ..utils import dist
from ..utils.device import autocast
from ..utils.meters import DeviceSums, NonFiniteWatch, read_scalars
from ..utils.progress import progress_bar

StepFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, int], dict]


def run_epoch(model: torch.nn.Module, loader: Iterable, step_fn: StepFn, optimizer: torch.optim.Optimizer, *,
              device: torch.device, epoch: int, step: int, log: list, log_every: int = 50,
              iteration_scheduler=None, progress: bool = True, desc: str = "train",
              channels_last: bool = False, sync: dist.GradientSync | None = None,
              scaler: torch.amp.GradScaler | None = None, replays: int = 1,
              after_backward: Callable[[], None] | None = None,
              after_step: Callable[[int], bool] | None = None) -> tuple[dict, int]:
    """Train for one pass over ``loader``. Returns (epoch summary, global step after the epoch).

    ``step_fn(x, y, idx, step)`` returns a dict of loss terms whose ``"loss"`` entry is back-propagated; every
    term is averaged into the summary and written to ``log`` every ``log_every`` steps. With ``sync`` (torchrun),
    the loader holds this rank's shares of the global batches (:func:`training_loader`): each step runs inside
    :func:`saat.utils.dist.sharded_step`, and ``sync`` averages the gradients and the logged terms over ranks
    before the optimiser steps (so every rank takes the one-process step of the global batch). ``scaler`` (float16
    AMP, :func:`saat.utils.device.grad_scaler`) scales the loss before the backward pass and unscales, checks and
    steps through the optimiser.

    Free adversarial training (docs/defenses.md#fast-adversarial-training): ``replays`` steps on every batch, each
    a step of its own (optimiser, schedule, log, ``step`` count); ``after_backward()`` runs after each backward pass
    and before the optimiser steps (the perturbation's update). ``after_step(step)`` runs after each step (the
    catastrophic-overfitting watch); when it returns True the epoch ends there (the summary covers the steps run).

    No step reads a value back from the device (each read would wait for the device, utils/meters.py): the terms
    are summed on the device and read every ``log_every`` steps (that step's record, and the progress bar's
    postfix) and at the end of the epoch. A non-finite loss is noticed at the next read and stops training with
    a FloatingPointError naming the step where it happened (the steps up to the read have run).
    """
    model.train()
    sums, watch = DeviceSums(), NonFiniteWatch()
    n_batches = n_images = 0
    t0 = time.perf_counter()
    bar = progress_bar(total=len(loader), desc=f"{desc} epoch {epoch + 1}", unit="batch", disable=not progress)

    def stop_if_non_finite() -> None:  # every rank reads at the same steps, sees the same values: all stop together
        bad = watch.first()
        if bad is not None:
            raise FloatingPointError(f"non-finite loss {bad[1]} at epoch {epoch + 1}, step {bad[0]}")

    def backward(loss: torch.Tensor) -> None:
        (loss if scaler is None else scaler.scale(loss)).backward()

    stopped = False
    for batch in loader:
        x, y, idx = to_device_batch(batch, device, channels_last)
        for _ in range(replays):
            if sync is None:
                terms = step_fn(x, y, idx, step)
                optimizer.zero_grad(set_to_none=True)
                backward(terms["loss"])
                n_images += x.shape[0]
            else:
                with dist.sharded_step():
                    terms = step_fn(x, y, idx, step)
                    optimizer.zero_grad(set_to_none=True)
                    backward(terms["loss"])
                    n_images += dist.global_count(x.shape[0])
                terms = sync(terms)  # the global batch's gradients and loss terms (on the device), on every rank
            if after_backward is not None:
                after_backward()
            watch.observe(terms["loss"], step)
            if scaler is None:
                optimizer.step()
            else:  # skips the step when the scaled gradients overflowed, then adapts the scale
                scaler.step(optimizer)
                scaler.update()
            if iteration_scheduler is not None:
                iteration_scheduler.step()
            sums.add(terms)
            n_batches += 1
            step += 1
            if log_every and step % log_every == 0:
                stop_if_non_finite()
                values = read_scalars(terms)
                log.append({"kind": "step", "epoch": epoch + 1, "step": step, **values,
                            "lr": optimizer.param_groups[0]["lr"]})
                rate = n_images / max(time.perf_counter() - t0, 1e-9)
                bar.set_postfix({**{k: f"{v:.4f}" for k, v in values.items()}, "img/s": f"{rate:.0f}"},
                                refresh=False)
            if after_step is not None and after_step(step):
                stopped = True
                break
        bar.update(1)
        if stopped:
            break
    bar.close()
    stop_if_non_finite()
    seconds = time.perf_counter() - t0
    summary = {k: total / max(n_batches, 1) for k, (total, _) in sums.read().items()}
    summary.update({"kind": "epoch", "epoch": epoch + 1, "step": step, "seconds": seconds,
                    "images_per_s": n_images / max(seconds, 1e-9), "lr": optimizer.param_groups[0]["lr"]})
    if replays > 1:
        summary["replays"] = replays
    if stopped:
        summary["stopped"] = True
    if sync is not None:
        summary["world_size"] = dist.world_size()
    log.append(summary)
    return summary, step


def training_loader(split, batch_size: int, *, seed: int, epoch: int, num_workers: int | None = None,
                    device: torch.device | None = None):
    """The loader of one training epoch: the (seed, epoch) permutation of ``split`` in batches of ``batch_size``,
    the last short batch dropped unless it is the only one. Under torchrun, this rank's contiguous share of each of
    those global batches (:class:`saat.utils.dist.GlobalBatchShards`; the batch size must split evenly).
    ``num_workers`` (None: the default of :func:`saat.data.loader.resolve_num_workers`) and ``device`` (pinned
    batches for CUDA) change the speed only: the batches are the same."""
    drop_last = len(split) > batch_size  # the rule of check_global_batches too
    if not dist.is_distributed():
        return make_loader(split, batch_size, shuffle=True, seed=seed, epoch=epoch, num_workers=num_workers,
                           drop_last=drop_last, device=device)
    shards = dist.GlobalBatchShards(EpochShuffleSampler(len(split), seed, epoch), batch_size, drop_last=drop_last)
    return make_loader(split, shards.local_batch_size, sampler=shards, seed=seed, epoch=epoch,
                       num_workers=num_workers, device=device)


def check_global_batches(n: int, batch_size: int) -> None:
    """Under torchrun, fail before any work (one-line ValueError) when the training batches of ``n`` items would
    not split evenly over the ranks; a no-op in one process."""
    if dist.is_distributed():
        dist.GlobalBatchShards(range(n), batch_size, drop_last=n > batch_size)


def data_parallel(model: torch.nn.Module, device: torch.device, *, sync_bn: bool = False):
    """Under torchrun: join the process group, give every rank rank 0's weights, synchronise BatchNorm if asked,
    and return ``(model, GradientSync)`` for :func:`run_epoch`; in one process ``(model, None)``, untouched."""
    if not dist.is_distributed():
        return model, None
    dist.init(device)
    dist.broadcast_module(model)
    if sync_bn:
        model = dist.convert_sync_batchnorm(model, device)
    return model, dist.GradientSync(model, sync_bn=sync_bn)


def epoch_milestones(epochs: int, milestones: list[int] | None) -> list[int]:
    """lr x gamma at epochs floor(E/3) and floor(2E/3) by default; milestones < 1 are dropped
    (docs/hashing.md#hashing-methods; a deliberate deviation: E < 3)."""
    if milestones is None:
        milestones = [epochs // 3, (2 * epochs) // 3]
    return sorted({int(m) for m in milestones if 1 <= int(m) < max(epochs, 1)})


def build_optimizer(name: str, params, lr: float, momentum: float = 0.9, weight_decay: float = 0.0,
                    betas: tuple[float, float] = (0.9, 0.999)) -> torch.optim.Optimizer:
    name = name.lower()
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, betas=betas, weight_decay=weight_decay)
    raise ValueError(f"optimizer must be 'sgd' or 'adam', got {name!r}")


def hashing_step(model, method, device: torch.device, amp: bool) -> StepFn:
    """Step function of plain hashing training: the method's loss on tanh(alpha * z)."""

    def step_fn(x, y, idx, step):
        with autocast(device, amp):
            h = model(x, alpha=method.train_alpha(step))
        return {"loss": method(h.float(), y, idx)}

    return step_fn
