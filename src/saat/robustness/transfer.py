"""The transfer matrix (docs/robustness.md#the-transfer-matrix): the mainstay attack crafted on each source model,
its adversarial queries evaluated on every model — how far adversarial queries carry across hashing methods, bit
lengths and defenses. The diagonal is the white-box attack. Every cell carries its 95 % bootstrap interval over the
queries (docs/robustness.md#confidence-intervals)."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..attacks.api import TensorAttack, own_batch_starts, system_codes
from ..retrieval import CI_LEVEL, CI_RESAMPLES, average_precision, ci_or_none, format_ci
from ..utils import dist
from ..utils.device import precision_name
from ..utils.io import atomic_save_npy, atomic_write_json, json_form, load_npy
from ..utils.progress import progress_bar
from ..utils.validation import check_eps, check_images, check_labels


@dataclass
class Party:
    """One model of the matrix: the model, its ±1 training codes and labels (to craft the mainstay attack on it) and
    its database codes and labels (to evaluate on it)."""

    name: str
    model: Any
    train_codes: Any
    train_labels: Any
    db_codes: Any
    db_labels: Any


def _craft(atk: TensorAttack, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> torch.Tensor:
    """The adversarial images of every query, in batches; under torchrun sharded like every attack (this process
    replays the batches before its share, crafts its share, and the images of all are gathered in query order)."""
    starts, sharded = own_batch_starts(atk, x.shape[0], batch_size, x[:1], y, None)
    parts = [atk(x[s:s + batch_size], y[s:s + batch_size]) for s in starts]
    adv = torch.cat(parts) if parts else x[:0].clone()
    if not sharded:
        return adv
    return dist.all_gather_rows(adv.reshape(adv.shape[0], -1)).reshape(-1, *x.shape[1:]).to(x.device)


def transfer_matrix(parties: list[Party], images: torch.Tensor, labels, *, eps: float, topk: int | None,
                    settings: dict | None = None, seed: int = 0, batch_size: int = 32, num_classes: int | None = None,
                    work_dir: str | Path | None = None, progress: bool = False, amp: bool = False) -> dict:
    """``matrix[i][j]``: mAP on party j of the queries attacked on party i (mainstay attack, ``settings`` over its
    defaults); ``clean[j]``: party j's mAP of the clean queries; ``matrix_ci[i][j]`` and ``clean_ci[j]`` their 95 %
    bootstrap intervals ``[lo, hi]`` over the queries. With ``work_dir`` each source's adversarial images are kept
    (float32 .npy), so an interrupted matrix resumes. ``amp``: the crafting passes in mixed precision."""
    if len(parties) < 2:
        raise ValueError(f"a transfer matrix needs at least two models, got {len(parties)}")
    names = [p.name for p in parties]
    if len(set(names)) != len(names):
        raise ValueError(f"the models of a transfer matrix need distinct names, got {names}")
    x = check_images(images)
    eps = check_eps(eps)
    y = check_labels(labels, "labels", num_classes, batch=x.shape[0]).to(x.device)
    relevance = y.cpu().numpy()
    wdir = Path(work_dir) if work_dir is not None else None
    if wdir is not None:
        wdir.mkdir(parents=True, exist_ok=True)
    settings = dict(settings or {})

    databases = [(torch.as_tensor(p.db_codes).cpu().numpy(), torch.as_tensor(p.db_labels).cpu().numpy())
                 for p in parties]

    def score(j: int, images_: torch.Tensor) -> tuple[float, list[float] | None]:
        """Party j's mAP of ``images_`` and its interval over the queries."""
        codes = system_codes(parties[j].model, images_, batch_size)
        ap = average_precision(codes, *databases[j][:1], relevance, databases[j][1], topk=topk)
        return float(ap.mean()), ci_or_none(ap)

    t0 = time.perf_counter()
    clean_scores = [score(j, x) for j in range(len(parties))]
    matrix, matrix_ci, seconds = [], [], []
    bar = progress_bar(total=len(parties), desc="transfer: craft", unit="model", disable=not progress)
    for i, source in enumerate(parties):
        adv_file = wdir / f"adv-{i}.npy" if wdir is not None else None
        info_file = wdir / f"adv-{i}.json" if wdir is not None else None
        precision = {"amp": precision_name(x.device, True)} if amp else {}
        key = json_form({"source": source.name, "eps": eps, "seed": seed, "settings": settings,
                         "queries": int(x.shape[0]), **precision})
        adv = None
        if adv_file is not None and adv_file.is_file() and info_file.is_file():
            info = json.loads(info_file.read_text())
            if info.get("key") == key:
                try:
                    adv = torch.from_numpy(load_npy(adv_file)).to(x.device)
                    seconds.append(info["seconds"])
                except ValueError:  # a damaged resume file: this source is crafted again
                    adv = None
        if adv is None:
            start = time.perf_counter()
            atk = TensorAttack("mainstay", source.model, eps=None, steps=None,
                               knowledge={"train_codes": source.train_codes, "train_labels": source.train_labels},
                               num_classes=y.shape[1], seed=seed, progress=False, settings={**settings, "eps": eps},
                               amp=amp)
            adv = _craft(atk, x, y, batch_size)
            seconds.append(time.perf_counter() - start)
            if adv_file is not None and dist.is_main_process():
                atomic_save_npy(adv_file, adv.detach().cpu().numpy().astype(np.float32))
                atomic_write_json(info_file, {"key": key, "seconds": seconds[-1]})
        row = [score(j, adv) for j in range(len(parties))]
        matrix.append([v for v, _ in row])
        matrix_ci.append([ci for _, ci in row])
        bar.update(1)
    bar.close()
    return {"version": 1, "attack": "mainstay", "settings": {**settings, "eps": eps}, "eps": eps, "topk": topk,
            "queries": int(x.shape[0]), "seed": int(seed), "models": names, "clean": [v for v, _ in clean_scores],
            "matrix": matrix, "clean_ci": [ci for _, ci in clean_scores], "matrix_ci": matrix_ci,
            "ci": {"level": CI_LEVEL, "resamples": CI_RESAMPLES}, "craft_seconds": seconds,
            "seconds": time.perf_counter() - t0}


def format_matrix(result: dict) -> str:
    """The matrix as a plain-text table: rows = crafted on, columns = evaluated on; each cell with its 95 % interval
    over the queries where the result has one (a matrix written before intervals existed: the values alone)."""
    names = result["models"]
    clean_ci = result.get("clean_ci") or [None] * len(names)
    matrix_ci = result.get("matrix_ci") or [[None] * len(names) for _ in names]
    width = max(20 if result.get("matrix_ci") else 12, *(len(n) for n in names))

    def cells(values, intervals) -> str:
        return "".join(f"{format_ci(v, ci):>{width + 2}}" for v, ci in zip(values, intervals, strict=True))

    lines = [f"mAP@{result['topk']} of {result['queries']} queries, mainstay attack eps {result['eps'] * 255:.3g}/255 "
             "(rows: crafted on; columns: evaluated on" + ("; 95 % intervals over the queries)"
                                                          if result.get("matrix_ci") else ")"),
             " " * width + "".join(f"{n[:width]:>{width + 2}}" for n in names),
             f"{'(clean)':<{width}}" + cells(result["clean"], clean_ci)]
    for name, row, intervals in zip(names, result["matrix"], matrix_ci, strict=True):
        lines.append(f"{name[:width]:<{width}}" + cells(row, intervals))
    return "\n".join(lines)
