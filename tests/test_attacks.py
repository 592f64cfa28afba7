"""Attack base, generators, losses and targets on a tiny model (fast unit tests)."""

import numpy as np
import pytest
import torch

from saat.attacks import (
    ALPHA_SCHEDULE,
    GENERATORS,
    continuation_alpha,
    create_generator,
    frozen_eval,
    list_generators,
    mainstay_loss,
    query_subset,
    select_target_labels,
    simple_loss,
)
from saat.models import HashModel

EPS = 8 / 255


def tiny_model(seed=0):
    torch.manual_seed(seed)
    return HashModel("small_cnn", 12)


def objective_for(m):
    return lambda h, _x: mainstay_loss(h, m)


@pytest.fixture
def batch():
    g = torch.Generator().manual_seed(1)
    x = torch.rand(4, 3, 16, 16, generator=g)
    x[0, :, :4] = 0.0  # pixels at the box edges: projection must keep them inside [0, 1]
    x[1, :, :4] = 1.0
    m = torch.where(torch.rand(4, 12, generator=g) < 0.5, 1.0, -1.0)
    return x, m


def test_registry_has_the_six_generators_and_apgd():
    assert list_generators() == ["apgd", "bim", "di-fgsm", "ni-fgsm", "pgd", "si-ni-fgsm", "vmi-fgsm"]
    assert GENERATORS.get("DI") is GENERATORS.get("di-fgsm")


@pytest.mark.parametrize("name", ["pgd", "bim", "di-fgsm", "ni-fgsm", "si-ni-fgsm", "vmi-fgsm"])
def test_generator_respects_budget_box_mode_flags_and_grads(name, batch):
    x, m = batch
    model = tiny_model()
    model.train()
    model.hash_layer.weight.requires_grad_(False)  # a mixed set of flags must come back as it was
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    marker = torch.full_like(model.features.body[0].weight, 0.123)
    model.features.body[0].weight.grad = marker.clone()
    stats_before = model.features.body[1].running_mean.clone()
    attack = create_generator(name, model, eps=EPS, step=2 / 255, steps=4, seed=7)
    adv = attack(x, objective_for(m))
    assert adv.shape == x.shape and not adv.requires_grad
    assert float((adv - x).abs().max()) <= EPS + 1e-6
    assert float(adv.min()) >= 0.0 and float(adv.max()) <= 1.0
    assert not torch.equal(adv, x)
    assert model.training  # mode restored
    assert {n: p.requires_grad for n, p in model.named_parameters()} == flags
    assert torch.equal(model.features.body[0].weight.grad, marker)  # parameter .grad untouched
    assert model.hash_layer.bias.grad is None
    assert torch.equal(model.features.body[1].running_mean, stats_before)  # eval mode: BN statistics frozen


@pytest.mark.parametrize("name", ["pgd", "di-fgsm", "vmi-fgsm"])
def test_generators_are_reproducible_under_a_seed(name, batch):
    x, m = batch
    model = tiny_model().eval()
    runs = [create_generator(name, model, eps=EPS, step=2 / 255, steps=3, seed=s)(x, objective_for(m))
            for s in (5, 5, 6)]
    assert torch.equal(runs[0], runs[1])
    assert not torch.equal(runs[0], runs[2])


def test_eps_zero_changes_nothing(batch):
    x, m = batch
    for name in ("pgd", "ni-fgsm", "vmi-fgsm"):
        adv = create_generator(name, tiny_model().eval(), eps=0.0, step=1 / 255, steps=3)(x, objective_for(m))
        assert torch.equal(adv, x)


def test_pgd_descends_the_objective(batch):
    x, m = batch
    model = tiny_model().eval()
    obj = objective_for(m)
    with torch.no_grad():
        before = float(obj(model(x), x))
    adv = create_generator("pgd", model, eps=32 / 255, step=4 / 255, steps=20, alpha_schedule=False)(x, obj)
    with torch.no_grad():
        assert float(obj(model(adv), adv)) < before


def test_bim_has_no_random_start_and_pgd_has_one(batch):
    x, m = batch
    model = tiny_model().eval()
    zero_steps = {n: create_generator(n, model, eps=EPS, steps=0)(x, objective_for(m)) for n in ("pgd", "bim")}
    assert torch.equal(zero_steps["bim"], x)
    assert not torch.equal(zero_steps["pgd"], x) and float((zero_steps["pgd"] - x).abs().max()) <= EPS + 1e-6


