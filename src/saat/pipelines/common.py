"""Pieces every pipeline shares: opening a run's dataset and model, encoding a split, caching codes."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .._torch_utils import kept_modes
from ..checkpoint import file_hash, load_model_file
from ..config import TrainConfig, config_from_dict
from ..data import to_device_batch
from ..data.check import check_folder as check_dataset_folder  # noqa: F401 - for saat data check
from ..data.prepare import list_prepared, prepare_dataset  # noqa: F401 - for saat data prepare
from ..models import build_model
from ..retrieval import random_ranking_map
from ..runs import RunDir
from ..utils import dist
from ..utils.device import autocast, precision_tag
from ..utils.dist import is_main_process
from ..utils.io import atomic_save_npy, json_form, load_npy, remove_stale_temps
from ..utils.progress import progress_bar


def resolve_image_size(backbone_native: int | None, requested: int | None) -> int | None:
    """The side of images fed to the model: explicit request, else the backbone's (224), else the dataset's."""
    return requested if requested is not None else backbone_native


def open_dataset(cfg: TrainConfig, image_size: int | None, data_root: str | None = None, verbose: bool = True):
    """The run's dataset; ``verbose`` prints its split sizes and the random-ranking mAP@topk (on stderr): what a
    number on this dataset must beat to mean anything."""
    from ..data import load_dataset

    name = None if cfg.dataset_dir and not cfg.dataset else cfg.dataset
    ds = load_dataset(name, data_root=data_root or cfg.data_root, dataset_dir=cfg.dataset_dir,
                      image_root=cfg.image_root, image_size=image_size, seed=cfg.seed, download=cfg.download,
                      path_map=cfg.path_map,
                      verbose=False)
    lonely = queries_without_relevant_items(ds.query.labels.numpy(), ds.database.labels.numpy())
    if lonely == len(ds.query):
        raise ValueError(f"{ds.name}: none of the {lonely} queries shares a label with any database item (are the "
                         "labels all zero, or the query and database label files mismatched?); mAP would be 0")
    if not is_main_process():  # under torchrun rank 0 says it once
        return ds
    if verbose:
        print(f"{ds.summary()} · random-ranking mAP@{ds.default_topk or 'all'} {random_baseline(ds):.3f}",
              file=sys.stderr, flush=True)
    if lonely:
        print(f"warning: {ds.name}: {lonely} of {len(ds.query)} queries share no label with any database item; they "
              "count as AP 0 in every mAP (all-zero label rows?)", file=sys.stderr, flush=True)
    if verbose:
        for line in listing_warnings(ds):
            print(f"warning: {ds.name}: {line}", file=sys.stderr, flush=True)
    return ds


def listing_warnings(ds) -> list[str]:
    """Duplicate paths within a split and query images that also sit in the database (file-based datasets;
    'saat data check' lists them one by one)."""
    splits = {name: getattr(ds, name) for name in ("train", "query", "database")}
    if not all(hasattr(s, "paths") for s in splits.values()):
        return []
    out = []
    for name, split in splits.items():
        duplicates = len(split.paths) - len(set(split.paths))
        if duplicates:
            out.append(f"{duplicates} duplicate image paths in the {name} split")
    overlap = len(set(splits["query"].paths) & set(splits["database"].paths))
    if overlap:
        out.append(f"{overlap} query images also sit in the database (they retrieve themselves)")
    return out


def queries_without_relevant_items(query_labels: np.ndarray, db_labels: np.ndarray) -> int:
    """How many queries share no class with any database item (no relevant item exists for them)."""
    present = np.asarray(db_labels).astype(bool).any(axis=0)
    return int((~(np.asarray(query_labels).astype(bool) & present).any(axis=1)).sum())


def random_baseline(ds, topk: int | None | str = "default") -> float:
    """Expected mAP@topk of a uniformly random ranking of ``ds``'s database for its query set (``"default"``: the
    dataset's default topk; None: the whole database)."""
    k = ds.default_topk if topk == "default" else topk
    return random_ranking_map(ds.query.labels.numpy(), ds.database.labels.numpy(), k)


@torch.no_grad()
def encode_split(model: torch.nn.Module, split, *, batch_size: int, device: torch.device, amp: bool = False,
                 progress: bool = True, desc: str = "encode", num_workers: int | None = None,
                 continuous: bool = False) -> torch.Tensor:
    """+-1 codes (int8, CPU) of every item of a split, in order, with the model in eval mode; with
    ``continuous=True`` the tanh outputs (float32, CPU) instead.

    ``num_workers``: decoding processes (None: the default of :func:`saat.data.loader.resolve_num_workers`, which
    gives file splits workers); batches bound for a CUDA device are pinned. Neither changes the codes.

    Under torchrun each rank encodes a contiguous shard of whole batches and every rank receives the whole split's
    codes in dataset order: each item is encoded in the batch one process would encode it in, so the result is
    the one-process result. Every rank must call it (it is a collective)."""
    from ..data import make_loader

    channels_last = getattr(model, "channels_last", False)
    out = []
    if dist.is_distributed():
        dist.init(device)
        shard = dist.batch_shard_range(len(split), batch_size)
        loader = make_loader(split, batch_size, sampler=shard, num_workers=num_workers, device=device)
        total = len(shard)
    else:
        loader = make_loader(split, batch_size, shuffle=False, num_workers=num_workers, device=device)
        total = len(split)
    bar = progress_bar(total=total, desc=desc, unit="img", disable=not progress)
    with kept_modes(model):
        model.eval()
        for batch in loader:
            x, _, _ = to_device_batch(batch, device, channels_last)
            with autocast(device, amp):
                out.append(model(x).float().cpu() if continuous else model.encode(x).cpu())
            bar.update(x.shape[0])
    bar.close()
    if dist.is_distributed():
        empty = torch.empty((0, model.bits), dtype=torch.float32 if continuous else torch.int8)
        return dist.all_gather_rows(torch.cat(out) if out else empty)
    return torch.cat(out) if out else torch.empty((0, model.bits), dtype=torch.int8)


