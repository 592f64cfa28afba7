"""Naive reference implementations of the retrieval metrics: a per-query loop with a stable sort.

Written independently of saat.retrieval, straight from SPEC section 5, to check it against.
"""

import numpy as np


def distances(q, db):
    q = np.asarray(q, dtype=np.int64)
    db = np.asarray(db, dtype=np.int64)
    return (q.shape[1] - q @ db.T) // 2


def relevance(ql, dl):
    return (np.asarray(ql, np.int64) @ np.asarray(dl, np.int64).T) > 0


def ranking(q, db, topk=None):
    d = distances(q, db)
    k = d.shape[1] if topk is None else min(topk, d.shape[1])
    return np.stack([np.argsort(row, kind="stable")[:k] for row in d])


def average_precision(q, db, ql, dl, topk=None):
    rel = relevance(ql, dl)
    aps = []
    for i, order in enumerate(ranking(q, db, topk)):
        r = rel[i, order]
        positions = np.flatnonzero(r) + 1
        if positions.size == 0:
            aps.append(0.0)
            continue
        aps.append(sum((n + 1) / p for n, p in enumerate(positions)) / positions.size)
    return np.array(aps)


def pr_curve(q, db, ql, dl, recalls):
    rel = relevance(ql, dl)
    rows = []
    for i, order in enumerate(ranking(q, db)):
        positions = np.flatnonzero(rel[i, order]) + 1
        total = positions.size
        row = []
        for r in recalls:
            n_r = int(np.floor(total * r + 1e-9))
            row.append(np.nan if n_r == 0 else n_r / positions[n_r - 1])
        rows.append(row)
    rows = np.array(rows, dtype=float)
    out = []
    for col in rows.T:
        ok = ~np.isnan(col)
        out.append(col[ok].mean() if ok.any() else np.nan)
    return np.array(out)


def precision_at_n(q, db, ql, dl, ns):
    rel = relevance(ql, dl)
    order = ranking(q, db)
    return np.array([np.mean([rel[i, order[i, :n]].sum() / n for i in range(len(q))]) for n in ns])


def radius_pr(q, db, ql, dl):
    d = distances(q, db)
    rel = relevance(ql, dl)
    K = np.asarray(q).shape[1]
    prec, rec = [], []
    for r in range(K + 1):
        ps, rs = [], []
        for i in range(len(q)):
            ball = d[i] <= r
            hit = (ball & rel[i]).sum()
            ps.append(hit / ball.sum() if ball.sum() else 0.0)
            rs.append(hit / rel[i].sum() if rel[i].sum() else 0.0)
        prec.append(np.mean(ps))
        rec.append(np.mean(rs))
    return np.array(prec), np.array(rec)
