"""``saat defend``: adversarial training of a trained run (SAAT, ATRDH, CgAT) on one minimax loop.

Writes a new run directory (default ``<RUN>-<defense>``) shaped like a training run — ``config.yaml`` (the defense
config), ``checkpoint.pt`` (per epoch, for ``--resume``), ``train_log.jsonl`` (every loss term), ``model.pt``
(whose metadata records the origin run and the defense settings) and ``metrics.json`` — so that ``saat
evaluate`` and ``saat attack`` work on it unchanged.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import yaml

from ..checkpoint import save_model
from ..config import DEMO_DATASETS, check_values, config_from_dict, load_yaml, preset_settings
from ..data import FirstItems, to_device_batch
from ..defenses import DEFENSES, DefenseContext
from ..defenses.base import WATCH_STREAM
from ..defenses.watch import CollapseWatch
from ..retrieval import format_ci
from ..runs import RunDir, TrainRecord
from ..utils import dist
from ..utils.codes import sign_codes
from ..utils.device import configure_backends, grad_scaler, resolve_device
from ..utils.dist import is_main_process
from ..utils.io import atomic_write_json, atomic_write_text, check_writable, remove_stale_temps
from ..utils.rng import seeded_generator
from ..utils.schedule import lr_milestones
from .common import encode_batch_size, encode_split, load_run, open_dataset
from .evaluate import evaluate
from .loop import check_global_batches, data_parallel, run_epoch, training_loader
from .train import note_damaged_model, read_log, restore_training_state, save_training_state, write_log


@dataclass
class DefenseConfig:
    """Settings left at None take the defense's defaults (the paper's; the demo preset's on demo datasets)."""

    method: str = "saat"
    eps: float | None = None
    step: float | None = None
    steps: int | None = None
    epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    lambda_: float | None = None
    mu: float | None = None
    parity: bool | None = None
    inner: str | None = None  # pgd (the paper's), fgsm-rs, n-fgsm, free (docs/defenses.md#fast-adversarial-training)
    replays: int | None = None  # free training's M
    on_collapse: str | None = None  # warn, stop, fallback
    options: dict = field(default_factory=dict)
    seed: int = 0
    device: str = "auto"
    amp: bool = False
    tf32: bool | None = None  # None: on for CUDA, off in parity mode (docs/scaling.md#precision)
    num_workers: int | None = None  # None: the default of saat.data.loader.resolve_num_workers (speed only)
    sync_bn: bool = False  # under torchrun: BatchNorm statistics of the global batch (docs/scaling.md)
    evaluate: bool = True
    train_limit: int | None = None  # iterate only the first N training images (quick experiments, the quick demo)

    def __post_init__(self):
        check_values(self)


def defense_settings(cls, cfg: DefenseConfig, demo: bool) -> dict:
    """The defense's paper defaults, then the demo preset (if demo), then the user's explicit settings."""
    explicit = {k: getattr(cfg, k) for k in ("eps", "step", "steps", "epochs", "batch_size", "lr", "lambda_", "mu",
                                             "parity", "inner", "replays", "on_collapse")}
    return preset_settings(cls.defaults, cls.demo_defaults, what=f"defense {cls.name!r}", demo=demo,
                           explicit={**explicit, **cfg.options})


