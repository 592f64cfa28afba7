"""``saat robustness``: the robustness card of a trained run (docs/robustness.md).

Writes ``RUN/robustness/<name>/``: ``card.json`` (the card of :func:`saat.robustness.evaluate`, with the run, its
dataset and checkpoint, every figure's 95 % interval over the queries and each query's clean and worst-case AP),
``adv_codes.npy`` (each query's worst-case adversarial codes), ``query_indices.npy`` (the order of the card's
per-query APs), and ``work/`` (each attack's codes, so that an interrupted evaluation resumes where it stopped).
``saat transfer`` writes the transfer matrix with an interval per cell (:func:`saat.robustness.transfer_matrix`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from ..attacks import ATTACKS, load_or_create_targets
from ..config import DEMO_DATASETS, check_value, check_values, default_eps
from ..robustness import PriorRun, check_overrides, ensemble, evaluate, format_card, format_matrix
from ..runs import RunDir
from ..utils.device import configure_backends, precision_name, resolve_device
from ..utils.dist import is_main_process
from ..utils.io import atomic_save_npy, atomic_write_json, check_writable, json_form, load_npy
from ..utils.validation import check_name
from .attack import evaluated_system
from .common import (
    codes_for,
    encode_batch_size,
    load_run,
    open_dataset,
    pick_queries,
    query_images,
    refuse_other_settings,
)

__all__ = ["RobustnessConfig", "demo_overrides", "format_card", "format_matrix", "robustness_name", "run_robustness",
           "run_transfer"]


@dataclass
class RobustnessConfig:
    """What to evaluate. ``eps`` None: the paper's 8/255, or the demo eps on the demo datasets."""

    eps: float | None = None
    preset: str = "standard"
    targeted: bool = False
    num_queries: int | None = None
    seed: int = 0
    topk: int | None = None
    batch_size: int = 32
    surrogate: str | None = None  # a run directory; default for a defense run: the run it was trained from
    defense: str | None = None  # "comdefend": the purifier in front of the model is part of the evaluated system
    adaptive: bool = False  # craft through straight-through versions of non-differentiable parts (BPDA)
    checks: bool = True
    name: str | None = None
    amp: bool = False  # the attacks' passes through the model in mixed precision (docs/scaling.md#precision)
    tf32: bool | None = None  # TF32 matmuls and cuDNN autotuning: None = on for CUDA
    # {attack: {setting: value}} over the preset's member settings (--option ATTACK.KEY=VALUE), e.g. a quicker card
    # for a smoke test; recorded in the card, and part of its default folder name
    options: dict | None = None

    def __post_init__(self):
        check_values(self)
        check_overrides(self.options, self.preset)


def robustness_name(cfg: RobustnessConfig, eps: float, topk: int | None, surrogate: str | None) -> str:
    """The default folder name: every setting that changes the card (the surrogate by a short hash of its path)."""
    parts = [cfg.preset, "targeted" if cfg.targeted else "untargeted", f"eps{eps * 255:g}",
             f"q{cfg.num_queries or 'all'}", f"seed{cfg.seed}", f"top{topk if topk is not None else 'all'}"]
    if cfg.defense:
        parts.append(cfg.defense)
    if cfg.adaptive:
        parts.append("adaptive")
    if surrogate:
        parts.append("surrogate-" + hashlib.sha256(str(Path(surrogate).resolve()).encode()).hexdigest()[:8])
    if not cfg.checks:
        parts.append("nochecks")
    if cfg.options:
        parts.append("options-" + hashlib.sha256(json.dumps(json_form(cfg.options), sort_keys=True).encode())
                     .hexdigest()[:8])
    return "-".join(parts)


def card_overrides(cfg: RobustnessConfig, demo: bool) -> dict:
    """What changes the preset's member settings: on the demo datasets each attack's demo preset for the settings the
    profile leaves open, then the config's ``options``."""
    out = demo_overrides(cfg.preset, cfg.targeted) if demo else {}
    for attack, settings in (cfg.options or {}).items():
        out[attack] = {**out.get(attack, {}), **settings}
    return out


