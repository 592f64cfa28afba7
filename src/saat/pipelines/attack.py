"""``saat attack``: attack a trained run's queries and measure retrieval under attack.

Writes ``RUN/attacks/<name>/``: ``metrics.json`` (benign mAP and adversarial mAP — or t-MAP and the benign t-MAP
of the same queries — with their 95 % bootstrap intervals over the queries, theory MAP, perceptibility, time,
images/s, every setting), ``per_query_ap.npy`` (each query's benign and adversarial AP, or t-AP), ``adv_codes.npy``,
``query_indices.npy`` and ``examples.png`` (benign / adversarial / amplified difference).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Subset

from ..attacks import ATTACKS, TABLE1_ATTACKS, TensorAttack, load_or_create_targets
from ..attacks.api import attack_evaluation
from ..config import check_value, check_values, preset_settings
from ..retrieval import CI_LEVEL, CI_RESAMPLES, average_precision, ci_or_none, format_ci
from ..runs import AttackRecord, RunDir
from ..utils.device import configure_backends, precision_name, resolve_device
from ..utils.dist import is_main_process
from ..utils.images import save_example_grid
from ..utils.io import atomic_save_npy, atomic_write_json, check_writable
from ..utils.validation import check_name
from .common import codes_for, encode_batch_size, load_run, open_dataset, pick_queries


@dataclass
class AttackConfig:
    """What to run. Settings left at None take the method's defaults: the paper's for real datasets, the demo
    preset's for the demo datasets (a shared larger eps, fewer iterations where a method needs many)."""

    method: str = "mainstay"
    targeted: bool = False
    generator: str | None = None
    eps: float | None = None
    step: float | None = None
    steps: int | None = None
    parity: bool | None = None
    options: dict = field(default_factory=dict)  # other method settings, e.g. {"lr": 100.0}
    num_queries: int | None = None
    batch_size: int = 32
    seed: int = 0
    topk: int | None = None
    name: str | None = None
    defense: str | None = None  # "comdefend": a purifier in front of the model at evaluation
    adaptive: bool = False  # with a purifier: the attacker differentiates through it (straight-through binarisation)
    overwrite: bool = False  # replace a result of other settings under the same --name
    amp: bool = False  # the attack's passes through the model in mixed precision (docs/scaling.md#precision)
    tf32: bool | None = None  # TF32 matmuls and cuDNN autotuning: None = on for CUDA, off in parity mode

    def __post_init__(self):
        check_values(self)


def attack_settings(method_cls, cfg: AttackConfig, demo: bool) -> dict:
    """The method's paper defaults, then the demo preset (if demo), then the user's explicit settings."""
    explicit = {k: getattr(cfg, k) for k in ("generator", "eps", "step", "steps", "parity")}
    return preset_settings(method_cls.defaults, method_cls.demo_defaults, what=f"attack {method_cls.name!r}",
                           demo=demo, explicit={**explicit, **cfg.options})


def settings_key(cfg: AttackConfig, settings: dict, topk: int | None, precision: str = "") -> str:
    """A short hash of everything that changes an attack's result: the resolved method settings, the queries (number,
    seed), topK, the batch size (random starts are drawn per batch), the evaluated system and the precision of the
    model's passes when it is not float32 (``precision``: :func:`saat.utils.device.precision_name`)."""
    relevant = {**{k: v for k, v in asdict(cfg).items() if k not in ("name", "overwrite", "options", "amp", "tf32")},
                **settings, "topk": topk, **({"precision": precision} if precision else {})}
    return hashlib.sha256(json.dumps(relevant, sort_keys=True, default=str).encode()).hexdigest()[:8]


def attack_name(cfg: AttackConfig, settings: dict, key: str) -> str:
    """``--name``, or a readable default that ends with the settings key: results of other settings never share a
    folder."""
    if cfg.name:
        return check_name(cfg.name)
    parts = [cfg.method, "targeted" if cfg.targeted else "untargeted"]
    if "generator" in settings:
        parts.append(settings["generator"])
    if "eps" in settings:
        parts.append(f"eps{settings['eps'] * 255:g}")
    if "steps" in settings:
        parts.append(f"steps{settings['steps']}")
    if settings.get("bounded") is False:
        parts.append("unbounded")
    parts.append(f"q{cfg.num_queries or 'all'}")
    parts.append(key[:6])
    if cfg.defense:
        parts.append(cfg.defense + ("-adaptive" if cfg.adaptive else ""))
    return "-".join(parts)


