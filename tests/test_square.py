"""The score-based black-box attack `square` (docs/attacks.md#square-black-box): no gradient ever, its score and
schedule, acceptance that never worsens the score, the budget in forwards, replay for sharding, and that it works on
a model that returns only ±1 codes."""

import pytest
import torch
from torch import nn

from saat.attacks import AttackContext, create_attack
from saat.attacks.square import SquareAttack, SquareSearch, hamming_score, square_fraction
from saat.retrieval import mean_average_precision
from saat.robustness import HardSign

EPS = 16 / 255


class NoGradient(nn.Module):
    """Counts images forwarded and fails if any forward runs with autograd on (a gradient could then be taken)."""

    def __init__(self, model):
        super().__init__()
        self.model, self.images = model, 0

    def forward(self, x, alpha=1.0):
        assert not torch.is_grad_enabled(), "square took a pass with autograd on"
        self.images += x.shape[0]
        return self.model(x)


def context(p, model):
    return AttackContext(model, torch.device("cpu"), p.train_codes, p.train_labels, p.db_codes, p.db_labels, seed=3)


def test_the_schedule_halves_the_square_at_the_rescaled_breakpoints():
    assert square_fraction(0, 10000, 0.8) == 0.8 and square_fraction(10, 10000, 0.8) == 0.8
    assert square_fraction(11, 10000, 0.8) == 0.4 and square_fraction(51, 10000, 0.8) == 0.2
    assert square_fraction(9999, 10000, 0.8) == pytest.approx(0.8 / 2 ** 9)
    assert square_fraction(50, 100, 0.8) == pytest.approx(0.8 / 2 ** 7)  # 5,000 of 10,000: past 10 to 4,000
    values = [square_fraction(i, 300, 0.5) for i in range(300)]
    assert values == sorted(values, reverse=True) and values[-1] == pytest.approx(0.5 / 2 ** 9)


def test_the_score_is_the_hamming_distance_on_pm1_codes():
    g = torch.Generator().manual_seed(0)
    m = torch.randint(0, 2, (5, 12), generator=g).float() * 2 - 1
    h = torch.randint(0, 2, (5, 12), generator=g).float() * 2 - 1
    d = (h != m).float().sum(1)
    torch.testing.assert_close(hamming_score(h, m, targeted=False), 4 * (12 - d) / 12 - 1)
    torch.testing.assert_close(hamming_score(h, m, targeted=True), -(4 * (12 - d) / 12 - 1))
    # on continuous outputs it is increasing in each bit's agreement with m
    h2 = h.clone()
    h2[:, 0] = m[:, 0] * 0.5
    assert bool((hamming_score(h2, m, False) < hamming_score(m, m, False)).all())


@pytest.mark.parametrize("targeted", [False, True])
def test_square_takes_no_gradient_spends_its_budget_and_never_worsens(planted_retrieval, targeted):
    p = planted_retrieval
    model = NoGradient(p.model)
    attack = SquareAttack(context(p, model), targeted=targeted, eps=EPS, steps=40)
    target = p.targets if targeted else None
    adv = attack.attack(p.x, p.y, target)
    assert model.images == 40 * len(p.x)  # the start and 39 proposals per query, nothing else
    assert float((adv - p.x).abs().max()) <= EPS + 1e-6 and 0 <= float(adv.min()) and float(adv.max()) <= 1
    m = attack.guide(target if targeted else p.y)
    with torch.no_grad():
        final = hamming_score(p.model(adv), m, targeted)
        # the start it could not have done worse than: the stripes of the same seed
        search = SquareSearch(p.model, eps=EPS, step=0.0, steps=1, seed=3)
        start = hamming_score(p.model(search.perturb(p.x, lambda h, _x: hamming_score(h, m, targeted))), m, targeted)
    assert bool((final <= start + 1e-6).all())
    assert bool((final < start - 1e-3).any())  # and it moved


def test_replay_advances_the_stream_as_attacking_would(planted_retrieval):
    p = planted_retrieval
    m = SquareAttack(context(p, p.model), eps=EPS, steps=25).guide(p.y)

    def objective(h, _x):
        return hamming_score(h, m[8:], False)

    whole = SquareSearch(p.model, eps=EPS, step=0.0, steps=25, seed=5)
    whole(p.x[:8], lambda h, _x: hamming_score(h, m[:8], False))
    expected = whole(p.x[8:], objective)
    skipping = SquareSearch(p.model, eps=EPS, step=0.0, steps=25, seed=5)
    skipping.replay(p.x[:8])
    assert torch.equal(skipping(p.x[8:], objective), expected)
    assert SquareAttack(context(p, p.model), eps=EPS).replayable


def test_square_breaks_a_model_that_returns_only_pm1_codes(planted_retrieval):
    """HardSign's codes have zero gradient: PGD stays where it starts, the random search does not need one."""
    p = planted_retrieval
    masked = HardSign(p.model)
    knowledge = {"train_codes": p.train_codes, "train_labels": p.train_labels}

    def retrieval(images):
        return mean_average_precision(p.model.encode(images).numpy(), p.db_codes.numpy(), p.y.numpy(),
                                      p.db_labels.numpy(), topk=None)

    benign = retrieval(p.x)
    gradient = create_attack("mainstay", masked, eps=EPS, steps=20, **knowledge)(p.x, p.y)
    black_box = create_attack("square", masked, eps=EPS, steps=300, **knowledge)(p.x, p.y)
    assert retrieval(gradient) > benign - 0.2  # the masked gradient leaves retrieval nearly intact ...
    assert retrieval(black_box) < benign - 0.5  # ... the black-box attack does not


def test_square_settings_are_checked():
    with pytest.raises(ValueError, match="p_init"):
        SquareSearch(nn.Identity(), eps=EPS, step=0.0, steps=3, p_init=0.0)