def demo_overrides(preset: str, targeted: bool) -> dict:
    """On the demo datasets, each ensemble attack's demo preset (docs/data.md#demo-calibration-and-presets) for the
    settings the robustness preset leaves open."""
    out = {}
    for member in ensemble(preset, targeted):
        extra = {k: v for k, v in ATTACKS.get(member.attack).demo_defaults.items() if k not in member.settings}
        if extra:
            out[member.attack] = extra
    return out


def prior_runs(run_dir: str | Path, checkpoint: str, picked: np.ndarray, cfg: RobustnessConfig,
               precision: str) -> list[PriorRun]:
    """The run's attack results a card may take instead of running a seed-free member again (``saat attack`` and
    the grid's attack cells write them): those of a seed-free attack on this checkpoint, made on the model itself (no
    input defense), not adaptive, in the card's precision, on the card's queries in the same order and, targeted,
    with the same seed's target labels. Whether a member's settings match is :func:`saat.robustness.evaluate`'s to
    decide. None for a card behind an input defense (``--defense``): an attack record names the checkpoint, not the
    purifier it went through, which may have been trained again since."""
    if cfg.defense:
        return []
    found = []
    for result in RunDir(run_dir).attack_dirs():
        if not (result.is_result() and result.adv_codes.is_file() and result.query_indices.is_file()):
            continue
        try:
            record = json.loads(result.metrics.read_text())
            settings = record.get("settings") or {}
            attack = record.get("attack")
            if (attack not in ATTACKS or not ATTACKS.get(attack).seed_free
                    or record.get("checkpoint") != checkpoint or bool(record.get("targeted")) != cfg.targeted
                    or settings.get("defense") or settings.get("adaptive")
                    or (settings.get("precision") or "") != (precision or "")
                    or (cfg.targeted and settings.get("seed") != cfg.seed)
                    or not np.array_equal(load_npy(result.query_indices), picked)):
                continue
            found.append(PriorRun(ATTACKS.get(attack).name, cfg.targeted, settings,
                                  int(settings.get("batch_size") or 0), load_npy(result.adv_codes),
                                  f"attacks/{result.name}", amp=bool(cfg.amp)))
        except (OSError, ValueError, TypeError, AttributeError):
            continue  # an unreadable or foreign result is not reused (the member runs)
    return found