def run_attack(run_dir: str | Path, config: AttackConfig | None = None, *, device: str = "auto",
               progress: bool = True, write: bool = True, examples: int = 6, num_workers: int | None = None,
               **overrides) -> dict:
    """Attack ``run_dir``'s model with ``config`` (or keyword overrides of :class:`AttackConfig`).

    ``num_workers``, like ``device``, is how the work runs, not what it computes: the processes that decode the
    splits' images for their encoding (None: the default of :func:`saat.data.loader.resolve_num_workers`); it is
    not a setting of the result."""
    cfg = config or AttackConfig(**{k: v for k, v in overrides.items() if v is not None})
    method_cls = ATTACKS.get(cfg.method)
    check_value("num_workers", num_workers)
    if cfg.name is not None:
        check_name(cfg.name)  # before any encoding or attacking
    if write:
        check_writable(run_dir)  # before any encoding or attacking
    dev = resolve_device(device)
    run = load_run(run_dir, dev)
    ds = open_dataset(run.config, run.image_size)
    from ..config import DEMO_DATASETS

    settings = attack_settings(method_cls, cfg, demo=ds.name.lower() in DEMO_DATASETS)
    configure_backends(dev, cfg.tf32, parity=bool(settings.get("parity")))
    precision = precision_name(dev, cfg.amp)
    k = cfg.topk if cfg.topk is not None else (run.config.topk if run.config.topk is not None else ds.default_topk)
    bs_enc = encode_batch_size(run.config.eval_batch_size, dev)

    system, attacker, tag, attacker_tag = _systems(run, cfg, dev)
    train_codes, _ = codes_for(run, "train", ds.train, device=dev, batch_size=bs_enc, progress=progress,
                               model=attacker, tag=attacker_tag, num_workers=num_workers)
    db_codes, _ = codes_for(run, "database", ds.database, device=dev, batch_size=bs_enc, progress=progress,
                            model=system, tag=tag, num_workers=num_workers)
    query_codes, _ = codes_for(run, "query", ds.query, device=dev, batch_size=bs_enc, progress=progress,
                               model=system, tag=tag, num_workers=num_workers)
    db_labels = ds.database.labels.numpy()
    picked = pick_queries(ds, cfg.num_queries, cfg.seed)
    query_labels = ds.query.labels.numpy()[picked]
    targets = None
    if cfg.targeted:
        all_targets = load_or_create_targets(RunDir(run_dir).targets(cfg.seed), ds.query.labels.numpy(), db_labels,
                                             cfg.seed)
        targets = all_targets[picked]

    # The TensorAttack that create_attack builds, with eps among the resolved settings rather than checked apart:
    # `saat attack --eps 0` is a legitimate sanity check here (create_attack refuses eps <= 0).
    knowledge = {"train_codes": train_codes, "train_labels": ds.train.labels, "db_codes": db_codes,
                 "db_labels": db_labels, "train_images": ds.train}
    atk = TensorAttack(cfg.method, attacker, eps=None, steps=None, knowledge=knowledge, num_classes=None,
                       seed=cfg.seed, progress=progress, settings=settings, cache_dir=RunDir(run_dir).cache,
                       cache_key=run.checkpoint_hash, amp=cfg.amp)
    key = settings_key(cfg, settings, k, precision)
    name = attack_name(cfg, settings, key)
    out = RunDir(run_dir).attack(name)
    if write and out.metrics.is_file():
        previous = json.loads(out.metrics.read_text())
        if (previous.get("settings") or {}).get("settings_key") == key and not cfg.overwrite:
            if progress:
                print(f"{out.path}: a result of these settings exists; reused (--overwrite to recompute)")
            return previous
        if not cfg.overwrite:
            raise FileExistsError(f"{out.path} holds a result of other settings; choose another --name, or pass "
                                  "--overwrite to replace it")
    record, result = attack_evaluation(
        system, atk, Subset(ds.query, picked.tolist()), query_labels, db_codes, db_labels, topk=k,
        target_labels=targets, batch_size=cfg.batch_size, benign_codes=query_codes[picked], progress=progress,
        examples=examples, channels_last=run.model.channels_last)
    method = atk.method(cfg.targeted)
    # Each query's AP (t-AP with the target labels when targeted), benign and adversarial: the rows whose means are
    # the record's benign and adversarial figures, kept for intervals and paired comparisons on the same queries.
    relevance = targets if cfg.targeted else query_labels
    per_query = np.stack([average_precision(query_codes[picked], db_codes, relevance, db_labels, topk=k),
                          average_precision(result.adv_codes, db_codes, relevance, db_labels, topk=k)])
    record = replace(record, benign_ci=ci_or_none(per_query[0]), adversarial_ci=ci_or_none(per_query[1]),
                     ci_level=CI_LEVEL, ci_resamples=CI_RESAMPLES)
    record = replace(record, name=name, dataset=ds.name, run=str(run_dir), checkpoint=run.checkpoint_hash,
                     defense=run.metadata.get("defense"),
                     network_training_seconds=getattr(method, "training_seconds", None),
                     settings={**{k: v for k, v in asdict(cfg).items()
                                  if k not in settings and k not in ("options", "overwrite", "amp", "tf32")},
                               **method.settings_record(), **({"precision": precision} if precision else {}),
                               "settings_key": key})
    adv_codes, shown = result.adv_codes, result.shown
    metrics = record.to_json()
    if write and is_main_process():
        # metrics.json last: its presence marks a complete result (a kill before it leaves a folder that is redone).
        atomic_save_npy(out.adv_codes, adv_codes)
        atomic_save_npy(out.query_indices, picked)
        atomic_save_npy(out.per_query_ap, per_query.astype(np.float64))
        if shown:
            save_example_grid(out.examples_png, shown, settings.get("eps") or 8 / 255)
            # The same examples as uint8 arrays, for the report's retrieval figure.
            import io

            from ..utils.io import atomic_write_bytes

            def to_u8(images):
                return (torch.stack(images).clamp(0, 1) * 255).round().to(torch.uint8).numpy()

            buf = io.BytesIO()
            np.savez_compressed(buf, query_indices=picked[:len(shown)], benign=to_u8([b for b, _ in shown]),
                                adversarial=to_u8([a for _, a in shown]))
            atomic_write_bytes(out.examples_npz, buf.getvalue())
        atomic_write_json(out.metrics, metrics)
    return metrics


