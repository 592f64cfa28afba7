"""``saat train``: train a deep hashing model on a dataset and write a run directory.

A run directory holds ``config.yaml`` (the resolved config), ``checkpoint.pt`` (the training state after the last
finished epoch: model, method memories, optimiser, scheduler, RNG), ``train_log.jsonl``, and when training is
done ``model.pt`` (state_dict + metadata) and ``metrics.json`` (clean retrieval). ``resume=True`` continues from
``checkpoint.pt`` and ends with the same weights as an uninterrupted run with the same seed.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch

from .._version import __version__
from ..checkpoint import load_file, load_model_file, save_file, save_model
from ..config import TrainConfig, config_from_dict, load_yaml, resolve_config, save_config
from ..retrieval import format_ci
from ..runs import RunDir, TrainRecord
from ..utils import dist
from ..utils.device import configure_backends, grad_scaler, resolve_device
from ..utils.dist import is_main_process
from ..utils.io import atomic_write_text, remove_stale_temps
from ..utils.resume import capture, restore
from .common import open_dataset, resolve_image_size
from .evaluate import evaluate
from .loop import (
    build_optimizer,
    check_global_batches,
    data_parallel,
    epoch_milestones,
    hashing_step,
    run_epoch,
    training_loader,
)


def default_run_dir(cfg: TrainConfig) -> Path:
    name = (cfg.dataset or Path(cfg.dataset_dir).name).lower()
    return Path("runs") / f"{name}-{cfg.method}-{cfg.backbone}-{cfg.bits}b-s{cfg.seed}"


def write_log(path: Path, records: list[dict]) -> None:
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in records))


def read_log(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return records


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore :func:`rng_state`. A run may resume where another number of GPUs is visible (a different machine,
    world size or ``CUDA_VISIBLE_DEVICES``): the states of the first ``min(saved, visible)`` GPUs are restored, and
    the difference is said on stderr (the GPUs' own generators drive only dropout on them; seeded draws do not use
    them)."""
    torch.set_rng_state(state["torch"])
    saved = list(state.get("cuda") or [])
    if not saved or not torch.cuda.is_available():
        return
    visible = torch.cuda.device_count()
    for index in range(min(len(saved), visible)):
        torch.cuda.set_rng_state(saved[index], index)
    if len(saved) != visible and is_main_process():
        print(f"note: the checkpoint holds the CUDA generator states of {len(saved)} GPU(s) and {visible} are "
              f"visible now; restored {min(len(saved), visible)}", file=sys.stderr, flush=True)


def save_training_state(path: Path, epoch: int, step: int, log: list[dict], **objects) -> None:
    """Everything a run needs to continue after ``epoch``: each object's state, the global RNG state and the log
    so far (the checkpoint is the one source of truth: a kill between it and train_log.jsonl loses nothing)."""
    save_file({"epoch": epoch, "step": step, "rng": rng_state(), "train_log": list(log), **capture(objects)}, path)


def restore_training_state(run_dir: Path, what: str, **objects) -> tuple[int, int, list[dict]]:
    """Load ``run_dir/checkpoint.pt`` into ``objects`` (by name) and the RNG; return (epoch, step, log): the log the
    checkpoint holds (checkpoints of earlier versions: train_log.jsonl cut back to the checkpoint's epoch)."""
    state = load_file(RunDir(run_dir).checkpoint, what, "restore it from a copy, or delete it and resume again (the "
                      "training then starts over from epoch 0)")
    restore(objects, {k: v for k, v in state.items() if k != "train_log"})
    set_rng_state(state["rng"])
    epoch, step = int(state["epoch"]), int(state["step"])
    if isinstance(state.get("train_log"), list):
        return epoch, step, list(state["train_log"])
    return epoch, step, [r for r in read_log(RunDir(run_dir).train_log) if r.get("epoch", 0) <= epoch]


