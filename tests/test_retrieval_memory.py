"""Bounded memory of the retrieval metrics (docs/retrieval.md#memory).

- the chunking: queries per chunk computed from a byte budget and each backend's per-row accounting;
- the allocations of a ranking call stay within that accounting (tracemalloc sees numpy's buffers);
- results with chunks of a few queries are identical to one chunk and to the naive reference;
- input validation in row blocks (no full-size boolean temporaries) still reports the first bad entry;
- at NUS-WIDE scale, a whole evaluation stays under 2 GB RSS (slow, subprocess).
"""

import importlib.util
import subprocess
import sys
import tracemalloc

import numpy as np
import pytest

import retrieval_reference as ref
from conftest import make_retrieval_data
from saat import retrieval as R
from saat.retrieval import _backends
from saat.retrieval import metrics as M
from saat.utils import validation

BACKENDS = ["cpu", "torch"] + (["faiss"] if importlib.util.find_spec("faiss") else [])


@pytest.mark.parametrize("backend", ["cpu", "torch", "faiss"])
def test_chunk_rows_are_the_most_that_fit_the_budget(backend):
    for n_db in (1, 1000, 1_000_000):
        for depth in sorted({0, 1, min(5000, n_db), n_db}):
            for need_hist in (False, True):
                for budget in (1, 10_000, 1 << 20, 64 << 20, 1 << 34):
                    plan = _backends.plan_memory(backend, 1000, n_db, 64, 24, depth, need_hist, budget, threads=2)
                    assert 1 <= plan.rows <= 1000
                    if plan.rows > 1:
                        assert plan.chunk_bytes <= budget  # the budget bounds every chunk of several rows
                    else:
                        assert plan.chunk_bytes == plan.row_bytes  # a single row larger than the budget runs alone
                    if plan.rows < 1000:
                        assert (plan.rows + 1) * plan.row_bytes > budget  # and no more rows would have fit
                    assert plan.working_bytes == plan.chunk_bytes + plan.fixed_bytes
                    assert plan.total_bytes == plan.resident_bytes + plan.working_bytes


def test_the_accounting_grows_with_what_each_backend_allocates():
    def plan(backend, n_db, depth, need_hist=False):
        return _backends.plan_memory(backend, 100, n_db, 64, 24, depth, need_hist, 64 << 20, threads=2)

    # cpu: rows hold the kept items only (distances live in per-thread scratch), so the database size does not
    # shrink the chunk; torch and faiss hold a row of the whole database per query.
    assert plan("cpu", 10**6, 5000).row_bytes == plan("cpu", 10**4, 5000).row_bytes
    assert plan("cpu", 10**6, 5000).fixed_bytes > plan("cpu", 10**4, 5000).fixed_bytes
    for backend in ("torch", "faiss"):
        assert plan(backend, 10**6, 5000).row_bytes > 9 * plan(backend, 10**5, 5000).row_bytes
    for backend in ("cpu", "torch", "faiss"):
        assert plan(backend, 10**6, 10**6).row_bytes > plan(backend, 10**6, 5000).row_bytes
        # never a Q x M matrix: the whole call's working memory is far below one int64 distance matrix
        p = plan(backend, 10**6, 5000, need_hist=True)
        assert p.working_bytes < 100 * 10**6 * 8 / 4
    with pytest.raises(ValueError, match="budget"):
        _backends.plan_memory("cpu", 10, 10, 8, 2, 5, budget=0)
    with pytest.raises(ValueError, match="backend"):
        _backends.plan_memory("gpu", 10, 10, 8, 2, 5)