def run_robustness(run_dir: str | Path, config: RobustnessConfig | None = None, *, device: str = "auto",
                   progress: bool = True, write: bool = True, num_workers: int | None = None, **overrides) -> dict:
    """The robustness card of ``run_dir``'s model (``config`` or keyword overrides of :class:`RobustnessConfig`).
    ``num_workers`` (None: the default of :func:`saat.data.loader.resolve_num_workers`) reads the splits it encodes;
    like ``device`` it is not a setting of the card."""
    cfg = config or RobustnessConfig(**{k: v for k, v in overrides.items() if v is not None})
    check_value("num_workers", num_workers)
    if cfg.name is not None:
        check_name(cfg.name)
    if write:
        check_writable(run_dir)  # before any attack
    dev = resolve_device(device)
    configure_backends(dev, cfg.tf32)
    run = load_run(run_dir, dev)
    ds = open_dataset(run.config, run.image_size)
    demo = ds.name.lower() in DEMO_DATASETS
    eps = cfg.eps if cfg.eps is not None else default_eps(ds.name)
    k = cfg.topk if cfg.topk is not None else (run.config.topk if run.config.topk is not None else ds.default_topk)
    bs_enc = encode_batch_size(run.config.eval_batch_size, dev)

    system, tag = evaluated_system(run, cfg.defense, dev)
    surrogate_dir = cfg.surrogate
    if surrogate_dir is None:
        origin = (run.metadata.get("origin") or {}).get("run")
        surrogate_dir = origin if origin and RunDir(origin).model.is_file() else None
    name = cfg.name or robustness_name(cfg, eps, k, surrogate_dir)
    out = RunDir(run_dir).robustness(name)
    # amp and tf32 are named by the precision they give, and only when it is not float32's, options only when given
    # (cards without them keep the settings they always had, so they resume and are not refused)
    precision = precision_name(dev, cfg.amp)
    settings = {**{key: v for key, v in asdict(cfg).items() if key not in ("amp", "tf32", "options")}, "eps": eps,
                "topk": k, "surrogate": surrogate_dir, "name": name, **({"precision": precision} if precision else {}),
                **({"options": cfg.options} if cfg.options else {})}
    refuse_other_settings(out.card, "settings", settings, "a card")

    # The evaluated system's codes (with a purifier: of the purified images), for the mainstay codes and retrieval.
    train_codes, _ = codes_for(run, "train", ds.train, device=dev, batch_size=bs_enc, progress=progress,
                               model=system, tag=tag, num_workers=num_workers)
    db_codes, _ = codes_for(run, "database", ds.database, device=dev, batch_size=bs_enc, progress=progress,
                            model=system, tag=tag, num_workers=num_workers)
    picked = pick_queries(ds, cfg.num_queries, cfg.seed)
    images = query_images(ds.query, picked, dev)
    labels = ds.query.labels[torch.as_tensor(picked)].float()
    db_labels = ds.database.labels.numpy()
    targets = None
    if cfg.targeted:
        targets = load_or_create_targets(RunDir(run_dir).targets(cfg.seed), ds.query.labels.numpy(), db_labels,
                                         cfg.seed)[picked]
    surrogate = None
    if surrogate_dir is not None:
        other = load_run(surrogate_dir, dev)
        if other.config.dataset.lower() != run.config.dataset.lower():
            raise ValueError(f"the surrogate {surrogate_dir} was trained on {other.config.dataset}, not "
                             f"{run.config.dataset}: a transfer attack needs the same dataset")
        other_codes, _ = codes_for(other, "train", ds.train, device=dev, batch_size=bs_enc, progress=progress,
                                   num_workers=num_workers)
        surrogate = (other.model, torch.as_tensor(other_codes, dtype=torch.float32, device=dev))

    describe = {"model": {"run": str(run_dir), "checkpoint_sha256": run.checkpoint_hash,
                          "backbone": run.config.backbone, "hashing_method": run.config.method,
                          "bits": run.config.bits,
                          "defense": (run.metadata.get("defense") or {}).get("method"), "input_defense": cfg.defense},
                "dataset": {"name": ds.name, "query_indices_sha256": hashlib.sha256(picked.tobytes()).hexdigest()}}
    card, worst = evaluate(
        system, images, labels, db_codes=db_codes, db_labels=db_labels,
        train_codes=torch.as_tensor(train_codes, dtype=torch.float32, device=dev), train_labels=ds.train.labels,
        eps=eps, topk=k, preset=cfg.preset, targeted=cfg.targeted, target_labels=targets, surrogate=surrogate,
        adaptive=cfg.adaptive, seed=cfg.seed, batch_size=cfg.batch_size,
        overrides=card_overrides(cfg, demo), checks=cfg.checks,
        work_dir=out.work if write else None, progress=progress, return_codes=True, describe=describe, amp=cfg.amp,
        prior=prior_runs(run_dir, run.checkpoint_hash, picked, cfg, precision))
    card = {**card, "name": name, "settings": json_form(settings)}
    if write and is_main_process():
        atomic_save_npy(out.adv_codes, worst)
        atomic_save_npy(out.query_indices, picked)
        atomic_write_json(out.card, card)
    return card


