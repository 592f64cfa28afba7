"""Every attack method of ``saat.attacks.ATTACKS`` called directly on a tiny in-memory model and a planted
retrieval problem (conftest: ``tiny_hash_model``, ``planted_retrieval``): the L-infinity budget, the [0, 1] box,
the model left as it was found, and the retrieval effect — mAP down (untargeted), t-MAP up (targeted).

These run in seconds; the same methods on a trained model and shipped data are the slow tests of
test_baselines.py and test_attack_pipeline.py. ProS-GAN trains a GAN and is covered by test_prosgan.py.
"""

import pytest
import torch

from saat.attacks import ATTACKS, AttackContext, list_attacks
from saat.retrieval import mean_average_precision

EPS = 16 / 255
STEP = 4 / 255
# Small settings per method: enough iterations for the effect on the planted problem, a fraction of a second each.
SETTINGS = {
    "hag": {"steps": 30},
    "sdha": {"steps": 30},
    "mainstay": {"step": STEP, "steps": 20},
    "cgat": {"step": STEP, "steps": 20},
    "p2p": {"step": STEP, "steps": 20},
    "dhta": {"step": STEP, "steps": 20},
    "tha": {"step": STEP, "steps": 20, "proto_steps": 20, "proto_lr": 1e-3},
}
SKIPPED = {"prosgan"}  # trains a GAN (test_prosgan.py)
CASES = [(name, targeted) for name in sorted(SETTINGS) for targeted in (False, True)
         if (ATTACKS.get(name).targeted if targeted else ATTACKS.get(name).untargeted)]


def test_every_registered_attack_has_a_fast_test():
    assert set(list_attacks()) - SKIPPED == set(SETTINGS)
    assert {n for n, t in CASES if not t} == {"hag", "sdha", "mainstay", "cgat"}
    assert {n for n, t in CASES if t} == {"sdha", "mainstay", "cgat", "p2p", "dhta", "tha"}


def build(problem, name, targeted, seed=0):
    ctx = AttackContext(problem.model, torch.device("cpu"), problem.train_codes, problem.train_labels,
                        problem.db_codes, problem.db_labels, seed=seed)
    return ATTACKS.get(name)(ctx, targeted=targeted, eps=EPS, **SETTINGS[name])


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
    attack = build(p, name, targeted)
    target = p.targets if targeted else None
    adv = attack.attack(p.x, p.y, target)

    assert adv.shape == p.x.shape and adv.dtype == p.x.dtype and not adv.requires_grad
    assert float((adv - p.x).abs().max()) <= EPS + 1e-6
    assert float(adv.min()) >= 0.0 and float(adv.max()) <= 1.0
    assert model.training
    assert {n: q.requires_grad for n, q in model.named_parameters()} == flags
    assert all(q.grad is None for q in model.parameters())
    assert all(torch.equal(q, before[n]) for n, q in model.named_parameters())

    if targeted:
        benign, adversarial = retrieval_map(p, p.x, p.targets), retrieval_map(p, adv, p.targets)
        assert adversarial > benign + 0.5, (benign, adversarial)
    else:
        benign, adversarial = retrieval_map(p, p.x, p.y), retrieval_map(p, adv, p.y)
        assert adversarial < benign - 0.5, (benign, adversarial)


@pytest.mark.parametrize("name, targeted", [c for c in CASES if c[0] in ("sdha", "mainstay", "tha")])
def test_seeded_attacks_repeat_exactly(planted_retrieval, name, targeted):
    p = planted_retrieval
    target = p.targets if targeted else None
    runs = [build(p, name, targeted, seed=3).attack(p.x, p.y, target) for _ in range(2)]
    assert torch.equal(runs[0], runs[1])


def test_eps_zero_leaves_the_images_alone(planted_retrieval):
    p = planted_retrieval
    for name, targeted in CASES:
        ctx = AttackContext(p.model, torch.device("cpu"), p.train_codes, p.train_labels, p.db_codes, p.db_labels)
        settings = {**SETTINGS[name], "steps": 2, **({"proto_steps": 2} if name == "tha" else {})}
        attack = ATTACKS.get(name)(ctx, targeted=targeted, **{**settings, "eps": 0.0})
        adv = attack.attack(p.x, p.y, p.targets if targeted else None)
        assert torch.equal(adv, p.x), name