def note_damaged_model(run_dir: Path) -> None:
    """On ``--resume``: a ``model.pt`` that cannot be read is about to be rewritten (from ``checkpoint.pt`` when the
    training is already done); say so on stderr rather than replace it silently."""
    files = RunDir(run_dir)
    if not is_main_process() or not files.model.is_file():
        return
    try:
        load_model_file(files.model)
    except (OSError, ValueError):
        how = f"from {files.checkpoint.name}" if files.checkpoint.is_file() else "by training again from epoch 0"
        print(f"note: {files.model} is damaged (unreadable); it is rebuilt {how}", file=sys.stderr, flush=True)


def train(config: TrainConfig | None = None, *, out: str | Path | None = None, resume: str | Path | None = None,
          config_file: str | Path | None = None, progress: bool = True, **overrides) -> dict:
    """Train a hashing model; returns the final clean metrics (also in ``<run>/metrics.json``).

    Either pass a :class:`~saat.config.TrainConfig`, or keyword overrides of its fields (``dataset=...,
    method=..., bits=...``) resolved over the presets, or ``resume=RUN_DIR`` to continue an interrupted run.

    Example::

        import saat
        metrics = saat.train(dataset="fashion-mosaic", method="dph", backbone="small_cnn", bits=32,
                             out="runs/demo-dph")
        print(metrics["mAP"], metrics["random_ranking_mAP"])
    """
    if resume is not None:
        run_dir = Path(resume)
        cfg_path = RunDir(run_dir).config
        if not cfg_path.is_file():
            raise FileNotFoundError(f"--resume: {run_dir} has no config.yaml; is it a saat run directory?")

        cfg = config_from_dict(TrainConfig, load_yaml(cfg_path, "--resume"), f"--resume: {cfg_path}")
    else:
        cfg = config if config is not None else resolve_config(TrainConfig, overrides, config_file)
        run_dir = Path(out) if out is not None else default_run_dir(cfg)
        if (RunDir(run_dir).checkpoint).exists() or (RunDir(run_dir).model).exists():
            raise FileExistsError(f"{run_dir} already holds a run; continue it with --resume {run_dir} "
                                  "or choose another --out")
    return _fit(cfg, run_dir, resume=resume is not None, progress=progress)


