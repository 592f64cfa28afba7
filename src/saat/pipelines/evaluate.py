"""``saat evaluate``: clean retrieval metrics of a trained run (query split vs database)."""

from __future__ import annotations

import time
from pathlib import Path

from ..config import check_value
from ..retrieval import CI_LEVEL, CI_RESAMPLES, ci_or_none, evaluate_retrieval
from ..runs import RunDir, TrainRecord
from ..utils.device import configure_backends, resolve_device
from ..utils.dist import is_main_process
from ..utils.io import atomic_write_json, check_writable
from .common import codes_for, encode_batch_size, load_run, open_dataset

SPLITS = {"test": "query", "query": "query", "train": "train"}


def evaluate(run_dir: str | Path, *, topk: int | None = None, split: str = "test", device: str = "auto",
             batch_size: int | None = None, data_root: str | None = None, progress: bool = True,
             write: bool = True, dataset=None, num_workers: int | None = None, tf32: bool | None = None) -> dict:
    """Encode the queries (``split``: test = the query set, or train) and the database of a run's dataset, and
    compute mAP@topk (default: the dataset's topK) with its 95 % bootstrap interval over the queries (``mAP_ci``),
    PR curves, P@N, P@r<=2 and the random-ranking baseline.

    Database codes are cached under ``run_dir/cache`` keyed by the checkpoint's content hash. Writes
    ``metrics.json`` (or ``metrics-<split>.json`` for other splits) and returns the metrics dict.
    ``num_workers``: decoding processes (None: the default of :func:`saat.data.loader.resolve_num_workers`).
    ``tf32``: TF32 matmuls and cuDNN autotuning (None: on for CUDA); the encodings are cached per precision.
    """
    if split not in SPLITS:
        raise ValueError(f"--split must be one of {', '.join(SPLITS)}, got {split!r}")
    check_value("batch_size", batch_size)
    check_value("topk", topk)
    check_value("num_workers", num_workers)
    if write:
        check_writable(run_dir)  # before any encoding
    dev = resolve_device(device)
    configure_backends(dev, tf32)
    run = load_run(run_dir, dev)
    cfg = run.config
    ds = dataset if dataset is not None else open_dataset(cfg, run.image_size, data_root)
    k = topk if topk is not None else (cfg.topk if cfg.topk is not None else ds.default_topk)
    bs = encode_batch_size(batch_size or cfg.eval_batch_size, dev)
    queries = getattr(ds, SPLITS[split])
    q, tq = codes_for(run, SPLITS[split], queries, device=dev, batch_size=bs, progress=progress, amp=cfg.amp,
                      num_workers=num_workers)
    db, tdb = codes_for(run, "database", ds.database, device=dev, batch_size=bs, progress=progress, amp=cfg.amp,
                        num_workers=num_workers)
    t0 = time.perf_counter()
    res = evaluate_retrieval(q, db, queries.labels.numpy(), ds.database.labels.numpy(), topk=k)
    metrics = res.to_dict()
    # the 95 % bootstrap interval of the mAP over the queries (docs/robustness.md#confidence-intervals)
    metrics.update({"mAP_ci": ci_or_none(res.ap), "ci_level": CI_LEVEL, "ci_resamples": CI_RESAMPLES})
    metrics.update({
        "dataset": ds.name, "split": split, "method": run.metadata.get("method"),
        "backbone": run.metadata["architecture"]["backbone"], "bits": run.metadata["architecture"]["bits"],
        "checkpoint": run.checkpoint_hash, "defense": run.metadata.get("defense"),
        "seconds": {"encode_queries": tq, "encode_database": tdb, "metrics": time.perf_counter() - t0},
    })
    if write and is_main_process():
        atomic_write_json(RunDir(run_dir).split_metrics(split), TrainRecord.from_json(metrics).to_json())
    return metrics
