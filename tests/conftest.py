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
def mosaic_run(tmp_path_factory):
    """A CSQ small_cnn model trained briefly on the shipped fashion-mosaic data (shared by end-to-end tests)."""
    import saat

    run = tmp_path_factory.mktemp("runs") / "mosaic-csq"
    saat.train(out=run, progress=False, dataset="fashion-mosaic", method="csq", backbone="small_cnn", bits=32,
               epochs=3, device="cpu", seed=0)
    return run
