"""CPU ranking backend: bit-packed codes, popcount distances and an O(M) stable selection per query.

For each query the kernel computes all M Hamming distances (popcount of XOR over packed words) and their
histogram, finds the distance ``T`` at which the top-``depth`` cut falls, and scatters the selected items into
place with one counting-sort pass (items with distance < T, then the first items at distance T, each group in
ascending database index). No comparison sort is involved, and the order is exactly the stable ranking of
docs/retrieval.md#retrieval-metrics. Queries run in parallel with numba's ``prange``.
"""

from __future__ import annotations

import numba
import numpy as np
from numba import njit, prange

_M1 = np.uint64(0x5555555555555555)
_M2 = np.uint64(0x3333333333333333)
_M4 = np.uint64(0x0F0F0F0F0F0F0F0F)
_H01 = np.uint64(0x0101010101010101)
_S1 = np.uint64(1)
_S2 = np.uint64(2)
_S4 = np.uint64(4)
_S56 = np.uint64(56)


@njit(inline="always", cache=True)
def _popcount64(x):
    # SWAR popcount; LLVM lowers this pattern to the POPCNT instruction where the CPU has it.
    x = x - ((x >> _S1) & _M1)
    x = (x & _M2) + ((x >> _S2) & _M2)
    x = (x + (x >> _S4)) & _M4
    return np.int64((x * _H01) >> _S56)


@njit(parallel=True, cache=True, nogil=True)
def rank_kernel(qbits, dbbits, qlab, dblab, depth, want_hist_rel, dist_proto, out_idx, out_rel, hist, hist_rel):
    """Rank the database for each query.

    qbits (Q, W) / dbbits (M, W): packed codes. qlab (Q, L) / dblab (M, L): packed labels (L may be 0).
    dist_proto: an empty array whose dtype holds distances up to K (uint16 for any practical K).
    Writes out_idx (Q, depth) database indices in ranked order, out_rel (Q, depth) their relevance (0/1) and
    hist (Q, K+1) item counts per distance; hist_rel (Q, K+1) relevant counts per distance if want_hist_rel.
    """
    n_query = qbits.shape[0]
    n_db = dbbits.shape[0]
    n_words = qbits.shape[1]
    n_lab = qlab.shape[1]
    n_dist = hist.shape[1]
    for i in prange(n_query):
        # Pass 1 (vectorisable): all distances, word by word.
        dist = np.zeros(n_db, dist_proto.dtype)
        for w in range(n_words):
            qw = qbits[i, w]
            for j in range(n_db):
                dist[j] += _popcount64(qw ^ dbbits[j, w])
        # Histogram into four interleaved copies, which breaks the store-to-load dependency between
        # consecutive increments of the same bin.
        h4 = np.zeros((4, n_dist), np.int64)
        n4 = n_db - n_db % 4
        for j in range(0, n4, 4):
            h4[0, dist[j]] += 1
            h4[1, dist[j + 1]] += 1
            h4[2, dist[j + 2]] += 1
            h4[3, dist[j + 3]] += 1
        for j in range(n4, n_db):
            h4[0, dist[j]] += 1
        h = hist[i]
        for t in range(n_dist):
            h[t] = h4[0, t] + h4[1, t] + h4[2, t] + h4[3, t]
        hr = hist_rel[i]
        hr[:] = 0
        if want_hist_rel:
            for j in range(n_db):
                r = 0
                for w in range(n_lab):
                    r |= (qlab[i, w] & dblab[j, w]) != 0
                hr[dist[j]] += r
        if depth == 0:
            continue
        # The distance `cut` at which the top-`depth` boundary falls, and where each distance group starts.
        start = np.zeros(n_dist, np.int64)
        acc = 0
        cut = n_dist - 1
        for t in range(n_dist):
            start[t] = acc
            acc += h[t]
            if acc >= depth:
                cut = t
                break
        # Pass 2: branch-free compaction of the items with distance <= cut, in ascending index order.
        cand = np.empty(acc + 1, np.int32)
        n_cand = 0
        for j in range(n_db):
            cand[min(n_cand, acc)] = j
            n_cand += dist[j] <= cut
        # Stable counting-sort scatter of the candidates; only the first `quota` items at distance `cut` fit.
        quota = depth - start[cut]
        taken = 0
        for c in range(n_cand):
            j = cand[c]
            t = dist[j]
            if t == cut:
                if taken == quota:
                    continue
                taken += 1
            p = start[t]
            start[t] = p + 1
            out_idx[i, p] = j
            r = 0
            for w in range(n_lab):
                r |= (qlab[i, w] & dblab[j, w]) != 0
            out_rel[i, p] = r


@njit(parallel=True, cache=True, nogil=True)
def relevance_of(qlab, dblab, idx, out_rel):
    """out_rel[i, p] = 1 if query i shares a label with database item idx[i, p] (packed labels)."""
    n_query, depth = idx.shape
    n_lab = qlab.shape[1]
    for i in prange(n_query):
        for p in range(depth):
            j = idx[i, p]
            r = 0
            for w in range(n_lab):
                if (qlab[i, w] & dblab[j, w]) != 0:
                    r = 1
                    break
            out_rel[i, p] = r


@njit(parallel=True, cache=True, nogil=True)
def count_relevant(qlab, dblab, out):
    """out[i] = number of database items sharing at least one label with query i."""
    n_query = qlab.shape[0]
    n_db = dblab.shape[0]
    n_lab = qlab.shape[1]
    for i in prange(n_query):
        c = 0
        for j in range(n_db):
            for w in range(n_lab):
                if (qlab[i, w] & dblab[j, w]) != 0:
                    c += 1
                    break
        out[i] = c


def set_threads(n: int | None) -> None:
    """Limit the number of threads the CPU kernels use (None: numba's default, all cores)."""
    numba.set_num_threads(n or numba.config.NUMBA_NUM_THREADS)


@njit(parallel=True, cache=True, nogil=True)
def relevance_of_pairs(qlab, dblab, qi, dj, out):
    """out[p] = 1 if query qi[p] shares a label with database item dj[p] (packed labels)."""
    n_lab = qlab.shape[1]
    for p in prange(qi.shape[0]):
        r = 0
        for w in range(n_lab):
            if (qlab[qi[p], w] & dblab[dj[p], w]) != 0:
                r = 1
                break
        out[p] = r