def evaluated_system(run, defense: str | None, dev):
    """(the evaluated system, the cache tag of its codes): the run's model, or with ``defense="comdefend"`` the
    model behind the run's ComDefend purifier."""
    if defense is None:
        return run.model, ""
    if defense != "comdefend":
        raise ValueError(f"--defense must be 'comdefend' (input purification), got {defense!r}; adversarially "
                         "trained models are attacked directly: 'saat attack RUN-saat ...'")
    from ..checkpoint import file_hash
    from ..defenses.comdefend import PurifiedModel, load_purifier, purifier_path

    purifier, _ = load_purifier(run.run_dir, dev)
    return PurifiedModel(purifier, run.model).eval(), "-comdefend-" + file_hash(purifier_path(run.run_dir), 8)


def _systems(run, cfg: AttackConfig, dev):
    """(evaluated system, attacker's model, cache tag of the system, cache tag of the attacker's model)."""
    if cfg.adaptive and cfg.defense is None:
        raise ValueError("--adaptive needs --defense (the attack adapts to an input purifier)")
    system, tag = evaluated_system(run, cfg.defense, dev)
    if cfg.adaptive:  # the attacker differentiates through the purifier (straight-through binarisation)
        return system, system.bpda().eval(), tag, tag
    return system, run.model, tag, ""


def run_attack_family(run_dir: str | Path, config: AttackConfig, *, device: str = "auto", progress: bool = True,
                      methods: tuple[str, ...] | None = None, num_workers: int | None = None) -> dict:
    """Every attack of Table I (untargeted or targeted) on the same queries, with the same eps and targets.

    Settings given in ``config`` apply to each method that has them. Writes ``RUN/attacks/summary-<kind>.json``
    and ``.md`` and returns the summary.
    """
    from dataclasses import replace

    kind = "targeted" if config.targeted else "untargeted"
    rows = []
    for name in methods or TABLE1_ATTACKS[config.targeted]:
        if name not in ATTACKS:
            continue
        cls = ATTACKS.get(name)
        cfg = replace(config, method=name, name=None,
                      options={k: v for k, v in config.options.items() if k in cls.defaults})
        for key in ("generator", "eps", "step", "steps", "parity"):
            if getattr(cfg, key) is not None and key not in cls.defaults:
                cfg = replace(cfg, **{key: None})
        if progress:
            print(f"[{len(rows) + 1}] {name} ({kind})", flush=True)
        rows.append(AttackRecord.from_json(run_attack(run_dir, cfg, device=device, progress=progress,
                                                      num_workers=num_workers)))
    key = "t-MAP" if config.targeted else "mAP"
    summary = {
        "kind": kind, "metric": key, "run": str(run_dir),
        "benign": rows[0].benign if rows else None,
        "benign_ci": rows[0].benign_ci if rows else None,
        "rows": [{"attack": r.attack, "name": r.name, key: r.adversarial, "ci": r.adversarial_ci, "theory": r.theory,
                  "linf_255": r.perceptibility["linf_mean_255"], "psnr": r.perceptibility["psnr_mean"],
                  "seconds": r.seconds, "queries": r.queries, "eps_255": r.settings.get("eps", 0) * 255}
                 for r in rows],
    }
    if is_main_process() and rows:
        run = RunDir(run_dir)
        atomic_write_json(run.attack_summary(kind), summary)
        from ..utils.io import atomic_write_text

        atomic_write_text(run.attack_summary(kind, ".md"), format_family_table(summary))
    return summary


def format_family_table(summary: dict) -> str:
    """The summary as a Markdown table; each figure with its 95 % interval over the queries where the result has
    one (``0.3433 [0.290, 0.395]``)."""
    key = summary["metric"]
    benign_label = "benign t-MAP" if key == "t-MAP" else "clean mAP"
    lines = [f"| attack | {key} [95 % interval] | theory | L-inf (/255) | PSNR (dB) | seconds |",
             "|---|---|---|---|---|---|",
             f"| ({benign_label}) | {format_ci(summary['benign'], summary.get('benign_ci'), digits=4)} | | | | |"]
    for r in summary["rows"]:
        theory = "" if r["theory"] is None else f"{r['theory']:.4f}"
        lines.append(f"| {r['attack']} | {format_ci(r[key], r.get('ci'), digits=4)} | {theory} | "
                     f"{r['linf_255']:.2f} | {r['psnr']:.1f} | {r['seconds']:.1f} |")
    return "\n".join(lines) + "\n"
