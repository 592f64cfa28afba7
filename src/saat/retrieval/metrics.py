"""Retrieval metrics over Hamming rankings (docs/retrieval.md#retrieval-metrics).

One ranking: ascending Hamming distance, ties broken by ascending database index. One implementation of each
metric, fed by whichever backend produced the ranking (see :mod:`saat.retrieval._backends`).

Definitions (``Q`` queries, ``M`` database items, ``K`` bits):

- **AP@k**: over the top ``k`` ranked items, ``R_k`` relevant ones at 1-based positions ``p_1 < ... < p_R``;
  ``AP = (1/R_k) sum_r r / p_r``, and ``AP = 0`` when ``R_k = 0``.
- **mAP@k**: ``sum AP / Q`` over *all* queries (the SAAT/DPH convention). ``drop_empty=True`` averages only
  over queries with ``R_k > 0`` (the HashNet/DHTA convention).
- **t-MAP**: mAP of adversarial codes with the *target* labels in place of the query labels.
- **PR curve**: at recall level ``r``, ``n_r = floor(T r)`` (``T`` all relevant items of the query, a 1e-9
  guard absorbs float error such as ``100 * 0.29``); precision ``n_r / position of the n_r-th relevant item``
  over the whole ranking; a query whose ``n_r = 0`` skips that level; levels are averaged over the queries
  that do not skip them (NaN if all skip).
- **PR by Hamming radius**: precision and recall of the ball ``d <= r`` for ``r = 0..K``; an empty ball has
  precision 0, a query with no relevant item has recall 0; averaged over all queries.
- **P@N**: relevant items among the top ``N``, divided by ``N``, averaged over all queries.
- **P@r<=2**: precision of the Hamming ball of radius 2 (empty ball: 0), averaged over all queries.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..utils.codes import sign_codes  # noqa: F401  (public as saat.retrieval.sign_codes)
from ..utils.progress import progress_bar
from ..utils.validation import (
    check_code_pair,
    check_label_pair,
    check_positive_ints,
    check_recalls,
    check_topk,
    is_tensor,
)
from . import _cpu
from ._backends import DEFAULT_CHUNK_BYTES, iter_ranked, rank_indices, resolve_backend
from ._bits import pack_labels
from ._kernels import average_precision_kernel, hits_at_kernel, pr_kernel

DEFAULT_TOPK = 5000
DEFAULT_NS = tuple(range(100, 1001, 100))
DEFAULT_RECALLS = tuple(round(0.01 * i, 2) for i in range(1, 101))
DEFAULT_RADIUS = 2
_RECALL_GUARD = 1e-9

DEFINITION = (
    "Hamming ranking with ties broken by ascending database index; AP@k = (1/R_k) sum_r r/p_r over the top k "
    "(AP = 0 when R_k = 0); mAP = mean over {denominator}; relevance = at least one shared label; "
    "PR: n_r = floor(T*r), precision = n_r / position of the n_r-th relevant item, levels with n_r = 0 "
    "skipped per query; P@N = relevant in top N / N; P@r<=2 = precision of the Hamming ball of radius 2 "
    "(empty ball = 0)."
)


@dataclass
class _Prepared:
    q: Any
    db: Any
    ql: np.ndarray
    dl: np.ndarray
    backend: str

    @property
    def n_query(self) -> int:
        return int(self.q.shape[0])

    @property
    def n_db(self) -> int:
        return int(self.db.shape[0])

    @property
    def n_bits(self) -> int:
        return int(self.q.shape[1])


def _prepare(query_codes, db_codes, query_labels, db_labels, backend, label_name="query_labels") -> _Prepared:
    q, db = check_code_pair(query_codes, db_codes)
    ql, dl = check_label_pair(query_labels, db_labels, q.shape[0], db.shape[0], query_name=label_name)
    return _Prepared(q, db, ql, dl, resolve_backend(backend, q, db))


@dataclass
class RetrievalMetrics:
    """Everything :func:`evaluate_retrieval` measures; ``to_dict()`` gives a JSON-ready summary."""

    n_queries: int
    n_database: int
    n_bits: int
    n_classes: int
    backend: str
    topk: int | None = None
    drop_empty: bool = False
    map: float | None = None
    ap: np.ndarray | None = None
    n_empty: int | None = None
    pr_recalls: np.ndarray | None = None
    pr_precisions: np.ndarray | None = None
    pn_ns: np.ndarray | None = None
    pn_precisions: np.ndarray | None = None
    radius_precisions: np.ndarray | None = None
    radius_recalls: np.ndarray | None = None
    precision_radius2: float | None = None
    extra: dict = field(default_factory=dict)

    def to_dict(self, per_query: bool = False) -> dict:
        out: dict[str, Any] = {
            "counts": {"queries": self.n_queries, "database": self.n_database, "bits": self.n_bits,
                       "classes": self.n_classes, "queries_without_relevant_in_topk": self.n_empty},
            "topk": self.topk,
            "mAP": self.map,
            "backend": self.backend,
            "definition": DEFINITION.format(
                denominator="queries with R_k > 0 (drop_empty)" if self.drop_empty else "all queries"),
        }
        if self.pr_recalls is not None:
            out["pr_curve"] = {"recall": self.pr_recalls, "precision": self.pr_precisions}
        if self.pn_ns is not None:
            out["precision_at_n"] = {"n": self.pn_ns, "precision": self.pn_precisions}
        if self.radius_precisions is not None:
            out["pr_by_radius"] = {"radius": np.arange(self.n_bits + 1), "precision": self.radius_precisions,
                                   "recall": self.radius_recalls}
            out["precision_within_radius_2"] = self.precision_radius2
        if per_query and self.ap is not None:
            out["ap"] = self.ap
        out.update(self.extra)
        return out


def _collect(prep: _Prepared, *, topk: int | None = DEFAULT_TOPK, want_ap: bool = True, ns=None,
             recalls=None, want_radius: bool = False, drop_empty: bool = False, progress: bool = False,
             chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> RetrievalMetrics:
    """One pass over the ranking that computes every requested metric."""
    n_query, n_db, n_bits = prep.n_query, prep.n_db, prep.n_bits
    k = min(topk or n_db, n_db)
    depth = 0
    if want_ap:
        depth = k
    if ns is not None:
        ns = check_positive_ints(ns, "ns")
        depth = max(depth, min(int(ns.max()), n_db))
    if recalls is not None:
        recalls = check_recalls(recalls)
        depth = n_db
    res = RetrievalMetrics(n_query, n_db, n_bits, int(prep.ql.shape[1]), prep.backend, topk=topk,
                           drop_empty=drop_empty)
    ap = np.empty(n_query)
    hits_k = np.empty(n_query, np.int64)
    if ns is not None:
        order = np.argsort(ns, kind="stable")
        hits_n = np.empty((n_query, len(ns)), np.int64)
    if recalls is not None:
        pr_rows = np.empty((n_query, len(recalls)))
    if want_radius:
        # Per-query rows, summed once at the end: the result does not depend on how the queries were chunked (the
        # chunking depends on the backend and the memory budget), so every backend gives the same bits.
        rad_p = np.empty((n_query, n_bits + 1))
        rad_r = np.empty((n_query, n_bits + 1))
    need_hist = want_radius or recalls is not None
    # Per-row arrays of the metrics below: PR targets and precisions, hits at N, the radius curves' cumulative sums.
    extra = (16 * len(recalls) if recalls is not None else 0) + (16 * len(ns) if ns is not None else 0) + (
        48 * (n_bits + 1) if want_radius else 0)
    chunks = iter_ranked(prep.backend, prep.q, prep.db, prep.ql, prep.dl, depth, need_hist, chunk_bytes, extra)
    if progress:
        chunks = _progress(chunks, progress_bar(total=n_query, desc="ranking", unit="query"))
    for c in chunks:
        s, e = c.start, c.stop
        if want_ap:
            average_precision_kernel(c.rel, k, ap[s:e], hits_k[s:e])
        if ns is not None:
            block = np.empty((e - s, len(ns)), np.int64)
            hits_at_kernel(c.rel, ns[order], block)
            hits_n[s:e][:, order] = block
        if recalls is not None:
            targets = np.floor(c.n_rel[:, None] * recalls[None, :] + _RECALL_GUARD).astype(np.int64)
            pr_kernel(c.rel, c.n_rel.astype(np.int64), targets, pr_rows[s:e])
        if want_radius:
            cum = np.cumsum(c.hist, axis=1)
            cum_rel = np.cumsum(c.hist_rel, axis=1)
            np.divide(cum_rel, cum, out=rad_p[s:e], where=cum > 0)
            rad_p[s:e][cum == 0] = 0.0
            total = c.n_rel[:, None].astype(np.float64)
            np.divide(cum_rel, total, out=rad_r[s:e], where=total > 0)
            rad_r[s:e][(total == 0)[:, 0]] = 0.0
        del c  # before the next chunk is built: one chunk alive at a time (docs/retrieval.md#memory)
    if want_ap:
        res.n_empty = int((hits_k == 0).sum())
        if drop_empty:
            ap[hits_k == 0] = np.nan
            res.map = float(np.nanmean(ap)) if res.n_empty < n_query else 0.0
        else:
            res.map = float(ap.mean())
        res.ap = ap
    if ns is not None:
        res.pn_ns = ns
        res.pn_precisions = (hits_n / ns[None, :]).mean(axis=0)
    if recalls is not None:
        res.pr_recalls = recalls
        with np.errstate(invalid="ignore"):
            counted = (~np.isnan(pr_rows)).sum(axis=0)
            res.pr_precisions = np.where(counted > 0, np.nansum(pr_rows, axis=0) / np.maximum(counted, 1),
                                         np.nan)
    if want_radius:
        res.radius_precisions = rad_p.sum(axis=0) / n_query
        res.radius_recalls = rad_r.sum(axis=0) / n_query
        res.precision_radius2 = float(res.radius_precisions[min(DEFAULT_RADIUS, n_bits)])
    return res


def _progress(chunks, bar):
    with bar:
        for c in chunks:
            n = c.stop - c.start
            yield c
            del c
            bar.update(n)


# ------------------------------------------------------------------------------------------- public API

def hamming_ranking(query_codes, db_codes, topk: int | None = None, backend: str = "auto") -> np.ndarray:
    """Database indices of the top ``topk`` items per query (all if None), in the stable Hamming order.

    Returns an int64 array of shape (Q, min(topk, M)). Ties are broken by ascending database index.
    """
    q, db = check_code_pair(query_codes, db_codes)
    topk = check_topk(topk)
    depth = min(topk or db.shape[0], db.shape[0])
    return rank_indices(resolve_backend(backend, q, db), q, db, depth)


def average_precision(query_codes, db_codes, query_labels, db_labels, topk: int | None = DEFAULT_TOPK,
                      drop_empty: bool = False, backend: str = "auto") -> np.ndarray:
    """Per-query AP@topk, shape (Q,). With ``drop_empty=True`` queries with no relevant item in the top k get
    NaN (so that ``np.nanmean`` gives the drop-empty mAP); otherwise their AP is 0."""
    prep = _prepare(query_codes, db_codes, query_labels, db_labels, backend)
    return _collect(prep, topk=check_topk(topk), drop_empty=drop_empty).ap


def mean_average_precision(query_codes, db_codes, query_labels, db_labels, topk: int | None = DEFAULT_TOPK,
                           drop_empty: bool = False, backend: str = "auto") -> float:
    """mAP@topk (``topk=None``: whole database) with the all-queries denominator (or ``drop_empty``)."""
    prep = _prepare(query_codes, db_codes, query_labels, db_labels, backend)
    return _collect(prep, topk=check_topk(topk), drop_empty=drop_empty).map


def targeted_mean_average_precision(adv_codes, db_codes, target_labels, db_labels,
                                    topk: int | None = DEFAULT_TOPK, drop_empty: bool = False,
                                    backend: str = "auto") -> float:
    """t-MAP: the mAP of adversarial query codes where relevance uses the attack's *target* labels.

    It is exactly :func:`mean_average_precision` with ``target_labels`` in place of the query labels.
    """
    prep = _prepare(adv_codes, db_codes, target_labels, db_labels, backend, label_name="target_labels")
    return _collect(prep, topk=check_topk(topk), drop_empty=drop_empty).map


def pr_curve(query_codes, db_codes, query_labels, db_labels, recalls=None, backend: str = "auto"):
    """Precision at recall levels (default 0.01..1.00) over the whole ranking -> (recalls, precisions)."""
    prep = _prepare(query_codes, db_codes, query_labels, db_labels, backend)
    res = _collect(prep, want_ap=False, recalls=DEFAULT_RECALLS if recalls is None else recalls)
    return res.pr_recalls, res.pr_precisions


def pr_curve_by_radius(query_codes, db_codes, query_labels, db_labels, backend: str = "auto"):
    """Precision and recall of the Hamming ball ``d <= r`` for r = 0..K -> (radii, precisions, recalls)."""
    prep = _prepare(query_codes, db_codes, query_labels, db_labels, backend)
    res = _collect(prep, want_ap=False, want_radius=True)
    return np.arange(prep.n_bits + 1), res.radius_precisions, res.radius_recalls


def precision_at_n(query_codes, db_codes, query_labels, db_labels, ns=DEFAULT_NS, backend: str = "auto"):
    """P@N for each N in ``ns`` (relevant items in the top N, divided by N) -> (ns, precisions)."""
    prep = _prepare(query_codes, db_codes, query_labels, db_labels, backend)
    res = _collect(prep, want_ap=False, ns=ns)
    return res.pn_ns, res.pn_precisions


def precision_within_radius(query_codes, db_codes, query_labels, db_labels, radius: int = DEFAULT_RADIUS,
                            backend: str = "auto") -> float:
    """Mean precision of the Hamming ball of radius ``radius`` (an empty ball counts as precision 0)."""
    prep = _prepare(query_codes, db_codes, query_labels, db_labels, backend)
    if isinstance(radius, bool) or not isinstance(radius, (int, np.integer)) or radius < 0:
        raise ValueError(f"radius must be a non-negative integer, got {radius!r}")
    res = _collect(prep, want_ap=False, want_radius=True)
    return float(res.radius_precisions[min(int(radius), prep.n_bits)])


def evaluate_retrieval(query_codes, db_codes, query_labels, db_labels, topk: int | None = DEFAULT_TOPK,
                       ns=DEFAULT_NS, recalls=DEFAULT_RECALLS, drop_empty: bool = False,
                       backend: str = "auto", progress: bool = False) -> RetrievalMetrics:
    """mAP@topk, per-query AP, PR curve (recall levels and Hamming radius), P@N and P@r<=2 in one pass."""
    prep = _prepare(query_codes, db_codes, query_labels, db_labels, backend)
    res = _collect(prep, topk=check_topk(topk), ns=ns, recalls=recalls, want_radius=True,
                   drop_empty=drop_empty, progress=progress)
    res.extra["random_ranking_mAP"] = _random_map(prep.ql, prep.dl, res.topk)
    return res


def random_ranking_map(query_labels, db_labels, topk: int | None = DEFAULT_TOPK) -> float:
    """Expected mAP@topk of a uniformly random ranking (all-queries denominator), for context in reports.

    For a query with R relevant items among M, the number n of relevant items in the top k is hypergeometric,
    and given n the expected AP is ``(1/k)[H_k + (n-1)(k-H_k)/(k-1)]``; it is linear in n, so the expectation
    needs only P(n=0) and E[n] = kR/M.
    """
    ql = np.asarray(query_labels.detach().cpu() if is_tensor(query_labels) else query_labels)
    dl = np.asarray(db_labels.detach().cpu() if is_tensor(db_labels) else db_labels)
    ql, dl = check_label_pair(ql, dl, len(ql), len(dl))
    return _random_map(ql, dl, check_topk(topk))


def _random_map(ql: np.ndarray, dl: np.ndarray, topk: int | None) -> float:
    n_db = dl.shape[0]
    k = min(topk or n_db, n_db)
    n_rel = np.empty(ql.shape[0], np.int64)
    _cpu.count_relevant(pack_labels(ql), pack_labels(dl), n_rel)
    if k == 1:
        return float((n_rel / n_db).mean())
    harmonic = float(np.sum(1.0 / np.arange(1, k + 1)))
    slope = (k - harmonic) / (k - 1)
    total = 0.0
    for r in n_rel.tolist():
        if r == 0:
            continue
        p_none = 0.0 if n_db - r < k else math.exp(
            math.lgamma(n_db - r + 1) - math.lgamma(n_db - r - k + 1) - math.lgamma(n_db + 1)
            + math.lgamma(n_db - k + 1))
        total += ((1 - p_none) * (harmonic - slope) + slope * k * r / n_db) / k
    return total / len(n_rel)