@pytest.mark.parametrize("backend", [b for b in BACKENDS if b != "torch"])  # torch's buffers are not traced
def test_ranking_allocations_stay_within_the_plan(backend):
    # 200 queries x 20,000 items, full ranking and histograms (what a PR curve needs): one chunk of all queries would
    # allocate 200 x 20,000 x 9 B = 36 MB of ranked indices and relevance alone; a 4 MiB budget must keep the peak
    # of every numpy buffer of the call (packing, chunks, temporaries) within the plan's few MB.
    q, db, ql, dl = make_retrieval_data(3, 200, 20_000, 64, 10, 0.2)
    budget = 4 << 20
    n_db = db.shape[0]
    plan = _backends.plan_memory(backend, len(q), n_db, 64, 10, n_db, True, budget)
    assert 1 < plan.rows < len(q)
    for _ in _backends.iter_ranked(backend, q[:2], db[:50], ql[:2], dl[:50], 50, True):  # compile, import FAISS
        pass
    tracemalloc.start()
    try:
        chunks = 0
        for c in _backends.iter_ranked(backend, q, db, ql, dl, n_db, True, budget):
            assert c.stop - c.start <= plan.rows
            chunks += 1
            del c  # as the metrics do: one chunk alive at a time
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert chunks == -(-len(q) // plan.rows)
    assert peak > plan.rows * n_db * 9  # tracemalloc does see the chunk's buffers
    assert peak <= plan.total_bytes, f"peak {peak:,} B > plan {plan.total_bytes:,} B"
    assert plan.total_bytes < len(q) * n_db * 9 / 4  # far below what one unchunked pass would hold


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("n_bits", [16, 64])  # 16 bits: heavy ties across chunk boundaries
def test_small_chunks_match_one_chunk_and_the_reference(backend, n_bits, monkeypatch):
    q, db, ql, dl = make_retrieval_data(5, 45, 6000, n_bits, 8, 0.15)
    sizes = []
    real = M.iter_ranked

    def recording(*args, **kwargs):
        for c in real(*args, **kwargs):
            sizes.append(c.stop - c.start)
            yield c

    prep = M._prepare(q, db, ql, dl, backend)
    whole = M._collect(prep, topk=500, ns=(10, 100, 1000), recalls=R.DEFAULT_RECALLS, want_radius=True)
    monkeypatch.setattr(M, "iter_ranked", recording)
    budget = 7 * 6000 * 9 + 100  # a few queries per chunk on every backend, the last chunk shorter
    small = M._collect(prep, topk=500, ns=(10, 100, 1000), recalls=R.DEFAULT_RECALLS, want_radius=True,
                       chunk_bytes=budget)
    assert len(sizes) >= 3 and sum(sizes) == len(q) and max(sizes) < len(q)
    assert small.map == whole.map
    np.testing.assert_array_equal(small.ap, whole.ap)
    np.testing.assert_array_equal(small.pr_precisions, whole.pr_precisions)
    np.testing.assert_array_equal(small.pn_precisions, whole.pn_precisions)
    # the radius curves are summed over all queries at once: the same bits whatever the chunking
    np.testing.assert_array_equal(small.radius_precisions, whole.radius_precisions)
    np.testing.assert_array_equal(small.radius_recalls, whole.radius_recalls)
    exp_p, exp_r = ref.radius_pr(q, db, ql, dl)
    np.testing.assert_allclose(small.radius_precisions, exp_p, rtol=0, atol=1e-12)
    np.testing.assert_allclose(small.radius_recalls, exp_r, rtol=0, atol=1e-12)
    np.testing.assert_allclose(small.ap, ref.average_precision(q, db, ql, dl, 500), rtol=0, atol=1e-12)
    np.testing.assert_allclose(small.pr_precisions, ref.pr_curve(q, db, ql, dl, R.DEFAULT_RECALLS), atol=1e-12)
    np.testing.assert_allclose(small.pn_precisions, ref.precision_at_n(q, db, ql, dl, (10, 100, 1000)), atol=1e-12)
    ranked = _backends.rank_indices(backend, q, db, 700, chunk_bytes=budget)
    np.testing.assert_array_equal(ranked, ref.ranking(q, db, 700))


def test_block_validation_reports_the_first_bad_entry(monkeypatch):
    monkeypatch.setattr(validation, "_CHECK_ROWS", 4)
    codes = np.ones((13, 5), np.int8)
    codes[11, 2] = 0  # in the third block
    with pytest.raises(ValueError, match=r"db_codes must contain only \+1 and -1.*found (np\.int8\()?0\b"):
        R.mean_average_precision(codes[:2], codes, np.ones((2, 3)), np.ones((13, 3)))
    codes[6, 4] = 3  # earlier in row-major order, in the second block
    with pytest.raises(ValueError, match=r"found (np\.int8\()?3\b"):
        R.mean_average_precision(codes[:2], codes, np.ones((2, 3)), np.ones((13, 3)))
    labels = np.ones((13, 3))
    labels[9, 0] = 2
    with pytest.raises(ValueError, match=r"db_labels must contain only 0 and 1.*found (np\.float64\()?2"):
        R.mean_average_precision(np.ones((2, 5)), np.ones((13, 5)), np.ones((2, 3)), labels)
    labels[9, 0] = 1
    assert R.mean_average_precision(np.ones((2, 5)), np.ones((13, 5)), np.ones((2, 3)), labels, topk=None) == 1.0


SCRIPT = r"""
import resource
import numpy as np
from saat.retrieval import evaluate_retrieval
rng = np.random.default_rng(0)
Q, M, K, C = 2100, 193734, 64, 21
q = np.where(rng.random((Q, K), dtype=np.float32) < 0.5, 1.0, -1.0).astype(np.float32)
db = np.where(rng.random((M, K), dtype=np.float32) < 0.5, 1.0, -1.0).astype(np.float32)
ql = (rng.random((Q, C)) < 0.1).astype(np.uint8)
dl = (rng.random((M, C)) < 0.1).astype(np.uint8)
res = evaluate_retrieval(q, db, ql, dl, topk=5000)  # mAP, full-ranking PR curve, P@N, radius curves
assert 0 < res.map < 1
# VmHWM is this process's own peak. ru_maxrss is not enough on Linux: a child created by fork + exec inherits
# the parent's high-water mark (pytest's, here) through exec.
try:
    status = open("/proc/self/status").read()
    print(int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:"))))
except (OSError, StopIteration):
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


@pytest.mark.slow  # a subprocess ranking 2,100 x 193,734 codes
def test_nus_wide_scale_evaluation_stays_under_2gb():
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, check=True)
    peak_mb = int(out.stdout.strip().splitlines()[-1]) / 1024
    assert peak_mb < 2048, f"peak RSS {peak_mb:.0f} MB"
