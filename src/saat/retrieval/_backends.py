"""Ranking backends. Each turns validated codes and labels into the same per-query ranking statistics.

Every backend reproduces the one ranking of docs/retrieval.md#retrieval-metrics (ascending Hamming distance, ties by
ascending database index) and yields :class:`RankedChunk` objects; the metrics are then computed from those by one
shared implementation (:mod:`saat.retrieval.metrics`), so all backends give identical numbers.

- ``cpu``: packed bits, popcount, O(M) counting-sort selection per query (numba, parallel over queries).
- ``torch``: distances by one matrix product of +-1 codes, exact stable top-k through unique integer keys
  ``distance * M + index``; used automatically when codes are on a CUDA/MPS device.
- ``faiss``: ``IndexBinaryFlat`` k-NN search (GPU index when FAISS has GPUs, inputs are on CUDA and
  k <= 2048), then exact tie resolution with a range search so the order matches the stable ranking.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from ..utils.validation import is_tensor, on_accelerator
from . import _cpu
from ._bits import pack_codes, pack_codes_bytes, pack_labels

BACKENDS = ("cpu", "torch", "faiss")
DEFAULT_CHUNK_BYTES = 64 << 20  # working memory per chunk of queries


@dataclass
class RankedChunk:
    """Ranking statistics for queries ``start:stop``.

    rel: (n, depth) uint8, relevance of the ranked items in order. idx: (n, depth) int64 database indices.
    n_rel: (n,) total relevant items per query; hist / hist_rel: (n, K+1) counts of all / relevant items per
    Hamming distance. These three may be None unless ``need_hist`` was requested.
    """

    start: int
    stop: int
    idx: np.ndarray
    rel: np.ndarray
    n_rel: np.ndarray | None
    hist: np.ndarray | None
    hist_rel: np.ndarray | None


def resolve_backend(backend: str, *codes) -> str:
    if backend not in ("auto", *BACKENDS):
        raise ValueError(f"backend must be one of 'auto', {', '.join(map(repr, BACKENDS))}; got {backend!r}")
    if backend != "auto":
        return backend
    return "torch" if any(on_accelerator(c) for c in codes) else "cpu"


def _to_numpy(x) -> np.ndarray:
    return x.detach().cpu().numpy() if is_tensor(x) else np.asarray(x)


def _chunk_rows(n_query: int, bytes_per_query: int, chunk_bytes: int) -> int:
    return int(max(1, min(n_query, chunk_bytes // max(1, bytes_per_query))))


def iter_ranked(backend: str, q, db, ql: np.ndarray | None, dl: np.ndarray | None, depth: int,
                need_hist: bool = False, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> Iterator[RankedChunk]:
    """Yield ranking statistics chunk by chunk (see :class:`RankedChunk`)."""
    if backend == "cpu":
        return _iter_cpu(q, db, ql, dl, depth, need_hist, chunk_bytes)
    if backend == "torch":
        return _iter_torch(q, db, ql, dl, depth, need_hist, chunk_bytes)
    if backend == "faiss":
        return _iter_faiss(q, db, ql, dl, depth, need_hist, chunk_bytes)
    raise ValueError(f"unknown backend {backend!r}")


# --------------------------------------------------------------------------------------------------- cpu

def _iter_cpu(q, db, ql, dl, depth, need_hist, chunk_bytes):
    qb, dbb = pack_codes(_to_numpy(q)), pack_codes(_to_numpy(db))
    n_query, n_bits = q.shape
    want_rel = need_hist and ql is not None
    dist_proto = np.empty(0, np.uint16 if n_bits < (1 << 16) else np.int64)
    if ql is None:
        qlb = np.zeros((n_query, 0), np.uint64)
        dlb = np.zeros((dbb.shape[0], 0), np.uint64)
    else:
        qlb, dlb = pack_labels(ql), pack_labels(dl)
    rows = _chunk_rows(n_query, depth * 9 + (n_bits + 1) * 16, chunk_bytes)
    for start in range(0, n_query, rows):
        stop = min(n_query, start + rows)
        n = stop - start
        idx = np.empty((n, depth), np.int64)
        rel = np.empty((n, depth), np.uint8)
        hist = np.empty((n, n_bits + 1), np.int64)
        hist_rel = np.empty((n, n_bits + 1), np.int64)
        _cpu.rank_kernel(qb[start:stop], dbb, qlb[start:stop], dlb, depth, want_rel, dist_proto, idx, rel,
                         hist, hist_rel)
        if want_rel:
            yield RankedChunk(start, stop, idx, rel, hist_rel.sum(axis=1), hist, hist_rel)
        else:
            yield RankedChunk(start, stop, idx, rel, None, None, None)


# ------------------------------------------------------------------------------------------------- torch

def _iter_torch(q, db, ql, dl, depth, need_hist, chunk_bytes):
    import torch

    device = next((c.device for c in (q, db) if is_tensor(c) and c.device.type != "cpu"), torch.device("cpu"))
    qt = torch.as_tensor(_as_float(q), device=device)
    dbt = torch.as_tensor(_as_float(db), device=device)
    n_query, n_bits = qt.shape
    n_db = dbt.shape[0]
    labelled = ql is not None
    if labelled:
        qlt = torch.as_tensor(ql, dtype=torch.float32, device=device)
        dlt = torch.as_tensor(dl, dtype=torch.float32, device=device)
    positions = torch.arange(n_db, device=device)
    rows = _chunk_rows(n_query, n_db * 32, chunk_bytes)
    for start in range(0, n_query, rows):
        stop = min(n_query, start + rows)
        # +-1 products and their sums are exact in float32 for any K < 2**24 (TF32 keeps +-1 exact too).
        dist = torch.round((n_bits - qt[start:stop] @ dbt.T) * 0.5).to(torch.int64)
        relm = (qlt[start:stop] @ dlt.T > 0) if labelled else torch.zeros_like(dist, dtype=torch.bool)
        if depth:
            keys = dist * n_db + positions  # unique keys: sorting them is the stable ranking
            if depth < n_db:
                keys = torch.topk(keys, depth, dim=1, largest=False, sorted=True).values
            else:
                keys = torch.sort(keys, dim=1).values
            idx = torch.remainder(keys, n_db)
            rel = relm.gather(1, idx)
        else:
            idx = torch.empty((stop - start, 0), dtype=torch.int64, device=device)
            rel = torch.empty((stop - start, 0), dtype=torch.bool, device=device)
        hist = hist_rel = None
        if need_hist:
            hist = torch.zeros((stop - start, n_bits + 1), dtype=torch.int64, device=device)
            hist_rel = torch.zeros_like(hist)
            hist.scatter_add_(1, dist, torch.ones_like(dist))
            hist_rel.scatter_add_(1, dist, relm.to(torch.int64))
        n_rel = relm.sum(dim=1)
        yield RankedChunk(
            start, stop, idx.cpu().numpy(), rel.to(torch.uint8).cpu().numpy(), n_rel.cpu().numpy(),
            None if hist is None else hist.cpu().numpy(),
            None if hist_rel is None else hist_rel.cpu().numpy(),
        )


def _as_float(x):
    if is_tensor(x):
        return x.detach().float()
    return np.asarray(x, dtype=np.float32)


# ------------------------------------------------------------------------------------------------- faiss

def _import_faiss():
    try:
        import faiss
    except ImportError:
        raise ImportError(
            "backend='faiss' needs FAISS: pip install 'saat[faiss]' (faiss-cpu) or a faiss-gpu build"
        ) from None
    return faiss


FAISS_GPU_MAX_K = 2048  # GPU FAISS binary k-NN supports k <= 2048; larger k falls back to the CPU index


def _iter_faiss(q, db, ql, dl, depth, need_hist, chunk_bytes):
    faiss = _import_faiss()
    n_query, n_bits = q.shape
    qbytes = pack_codes_bytes(_to_numpy(q))
    dbbytes = pack_codes_bytes(_to_numpy(db))
    n_db = dbbytes.shape[0]
    padded_bits = dbbytes.shape[1] * 8  # zero padding bits are equal on both sides: distances unchanged
    cpu_index = faiss.IndexBinaryFlat(padded_bits)
    cpu_index.add(dbbytes)
    knn_index = cpu_index
    use_gpu = (0 < depth <= FAISS_GPU_MAX_K and hasattr(faiss, "get_num_gpus") and faiss.get_num_gpus() > 0
               and any(on_accelerator(c) for c in (q, db)))
    if use_gpu:  # pragma: no cover - needs faiss-gpu and a GPU
        knn_index = faiss.GpuIndexBinaryFlat(faiss.StandardGpuResources(), padded_bits)
        knn_index.add(dbbytes)
    labelled = ql is not None
    if labelled:
        qlb, dlb = pack_labels(ql), pack_labels(dl)
    rows = _chunk_rows(n_query, n_db * 16 + depth * 9, chunk_bytes)
    for start in range(0, n_query, rows):
        stop = min(n_query, start + rows)
        n = stop - start
        block = qbytes[start:stop]
        idx = np.empty((n, depth), np.int64)
        if depth:
            dist, _ = knn_index.search(block, depth)
            cut = dist[:, -1].astype(np.int64)
            # All items with distance <= cut (range search is strict: distance < radius), then the stable order.
            lims, rd, ri = cpu_index.range_search(block, int(cut.max()) + 1)
            lims = lims.astype(np.int64)
            for i in range(n):
                d_i = rd[lims[i]:lims[i + 1]].astype(np.int64)
                j_i = ri[lims[i]:lims[i + 1]].astype(np.int64)
                keys = np.sort(d_i[d_i <= cut[i]] * n_db + j_i[d_i <= cut[i]])[:depth]
                idx[i] = keys % n_db
        rel = np.zeros((n, depth), np.uint8)
        n_rel = hist = hist_rel = None
        if labelled:
            _cpu.relevance_of(qlb[start:stop], dlb, idx, rel)
        if need_hist:
            n_rel = np.zeros(n, np.int64)
            if labelled:
                _cpu.count_relevant(qlb[start:stop], dlb, n_rel)
            lims, rd, ri = cpu_index.range_search(block, padded_bits + 1)
            lims = lims.astype(np.int64)
            rows_of = np.repeat(np.arange(n), np.diff(lims))
            flat = rows_of * (n_bits + 1) + rd.astype(np.int64)
            hist = np.bincount(flat, minlength=n * (n_bits + 1)).reshape(n, n_bits + 1)
            if labelled:
                item_rel = np.empty(len(ri), np.uint8)
                _cpu.relevance_of_pairs(qlb[start:stop], dlb, rows_of, ri.astype(np.int64), item_rel)
                hist_rel = np.bincount(flat, weights=item_rel, minlength=n * (n_bits + 1))
                hist_rel = hist_rel.astype(np.int64).reshape(n, n_bits + 1)
            else:
                hist_rel = np.zeros_like(hist)
        yield RankedChunk(start, stop, idx, rel, n_rel, hist, hist_rel)


def rank_indices(backend: str, q, db, depth: int, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> np.ndarray:
    """(Q, depth) database indices in stable Hamming order."""
    parts = [c.idx for c in iter_ranked(backend, q, db, None, None, depth, False, chunk_bytes)]
    return np.concatenate(parts, axis=0)