def defend(run_dir: str | Path | None = None, config: DefenseConfig | None = None, *, out: str | Path | None = None,
           resume: str | Path | None = None, progress: bool = True, **overrides) -> dict:
    """Adversarially train the model of ``run_dir`` with a defense; returns the clean metrics of the result.

    Example::

        import saat
        saat.defend("runs/demo", method="saat", out="runs/demo-saat")  # then saat.attack("runs/demo-saat", ...)
    """
    if resume is not None:
        out_dir = Path(resume)
        if not RunDir(out_dir).defense_config.is_file():
            raise FileNotFoundError(f"--resume: {out_dir} has no defense.yaml; is it a defense run directory?")
        path = RunDir(out_dir).defense_config
        saved = load_yaml(path, "--resume")
        if not isinstance(saved.get("config"), dict) or not isinstance(saved.get("source_run"), str):
            raise ValueError(f"--resume: {path} lacks the 'config' mapping or the 'source_run' path saat writes")
        cfg = config_from_dict(DefenseConfig, saved["config"], f"--resume: {path} config")
        run_dir = Path(saved["source_run"])
        return _defend(run_dir, cfg, out_dir, resume=True, progress=progress)
    if run_dir is None:
        raise ValueError("give the run directory of the model to defend (or --resume)")
    cfg = config or DefenseConfig(**{k: v for k, v in overrides.items() if v is not None})
    DEFENSES.get(cfg.method)  # an unknown name fails before anything is loaded
    out_dir = Path(out) if out is not None else Path(f"{Path(run_dir).as_posix().rstrip('/')}-{cfg.method}")
    check_writable(out_dir)  # before the source run is loaded and encoded
    if RunDir(out_dir).has_started():
        raise FileExistsError(f"{out_dir} already holds a run; continue it with --resume {out_dir} "
                              "or choose another --out")
    return _defend(Path(run_dir), cfg, out_dir, resume=False, progress=progress)


