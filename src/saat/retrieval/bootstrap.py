"""Bootstrap confidence intervals of a mean over queries (docs/robustness.md#confidence-intervals).

Every mAP is a mean of per-query APs over one draw of queries; another draw gives another number. These functions
give the 95 % percentile-bootstrap interval of such a mean: resample the queries with replacement ``resamples``
times (10,000 by default), take each resample's mean, and report the 2.5 % and 97.5 % quantiles of those means.

- :func:`mean_ci`: the interval of ``mean(values)``.
- :func:`paired_ci`: the interval of ``mean(a - b)`` for two measurements of the SAME queries (a paired bootstrap:
  one set of resampled query indices for both, so what the queries share cancels).
- :func:`grouped_ci` / :func:`grouped_paired_ci`: several training seeds, each with its own queries (a
  hierarchical bootstrap: resample the seeds with replacement, then the queries within each drawn seed; the
  statistic is the mean over the drawn seeds of their per-seed means, :func:`grouped_mean`). Seed-to-seed and
  query-to-query variation both widen the interval. One group is :func:`mean_ci` exactly.

Degenerate inputs: no value gives ``(nan, nan)``; one value, or values all equal, give ``(v, v)``. NaN (or
infinite) values are refused: an AP is always a number. Draws come from ``saat.utils.rng.numpy_generator(seed,
"bootstrap")``, so the same inputs and seed give the same interval. The resampled indices are drawn as (rows, Q)
integer blocks of about four million entries, so memory stays bounded whatever Q; 10,000 resamples of 2,000 queries
take well under a second (``benchmarks/bench_bootstrap.py``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..utils.rng import numpy_generator

DEFAULT_RESAMPLES = 10_000
DEFAULT_LEVEL = 0.95
DEFAULT_SEED = 0
_BLOCK = 1 << 22  # resampled query indices drawn at once (16 MB as int32)

Interval = tuple[float, float]


def _values(values, name: str) -> np.ndarray:
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 1:
        raise ValueError(f"{name} must be one value per query (one-dimensional), got shape {v.shape}")
    bad = int((~np.isfinite(v)).sum())
    if bad:
        raise ValueError(f"{name} holds {bad} NaN or infinite value{'s' if bad > 1 else ''} of {v.size}; a "
                         "bootstrap interval needs a number for every query")
    return v


def _check_settings(resamples: int, level: float) -> None:
    if isinstance(resamples, bool) or not isinstance(resamples, (int, np.integer)) or resamples < 1:
        raise ValueError(f"resamples must be a positive integer, got {resamples!r}")
    if isinstance(level, bool) or not isinstance(level, (int, float)) or not 0.0 < level < 1.0:
        raise ValueError(f"level must be a fraction between 0 and 1 (0.95 for 95 %), got {level!r}")


def _constant(v: np.ndarray) -> float | None:
    """The value when every value is the same one (the interval is that point), else None."""
    return float(v[0]) if v.size and v.min() == v.max() else None


def _resampled_means(v: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` bootstrap means of ``v``: each the mean of ``len(v)`` values drawn with replacement."""
    q = v.size
    out = np.empty(n)
    rows = max(1, _BLOCK // q)
    for start in range(0, n, rows):
        stop = min(start + rows, n)
        idx = rng.integers(0, q, size=(stop - start, q), dtype=np.int32 if q < 2**31 else np.int64)
        out[start:stop] = v[idx].mean(axis=1)
    return out


def _percentiles(stats: np.ndarray, level: float) -> Interval:
    tail = (1.0 - level) / 2.0
    lo, hi = np.quantile(stats, [tail, 1.0 - tail])
    return float(lo), float(hi)


def mean_ci(values, *, resamples: int = DEFAULT_RESAMPLES, level: float = DEFAULT_LEVEL,
            seed: int = DEFAULT_SEED) -> Interval:
    """The ``level`` percentile-bootstrap interval ``(lo, hi)`` of the mean of ``values`` (one per query)."""
    _check_settings(resamples, level)
    v = _values(values, "values")
    if v.size == 0:
        return float("nan"), float("nan")
    point = _constant(v)
    if point is not None:
        return point, point
    return _percentiles(_resampled_means(v, int(resamples), numpy_generator(seed, "bootstrap")), level)


def ci_or_none(values, **settings) -> list[float] | None:
    """:func:`mean_ci` as a JSON-ready ``[lo, hi]`` (what result files store), or None for no value."""
    lo, hi = mean_ci(values, **settings)
    return None if np.isnan(lo) else [lo, hi]


def paired_ci(a, b, *, resamples: int = DEFAULT_RESAMPLES, level: float = DEFAULT_LEVEL,
              seed: int = DEFAULT_SEED) -> Interval:
    """The interval of ``mean(a - b)`` where ``a[i]`` and ``b[i]`` are two measurements of query ``i`` (the same
    resampled queries for both sides)."""
    _check_settings(resamples, level)
    va, vb = _values(a, "a"), _values(b, "b")
    if va.shape != vb.shape:
        raise ValueError(f"a paired interval needs the same queries on both sides, got {va.size} and {vb.size} values")
    return mean_ci(va - vb, resamples=resamples, level=level, seed=seed)


def _groups(groups: Sequence, name: str) -> list[np.ndarray]:
    out = [_values(g, f"{name}[{i}]") for i, g in enumerate(groups)]
    empty = [i for i, g in enumerate(out) if g.size == 0]
    if empty and len(empty) < len(out):
        raise ValueError(f"{name}[{empty[0]}] has no value; every seed of a grouped interval needs its queries")
    return out


def grouped_mean(groups: Sequence) -> float:
    """The mean over groups (training seeds) of each group's mean; NaN for no group."""
    gs = _groups(groups, "groups")
    if not gs or gs[0].size == 0:
        return float("nan")
    return float(np.mean([g.mean() for g in gs]))


def grouped_ci(groups: Sequence, *, resamples: int = DEFAULT_RESAMPLES, level: float = DEFAULT_LEVEL,
               seed: int = DEFAULT_SEED) -> Interval:
    """The interval of :func:`grouped_mean` over ``groups`` (one array of per-query values per training seed): each
    resample draws as many seeds as there are, with replacement, then each drawn seed's queries with replacement
    (independently for every draw of a seed), and averages the drawn seeds' means."""
    _check_settings(resamples, level)
    gs = _groups(groups, "groups")
    if not gs or gs[0].size == 0:
        return float("nan"), float("nan")
    if len(gs) == 1:
        return mean_ci(gs[0], resamples=resamples, level=level, seed=seed)
    point = _constant(np.concatenate(gs))
    if point is not None:
        return point, point
    rng = numpy_generator(seed, "bootstrap")
    r, s = int(resamples), len(gs)
    drawn = rng.integers(0, s, size=(r, s))
    stats = np.zeros(r)
    for k, g in enumerate(gs):
        rows = np.nonzero(drawn == k)[0]  # one entry per (resample, slot) that drew seed k
        stats += np.bincount(rows, weights=_resampled_means(g, rows.size, rng), minlength=r)
    return _percentiles(stats / s, level)


def grouped_paired_ci(groups_a: Sequence, groups_b: Sequence, *, resamples: int = DEFAULT_RESAMPLES,
                      level: float = DEFAULT_LEVEL, seed: int = DEFAULT_SEED) -> Interval:
    """:func:`grouped_ci` of the per-query differences ``a - b`` of each seed (the two sides measured on the same
    queries within a seed)."""
    ga, gb = _groups(groups_a, "groups_a"), _groups(groups_b, "groups_b")
    if len(ga) != len(gb):
        raise ValueError(f"a paired interval needs the same seeds on both sides, got {len(ga)} and {len(gb)} groups")
    for i, (x, y) in enumerate(zip(ga, gb, strict=True)):
        if x.shape != y.shape:
            raise ValueError(f"seed {i} of a paired interval has {x.size} and {y.size} values; both sides need the "
                             "same queries")
    return grouped_ci([x - y for x, y in zip(ga, gb, strict=True)], resamples=resamples, level=level, seed=seed)


def format_ci(value: float, ci: Sequence[float] | None, *, percent: bool = False, digits: int | None = None) -> str:
    """The one printed form of a figure with its interval: ``"0.343 [0.290, 0.395]"`` for a fraction, with
    ``percent`` ``"34.30 [29.0, 39.5]"`` (MAP points, as the report's tables print them): the bounds to a tenth of a
    MAP point either way, the value to ``digits`` decimals (3 for a fraction, 2 for points). Without an interval
    (``ci`` None: a result written before intervals existed) the value alone."""
    scale, places, bound = (100.0, 2, 1) if percent else (1.0, 3, 3)
    text = f"{value * scale:.{places if digits is None else digits}f}"
    if ci is None:
        return text
    lo, hi = ci
    return f"{text} [{lo * scale:.{bound}f}, {hi * scale:.{bound}f}]"