def test_frozen_eval_restores_even_on_error():
    model = tiny_model().train()
    with pytest.raises(RuntimeError), frozen_eval(model):
        assert not model.training and not any(p.requires_grad for p in model.parameters())
        raise RuntimeError("boom")
    assert model.training and all(p.requires_grad for p in model.parameters())


def test_continuation_schedule():
    assert [continuation_alpha(i, 100) for i in (0, 49, 50, 60, 70, 80, 90, 99)] == [
        0.1, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0, 1.0]
    assert [continuation_alpha(i, 10) for i in range(10)] == list(ALPHA_SCHEDULE)
    assert continuation_alpha(0, 1) == 0.1


def test_mainstay_loss_on_hand_made_tensors():
    m = torch.tensor([[1.0, -1.0, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0]])
    h = torch.tensor([[0.5, 0.5, -0.9, 0.0], [-0.8, -0.6, -0.7, -0.9]])
    # s = h*m: row0 = [0.5, -0.5, -0.9, 0.0] -> untargeted weights 1[s > -0.5] = [1, 0, 0, 1]
    row0 = (0.5 * 2.5 + 0.0) / 2
    # row1: s = [-0.8, -0.6, -0.7, -0.9]: every bit already past -0.5 -> weights all zero -> 0, not NaN
    assert float(mainstay_loss(h, m)) == pytest.approx((row0 + 0.0) / 2)
    assert float(mainstay_loss(h, m, parity=True)) == pytest.approx((0.5 * 2.5) / 2)
    # targeted: w = 1[s < 0.5]; row0 -> [0, 1, 1, 1]: -((-0.5)(1.5) + (-0.9)(1.1) + 0)/3
    t_row0 = -((-0.5 * 1.5) + (-0.9 * 1.1) + 0.0) / 3
    t_row1 = -sum(s * (s + 2) for s in (-0.8, -0.6, -0.7, -0.9)) / 4
    assert float(mainstay_loss(h, m, targeted=True)) == pytest.approx((t_row0 + t_row1) / 2)
    assert float(simple_loss(h, m)) == pytest.approx(float((h * m).mean()))
    hz = torch.zeros(3, 4, requires_grad=True)
    loss = mainstay_loss(hz, -torch.ones(3, 4), targeted=True)
    loss.backward()
    assert torch.isfinite(hz.grad).all() and (hz.grad > 0).all()  # pulling toward -1 means increasing loss in h


def test_mainstay_loss_is_batch_size_independent_per_sample():
    g = torch.Generator().manual_seed(0)
    h = torch.rand(6, 8, generator=g) * 2 - 1
    m = torch.where(torch.rand(6, 8, generator=g) < 0.5, 1.0, -1.0)
    whole = mainstay_loss(h, m)
    halves = (mainstay_loss(h[:3], m[:3]) + mainstay_loss(h[3:], m[3:])) / 2
    assert float(whole) == pytest.approx(float(halves))


def test_target_labels_share_no_class_and_come_from_the_database():
    rng = np.random.default_rng(0)
    ql = (rng.random((50, 6)) < 0.3).astype(np.uint8)
    dl = (rng.random((300, 6)) < 0.3).astype(np.uint8)
    targets, fallbacks = select_target_labels(ql, dl, seed=3)
    distinct = {tuple(r) for r in dl if r.any()}
    assert all(tuple(t) in distinct for t in targets)
    disjoint = (ql.astype(int) * targets).sum(1) == 0
    # Only queries for which no disjoint database label exists may share a class with their target.
    possible = np.array([any(not (np.array(d) & q).any() for d in distinct) for q in ql])
    assert (disjoint | ~possible).all() and fallbacks == int((~possible).sum())
    again, _ = select_target_labels(ql, dl[::-1], seed=3)  # database order does not matter
    assert np.array_equal(targets, again)
    other, _ = select_target_labels(ql, dl, seed=4)
    assert not np.array_equal(targets, other)


def test_query_subset():
    assert np.array_equal(query_subset(10, None, 0), np.arange(10))
    sub = query_subset(100, 7, 1)
    assert len(sub) == 7 and np.all(np.diff(sub) > 0) and np.array_equal(sub, query_subset(100, 7, 1))
    with pytest.raises(ValueError, match="--num-queries"):
        query_subset(10, 0, 0)
