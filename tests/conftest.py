import numpy as np
import pytest


def make_retrieval_data(seed, n_query, n_db, n_bits, n_classes, label_p=0.2, code_p=0.5):
    rng = np.random.default_rng(seed)
    q = np.where(rng.random((n_query, n_bits)) < code_p, 1, -1).astype(np.int8)
    db = np.where(rng.random((n_db, n_bits)) < code_p, 1, -1).astype(np.int8)
    ql = (rng.random((n_query, n_classes)) < label_p).astype(np.uint8)
    dl = (rng.random((n_db, n_classes)) < label_p).astype(np.uint8)
    return q, db, ql, dl


@pytest.fixture
def retrieval_data():
    return make_retrieval_data