def encode_batch_size(requested: int | None, device: torch.device) -> int:
    """Encoding batch size: small CNNs encode fastest on CPU in batches of 64 (cache-friendly), GPUs like 256."""
    return requested or (64 if device.type == "cpu" else 256)


def cached_codes(run_dir: Path, key: str, compute: Callable[[], torch.Tensor]) -> np.ndarray:
    """Codes cached at ``run_dir/cache/<key>.npy``; the key carries the checkpoint's content hash. Under torchrun
    rank 0 reads the cache and shares what it found, every rank takes part in computing a missing entry (a sharded
    encoding) and rank 0 writes it."""
    path = RunDir(run_dir).codes_cache(key)
    cached = None
    if is_main_process() and path.is_file():
        try:
            cached = load_npy(path)
        except (OSError, ValueError):
            pass  # a damaged cache file is recomputed
    cached = dist.broadcast_object(cached)
    if cached is not None:
        return cached
    codes = compute()
    codes = codes.numpy() if torch.is_tensor(codes) else np.asarray(codes)
    if is_main_process():
        atomic_save_npy(path, codes.astype(np.int8))
    return codes.astype(np.int8)


@dataclass
class LoadedRun:
    run_dir: Path
    ckpt: dict
    model: torch.nn.Module
    config: TrainConfig
    checkpoint_hash: str

    @property
    def metadata(self) -> dict:
        return self.ckpt["metadata"]

    @property
    def image_size(self) -> int | None:
        return self.metadata.get("input_size")


def load_run(run_dir: str | Path, device: torch.device | None = None) -> LoadedRun:
    """A finished run directory: its model (on ``device``, eval mode) and its training config."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run directory not found: {run_dir}")
    dist.init(device)  # under torchrun: join the process group with the run's device (no-op in one process)
    if is_main_process():
        remove_stale_temps(run_dir)  # left by a process killed mid-write
    files = RunDir(run_dir)
    model_path = files.model
    if not model_path.is_file():
        hint = (" (training has not finished: resume it with 'saat train --resume')" if files.checkpoint.is_file()
                else "")
        raise FileNotFoundError(f"{run_dir} has no {model_path.name}{hint}")
    ckpt = load_model_file(model_path)
    model = build_model(ckpt)
    if device is not None:
        model.to(device)
        if model.channels_last:
            model.to(memory_format=torch.channels_last)
    model.eval()
    cfg = config_from_dict(TrainConfig, ckpt["metadata"]["training"])
    return LoadedRun(run_dir, ckpt, model, cfg, file_hash(model_path))


def refuse_other_settings(path: Path, field: str, settings: dict, what: str) -> None:
    """A result file (``path``) whose ``field`` holds other settings is never overwritten: FileExistsError."""
    if path.is_file() and json.loads(path.read_text()).get(field) != json_form(settings):
        raise FileExistsError(f"{path.parent} holds {what} with other settings; choose another --name or delete "
                              "that folder")


def pick_queries(ds, num: int | None, seed: int) -> np.ndarray:
    """The query indices a command attacks (:func:`saat.attacks.query_subset`); ``--num-queries`` above the
    dataset's query count takes every query and says so on stderr, never silently."""
    from ..attacks import query_subset

    n = len(ds.query)
    if num is not None and num > n and is_main_process():
        print(f"note: --num-queries {num} is more than the {n:,} queries of {ds.name}; using all {n:,}",
              file=sys.stderr, flush=True)
    return query_subset(n, num, seed)


def query_images(split, picked: np.ndarray, device: torch.device) -> torch.Tensor:
    """The items ``picked`` of a split as one float [0, 1] tensor on ``device`` (the queries an evaluation attacks)."""
    return torch.cat([to_device_batch(split.__getitems__(picked[s:s + 256].tolist()), device)[0]
                      for s in range(0, len(picked), 256)])


def codes_for(run: LoadedRun, split_name: str, split, *, device, batch_size: int, progress: bool = True,
              amp: bool = False, model: torch.nn.Module | None = None, tag: str = "",
              num_workers: int | None = None) -> tuple[np.ndarray, float]:
    """Cached codes of one split of a run's dataset and the seconds it took (~0 when cached).

    ``model`` replaces the run's model (e.g. a purifier in front of it); ``tag`` then names it in the cache key.
    ``num_workers`` (None: the default) is how the split is read, never part of the key: the codes do not depend
    on it. The precision they are computed in is (``-bf16``/``-fp16`` under ``amp``, ``-tf32`` for float32 on CUDA
    with TF32 on; :func:`saat.utils.device.precision_tag`): an ``evaluate --amp`` and an ``attack`` never share
    codes, whichever runs first.
    """
    t0 = time.perf_counter()
    encoder = model if model is not None else run.model
    key = f"codes-{split_name}-{run.checkpoint_hash}{tag}{precision_tag(torch.device(device), amp)}"
    codes = cached_codes(run.run_dir, key,
                         lambda: encode_split(encoder, split, batch_size=batch_size, device=device, amp=amp,
                                              progress=progress, desc=f"encode {split_name}",
                                              num_workers=num_workers))
    return codes, time.perf_counter() - t0
