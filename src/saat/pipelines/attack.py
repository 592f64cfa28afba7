"""``saat attack``: attack a trained run's queries and measure retrieval under attack.

Writes ``RUN/attacks/<name>/``: ``metrics.json`` (benign mAP and adversarial mAP — or t-MAP and the benign t-MAP
of the same queries —, theory MAP, perceptibility, time, images/s, every setting), ``adv_codes.npy``,
``query_indices.npy`` and ``examples.png`` (benign / adversarial / amplified difference).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from ..attacks import ATTACKS, AttackContext, Perceptibility, load_or_create_targets, query_subset
from ..retrieval import evaluate_retrieval, mean_average_precision
from ..utils.device import resolve_device
from ..utils.dist import is_main_process
from ..utils.images import save_example_grid
from ..utils.io import atomic_save_npy, atomic_write_json
from .common import codes_for, encode_batch_size, load_run, open_dataset
from .loop import to_device_batch

PAPER_EPS = 8 / 255


@dataclass
class AttackConfig:
    """Attack settings; None means "the preset's": the paper's for real datasets, the demo's for demo datasets."""

    method: str = "mainstay"
    targeted: bool = False
    generator: str = "pgd"
    eps: float | None = None
    step: float | None = None
    steps: int | None = None
    num_queries: int | None = None
    batch_size: int = 32
    seed: int = 0
    topk: int | None = None
    parity: bool = False
    name: str | None = None


# Demo datasets: 8/255 barely moves grayscale models (SPEC 2.4), so the demo preset uses a larger budget; its
# values are the measured choice documented in the README. Real datasets keep the paper's settings.
ATTACK_PRESETS = {
    "paper": {"eps": PAPER_EPS, "step": 1 / 255, "steps": 100},
    "demo": {"eps": 32 / 255, "step": 2 / 255, "steps": 50},
}


def _preset_for(dataset_name: str) -> str:
    from ..config import DEMO_DATASETS

    return "demo" if dataset_name.lower() in DEMO_DATASETS else "paper"


def attack_name(cfg: AttackConfig) -> str:
    if cfg.name:
        return cfg.name
    kind = "targeted" if cfg.targeted else "untargeted"
    return f"{cfg.method}-{kind}-{cfg.generator}-eps{cfg.eps * 255:g}-steps{cfg.steps}-q{cfg.num_queries or 'all'}"


def run_attack(run_dir: str | Path, config: AttackConfig | None = None, *, device: str = "auto",
               progress: bool = True, write: bool = True, examples: int = 6, **overrides) -> dict:
    """Attack ``run_dir``'s model with ``config`` (or keyword overrides of :class:`AttackConfig`)."""
    cfg = config or AttackConfig(**{k: v for k, v in overrides.items() if v is not None})
    dev = resolve_device(device)
    run = load_run(run_dir, dev)
    ds = open_dataset(run.config, run.image_size)
    preset = ATTACK_PRESETS[_preset_for(ds.name)]
    cfg.eps = preset["eps"] if cfg.eps is None else cfg.eps
    cfg.step = preset["step"] if cfg.step is None else cfg.step
    cfg.steps = preset["steps"] if cfg.steps is None else cfg.steps
    method_cls = ATTACKS.get(cfg.method)
    k = cfg.topk if cfg.topk is not None else (run.config.topk if run.config.topk is not None else ds.default_topk)
    bs_enc = encode_batch_size(run.config.eval_batch_size, dev)

    train_codes, _ = codes_for(run, "train", ds.train, device=dev, batch_size=bs_enc, progress=progress)
    db_codes, _ = codes_for(run, "database", ds.database, device=dev, batch_size=bs_enc, progress=progress)
    query_codes, _ = codes_for(run, "query", ds.query, device=dev, batch_size=bs_enc, progress=progress)
    db_labels = ds.database.labels.numpy()
    picked = query_subset(len(ds.query), cfg.num_queries, cfg.seed)
    query_labels = ds.query.labels.numpy()[picked]
    targets = None
    if cfg.targeted:
        all_targets = load_or_create_targets(Path(run_dir) / "attacks" / f"targets-seed{cfg.seed}.npz",
                                             ds.query.labels.numpy(), db_labels, cfg.seed)
        targets = all_targets[picked]

    def on_dev(a):
        return torch.as_tensor(np.asarray(a), dtype=torch.float32, device=dev)

    ctx = AttackContext(run.model, dev, on_dev(train_codes), ds.train.labels.to(dev), on_dev(db_codes),
                        ds.database.labels.to(dev), seed=cfg.seed, progress=False)
    method_kwargs = {"eps": cfg.eps, "step": cfg.step, "steps": cfg.steps, "parity": cfg.parity}
    if method_cls.uses_generator:
        method_kwargs["generator"] = cfg.generator
    method = method_cls(ctx, targeted=cfg.targeted, **method_kwargs)

    adv_codes = np.empty((len(picked), db_codes.shape[1]), np.int8)
    theory: np.ndarray | None = np.empty_like(adv_codes)
    percept = Perceptibility()
    shown: list[tuple[torch.Tensor, torch.Tensor]] = []
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(picked), desc=f"attack {cfg.method}", unit="img", leave=False, dynamic_ncols=True)
    t0 = time.perf_counter()
    for start in range(0, len(picked), cfg.batch_size):
        rows = picked[start:start + cfg.batch_size]
        x, y, _ = to_device_batch(ds.query.__getitems__(rows.tolist()), dev, run.model.channels_last)
        t = on_dev(targets[start:start + len(rows)]) if targets is not None else None
        x_adv = method.attack(x, y, t)
        with torch.no_grad():
            adv_codes[start:start + len(rows)] = run.model.encode(x_adv).cpu().numpy()
        ideal = method.theory_codes(t if cfg.targeted else y)
        if ideal is None:
            theory = None
        elif theory is not None:
            theory[start:start + len(rows)] = ideal.cpu().numpy().astype(np.int8)
        percept.update(x, x_adv)
        if len(shown) < examples:
            shown.extend((x[i].cpu(), x_adv[i].cpu()) for i in range(min(len(rows), examples - len(shown))))
        if bar is not None:
            bar.update(len(rows))
    seconds = time.perf_counter() - t0
    if bar is not None:
        bar.close()

    relevance = targets if cfg.targeted else query_labels
    benign_codes = query_codes[picked]
    adv_eval = evaluate_retrieval(adv_codes, db_codes, relevance, db_labels, topk=k)
    key = "t-MAP" if cfg.targeted else "mAP"
    metrics = {
        "attack": cfg.method, "targeted": cfg.targeted, "name": attack_name(cfg),
        "dataset": ds.name, "run": str(run_dir), "checkpoint": run.checkpoint_hash,
        "defense": run.metadata.get("defense"), "topk": k, "queries": len(picked),
        "benign_mAP": mean_average_precision(benign_codes, db_codes, query_labels, db_labels, topk=k),
        f"adversarial_{key}": adv_eval.map,
        "theory_" + key: (None if theory is None
                          else mean_average_precision(theory, db_codes, relevance, db_labels, topk=k)),
        "random_ranking_mAP": adv_eval.extra["random_ranking_mAP"],
        "perceptibility": percept.result(),
        "seconds": seconds, "images_per_s": len(picked) / max(seconds, 1e-9),
        "settings": {**asdict(cfg), **method.settings()},
        "pr_curve": adv_eval.to_dict()["pr_curve"], "precision_at_n": adv_eval.to_dict()["precision_at_n"],
        "device": str(dev),
    }
    if cfg.targeted:
        metrics["benign_t-MAP"] = mean_average_precision(benign_codes, db_codes, targets, db_labels, topk=k)
    if write and is_main_process():
        out = Path(run_dir) / "attacks" / metrics["name"]
        atomic_write_json(out / "metrics.json", metrics)
        atomic_save_npy(out / "adv_codes.npy", adv_codes)
        atomic_save_npy(out / "query_indices.npy", picked)
        if shown:
            save_example_grid(out / "examples.png", shown, cfg.eps)
    return metrics
