"""Ranking backends. Each turns validated codes and labels into the same per-query ranking statistics.

Every backend reproduces the one ranking of docs/retrieval.md#retrieval-metrics (ascending Hamming distance, ties by
ascending database index) and yields :class:`RankedChunk` objects; the metrics are then computed from those by one
shared implementation (:mod:`saat.retrieval.metrics`), so all backends give identical numbers.

- ``cpu``: packed bits, popcount, O(M) counting-sort selection per query (numba, parallel over queries).
- ``torch``: distances by one matrix product of +-1 codes, exact stable top-k through unique integer keys
  ``distance * M + index``; used automatically when codes are on a CUDA/MPS device.
- ``faiss``: ``IndexBinaryFlat`` k-NN search (GPU index when FAISS has GPUs, inputs are on CUDA and
  k <= 2048), then exact tie resolution with a range search so the order matches the stable ranking; when the
  whole distance histogram is needed (PR curves), one range search over every item gives the histogram and the
  ranking at once (a stable radix sort of the distances), with no k-NN search.

Memory (docs/retrieval.md#memory): queries are processed in chunks whose rows are computed from a byte budget
(:func:`plan_memory`, default 64 MiB) and an accounting of what one query row of a chunk allocates on each backend;
besides the chunk, a backend keeps O(M) copies of the inputs (``resident_bytes``) and O(M) scratch that does not
grow with the chunk (``fixed_bytes``). Nothing of size Q x M is ever allocated.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from ..utils.validation import is_tensor, on_accelerator
from . import _cpu
from ._bits import pack_codes, pack_codes_bytes, pack_labels

BACKENDS = ("cpu", "torch", "faiss")
DEFAULT_CHUNK_BYTES = 64 << 20  # working memory per chunk of queries (docs/retrieval.md#memory)


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


@dataclass(frozen=True)
class MemoryPlan:
    """How a ranking call on one backend uses memory (bytes; docs/retrieval.md#memory).

    ``rows`` queries per chunk, chosen as the most whose ``row_bytes`` fit the budget (at least one: a single row
    larger than the budget is processed alone). ``row_bytes``: everything a chunk allocates per query row (outputs,
    temporaries, the metrics' per-row arrays). ``fixed_bytes``: working memory that does not grow with the chunk
    (per-thread scratch of the CPU kernel, per-query temporaries processed one query at a time).
    ``resident_bytes``: copies of the inputs the backend holds for the whole call (packed codes and labels, float
    copies, the FAISS index), on top of the caller's own arrays.
    """

    backend: str
    rows: int
    row_bytes: int
    fixed_bytes: int
    resident_bytes: int
    budget: int

    @property
    def chunk_bytes(self) -> int:
        return self.rows * self.row_bytes

    @property
    def working_bytes(self) -> int:
        """Peak working memory of the ranking: ``max(budget, row_bytes) + fixed_bytes`` at most."""
        return self.chunk_bytes + self.fixed_bytes

    @property
    def total_bytes(self) -> int:
        """What the call adds to the caller's arrays: resident copies plus the working memory."""
        return self.resident_bytes + self.working_bytes


def _words(n: int) -> int:
    return max(1, (n + 63) // 64)


def plan_memory(backend: str, n_query: int, n_db: int, n_bits: int, n_classes: int, depth: int,
                need_hist: bool = False, budget: int = DEFAULT_CHUNK_BYTES, extra_row_bytes: int = 0,
                threads: int | None = None) -> MemoryPlan:
    """The chunking of a ranking call and its memory accounting (see :class:`MemoryPlan`).

    Per query row of a chunk (M database items, ``depth`` ranked items kept, K bits):

    - ``cpu``: ranked indices (8 B) and relevance (1 B) per kept item, two (K+1) int64 histograms; the kernel's
      scratch (uint16 distances and int32 candidates, 6 B per item) lives per *thread*, not per row;
    - ``torch``: reused buffers of float32 inner products (then distances), int64 sort keys (then distances),
      float32 label products and their boolean relevance: 17 B per database item (4 B less without labels), plus
      33 B per kept item (top-k values and positions, indices, relevance, and the chunk's own copies);
    - ``faiss``: the range-search results (float32 distance + int64 index, 12 B per returned item, held twice
      while FAISS hands them to numpy: 24 B; every item when the histogram is needed, at most every item within
      the chunk's largest cut distance otherwise), the k-NN results (12 B per kept item), indices and relevance
      (9 B per kept item); the per-query temporaries (distances, sort order, relevance of every item) are fixed.

    With ``need_hist`` (PR curves) the metrics' PR kernel keeps the positions of a query's relevant items, up to
    8 B per database item per thread (fixed). ``extra_row_bytes``: what the caller allocates per row besides (the
    metrics' per-query arrays). Setup temporaries (packing the codes, 65,536 rows at a time) count as resident.
    """
    import numba

    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}")
    if budget < 1:
        raise ValueError(f"the memory budget must be at least 1 byte, got {budget}")
    threads = threads or numba.get_num_threads()
    hist = 2 * 8 * (n_bits + 1)
    n_all = n_query + n_db
    label_words = _words(n_classes)
    packing = 2 * min(n_all, 1 << 16) * max(n_bits, n_classes)  # one block's bool matrix and its packed bytes
    if backend == "cpu":
        row = 9 * depth + hist
        fixed = threads * (6 * (n_db + 1) + 40 * (n_bits + 1))
        resident = n_all * 8 * (_words(n_bits) + label_words) + packing
    elif backend == "torch":
        row = (17 if n_classes else 13) * n_db + 33 * depth + hist + 8 * (n_bits + 2)
        fixed = 0
        resident = n_all * 4 * (n_bits + n_classes) + 8 * n_db
    else:
        row = 24 * n_db + 21 * depth + hist
        fixed = 16 * n_db if need_hist else 33 * n_db  # hist path: per query; k-NN path: a query's tie candidates
        code_bytes = (n_bits + 7) // 8
        resident = n_all * code_bytes + n_db * code_bytes + n_all * 8 * label_words + packing
    if need_hist:
        fixed += threads * 8 * (n_db + 1)
    row += int(extra_row_bytes)
    rows = int(max(1, min(n_query, budget // max(1, row))))
    return MemoryPlan(backend, rows, row, fixed, resident, int(budget))


def iter_ranked(backend: str, q, db, ql: np.ndarray | None, dl: np.ndarray | None, depth: int,
                need_hist: bool = False, chunk_bytes: int = DEFAULT_CHUNK_BYTES,
                extra_row_bytes: int = 0) -> Iterator[RankedChunk]:
    """Yield ranking statistics chunk by chunk (see :class:`RankedChunk`); chunks hold ``plan_memory(...).rows``
    queries for the budget ``chunk_bytes``."""
    n_query, n_bits = q.shape
    n_classes = 0 if ql is None else ql.shape[1]
    plan = plan_memory(backend, n_query, db.shape[0], n_bits, n_classes, depth, need_hist, chunk_bytes,
                       extra_row_bytes)
    if backend == "cpu":
        return _iter_cpu(q, db, ql, dl, depth, need_hist, plan.rows)
    if backend == "torch":
        return _iter_torch(q, db, ql, dl, depth, need_hist, plan.rows)
    return _iter_faiss(q, db, ql, dl, depth, need_hist, plan.rows)


# --------------------------------------------------------------------------------------------------- cpu

def _iter_cpu(q, db, ql, dl, depth, need_hist, rows):
    qb, dbb = pack_codes(_to_numpy(q)), pack_codes(_to_numpy(db))
    n_query, n_bits = q.shape
    want_rel = need_hist and ql is not None
    dist_proto = np.empty(0, np.uint16 if n_bits < (1 << 16) else np.int64)
    if ql is None:
        qlb = np.zeros((n_query, 0), np.uint64)
        dlb = np.zeros((dbb.shape[0], 0), np.uint64)
    else:
        qlb, dlb = pack_labels(ql), pack_labels(dl)
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
            chunk = RankedChunk(start, stop, idx, rel, hist_rel.sum(axis=1), hist, hist_rel)
        else:
            chunk = RankedChunk(start, stop, idx, rel, None, None, None)
        del idx, rel, hist, hist_rel  # the consumer holds the only reference (it drops it before the next chunk)
        yield chunk
        del chunk


# ------------------------------------------------------------------------------------------------- torch

def _iter_torch(q, db, ql, dl, depth, need_hist, rows):
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
    rows = min(rows, n_query)
    # Buffers of one chunk, allocated once and reused (out=): the working memory is exactly what plan_memory
    # counts, and the allocator sees the same few blocks for every chunk instead of fresh Q-row temporaries.
    scores = torch.empty((rows, n_db), dtype=torch.float32, device=device)  # inner products, then distances
    keys = torch.empty((rows, n_db), dtype=torch.int64, device=device)
    relf = torch.empty((rows, n_db), dtype=torch.float32, device=device) if labelled else None
    relm = torch.zeros((rows, n_db), dtype=torch.bool, device=device)
    top = torch.empty((rows, depth), dtype=torch.int64, device=device)
    order = torch.empty((rows, depth), dtype=torch.int64, device=device)
    idx_buf = torch.empty((rows, depth), dtype=torch.int64, device=device)
    rel_buf = torch.empty((rows, depth), dtype=torch.bool, device=device)
    ones = torch.ones((1, 1), dtype=torch.int64, device=device)
    for start in range(0, n_query, rows):
        stop = min(n_query, start + rows)
        n = stop - start
        sc, ky, rm = scores[:n], keys[:n], relm[:n]
        # +-1 products and their sums are exact in float32 for any K < 2**24 (TF32 keeps +-1 exact too), and K - q.b
        # is even: (K - q.b) / 2 is the exact Hamming distance.
        torch.matmul(qt[start:stop], dbt.T, out=sc)
        sc.neg_().add_(n_bits).mul_(0.5).round_()
        if labelled:
            torch.matmul(qlt[start:stop], dlt.T, out=relf[:n])
            torch.gt(relf[:n], 0, out=rm)
        else:
            rm.zero_()  # nothing is relevant (the histogram pass below reuses the buffer)
        n_rel = rm.sum(dim=1)
        ky.copy_(sc)  # integer distances
        idx, rel = idx_buf[:n], rel_buf[:n]
        if depth:
            ky.mul_(n_db).add_(positions)  # unique keys distance * M + index: sorting them is the stable ranking
            if depth < n_db:
                torch.topk(ky, depth, dim=1, largest=False, sorted=True, out=(top[:n], order[:n]))
            else:
                torch.sort(ky, dim=1, out=(top[:n], order[:n]))
            torch.remainder(top[:n], n_db, out=idx)
            torch.gather(rm, 1, idx, out=rel)
            if need_hist:
                ky.copy_(sc)  # back to the distances, for the histograms
        hist = hist_rel = None
        if need_hist:
            hist = torch.zeros((n, n_bits + 1), dtype=torch.int64, device=device)
            hist.scatter_add_(1, ky, ones.expand(n, n_db))
            # the relevant items' distances; the others go to an extra last bin that is dropped
            ky.masked_fill_(rm.logical_not_(), n_bits + 1)
            hist_rel = torch.zeros((n, n_bits + 2), dtype=torch.int64, device=device)
            hist_rel.scatter_add_(1, ky, ones.expand(n, n_db))
            hist_rel = hist_rel[:, :n_bits + 1]
        chunk = RankedChunk(start, stop, _host(idx), _host(rel.to(torch.uint8)), _host(n_rel),
                            None if hist is None else _host(hist), None if hist_rel is None else _host(hist_rel))
        del idx, rel, n_rel, hist, hist_rel, sc, ky, rm
        yield chunk
        del chunk


def _host(t) -> np.ndarray:
    """A numpy array of its own (the chunk's buffers are reused by the next chunk)."""
    return t.cpu().numpy() if t.device.type != "cpu" else t.numpy().copy()


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


def _iter_faiss(q, db, ql, dl, depth, need_hist, rows):
    faiss = _import_faiss()
    n_query, n_bits = q.shape
    qbytes = pack_codes_bytes(_to_numpy(q))
    dbbytes = pack_codes_bytes(_to_numpy(db))
    n_db = dbbytes.shape[0]
    padded_bits = dbbytes.shape[1] * 8  # zero padding bits are equal on both sides: distances unchanged
    cpu_index = faiss.IndexBinaryFlat(padded_bits)
    cpu_index.add(dbbytes)
    del dbbytes  # the index holds its own copy
    knn_index = cpu_index
    use_gpu = (not need_hist and 0 < depth <= FAISS_GPU_MAX_K and hasattr(faiss, "get_num_gpus")
               and faiss.get_num_gpus() > 0 and any(on_accelerator(c) for c in (q, db)))
    if use_gpu:  # pragma: no cover - needs faiss-gpu and a GPU
        knn_index = faiss.GpuIndexBinaryFlat(faiss.StandardGpuResources(), padded_bits)
        knn_index.add(pack_codes_bytes(_to_numpy(db)))
    labelled = ql is not None
    if labelled:
        qlb, dlb = pack_labels(ql), pack_labels(dl)
    dist_dtype = np.uint16 if n_bits < (1 << 16) else np.int64  # uint16: numpy's stable sort is a radix sort
    for start in range(0, n_query, rows):
        stop = min(n_query, start + rows)
        n = stop - start
        block = qbytes[start:stop]
        idx = np.empty((n, depth), np.int64)
        rel = np.zeros((n, depth), np.uint8)
        n_rel = hist = hist_rel = None
        if need_hist:
            # Every item with its distance (range search is strict: distance < radius), one query at a time after.
            lims, rd, ri = cpu_index.range_search(block, padded_bits + 1)
            lims = lims.astype(np.int64)
            hist = np.empty((n, n_bits + 1), np.int64)
            hist_rel = np.zeros((n, n_bits + 1), np.int64)
            n_rel = np.zeros(n, np.int64)
            item_rel = np.empty((1, n_db), np.uint8)
            for i in range(n):
                d_i, j_i = _by_index(rd[lims[i]:lims[i + 1]], ri[lims[i]:lims[i + 1]])
                d_i = d_i.astype(dist_dtype)
                hist[i] = np.bincount(d_i, minlength=n_bits + 1)
                if depth:
                    idx[i] = j_i[np.argsort(d_i, kind="stable")[:depth]]  # ties keep ascending index order
                if labelled:
                    r_i = item_rel[:, :len(j_i)]
                    _cpu.relevance_of(qlb[start + i:start + i + 1], dlb, j_i[None, :], r_i)
                    hist_rel[i] = np.bincount(d_i[r_i[0].view(np.bool_)], minlength=n_bits + 1)
                    n_rel[i] = hist_rel[i].sum()
            del lims, rd, ri
        elif depth:
            dist, _ = knn_index.search(block, depth)
            cut = dist[:, -1].astype(np.int64)  # the distance of each query's depth-th item
            # All items with distance <= cut, then the stable order.
            lims, rd, ri = cpu_index.range_search(block, int(cut.max()) + 1)
            lims = lims.astype(np.int64)
            for i in range(n):
                d_i = rd[lims[i]:lims[i + 1]].astype(np.int64)
                j_i = ri[lims[i]:lims[i + 1]].astype(np.int64)
                keep = d_i <= cut[i]
                keys = np.sort(d_i[keep] * n_db + j_i[keep])[:depth]
                idx[i] = keys % n_db
            del lims, rd, ri
        if labelled and depth:
            _cpu.relevance_of(qlb[start:stop], dlb, idx, rel)
        chunk = RankedChunk(start, stop, idx, rel, n_rel, hist, hist_rel)
        del idx, rel, n_rel, hist, hist_rel
        yield chunk
        del chunk


def _by_index(d: np.ndarray, j: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One query's range-search results in ascending database index (FAISS returns them in scan order, which is
    ascending for IndexBinaryFlat; checked, and sorted if a build ever differs)."""
    j = j.astype(np.int64, copy=False)
    if j.size > 1 and not bool(np.all(j[1:] > j[:-1])):
        order = np.argsort(j, kind="stable")
        return d[order], j[order]
    return d, j


def rank_indices(backend: str, q, db, depth: int, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> np.ndarray:
    """(Q, depth) database indices in stable Hamming order."""
    parts = [c.idx for c in iter_ranked(backend, q, db, None, None, depth, False, chunk_bytes)]
    return np.concatenate(parts, axis=0)
