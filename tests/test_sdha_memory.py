"""SDHA's surrogate without a (B, N, K) tensor (issue 24): the same values and gradients as the formula written
pair by pair, and no op of its forward or backward pass producing a (B, N, K) tensor. The peak memory of one
attack iteration is measured by benchmarks/bench_sdha_memory.py, not here."""

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from saat.attacks import ATTACKS, AttackContext
from saat.attacks.sdha import sdha_surrogate


def reference_surrogate(q, codes, positive, targeted):
    """The docstring's formula on the (B, N, K) grid of every pair and bit."""
    qr = q[:, None, :] * codes[None, :, :]
    diff = (q[:, None, :] - codes[None, :, :]).abs()
    if targeted:
        dist = 0.5 * (diff * torch.sigmoid(-10 * qr)).sum(-1)
    else:
        dist = 0.5 * (diff * torch.sigmoid(5 * qr)).sum(-1) + (1 - torch.sigmoid(5 * qr)).sum(-1)
    with torch.no_grad():
        sign_q = torch.where(q >= 0, 1.0, -1.0).to(q.dtype)
        hamming = (sign_q[:, None, :] != codes[None, :, :]).sum(-1).to(q.dtype)
        weight = hamming.pow(0.3) if targeted else (hamming + 1e-8).pow(-0.5)
    per_row = (positive * weight * dist).sum(1) / positive.sum(1).clamp_min(1)
    return per_row.mean()


def problem(dtype=torch.float64, b=7, n=40, k=12, seed=0):
    """Outputs q with |q| > 1 in places, bits exactly at the kinks 0 and +-1, codes equal to sign(q) (Hamming
    distance 0) and rows without positives."""
    g = torch.Generator().manual_seed(seed)
    q = 1.6 * (2 * torch.rand(b, k, generator=g, dtype=torch.float64) - 1)
    q[0, :3] = torch.tensor([0.0, 1.0, -1.0], dtype=torch.float64)
    codes = torch.where(torch.rand(n, k, generator=g) < 0.5, 1.0, -1.0).to(torch.float64)
    codes[:2] = torch.where(q[:2] >= 0, 1.0, -1.0)  # rows 0 and 1 have a code at Hamming distance 0
    positive = (torch.rand(b, n, generator=g) < 0.3).to(torch.float64)
    positive[:2, :2] = torch.eye(2, dtype=torch.float64)
    positive[2] = 0.0
    positive[-1] = 0.0  # two rows without positives
    return q.to(dtype), codes.to(dtype), positive.to(dtype)


@pytest.mark.parametrize("targeted", [False, True], ids=["untargeted", "targeted"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_surrogate_equals_the_pairwise_formula_value_and_gradient(targeted, seed):
    q, codes, positive = problem(seed=seed)
    q_new, q_ref = q.clone().requires_grad_(True), q.clone().requires_grad_(True)
    new = sdha_surrogate(q_new, codes, positive, targeted)
    ref = reference_surrogate(q_ref, codes, positive, targeted)
    (g_new,) = torch.autograd.grad(new, q_new)
    (g_ref,) = torch.autograd.grad(ref, q_ref)
    torch.testing.assert_close(new, ref, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(g_new, g_ref, rtol=1e-10, atol=1e-10)
    assert ref.item() != 0.0 and float(g_ref.abs().max()) > 0
    assert float(g_new[2].abs().max()) == 0.0 and float(g_new[-1].abs().max()) == 0.0  # rows without positives


@pytest.mark.parametrize("targeted", [False, True], ids=["untargeted", "targeted"])
def test_float32_surrogate_stays_close_to_the_float64_formula(targeted):
    """The row sum and the product do not cancel badly in float32 (the attack's precision)."""
    q, codes, positive = problem(b=16, n=300, k=64)
    q32 = q.float().requires_grad_(True)
    q64 = q.clone().requires_grad_(True)
    new = sdha_surrogate(q32, codes.float(), positive.float(), targeted)
    ref = reference_surrogate(q64, codes, positive, targeted)
    (g32,) = torch.autograd.grad(new, q32)
    (g64,) = torch.autograd.grad(ref, q64)
    assert abs(new.item() - ref.item()) <= 1e-5 * abs(ref.item())
    assert float((g32.double() - g64).abs().max()) <= 1e-5 * float(g64.abs().max())


class _LargestOutput(TorchDispatchMode):
    """The largest number of elements of any tensor an op produces while the mode is on."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return out


@pytest.mark.parametrize("targeted", [False, True], ids=["untargeted", "targeted"])
def test_no_op_forward_or_backward_produces_a_b_n_k_tensor(targeted):
    b, n, k = 5, 40, 7  # B*N*K = 1400 > N*2K = 560 > B*N = 200
    q, codes, positive = problem(b=b, n=n, k=k)
    for fn, expect_bnk in ((reference_surrogate, True), (sdha_surrogate, False)):
        qv = q.clone().requires_grad_(True)
        with _LargestOutput() as probe:
            fn(qv, codes, positive, targeted).backward()
        assert (probe.largest >= b * n * k) == expect_bnk, (fn.__name__, probe.largest)


def test_sdha_attack_refuses_codes_that_are_not_plus_minus_one(planted_retrieval):
    p = planted_retrieval
    for codes in (0.5 * p.train_codes, torch.zeros_like(p.train_codes)):
        ctx = AttackContext(p.model, torch.device("cpu"), codes, p.train_labels, p.db_codes, p.db_labels)
        for targeted in (False, True):
            attack = ATTACKS.get("sdha")(ctx, targeted=targeted, steps=1)
            with pytest.raises(ValueError, match=r"\+1 and -1"):
                attack.attack(p.x[:2], p.y[:2], p.targets[:2] if targeted else None)
