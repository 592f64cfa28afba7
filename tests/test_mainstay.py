"""mainstay_codes and center_codes against a naive per-query implementation (SPEC 6)."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import saat.attacks.mainstay as mainstay_module
from saat.attacks import center_codes, mainstay_codes


def naive_mainstay(y, U, Y, weighted=True):
    y, U, Y = (np.asarray(a, dtype=np.float64) for a in (y, U, Y))
    out = []
    for yi in y:
        pos_w, pos, neg_n, neg = 0.0, np.zeros(U.shape[1]), 0, np.zeros(U.shape[1])
        for uj, Yj in zip(U, Y):
            s = yi @ Yj / (np.linalg.norm(yi) * np.linalg.norm(Yj) + 1e-8)
            if s == 0:
                neg_n += 1
                neg += uj
            else:
                w = s if weighted else 1.0
                pos_w += w
                pos += w * uj
        arg = (pos / pos_w if pos_w > 0 else 0) - (neg / neg_n if neg_n > 0 else 0)
        out.append(np.where(np.asarray(arg) >= 0, 1.0, -1.0) * np.ones(U.shape[1]))
    return np.array(out)


def random_problem(seed, b=6, n=40, k=16, c=5, p=0.3):
    rng = np.random.default_rng(seed)
    y = (rng.random((b, c)) < p).astype(np.float32)
    Y = (rng.random((n, c)) < p).astype(np.float32)
    U = np.where(rng.random((n, k)) < 0.5, 1.0, -1.0).astype(np.float32)
    return y, U, Y


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("fn, weighted", [(mainstay_codes, True), (center_codes, False)])
def test_matches_naive_on_random_labels(seed, fn, weighted):
    y, U, Y = random_problem(seed)
    got = fn(y, U, Y)
    assert got.dtype == torch.float32 and got.shape == (6, 16)
    np.testing.assert_array_equal(got.numpy(), naive_mainstay(y, U, Y, weighted))


@pytest.mark.parametrize("fn, weighted", [(mainstay_codes, True), (center_codes, False)])
def test_edge_cases(fn, weighted):
    y, U, Y = random_problem(10, b=4, n=30, k=8, c=4)
    y[0] = 0  # a query with no label: everything is a negative
    Y[:5] = 0  # training items relevant to nobody
    y[1] = 1  # shares a class with every labelled item: negatives are only the unlabelled ones
    np.testing.assert_array_equal(fn(y, U, Y).numpy(), naive_mainstay(y, U, Y, weighted))
    # No negatives at all: every training item shares a class with the query.
    Y_all = np.ones_like(Y)
    np.testing.assert_array_equal(fn(y, U, Y_all).numpy(), naive_mainstay(y, U, Y_all, weighted))
    # All-zero training labels: no positives anywhere.
    Y_none = np.zeros_like(Y)
    np.testing.assert_array_equal(fn(y, U, Y_none).numpy(), naive_mainstay(y, U, Y_none, weighted))


def test_exact_ties_give_plus_one():
    # Two positives with opposite codes and no negatives: the argument of sign is exactly 0 on every bit.
    y = np.array([[1, 0]], np.float32)
    Y = np.array([[1, 0], [1, 0]], np.float32)
    U = np.array([[1, -1, 1], [-1, 1, -1]], np.float32)
    assert mainstay_codes(y, U, Y).tolist() == [[1.0, 1.0, 1.0]]
    # A positive and a negative with the same code cancel exactly: +1 everywhere, never 0 or -1.
    Y2 = np.array([[1, 0], [0, 1]], np.float32)
    U2 = np.array([[1, -1, 1], [1, -1, 1]], np.float32)
    assert mainstay_codes(y, U2, Y2).tolist() == [[1.0, 1.0, 1.0]]
    # Without the cancelling negative the positive's own code comes back.
    assert mainstay_codes(y, U2[:1], Y2[:1]).tolist() == [[1.0, -1.0, 1.0]]


def test_it_is_the_exact_maximiser_of_the_linear_objective():
    y, U, Y = random_problem(4, b=3, n=25, k=6)
    codes = mainstay_codes(y, U, Y).numpy()
    s = y @ Y.T / (np.linalg.norm(y, axis=1)[:, None] * np.linalg.norm(Y, axis=1)[None, :] + 1e-8)
    wp = s / np.maximum(s.sum(1, keepdims=True), 1e-12)
    neg = (s == 0).astype(float)
    wn = neg / np.maximum(neg.sum(1, keepdims=True), 1)
    v = wp @ U - wn @ U
    all_codes = np.array([[1 if (i >> b) & 1 else -1 for b in range(6)] for i in range(64)])
    for i in range(3):
        best = (all_codes @ v[i]).max()
        assert codes[i] @ v[i] == pytest.approx(best)


def test_chunking_over_the_training_set_changes_nothing(monkeypatch):
    y, U, Y = random_problem(5, b=7, n=101, k=12)
    whole = mainstay_codes(y, U, Y)
    monkeypatch.setattr(mainstay_module, "_CHUNK_ELEMENTS", 7 * 3)  # 3 training items per chunk
    torch.testing.assert_close(mainstay_codes(y, U, Y), whole)
    torch.testing.assert_close(center_codes(y, U, Y), torch.as_tensor(naive_mainstay(y, U, Y, False)).float())


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), b=st.integers(1, 5), n=st.integers(1, 30), k=st.integers(1, 20),
       c=st.integers(1, 6))
def test_property_matches_naive(seed, b, n, k, c):
    y, U, Y = random_problem(seed, b, n, k, c)
    np.testing.assert_array_equal(mainstay_codes(y, U, Y).numpy(), naive_mainstay(y, U, Y))


def test_torch_inputs_stay_on_their_device_and_validation_names_arguments():
    y, U, Y = random_problem(6)
    out = mainstay_codes(torch.from_numpy(y), torch.from_numpy(U), torch.from_numpy(Y))
    assert out.device.type == "cpu"
    with pytest.raises(ValueError, match="train_codes must contain only \\+1 and -1"):
        mainstay_codes(y, np.zeros_like(U), Y)
    with pytest.raises(ValueError, match="labels must contain only 0 and 1"):
        mainstay_codes(y * 2, U, Y)
    with pytest.raises(ValueError, match="train_codes has 40 rows but train_labels has 39"):
        mainstay_codes(y, U, Y[:-1])
    with pytest.raises(ValueError, match="labels has 5 classes but train_labels has 4"):
        mainstay_codes(y, U, Y[:, :4])
    one_hot = np.eye(Y.shape[1], dtype=np.float32)[[0, 2, 1]]
    torch.testing.assert_close(mainstay_codes(np.array([0, 2, 1]), U, Y), mainstay_codes(one_hot, U, Y))
    with pytest.raises(ValueError, match="class indices must be in \\[0, 5\\), got 0..7"):
        mainstay_codes(np.array([0, 7]), U, Y)
