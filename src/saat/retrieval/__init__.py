"""Exact, fast retrieval evaluation for hash codes (docs/retrieval.md#retrieval-metrics and
docs/retrieval.md#public-functions-and-input-validation).

>>> from saat.retrieval import mean_average_precision
>>> mean_average_precision(query_codes, db_codes, query_labels, db_labels, topk=5000)  # doctest: +SKIP

Codes are numpy arrays or torch tensors of +-1; labels are multi-hot 0/1 matrices or integer class vectors.
Backends: ``"cpu"`` (bit-packed popcount, default for CPU data), ``"torch"`` (used automatically for
CUDA/MPS tensors), ``"faiss"`` (optional, ``pip install 'saat[faiss]'``). All give identical results.

``mean_ci``, ``paired_ci``, ``grouped_ci`` and ``grouped_paired_ci`` give bootstrap confidence intervals of a mean
of per-query values, ``format_ci`` prints a figure with its interval (``saat.retrieval.bootstrap``).
"""

from .bootstrap import DEFAULT_LEVEL as CI_LEVEL
from .bootstrap import DEFAULT_RESAMPLES as CI_RESAMPLES
from .bootstrap import ci_or_none, format_ci, grouped_ci, grouped_mean, grouped_paired_ci, mean_ci, paired_ci
from .metrics import (
    DEFAULT_NS,
    DEFAULT_RECALLS,
    DEFAULT_TOPK,
    RetrievalMetrics,
    average_precision,
    evaluate_retrieval,
    hamming_ranking,
    mean_average_precision,
    pr_curve,
    pr_curve_by_radius,
    precision_at_n,
    precision_within_radius,
    random_ranking_map,
    sign_codes,
    targeted_mean_average_precision,
)

__all__ = [
    "CI_LEVEL",
    "CI_RESAMPLES",
    "DEFAULT_NS",
    "DEFAULT_RECALLS",
    "DEFAULT_TOPK",
    "RetrievalMetrics",
    "average_precision",
    "ci_or_none",
    "evaluate_retrieval",
    "format_ci",
    "grouped_ci",
    "grouped_mean",
    "grouped_paired_ci",
    "hamming_ranking",
    "mean_average_precision",
    "mean_ci",
    "paired_ci",
    "pr_curve",
    "pr_curve_by_radius",
    "precision_at_n",
    "precision_within_radius",
    "random_ranking_map",
    "sign_codes",
    "targeted_mean_average_precision",
]
