"""Hypothesis property tests of saat.retrieval."""

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import retrieval_reference as ref
from saat import retrieval as R


@st.composite
def retrieval_problems(draw, max_bits=20):
    n_query = draw(st.integers(1, 6))
    n_db = draw(st.integers(1, 40))
    n_bits = draw(st.integers(1, max_bits))
    n_classes = draw(st.integers(1, 5))
    pm1 = st.sampled_from([-1, 1])
    q = draw(hnp.arrays(np.int8, (n_query, n_bits), elements=pm1))
    db = draw(hnp.arrays(np.int8, (n_db, n_bits), elements=pm1))
    ql = draw(hnp.arrays(np.uint8, (n_query, n_classes), elements=st.integers(0, 1)))
    dl = draw(hnp.arrays(np.uint8, (n_db, n_classes), elements=st.integers(0, 1)))
    return q, db, ql, dl


@settings(max_examples=60, deadline=None)
@given(problem=retrieval_problems(), data=st.data())
def test_permuting_the_database_reranks_with_ties_broken_by_the_new_index(problem, data):
    q, db, ql, dl = problem
    perm = np.array(data.draw(st.permutations(range(len(db)))), dtype=np.int64)
    ranked = R.hamming_ranking(q, db[perm])
    np.testing.assert_array_equal(ranked, ref.ranking(q, db[perm]))
    # Mapped back, the permuted ranking visits items at the same sequence of distances as the original one.
    dist = ref.distances(q, db)
    original = R.hamming_ranking(q, db)
    np.testing.assert_array_equal(np.take_along_axis(dist, perm[ranked], 1),
                                  np.take_along_axis(dist, original, 1))
    ap = R.average_precision(q, db[perm], ql, dl[perm], topk=None)
    np.testing.assert_allclose(ap, ref.average_precision(q, db[perm], ql, dl[perm]), atol=1e-12)


@settings(max_examples=40, deadline=None)
@given(problem=retrieval_problems(),
       dtype=st.sampled_from([np.int8, np.int16, np.int32, np.int64, np.float16, np.float32, np.float64]),
       as_tensor=st.booleans())
def test_results_do_not_depend_on_code_dtype(problem, dtype, as_tensor):
    q, db, ql, dl = problem
    qc, dbc = q.astype(dtype), db.astype(dtype)
    if as_tensor:
        qc, dbc = torch.from_numpy(qc), torch.from_numpy(dbc)
    assert R.mean_average_precision(qc, dbc, ql, dl, topk=7) == R.mean_average_precision(q, db, ql, dl, topk=7)
    np.testing.assert_array_equal(R.hamming_ranking(qc, dbc), R.hamming_ranking(q, db))


@settings(max_examples=60, deadline=None)
@given(problem=retrieval_problems(max_bits=70), topk=st.one_of(st.none(), st.integers(1, 50)))
def test_average_precision_lies_in_unit_interval(problem, topk):
    q, db, ql, dl = problem
    ap = R.average_precision(q, db, ql, dl, topk=topk)
    assert ap.shape == (len(q),)
    assert ((ap >= 0) & (ap <= 1)).all()


@settings(max_examples=40, deadline=None)
@given(n_classes=st.integers(2, 12), n_bits=st.integers(4, 24), seed=st.integers(0, 2**16),
       n_db=st.integers(5, 60), n_query=st.integers(1, 10))
def test_map_of_perfect_codes_is_one(n_classes, n_bits, seed, n_db, n_query):
    rng = np.random.default_rng(seed)
    # Distinct code per class: relevant items sit at distance 0, every irrelevant one further away.
    pool = rng.permutation(2 ** min(n_bits, 16))[:n_classes]
    bits = (pool[:, None] >> np.arange(n_bits)[None, :]) & 1
    class_codes = np.where(bits == 1, 1, -1)
    db_classes = np.concatenate([np.arange(n_classes), rng.integers(0, n_classes, n_db)])
    q_classes = rng.integers(0, n_classes, n_query)
    m_ap = R.mean_average_precision(class_codes[q_classes], class_codes[db_classes], q_classes, db_classes,
                                    topk=None)
    assert m_ap == 1.0
