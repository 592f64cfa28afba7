"""Every attack method of ``saat.attacks.ATTACKS`` called directly on a tiny in-memory model and a planted
retrieval problem (conftest: ``tiny_hash_model``, ``planted_retrieval``) with its ``fast_settings``: the L-infinity
budget, the [0, 1] box, the model left as it was found, seeding, and the retrieval effect — mAP down (untargeted),
t-MAP up (targeted).

The cases come from the registry (``list_attacks``, each class's ``targeted`` / ``untargeted`` and
``fast_settings``): a new attack module is tested here without an edit. These run in seconds; the same methods on
a trained model and shipped data are the slow tests of test_baselines.py and test_attack_pipeline.py.
"""

import dataclasses

import pytest
import torch

from saat.attacks import ATTACKS, AttackContext, AttackMethod, list_attacks
from saat.data import FloatTensorSplit
from saat.retrieval import mean_average_precision

EPS = 16 / 255
CASES = [(name, False) for name in list_attacks(targeted=False)] + [(name, True) for name in
                                                                   list_attacks(targeted=True)]
# The effect is checked at a method's fast settings (the fewest iterations that run it) unless they are too few for
# the planted problem's retrieval to move; then with these settings over them, or (EFFECT_ELSEWHERE) in another test.
EFFECT_SETTINGS = {"square": {"steps": 300}}  # a random search: a few hundred model evaluations per query
EFFECT_ELSEWHERE = {"prosgan": "test_tensor_api.py trains its generator long enough to raise t-MAP"}
# Methods that train a network of their own on the training images (seconds per build at the paper's widths) run
# every fast test here once; their repeats are slow tests (narrow networks: test_prosgan.py).
TRAINS_ON_IMAGES = {name for name in list_attacks()
                    if "train_images" in ATTACKS.get(name).needs_untargeted | ATTACKS.get(name).needs_targeted}
REPEATS = [pytest.param(name, targeted, marks=pytest.mark.slow) if name in TRAINS_ON_IMAGES else (name, targeted)
           for name, targeted in CASES]


def test_every_registered_attack_runs_here_with_its_fast_settings():
    assert {name for name, _ in CASES} == set(list_attacks())
    for name in list_attacks():
        cls = ATTACKS.get(name)
        assert any("fast_settings" in k.__dict__ for k in cls.__mro__ if k is not AttackMethod), (
            f"attack {name!r} declares no fast_settings (the settings tests use; {{}} if its defaults are fast)")
        assert set(cls.fast_settings) <= set(cls.defaults), name
    assert set(EFFECT_SETTINGS) | set(EFFECT_ELSEWHERE) <= set(list_attacks())  # no stale entries


def build(problem, name, targeted, seed=0, **settings):
    ctx = AttackContext(problem.model, torch.device("cpu"), problem.train_codes, problem.train_labels,
                        problem.db_codes, problem.db_labels, seed=seed,
                        train_split=FloatTensorSplit("train", problem.train_images, problem.train_labels))
    return ATTACKS.get(name)(ctx, targeted=targeted, **{"eps": EPS, **ATTACKS.get(name).fast_settings, **settings})


def retrieval_map(problem, images, labels):
    return mean_average_precision(problem.codes(images), problem.db_codes.numpy(), labels.numpy(),
                                  problem.db_labels.numpy(), topk=None)


def test_the_planted_problem_retrieves_well_and_its_targets_do_not(planted_retrieval):
    p = planted_retrieval
    assert retrieval_map(p, p.x, p.y) > 0.95
    assert retrieval_map(p, p.x, p.targets) < 0.35
    assert not (p.y * p.targets).any()


@pytest.mark.parametrize("name, targeted", CASES)
def test_attack_keeps_budget_and_box_restores_the_model_and_works(planted_retrieval, name, targeted):
    p = planted_retrieval
    model = p.model
    model.train()
    model.linear.bias.requires_grad_(False)  # a mixed set of flags must come back as it was
    flags = {n: q.requires_grad for n, q in model.named_parameters()}
    before = {n: q.detach().clone() for n, q in model.named_parameters()}
    attack = build(p, name, targeted, **EFFECT_SETTINGS.get(name, {}))
    target = p.targets if targeted else None
    adv = attack.attack(p.x, p.y, target)

    assert adv.shape == p.x.shape and adv.dtype == p.x.dtype and not adv.requires_grad
    assert float((adv - p.x).abs().max()) <= EPS + 1e-6
    assert float(adv.min()) >= 0.0 and float(adv.max()) <= 1.0
    assert model.training
    assert {n: q.requires_grad for n, q in model.named_parameters()} == flags
    assert all(q.grad is None for q in model.parameters())
    assert all(torch.equal(q, before[n]) for n, q in model.named_parameters())

    if name in EFFECT_ELSEWHERE:
        return
    hint = f"{name}'s fast_settings are too few to move the planted problem's retrieval"
    if targeted:
        benign, adversarial = retrieval_map(p, p.x, p.targets), retrieval_map(p, adv, p.targets)
        assert adversarial > benign + 0.5, (hint, benign, adversarial)
    else:
        benign, adversarial = retrieval_map(p, p.x, p.y), retrieval_map(p, adv, p.y)
        assert adversarial < benign - 0.5, (hint, benign, adversarial)


@pytest.mark.parametrize("name, targeted", REPEATS)
def test_seeded_attacks_repeat_exactly(planted_retrieval, name, targeted):
    p = planted_retrieval
    target = p.targets if targeted else None
    runs = [build(p, name, targeted, seed=3).attack(p.x, p.y, target) for _ in range(2)]
    assert torch.equal(runs[0], runs[1])


@pytest.mark.parametrize("name, targeted", REPEATS)
def test_seed_free_is_what_the_seed_changes(planted_retrieval, name, targeted):
    """An attack declared ``seed_free`` (the robustness card then reuses an earlier run of it) gives the same images
    under two seeds; one not declared so gives other images (a declaration left out costs the card a rerun). The
    training and database codes get a quarter of their bits flipped, so that items of one class differ and a draw
    among them (DHTA's anchor items) shows."""
    g = torch.Generator().manual_seed(0)

    def noisy(codes):
        return torch.where(torch.rand(codes.shape, generator=g) < 0.25, -codes, codes)

    p = dataclasses.replace(planted_retrieval, train_codes=noisy(planted_retrieval.train_codes),
                            db_codes=noisy(planted_retrieval.db_codes))
    target = p.targets if targeted else None
    runs = [build(p, name, targeted, seed=s).attack(p.x, p.y, target) for s in (3, 4)]
    assert torch.equal(runs[0], runs[1]) == ATTACKS.get(name).seed_free, name


@pytest.mark.parametrize("name, targeted", REPEATS)
def test_eps_zero_leaves_the_images_alone(planted_retrieval, name, targeted):
    p = planted_retrieval
    adv = build(p, name, targeted, eps=0.0).attack(p.x, p.y, p.targets if targeted else None)
    assert torch.equal(adv, p.x)
