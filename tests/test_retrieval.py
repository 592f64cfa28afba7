"""saat.retrieval against a naive per-query reference, across backends, and its input validation."""

import importlib.util

import numpy as np
import pytest
import torch

import retrieval_reference as ref
from conftest import make_retrieval_data
from saat import retrieval as R

BACKENDS = ["cpu", "torch"] + (["faiss"] if importlib.util.find_spec("faiss") else [])

# (seed, Q, M, K, C, label density): random data, heavy ties (8 and 4 bits), K not a multiple of 8 or 64.
CASES = [
    (0, 40, 300, 64, 6, 0.2),
    (1, 30, 500, 8, 5, 0.2),
    (2, 25, 400, 4, 3, 0.3),
    (3, 30, 257, 12, 7, 0.15),
    (4, 20, 300, 48, 4, 0.25),
    (5, 20, 200, 130, 70, 0.03),  # codes and labels span several 64-bit words
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"K{c[3]}")
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("topk", [None, 1, 37, 10_000])
def test_map_and_ap_match_naive_reference(case, backend, topk):
    seed, nq, m, k, c, p = case
    q, db, ql, dl = make_retrieval_data(seed, nq, m, k, c, p)
    expected = ref.average_precision(q, db, ql, dl, topk)
    ap = R.average_precision(q, db, ql, dl, topk=topk, backend=backend)
    np.testing.assert_allclose(ap, expected, rtol=0, atol=1e-12)
    m_ap = R.mean_average_precision(q, db, ql, dl, topk=topk, backend=backend)
    assert abs(m_ap - expected.mean()) <= 1e-12


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"K{c[3]}")
@pytest.mark.parametrize("backend", BACKENDS)
def test_ranking_is_the_stable_order(case, backend):
    seed, nq, m, k, c, p = case
    q, db, _, _ = make_retrieval_data(seed, nq, m, k, c, p)
    for topk in (None, 1, 50, m + 5):
        np.testing.assert_array_equal(R.hamming_ranking(q, db, topk, backend=backend), ref.ranking(q, db, topk))


@pytest.mark.parametrize("backend", BACKENDS)
def test_curves_match_naive_reference(backend):
    q, db, ql, dl = make_retrieval_data(7, 25, 300, 8, 5, 0.2)  # 8 bits: heavy ties everywhere
    recalls = R.DEFAULT_RECALLS
    got_r, got_p = R.pr_curve(q, db, ql, dl, backend=backend)
    np.testing.assert_array_equal(got_r, recalls)
    np.testing.assert_allclose(got_p, ref.pr_curve(q, db, ql, dl, recalls), atol=1e-12)
    ns = [1, 5, 100, 300, 1000]
    got_n, got_pn = R.precision_at_n(q, db, ql, dl, ns=ns, backend=backend)
    np.testing.assert_array_equal(got_n, ns)
    np.testing.assert_allclose(got_pn, ref.precision_at_n(q, db, ql, dl, ns), atol=1e-12)
    radii, rp, rr = R.pr_curve_by_radius(q, db, ql, dl, backend=backend)
    exp_p, exp_r = ref.radius_pr(q, db, ql, dl)
    np.testing.assert_array_equal(radii, np.arange(9))
    np.testing.assert_allclose(rp, exp_p, atol=1e-12)
    np.testing.assert_allclose(rr, exp_r, atol=1e-12)
    assert R.precision_within_radius(q, db, ql, dl, backend=backend) == pytest.approx(exp_p[2], abs=1e-12)
    assert R.precision_within_radius(q, db, ql, dl, radius=0, backend=backend) == pytest.approx(exp_p[0])


def test_backends_give_identical_results_on_heavy_ties():
    q, db, ql, dl = make_retrieval_data(11, 60, 3000, 8, 6, 0.15)
    results = [R.evaluate_retrieval(q, db, ql, dl, topk=500, backend=b) for b in BACKENDS]
    base = results[0]
    for other in results[1:]:
        assert other.map == base.map
        np.testing.assert_array_equal(other.ap, base.ap)
        np.testing.assert_array_equal(other.pr_precisions, base.pr_precisions)
        np.testing.assert_array_equal(other.pn_precisions, base.pn_precisions)
        np.testing.assert_array_equal(other.radius_precisions, base.radius_precisions)
        np.testing.assert_array_equal(other.radius_recalls, base.radius_recalls)
    rankings = [R.hamming_ranking(q, db, 500, backend=b) for b in BACKENDS]
    for r in rankings[1:]:
        np.testing.assert_array_equal(r, rankings[0])


