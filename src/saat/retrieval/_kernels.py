"""Metric kernels shared by every backend: they read ranked relevance, never distances."""

from __future__ import annotations

import numpy as np
from numba import njit, prange


@njit(parallel=True, cache=True, nogil=True)
def average_precision_kernel(rel, k, out_ap, out_hits):
    """AP@k of each row of ranked relevance ``rel`` (n, depth): (1/R_k) sum_r r / p_r, 0 when R_k = 0."""
    n, depth = rel.shape
    stop = min(k, depth)
    for i in prange(n):
        hits = 0
        total = 0.0
        for p in range(stop):
            if rel[i, p]:
                hits += 1
                total += hits / (p + 1.0)
        out_hits[i] = hits
        out_ap[i] = total / hits if hits > 0 else 0.0


@njit(parallel=True, cache=True, nogil=True)
def hits_at_kernel(rel, ns, out):
    """out[i, a] = number of relevant items among the first ns[a] ranked items of query i."""
    n, depth = rel.shape
    for i in prange(n):
        hits = 0
        p = 0
        for a in range(ns.shape[0]):  # ns ascending
            stop = min(ns[a], depth)
            while p < stop:
                hits += rel[i, p]
                p += 1
            out[i, a] = hits


@njit(parallel=True, cache=True, nogil=True)
def pr_kernel(rel, n_rel, targets, out):
    """Precision at recall levels over the whole ranking.

    targets (n, R): n_r, the number of relevant items each level asks for (0: level skipped -> NaN).
    out[i, a] = n_r / (1-based position of the n_r-th relevant item).
    """
    n, depth = rel.shape
    n_levels = targets.shape[1]
    for i in prange(n):
        pos = np.empty(n_rel[i] + 1, np.int64)
        hits = 0
        for p in range(depth):
            if rel[i, p]:
                hits += 1
                pos[hits] = p + 1
        for a in range(n_levels):
            t = targets[i, a]
            out[i, a] = t / pos[t] if t > 0 else np.nan