def _fit(cfg: TrainConfig, run_dir: Path, resume: bool, progress: bool) -> dict:
    from ..hashing import METHODS, create_method
    from ..models import HashModel

    device = resolve_device(cfg.device)
    configure_backends(device, cfg.tf32)
    progress = progress and is_main_process()  # under torchrun only rank 0 reports
    torch.manual_seed(cfg.seed)
    model = HashModel(cfg.backbone, cfg.bits, pretrained=cfg.pretrained, backbone_weights=cfg.backbone_weights,
                      head_norm=METHODS.get(cfg.method).head_norm)
    image_size = resolve_image_size(model.native_input_size, cfg.image_size)
    ds = open_dataset(cfg, image_size)
    check_global_batches(len(ds.train), cfg.batch_size)
    if not resume:  # every image of every split readable, before hours of training (image files only)
        for split in (ds.train, ds.query, ds.database):
            if callable(getattr(split, "check_readable", None)):
                split.check_readable(progress=progress)
    method = create_method(cfg.method, bits=cfg.bits, n_classes=ds.n_classes, n_train=len(ds.train), seed=cfg.seed,
                           **cfg.method_hparams)
    model.to(device)
    if model.channels_last:
        model.to(memory_format=torch.channels_last)
    method.to(device)
    model, sync = data_parallel(model, device, sync_bn=cfg.sync_bn)  # torchrun: docs/scaling.md
    optimizer = build_optimizer(cfg.optimizer, model.parameters(), cfg.lr, cfg.momentum, cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, epoch_milestones(cfg.epochs, cfg.lr_milestones),
                                                     gamma=cfg.lr_gamma)
    scaler = grad_scaler(device, cfg.amp)  # float16 AMP only (GPUs without bfloat16)
    scaler_state = {"scaler": scaler} if scaler is not None else {}
    writer = is_main_process()
    log: list[dict] = []
    start_epoch = step = 0
    if resume and writer:
        remove_stale_temps(run_dir)  # left by a process killed mid-write
        note_damaged_model(run_dir)
    if resume and (RunDir(run_dir).checkpoint).is_file():
        start_epoch, step, log = restore_training_state(run_dir, "training checkpoint", model=model, method=method,
                                                        optimizer=optimizer, scheduler=scheduler, **scaler_state)
        if progress:
            print(f"resuming {run_dir} after epoch {start_epoch}/{cfg.epochs}")
    elif writer:
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, RunDir(run_dir).config)
    if progress:
        ranks = f" x {dist.world_size()} processes" if sync is not None else ""
        print(f"training {cfg.method} / {cfg.backbone} / {cfg.bits} bits on {ds.name} "
              f"({len(ds.train):,} training images, {image_size or ds.image_size}px) on {device}{ranks}")

    step_fn = hashing_step(model, method, device, cfg.amp)
    t_train = time.perf_counter()
    for epoch in range(start_epoch, cfg.epochs):
        loader = training_loader(ds.train, cfg.batch_size, seed=cfg.seed, epoch=epoch, num_workers=cfg.num_workers,
                                 device=device)
        dist.seed_rank_stream(cfg.seed, epoch)
        summary, step = run_epoch(model, loader, step_fn, optimizer, device=device, epoch=epoch, step=step, log=log,
                                  log_every=cfg.log_every, progress=progress, channels_last=model.channels_last,
                                  sync=sync, scaler=scaler)
        scheduler.step()
        if progress:
            print(f"epoch {epoch + 1}/{cfg.epochs}: loss {summary['loss']:.4f}, "
                  f"{summary['images_per_s']:.0f} img/s, {summary['seconds']:.1f} s")
        if writer:
            save_training_state(RunDir(run_dir).checkpoint, epoch + 1, step, log, model=model, method=method,
                                optimizer=optimizer, scheduler=scheduler, **scaler_state)
            write_log(RunDir(run_dir).train_log, log)
    train_seconds = time.perf_counter() - t_train

    metadata = {
        "architecture": model.architecture(),
        "method": method.name,
        "method_hparams": method.hparams,
        "dataset": ds.name,
        "n_classes": ds.n_classes,
        "n_train": len(ds.train),
        "input_size": image_size,
        "training": asdict(cfg),
        "saat_version": __version__,
        "origin": None,
        "defense": None,
    }
    if writer:
        save_model(RunDir(run_dir).model, model, metadata, method.state_dict())
    dist.barrier()  # model.pt is on disk for every rank
    if not cfg.evaluate:
        if progress:
            print(f"wrote {run_dir} (no evaluation: run 'saat evaluate {run_dir}')")
        return {"training_seconds_this_session": train_seconds, "epochs": cfg.epochs}
    metrics = evaluate(run_dir, device=str(device), progress=progress, dataset=ds, write=False,
                       num_workers=cfg.num_workers)
    metrics = TrainRecord.from_json({**metrics, "training_seconds_this_session": train_seconds,
                                     "epochs": cfg.epochs}).to_json()
    if writer:
        from ..utils.io import atomic_write_json

        atomic_write_json(RunDir(run_dir).metrics, metrics)
    dist.barrier()
    if progress:
        print(f"{format_clean_map(metrics)}; wrote {run_dir}")
    return metrics


def format_clean_map(metrics: dict) -> str:
    """The clean mAP of a run's metrics as training ends by printing it: ``clean mAP@1000: 0.7512 [0.731, 0.770]
    (random ranking 0.1043)``, the interval (``mAP_ci``, 95 % bootstrap over the queries) where the metrics have one."""
    k = "all" if metrics["topk"] is None else metrics["topk"]
    return (f"clean mAP@{k}: {format_ci(metrics['mAP'], metrics.get('mAP_ci'), digits=4)} "
            f"(random ranking {metrics['random_ranking_mAP']:.4f})")
