"""Target labels for targeted attacks (docs/attacks.md#the-saat-attack), shared by every targeted method so all attack
the same targets.

For each query, a label vector is drawn uniformly (seeded) from the distinct non-zero label vectors of the
**database** that share no class with the query. If every database label vector shares a class with the query
(possible on multi-label data), the draw is among the vectors sharing the fewest classes; such queries are
counted in ``fallbacks``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..utils.io import atomic_write_bytes, load_npz


def select_target_labels(query_labels: np.ndarray, db_labels: np.ndarray, seed: int) -> tuple[np.ndarray, int]:
    """(Q, C) uint8 target labels and the number of queries that needed the fewest-shared-classes fallback."""
    ql = np.asarray(query_labels).astype(np.uint8)
    dl = np.asarray(db_labels).astype(np.uint8)
    candidates = np.unique(dl[dl.any(axis=1)], axis=0)  # sorted: independent of database order
    if len(candidates) == 0:
        raise ValueError("the database has no labelled item: no target label can be drawn")
    shared = ql.astype(np.int64) @ candidates.T.astype(np.int64)  # (Q, D) number of shared classes
    rng = np.random.default_rng(seed)
    draws = rng.random(len(ql))
    out = np.empty_like(ql)
    fallbacks = 0
    for i in range(len(ql)):
        best = shared[i].min()
        fallbacks += int(best > 0)
        pool = np.flatnonzero(shared[i] == best)
        out[i] = candidates[pool[int(draws[i] * len(pool))]]
    return out, fallbacks


def distinct_label_rows(labels):
    """The distinct non-zero label vectors of a (n, C) tensor, sorted: where prototype networks draw their training
    labels and targets from."""
    import torch

    rows = torch.unique(labels[labels.sum(1) > 0], dim=0)
    if rows.shape[0] == 0:
        raise ValueError("no labelled item: there is no label vector to draw from")
    return rows


def query_subset(n_queries: int, num: int | None, seed: int) -> np.ndarray:
    """Sorted indices of ``num`` queries drawn with ``seed`` (all queries when num is None or >= n_queries)."""
    if num is None or num >= n_queries:
        return np.arange(n_queries)
    if num < 1:
        raise ValueError(f"--num-queries must be positive, got {num}")
    return np.sort(np.random.default_rng(seed).permutation(n_queries)[:num])


def load_or_create_targets(path: Path, query_labels: np.ndarray, db_labels: np.ndarray, seed: int) -> np.ndarray:
    """Targets of every query, drawn once per seed and saved at ``path`` (.npz); later calls reuse the file."""
    path = Path(path)
    if path.is_file():
        try:
            data = load_npz(path)
        except ValueError:  # a damaged file: the targets are drawn again (the same ones: they depend on the seed)
            data = {}
        targets = data.get("target_labels")
        if targets is not None and "seed" in data and int(data["seed"]) == seed \
                and targets.shape == np.asarray(query_labels).shape:
            return targets
    targets, fallbacks = select_target_labels(query_labels, db_labels, seed)
    import io

    buf = io.BytesIO()
    np.savez(buf, target_labels=targets, seed=np.int64(seed), fallbacks=np.int64(fallbacks))
    atomic_write_bytes(path, buf.getvalue())
    return targets
