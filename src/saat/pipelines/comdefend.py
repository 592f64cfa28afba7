"""``saat defend RUN --method comdefend``: train a ComDefend purifier (:mod:`saat.defenses.comdefend`) on a run's
clean training images, resumably; ``saat attack RUN --defense comdefend`` then evaluates behind it."""

from __future__ import annotations

import time
from pathlib import Path

import torch

from ..checkpoint import load_file, save_file
from ..config import DEMO_DATASETS, check_value, preset_settings
from ..data import FirstItems, make_loader, to_device_batch
from ..defenses.comdefend import DEFAULTS, DEMO_DEFAULTS, NOISE_STD, ComDefend
from ..runs import RunDir
from ..utils.device import resolve_device
from ..utils.dist import is_main_process
from ..utils.meters import DeviceSums
from ..utils.progress import progress_bar
from ..utils.resume import Checkpointer
from ..utils.rng import SeededStream
from .common import load_run, open_dataset


def comdefend_epoch(net: ComDefend, opt: torch.optim.Optimizer, loader, noise_gen: SeededStream, *,
                    code_weight: float, device: torch.device, bar=None) -> float:
    """One training pass of the purifier over ``loader``: per batch, ``MSE(reconstruction, x) + code_weight *
    mean(z^2)`` with the seeded training noise (drawn on the device). Returns the mean loss per image, read on the
    host once, at the end (the per-batch losses are summed on the device); ``bar`` (a progress bar) is advanced per
    batch."""
    net.train()
    sums, n = DeviceSums(), 0
    for batch in loader:
        x, _, _ = to_device_batch(batch, device)
        z_shape = (x.shape[0], 12, *x.shape[-2:])
        noise = torch.randn(z_shape, generator=noise_gen.on(device), device=device) * NOISE_STD
        rec, z = net(x, noise=noise)
        loss = (rec - x).pow(2).mean() + code_weight * z.pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sums.add({"loss": loss}, weight=x.shape[0])
        n += x.shape[0]
        if bar is not None:
            bar.update(1)
    total = sums.read().get("loss", (0.0, 0))[0]
    if bar is not None:
        bar.set_postfix(loss=f"{total / max(n, 1):.4f}", refresh=False)
    return total / max(n, 1)


def train_comdefend(run_dir: str | Path, *, epochs: int | None = None, lr: float | None = None,
                    batch_size: int | None = None, code_weight: float | None = None, width: float | None = None,
                    limit: int | None = None, seed: int = 0, device: str = "auto", progress: bool = True,
                    num_workers: int | None = None, **options) -> dict:
    """Train the purifier on the run's clean training images; saved at ``RUN/purifiers/comdefend.pt``.

    Resumes from ``comdefend.partial.pt`` after an interruption. Settings left at None take ComDefend's defaults
    (:data:`saat.defenses.comdefend.DEFAULTS`: 30 epochs at full width, Adam 1e-4, batch 32), on the demo datasets
    its demo preset (2 epochs at width 0.25). ``limit`` trains on the first N training images only.
    ``num_workers`` (None: the default of :func:`saat.data.loader.resolve_num_workers`) changes the speed only, and
    is not among the settings a resumed training must match.
    """
    check_value("num_workers", num_workers)
    dev = resolve_device(device)
    run = load_run(run_dir, dev)
    ds = open_dataset(run.config, run.image_size)
    resolved = preset_settings(
        DEFAULTS, DEMO_DEFAULTS, what="defense 'comdefend'", demo=ds.name.lower() in DEMO_DATASETS,
        explicit={"epochs": epochs, "lr": lr, "batch_size": batch_size, "code_weight": code_weight, "width": width,
                  "limit": limit, **options})
    epochs, lr, batch_size, code_weight, width, limit = (resolved[k] for k in (
        "epochs", "lr", "batch_size", "code_weight", "width", "limit"))
    settings = {"epochs": epochs, "lr": lr, "batch_size": batch_size, "code_weight": code_weight, "seed": seed,
                "noise_std": NOISE_STD, "code_channels": 12, "width": width, "limit": limit}
    final, partial = RunDir(run_dir).purifier, RunDir(run_dir).purifier_partial
    torch.manual_seed(seed)
    net = ComDefend(12, width).to(dev)
    train_split = ds.train if limit is None else FirstItems(ds.train, limit)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    noise_gen = SeededStream(seed)
    ckpt = Checkpointer({"state_dict": net, "optimizer": opt, "noise_generator": noise_gen},
                        load=lambda: load_file(partial, "partial ComDefend checkpoint") if partial.is_file() else None,
                        save=lambda state: save_file(state, partial) if is_main_process() else None,
                        counter="epoch", accept=lambda state: state.get("settings") == settings)
    start, saved = ckpt.resume()
    log = list(saved.get("log", []))
    for epoch in range(start, epochs):
        t0 = time.perf_counter()
        loader = make_loader(train_split, batch_size, shuffle=True, seed=seed, epoch=epoch, num_workers=num_workers,
                             device=dev)
        bar = progress_bar(total=len(loader), desc=f"comdefend epoch {epoch + 1}", unit="batch", disable=not progress)
        loss = comdefend_epoch(net, opt, loader, noise_gen, code_weight=code_weight, device=dev, bar=bar)
        bar.close()
        log.append({"epoch": epoch + 1, "loss": loss, "seconds": time.perf_counter() - t0})
        if progress:
            print(f"comdefend epoch {epoch + 1}/{epochs}: loss {log[-1]['loss']:.5f}")
        ckpt.after(epoch + 1, epochs, settings=settings, log=log)
    if is_main_process():
        save_file({"state_dict": net.state_dict(), "settings": settings, "log": log,
                   "checkpoint": run.checkpoint_hash}, final)
        partial.unlink(missing_ok=True)
    return {"purifier": str(final), "settings": settings, "log": log}

