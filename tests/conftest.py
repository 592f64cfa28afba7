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


@pytest.fixture(scope="session")
def quick_demo(tmp_path_factory):
    """`saat demo --quick` run once per session: a CSQ model on fashion-mosaic, every attack, SAAT and ATRDH
    models, a report. End-to-end tests read its outputs; attack tests reuse its trained model."""
    from saat.demo import run_demo

    out = tmp_path_factory.mktemp("demo")
    result = run_demo(out, quick=True, device="cpu", progress=False)
    return out, result


@pytest.fixture(scope="session")
def mosaic_run(quick_demo):
    """The demo's CSQ small_cnn model (3 epochs on the shipped fashion-mosaic data)."""
    return quick_demo[0] / "csq"