def run_transfer(run_dirs: list[str | Path], *, eps: float | None = None, num_queries: int | None = None,
                 seed: int = 0, topk: int | None = None, steps: int | None = None, batch_size: int = 32,
                 name: str | None = None, device: str = "auto", progress: bool = True, write: bool = True,
                 num_workers: int | None = None, amp: bool = False, tf32: bool | None = None) -> dict:
    """The transfer matrix of runs of one dataset (docs/robustness.md#the-transfer-matrix): the mainstay attack (the
    runs' attack preset) crafted on each, evaluated on all. Written to ``FIRST_RUN/transfer/<name>/metrics.json``.
    ``num_workers`` (None: the default) reads the splits it encodes; it is not part of the matrix's config. ``amp``:
    the crafting passes in mixed precision; ``tf32``: TF32 and cuDNN autotuning (None: on for CUDA)."""
    from ..robustness import Party, transfer_matrix
    from .attack import AttackConfig, attack_settings

    if len(run_dirs) < 2:
        raise ValueError(f"saat transfer needs at least two runs, got {len(run_dirs)}")
    if name is not None:
        check_name(name)
    check_value("num_workers", num_workers)
    if write:
        check_writable(run_dirs[0])  # before any encoding or attack
    dev = resolve_device(device)
    configure_backends(dev, tf32)
    runs = [load_run(r, dev) for r in run_dirs]
    first = runs[0]
    for r in runs[1:]:
        if r.config.dataset.lower() != first.config.dataset.lower():
            raise ValueError(f"{r.run_dir} was trained on {r.config.dataset} and {first.run_dir} on "
                             f"{first.config.dataset}: a transfer matrix needs runs of one dataset")
        if r.image_size != first.image_size:
            raise ValueError(f"{r.run_dir} takes {r.image_size}-pixel images and {first.run_dir} "
                             f"{first.image_size}-pixel ones: a transfer matrix needs one input size")
    ds = open_dataset(first.config, first.image_size)
    demo = ds.name.lower() in DEMO_DATASETS
    settings = attack_settings(ATTACKS.get("mainstay"), AttackConfig(eps=eps, steps=steps), demo=demo)
    k = topk if topk is not None else (first.config.topk if first.config.topk is not None else ds.default_topk)
    labels = [Path(r.run_dir).name for r in runs]
    if len(set(labels)) != len(labels):
        labels = [str(r.run_dir) for r in runs]
    parties = []
    for r, label in zip(runs, labels):
        bs_enc = encode_batch_size(r.config.eval_batch_size, dev)
        train_codes, _ = codes_for(r, "train", ds.train, device=dev, batch_size=bs_enc, progress=progress,
                                   num_workers=num_workers)
        db_codes, _ = codes_for(r, "database", ds.database, device=dev, batch_size=bs_enc, progress=progress,
                                num_workers=num_workers)
        parties.append(Party(label, r.model, torch.as_tensor(train_codes, dtype=torch.float32, device=dev),
                             ds.train.labels, db_codes, ds.database.labels))
    picked = pick_queries(ds, num_queries, seed)
    images = query_images(ds.query, picked, dev)
    query_labels = ds.query.labels[torch.as_tensor(picked)].float()
    config = {"runs": [str(r) for r in run_dirs], "eps": settings["eps"], "num_queries": num_queries, "seed": seed,
              "topk": k, "settings": settings}
    precision = precision_name(dev, amp)
    if precision:
        config["precision"] = precision
    default = "-".join(["mainstay", f"eps{settings['eps'] * 255:g}", f"steps{settings['steps']}",
                        f"q{num_queries or 'all'}", f"seed{seed}",
                        hashlib.sha256("|".join(str(Path(r).resolve()) for r in run_dirs).encode()).hexdigest()[:8]])
    out = RunDir(run_dirs[0]).transfer(name or default)
    metrics_file = RunDir(run_dirs[0]).transfer_metrics(out.name)
    refuse_other_settings(metrics_file, "config", config, "a transfer matrix")
    result = transfer_matrix(parties, images, query_labels, eps=settings["eps"], topk=k,
                             settings={key: v for key, v in settings.items() if key != "eps"}, seed=seed,
                             batch_size=batch_size, work_dir=out / "work" if write else None, progress=progress,
                             amp=amp)
    result = {**result, "dataset": ds.name, "name": out.name, "config": json_form(config),
              "runs": [str(r) for r in run_dirs]}
    if write and is_main_process():
        atomic_write_json(metrics_file, result)
    return result