def _defend(run_dir: Path, cfg: DefenseConfig, out_dir: Path, resume: bool, progress: bool) -> dict:
    files = RunDir(out_dir)
    from ..hashing import create_method

    defense_cls = DEFENSES.get(cfg.method)
    device = resolve_device(cfg.device)
    progress = progress and is_main_process()  # under torchrun only rank 0 reports
    if resume and is_main_process():
        remove_stale_temps(out_dir)  # left by a process killed mid-write
        note_damaged_model(out_dir)
    source = load_run(run_dir, device)
    model, meta = source.model, source.metadata
    ds = open_dataset(source.config, source.image_size)
    settings = defense_settings(defense_cls, cfg, demo=ds.name.lower() in DEMO_DATASETS)
    configure_backends(device, cfg.tf32, parity=bool(settings.get("parity")))
    batch_size, epochs = int(settings["batch_size"]), int(settings["epochs"])
    replays = int(settings["replays"]) if settings.get("inner") == "free" else 1
    if replays > 1:  # free training: epochs / M passes of M replays, as many weight updates as the epochs ask
        epochs = max(1, math.ceil(epochs / replays))
    train_split = ds.train if cfg.train_limit is None else FirstItems(ds.train, cfg.train_limit)
    check_global_batches(len(train_split), batch_size)
    torch.manual_seed(cfg.seed)

    method = create_method(meta["method"], bits=model.bits, n_classes=ds.n_classes, n_train=len(ds.train),
                           seed=source.config.seed, **meta.get("method_hparams", {}))
    method.load_state_dict(source.ckpt["method_state"])
    method.to(device)
    model, sync = data_parallel(model, device, sync_bn=cfg.sync_bn)  # torchrun: docs/scaling.md
    # Encode the whole training set in eval mode before training (docs/defenses.md#saat-training); under torchrun
    # each rank encodes a shard and every rank gets the whole set.
    outputs = encode_split(model, ds.train, batch_size=encode_batch_size(None, device), device=device,
                           progress=progress, desc="encode train", continuous=True,
                           num_workers=cfg.num_workers).to(device)
    codes = sign_codes(outputs)
    labels = ds.train.labels.to(device)
    method.init_memory(codes, labels)
    per_epoch = len(train_split) // batch_size if len(train_split) > batch_size else 1
    total = per_epoch * epochs * replays
    ctx = DefenseContext(model, method, device, codes, outputs, labels, seed=cfg.seed, amp=cfg.amp,
                         db_labels=ds.database.labels.to(device), total_iterations=total)
    defense = defense_cls(ctx, **settings)
    optimizer = defense.build_optimizer(model.parameters())
    milestones = lr_milestones(defense.lr_milestone_fractions(), total)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=milestones, gamma=0.1)
    scaler = grad_scaler(device, cfg.amp)  # float16 AMP only (GPUs without bfloat16)
    scaler_state = {"scaler": scaler} if scaler is not None else {}

    writer = is_main_process()
    watch = _collapse_watch(defense, train_split, cfg.seed, device) if defense.watched else None
    watch_state = {"watch": watch} if watch is not None else {}
    log: list[dict] = []
    start_epoch = step = 0
    if resume and files.checkpoint.is_file():
        start_epoch, step, log = restore_training_state(out_dir, "defense checkpoint", model=model, method=method,
                                                        defense=defense, optimizer=optimizer, scheduler=scheduler,
                                                        **scaler_state, **watch_state)
        if progress:
            print(f"resuming {out_dir} after epoch {start_epoch}/{epochs}")
    elif writer:
        out_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(files.defense_config, yaml.safe_dump(
            {"source_run": str(run_dir), "source_checkpoint": source.checkpoint_hash, "config": asdict(cfg),
             "settings": _plain(settings)}, sort_keys=False))
    if progress:
        mode = "parity" if settings.get("parity") else "default"
        inner = defense.inner + (f", {replays} replays per batch" if replays > 1 else "")
        print(f"defending {run_dir} with {defense.name} ({mode} mode, inner {inner}): {epochs} epochs of "
              f"{per_epoch} batches, eps {settings['eps'] * 255:g}/255, on {device}"
              + (f"; watching for catastrophic overfitting (on collapse: {settings['on_collapse']})" if watch else ""))

    def step_fn(x, y, idx, it):
        return defense.step(defense.augment(x), y, idx, it)

    def look(epoch_number: int, at_step: int) -> bool:
        """One watch point: log it; on a collapse warn, and stop (True) or fall back to PGD as asked."""
        record = watch.measure(epoch_number, at_step)
        log.append(record)
        if progress:
            print(f"  watch (epoch {record['epoch']}, step {at_step}): clean {record['clean']:.3f}, "
                  f"{record['inner']} {record['train_attack']:.3f}, PGD-10 {record['pgd10']:.3f}")
        if not record["collapse"]:
            return False
        action = settings["on_collapse"]
        if action == "fallback" and defense.inner == "pgd":
            action = "warn"  # already on PGD
        event = {"kind": "collapse", "epoch": record["epoch"], "step": at_step, "inner": record["inner"],
                 "pgd10": record["pgd10"], "best_pgd10": record["best_pgd10"],
                 "train_attack": record["train_attack"], "action": action}
        log.append(event)
        if writer:  # under torchrun every rank watches (the same numbers), rank 0 tells
            print(f"warning: catastrophic overfitting at epoch {record['epoch']} (step {at_step}): the PGD-10 mAP "
                  f"of the watch batch fell to {record['pgd10']:.3f} from its best {record['best_pgd10']:.3f} "
                  f"while the {record['inner']} mAP is {record['train_attack']:.3f}; "
                  + {"warn": "training goes on (--on-collapse stop|fallback to act on it)",
                     "stop": "stopping, with the weights of the best PGD-10 point",
                     "fallback": "the rest of the run trains with --inner pgd"}[action], file=sys.stderr, flush=True)
        if action == "fallback":
            defense.switch_inner("pgd")
        return action == "stop"

    every = int(settings.get("watch_every") or 0) if watch is not None else 0

    model.train()
    t0 = time.perf_counter()
    stopped = False
    for epoch in range(start_epoch, epochs):
        after_step = (lambda at, e=epoch + 1: at % every == 0 and look(e, at)) if every else None
        loader = training_loader(train_split, batch_size, seed=cfg.seed, epoch=epoch, num_workers=cfg.num_workers,
                                 device=device)
        dist.seed_rank_stream(cfg.seed, epoch)
        summary, step = run_epoch(model, loader, step_fn, optimizer, device=device, epoch=epoch, step=step, log=log,
                                  iteration_scheduler=scheduler, progress=progress, desc=defense.name,
                                  channels_last=model.channels_last, sync=sync, scaler=scaler, replays=replays,
                                  after_backward=defense.after_backward, after_step=after_step)
        if progress:
            terms = ", ".join(f"{k} {summary[k]:.4f}" for k in summary
                              if k not in ("kind", "epoch", "step", "seconds", "images_per_s", "lr", "world_size",
                                           "replays", "stopped"))
            print(f"epoch {epoch + 1}/{epochs}: {terms}; {summary['seconds']:.1f} s")
        stopped = bool(summary.get("stopped"))
        if watch is not None and not stopped and not (every and step % every == 0):
            stopped = look(epoch + 1, step)  # the end of every epoch is a watch point
        if stopped:
            restored = watch.restore_best()
            log.append({"kind": "stopped", "epoch": epoch + 1, "step": step, "restored": restored})
            if progress:
                where = (f"epoch {restored['epoch']}, step {restored['step']} (PGD-10 {restored['pgd10']:.3f})"
                         if restored else "none kept: the last weights")
                print(f"stopped after a catastrophic overfitting; best PGD-10 weights restored: {where}")
        if writer:
            save_training_state(files.checkpoint, epochs if stopped else epoch + 1, step, log, model=model,
                                method=method, defense=defense, optimizer=optimizer, scheduler=scheduler,
                                **scaler_state, **watch_state)
            write_log(files.train_log, log)
        if stopped:
            break
    seconds = time.perf_counter() - t0

    metadata = {**meta, "origin": {"run": str(run_dir), "checkpoint": source.checkpoint_hash},
                "defense": {"method": defense.name, "mode": "parity" if settings.get("parity") else "default",
                            **_plain(defense.settings_record())}}
    events = [r for r in log if r.get("kind") in ("collapse", "stopped")]
    if events:
        metadata["defense"]["collapse"] = events
    if writer:
        save_model(files.model, model, metadata, method.state_dict())
    dist.barrier()  # model.pt is on disk for every rank
    epoch_times = [r["seconds"] for r in log if r.get("kind") == "epoch"]
    result = {"defense": metadata["defense"], "epochs": epochs, "training_seconds_this_session": seconds,
              "seconds_per_epoch": sum(epoch_times) / max(len(epoch_times), 1)}
    plain = [r["seconds"] for r in read_log(RunDir(run_dir).train_log) if r.get("kind") == "epoch"]
    if plain:
        result["plain_training_seconds_per_epoch"] = sum(plain) / len(plain)
        result["epoch_time_ratio_to_plain_training"] = result["seconds_per_epoch"] / result[
            "plain_training_seconds_per_epoch"]
    if cfg.evaluate:
        result.update(evaluate(out_dir, device=str(device), progress=progress, dataset=ds, write=False,
                               num_workers=cfg.num_workers))
    result = TrainRecord.from_json(result).to_json()  # a DefenseRecord: result["defense"] is set
    if writer:
        atomic_write_json(files.metrics, result)
    dist.barrier()
    if progress and "mAP" in result:
        print(f"clean mAP of the defended model: {format_ci(result['mAP'], result.get('mAP_ci'), digits=4)}; "
              f"wrote {out_dir}")
    return result


def _collapse_watch(defense, split, seed: int, device: torch.device) -> CollapseWatch:
    """The watch of ``defense`` on a fixed batch of ``watch_size`` training images drawn with the run seed (its own
    stream), kept on the device for the whole run."""
    n = min(int(defense.settings["watch_size"]), len(split))
    order = torch.randperm(len(split), generator=seeded_generator(seed, WATCH_STREAM, "batch"))[:n]
    x, y, _ = to_device_batch(split.__getitems__(order.tolist()), device)
    return CollapseWatch(defense, x, y, seed=seed, keep_best=defense.settings["on_collapse"] == "stop")


def _plain(settings: dict) -> dict:
    """YAML/JSON-friendly copy (tuples become lists)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in settings.items()}