def test_all_zero_labels_and_queries_without_relevant_items():
    q, db, ql, dl = make_retrieval_data(12, 20, 200, 16, 5, 0.2)
    ql[:5] = 0  # these queries have no relevant item at all
    dl[::3] = 0  # these database items are relevant to nobody
    ql[5] = 0
    ql[5, 0] = 1
    dl[:, 0] = 0  # query 5's only class appears nowhere in the database
    for backend in BACKENDS:
        ap = R.average_precision(q, db, ql, dl, topk=None, backend=backend)
        np.testing.assert_allclose(ap, ref.average_precision(q, db, ql, dl, None), atol=1e-12)
        assert (ap[:6] == 0).all()
        m_all = R.mean_average_precision(q, db, ql, dl, topk=None, backend=backend)
        m_drop = R.mean_average_precision(q, db, ql, dl, topk=None, drop_empty=True, backend=backend)
        assert m_all == pytest.approx(ap.sum() / 20, abs=1e-12)
        has_relevant = ref.relevance(ql, dl).any(axis=1)
        assert not has_relevant[:6].any() and has_relevant.sum() > 5
        assert m_drop == pytest.approx(ap[has_relevant].mean(), abs=1e-12)
        ap_drop = R.average_precision(q, db, ql, dl, topk=None, drop_empty=True, backend=backend)
        np.testing.assert_array_equal(np.isnan(ap_drop), ~has_relevant)


def test_t_map_is_map_with_target_labels():
    q, db, ql, dl = make_retrieval_data(13, 30, 300, 32, 6, 0.2)
    target = np.roll(ql, 1, axis=1)
    assert R.targeted_mean_average_precision(q, db, target, dl, topk=100) == pytest.approx(
        ref.average_precision(q, db, target, dl, 100).mean(), abs=1e-12)
    with pytest.raises(ValueError, match="target_labels"):
        R.targeted_mean_average_precision(q, db, target[:-1], dl)


def test_single_label_class_vectors_become_one_hot():
    q, db, _, _ = make_retrieval_data(14, 20, 150, 16, 4)
    rng = np.random.default_rng(0)
    qc, dc = rng.integers(0, 5, 20), rng.integers(0, 5, 150)
    n_classes = max(qc.max(), dc.max()) + 1
    one_hot = np.eye(n_classes, dtype=np.uint8)
    assert R.mean_average_precision(q, db, qc, dc) == R.mean_average_precision(q, db, one_hot[qc], one_hot[dc])


def test_torch_inputs_and_sign_codes():
    h = torch.tensor([[0.3, -0.2, 0.0], [-1.0, 2.0, -0.0]])
    codes = R.sign_codes(h)
    assert codes.tolist() == [[1, -1, 1], [-1, 1, 1]]  # sign(0) -> +1, never 0
    assert R.sign_codes(h.numpy()).tolist() == codes.tolist()
    q, db, ql, dl = make_retrieval_data(15, 10, 100, 24, 4)
    expected = R.mean_average_precision(q, db, ql, dl)
    got = R.mean_average_precision(torch.from_numpy(q).float(), torch.from_numpy(db).double(),
                                   torch.from_numpy(ql), torch.from_numpy(dl).float())
    assert got == expected


def test_random_ranking_map_matches_monte_carlo():
    rng = np.random.default_rng(3)
    ql = (rng.random((6, 4)) < 0.4).astype(np.uint8)
    dl = (rng.random((40, 4)) < 0.3).astype(np.uint8)
    rel = ref.relevance(ql, dl)
    for k in (1, 7, 40):
        draws = 20000
        total = 0.0
        for i in range(len(ql)):
            r = np.array([rel[i, rng.permutation(40)[:k]] for _ in range(draws)])
            hits = np.cumsum(r, axis=1)
            ap = np.where(hits[:, -1] > 0, (r * hits / np.arange(1, k + 1)).sum(1) / np.maximum(hits[:, -1], 1), 0)
            total += ap.mean()
        assert R.random_ranking_map(ql, dl, topk=k) == pytest.approx(total / len(ql), abs=4e-3)


@pytest.mark.parametrize(
    "bad, match",
    [
        (np.array([[1, 0, -1]]), "query_codes must contain only"),
        (np.array([[0.5, 1, -1]]), "query_codes must contain only"),
        (np.array([1, -1, 1]), "query_codes must be 2-D"),
        (np.array([[True, False, True]]), "query_codes must hold"),
        (np.array([[1, -1]]), "query_codes has 2 bits per code but db_codes has 3"),
        (np.array([["a", "b", "c"]]), "query_codes must hold"),
        (np.zeros((0, 3)), "query_codes is empty"),
    ],
)
def test_bad_codes_raise_value_errors_naming_the_argument(bad, match):
    db = np.ones((4, 3))
    dl = np.ones((4, 2))
    ql = np.ones((len(bad) if bad.ndim == 2 else 1, 2))
    with pytest.raises(ValueError, match=match):
        R.mean_average_precision(bad, db, ql, dl)


@pytest.mark.parametrize(
    "ql, dl, match",
    [
        (np.ones((2, 3)), np.ones((4, 2)), "query_labels has 3 classes but db_labels has 2"),
        (np.ones((3, 2)), np.ones((4, 2)), "query_labels has 3 rows but there are 2 query codes"),
        (np.ones((2, 2)), np.ones((5, 2)), "db_labels has 5 rows but there are 4 database codes"),
        (np.full((2, 2), 2), np.ones((4, 2)), "query_labels must contain only 0 and 1"),
        (np.ones((2, 2)), np.full((4, 2), 0.5), "db_labels must contain only 0 and 1"),
        (np.array([0.0, 1.0]), np.array([0, 1, 1, 0]), "query_labels is 1-D, so it must be integer"),
        (np.array([0, -1]), np.array([0, 1, 1, 0]), "negative class index"),
        (np.array([0, 1]), np.ones((4, 2)), "query_labels is 1-D but db_labels is 2-D"),
    ],
)
def test_bad_labels_raise_value_errors_naming_the_argument(ql, dl, match):
    q = np.ones((2, 3))
    db = np.ones((4, 3))
    with pytest.raises(ValueError, match=match):
        R.mean_average_precision(q, db, ql, dl)


def test_bad_options():
    q, db, ql, dl = make_retrieval_data(16, 4, 10, 8, 2)
    with pytest.raises(ValueError, match="topk"):
        R.mean_average_precision(q, db, ql, dl, topk=0)
    with pytest.raises(ValueError, match="backend"):
        R.mean_average_precision(q, db, ql, dl, backend="gpu")
    with pytest.raises(ValueError, match="recalls"):
        R.pr_curve(q, db, ql, dl, recalls=[0.0, 0.5])
    with pytest.raises(ValueError, match="ns"):
        R.precision_at_n(q, db, ql, dl, ns=[0, 10])
    with pytest.raises(ValueError, match="radius"):
        R.precision_within_radius(q, db, ql, dl, radius=-1)


@pytest.mark.slow  # one query per chunk on every backend
def test_small_chunks_give_the_same_result():
    from saat.retrieval.metrics import _collect, _prepare

    q, db, ql, dl = make_retrieval_data(17, 50, 400, 8, 5)
    for backend in BACKENDS:
        prep = _prepare(q, db, ql, dl, backend)
        whole = _collect(prep, topk=100, recalls=R.DEFAULT_RECALLS, ns=(10, 50), want_radius=True)
        tiny = _collect(prep, topk=100, recalls=R.DEFAULT_RECALLS, ns=(10, 50), want_radius=True,
                        chunk_bytes=1)  # one query per chunk
        assert tiny.map == whole.map
        np.testing.assert_array_equal(tiny.pr_precisions, whole.pr_precisions)
        np.testing.assert_allclose(tiny.radius_precisions, whole.radius_precisions, rtol=0, atol=1e-15)


def test_huge_class_indices_are_just_labels():
    from saat.retrieval import mean_average_precision

    q = np.array([[1, 1], [-1, -1]], np.int8)
    db = np.array([[1, 1], [-1, -1], [1, -1]], np.int8)
    big = mean_average_precision(q, db, np.array([2**40, 7]), np.array([2**40, 7, 7]), topk=None)
    small = mean_average_precision(q, db, np.array([0, 1]), np.array([0, 1, 1]), topk=None)
    assert big == small
