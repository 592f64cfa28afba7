"""The tensor-level attack API: create_attack(name, model, ...)(images, labels) on a plain nn.Sequential that knows
nothing of saat (no ``alpha`` argument), class-index or multi-hot labels, and one-line errors for bad inputs."""

import pytest
import torch
from torch import nn

from saat.attacks import ATTACKS, create_attack, list_attacks
from saat.retrieval import mean_average_precision

EPS = 16 / 255
CASES = [(n, False) for n in list_attacks(targeted=False)] + [(n, True) for n in list_attacks(targeted=True)]
# Each method runs with its fast_settings, with these over them where those are too few for the planted problem's
# retrieval to move (test_attack_methods_fast.py checks the same effect on the methods directly).
EFFECT_SETTINGS = {
    # ProS-GAN trains a generator (the authors' networks, ~20 M parameters) on the first call: 32 steps here, on the
    # hash loss alone (no reconstruction or GAN term), where the paper trains 100 epochs.
    "prosgan": {"proto_steps": 50, "proto_lr": 1e-3, "gan_epochs": 8, "gan_steps_per_epoch": None, "gan_batch": 8,
                "gan_lr": 1e-3, "beta": 0.0, "adv_weight": 0.0, "hash_weight": 50.0, "d_every": 1000},
    "square": {"steps": 300},  # a random search: a few hundred model evaluations per query
}
RAISE = {"prosgan": 0.1}  # how much each targeted attack must raise t-MAP (default 0.5); the 32-step generator is weak


def settings(name, **over):
    """The method's fast_settings, then the effect settings above, then ``over``."""
    return {**ATTACKS.get(name).fast_settings, **EFFECT_SETTINGS.get(name, {}), **over}


def sequential_like(tiny):
    """The planted problem's model as a plain nn.Sequential: same function at alpha = 1, no alpha argument."""
    seq = nn.Sequential(nn.Flatten(), nn.Linear(tiny.linear.in_features, tiny.bits), nn.Tanh())
    seq[1].load_state_dict(tiny.linear.state_dict())
    return seq


def test_attacks_are_listed_like_timm():
    names = list_attacks()
    assert names == sorted(names) and {"mainstay", "cgat", "hag", "sdha", "dhta", "p2p", "tha", "prosgan"} <= set(names)
    assert "saat" not in names and "pros-gan" not in names  # aliases are found, not listed
    assert ATTACKS.get("saat").name == "mainstay" and ATTACKS.get("pros-gan").name == "prosgan"
    for targeted in (False, True):
        assert list_attacks(targeted=targeted) == [n for n in names if getattr(ATTACKS.get(n), "targeted" if targeted
                                                                               else "untargeted")]
    assert set(list_attacks(targeted=False)) | set(list_attacks(targeted=True)) == set(names)
    assert "hag" not in list_attacks(targeted=True) and "dhta" not in list_attacks(targeted=False)
    assert list_attacks("*hta") == ["dhta"] and list_attacks("nothing*") == []
    assert set(EFFECT_SETTINGS) | set(RAISE) <= set(names)  # no stale entries


@pytest.mark.parametrize("name, targeted", CASES)
def test_create_attack_on_a_plain_sequential(planted_retrieval, name, targeted):
    p = planted_retrieval
    model = sequential_like(p.model)
    model.train()
    model[1].bias.requires_grad_(False)  # a mixed state, to be restored as found
    classes = p.y.argmax(1)  # class indices this time
    cls = ATTACKS.get(name)
    given = {k: getattr(p, k) for k in (cls.needs_targeted if targeted else cls.needs_untargeted)}  # no more
    atk = create_attack(name, model, eps=EPS, num_classes=4, **given, **settings(name))
    adv = atk(p.x, classes, target_labels=p.targets.argmax(1) if targeted else None)
    assert adv.shape == p.x.shape and float((adv - p.x).abs().max()) <= EPS + 1e-6
    assert float(adv.min()) >= 0 and float(adv.max()) <= 1
    assert model.training and model[1].weight.requires_grad and not model[1].bias.requires_grad
    assert all(q.grad is None for q in model.parameters())
    relevance = p.targets if targeted else p.y
    before = mean_average_precision(p.codes(p.x), p.db_codes.numpy(), relevance.numpy(), p.db_labels.numpy(),
                                    topk=None)
    after = mean_average_precision(p.codes(adv), p.db_codes.numpy(), relevance.numpy(), p.db_labels.numpy(),
                                   topk=None)
    if targeted:
        assert after > before + RAISE.get(name, 0.5), (before, after)
    else:
        assert after < before - 0.5, (before, after)


@pytest.mark.parametrize("name, targeted", CASES)
def test_each_attack_refuses_a_call_without_what_it_declares_it_needs(planted_retrieval, name, targeted):
    p = planted_retrieval
    cls = ATTACKS.get(name)
    needs = cls.needs_targeted if targeted else cls.needs_untargeted
    target = {"target_labels": p.targets} if targeted else {}
    kind = "targeted" if targeted else "untargeted"
    for missing in sorted(needs):  # the attack fails before it builds anything
        given = {k: getattr(p, k) for k in needs if k != missing}
        with pytest.raises(ValueError, match=f"^the {kind} {name} attack needs {missing}: pass {missing}=\\.\\.\\. "):
            create_attack(name, p.model, eps=EPS, num_classes=4, **given, **cls.fast_settings)(p.x, p.y, **target)


def test_untargeted_hag_and_sdha_need_only_the_model(planted_retrieval):
    p = planted_retrieval
    model = sequential_like(p.model)
    for name in ("hag", "sdha"):
        assert not ATTACKS.get(name).needs_untargeted
        adv = create_attack(name, model, eps=EPS, **settings(name))(p.x, p.y)
        assert float((adv - p.x).abs().max()) > 1 / 255


def test_alpha_reaches_only_forwards_that_take_it(planted_retrieval):
    p = planted_retrieval
    seen = []

    class Recording(nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x, alpha=1.0):
            seen.append(alpha)
            return self.inner(x, alpha=alpha)

    create_attack("mainstay", Recording(p.model), eps=EPS, steps=10, train_codes=p.train_codes,
                  train_labels=p.train_labels)(p.x, p.y)
    assert 0.1 in seen and 1.0 in seen  # the continuation schedule reached it
    create_attack("hag", lambda x: torch.tanh(x.flatten(1)[:, :16] - 0.5), eps=EPS, steps=3)(p.x, p.y)  # a callable


@pytest.mark.parametrize("call, message", [
    (lambda a, p: a(p.x * 255, p.y), "divide by 255"),
    (lambda a, p: a((p.x - 0.45) / 0.225, p.y), "normalised"),
    (lambda a, p: a(p.x.double().to(torch.uint8), p.y), "floats in \\[0, 1\\]"),
    (lambda a, p: a(p.x[:3], p.y), "labels has 16 rows but there are 3 images in the batch"),
    (lambda a, p: a(p.x, p.y.argmax(1) + 10), "class indices must be in \\[0, 4\\)"),
    (lambda a, p: a(p.x, p.y * 2), "labels must contain only 0 and 1 \\(multi-hot rows\\)"),
    (lambda a, p: a(p.x[:, :, 0], p.y), "4-D"),
])
def test_bad_inputs_give_one_line_errors(planted_retrieval, call, message):
    p = planted_retrieval
    atk = create_attack("mainstay", p.model, eps=EPS, steps=2, train_codes=p.train_codes,
                        train_labels=p.train_labels)
    with pytest.raises(ValueError, match=message):
        call(atk, p)


def test_bad_settings_and_missing_knowledge_name_the_fix(planted_retrieval):
    p = planted_retrieval
    with pytest.raises(ValueError, match="use eps=8/255"):
        create_attack("mainstay", p.model, eps=8)
    for eps in (0, -0.1, float("nan")):
        with pytest.raises(ValueError, match="eps must be positive"):
            create_attack("mainstay", p.model, eps=eps)
    with pytest.raises(ValueError, match="attack 'mainstay': unknown setting\\(s\\) momentum"):
        create_attack("mainstay", p.model, momentum=0.9)
    with pytest.raises(ValueError, match="needs train_codes, train_labels: pass train_codes=..., train_labels="):
        create_attack("mainstay", p.model, eps=EPS, num_classes=4)(p.x, p.y)
    with pytest.raises(ValueError, match="targeted dhta attack needs db_codes, db_labels"):
        create_attack("dhta", p.model, eps=EPS, num_classes=4)(p.x, p.y, target_labels=p.targets)
    with pytest.raises(ValueError, match="targeted only: pass target_labels"):
        create_attack("p2p", p.model, eps=EPS, db_codes=p.db_codes, db_labels=p.db_labels)(p.x, p.y)
    with pytest.raises(ValueError, match="needs db_labels, train_codes, train_images, train_labels"):
        create_attack("prosgan", p.model, num_classes=4)(p.x, p.y, target_labels=p.targets)
    with pytest.raises(ValueError, match="train_codes has 8 bits per code but the model outputs 16"):
        create_attack("mainstay", p.model, train_codes=p.train_codes[:, :8], train_labels=p.train_labels)(p.x, p.y)
    with pytest.raises(ValueError, match="train_labels has 31 rows but there are 32 rows in train_codes"):
        create_attack("mainstay", p.model, train_codes=p.train_codes, train_labels=p.train_labels[1:])(p.x, p.y)
    with pytest.raises(ValueError, match="train_images has 31 images but train_labels has 32 rows"):
        create_attack("prosgan", p.model, train_images=p.train_images[1:], train_codes=p.train_codes,
                      train_labels=p.train_labels, db_labels=p.db_labels)(p.x, p.y, target_labels=p.targets)
    with pytest.raises(ValueError, match="shape \\(B, K\\)"):
        create_attack("hag", lambda x: x, eps=EPS, steps=2, num_classes=4)(p.x, p.y)
    with pytest.raises(ValueError, match="NaN or infinite values"):
        create_attack("hag", lambda x: x.flatten(1) / 0 - float("inf"), eps=EPS, steps=2, num_classes=4)(p.x, p.y)


@pytest.mark.parametrize("targeted", [False, True])
def test_evaluate_attack_returns_the_attack_record_and_writes_nothing(planted_retrieval, targeted, tmp_path,
                                                                      monkeypatch):
    from saat.attacks import evaluate_attack
    from saat.runs import AttackRecord

    monkeypatch.chdir(tmp_path)
    p = planted_retrieval
    model = sequential_like(p.model)
    atk = create_attack("mainstay", model, eps=EPS, train_codes=p.train_codes, train_labels=p.train_labels,
                        **settings("mainstay"))
    m = evaluate_attack(model, atk, p.x, p.y, p.db_codes, p.db_labels, topk=None, batch_size=5,
                        target_labels=p.targets if targeted else None)
    record = AttackRecord.from_json(m)
    benign = mean_average_precision(p.codes(p.x), p.db_codes.numpy(), p.y.numpy(), p.db_labels.numpy(), topk=None)
    assert record.benign_map == pytest.approx(benign) and record.queries == 16 and record.attack == "mainstay"
    assert record.perceptibility["linf_max"] <= EPS + 1e-6 and record.perceptibility["images"] == 16
    assert record.theory is not None and record.seconds > 0
    from saat.attacks import mainstay_codes

    aim = mainstay_codes(p.targets if targeted else p.y, p.train_codes, p.train_labels)
    ideal = (aim if targeted else -aim).to(torch.int8).numpy()  # +mainstay of the targets, -mainstay of the labels
    relevance = (p.targets if targeted else p.y).numpy()
    assert record.theory == pytest.approx(mean_average_precision(ideal, p.db_codes.numpy(), relevance,
                                                                 p.db_labels.numpy(), topk=None))
    if targeted:
        assert record.adversarial > record.benign_tmap + 0.5
    else:
        assert record.adversarial < record.benign_map - 0.5
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", ["saat", "atrdh", "cgat"])
def test_create_defense_trains_a_plain_sequential(planted_retrieval, name):
    from saat.defenses import create_defense

    p = planted_retrieval
    model = sequential_like(p.model)
    before = [q.detach().clone() for q in model.parameters()]
    defense = create_defense(name, model, "dpsh", train_codes=p.train_codes, train_labels=p.train_labels.argmax(1),
                             num_classes=4, db_labels=p.db_labels, eps=EPS, step=4 / 255, steps=2)
    opt = defense.build_optimizer(model.parameters())
    model.train()
    for it, start in enumerate(range(0, 32, 8)):
        idx = torch.arange(start, start + 8)
        images = p.x[idx % 16]  # stand-ins for the training images of rows idx (the loop only needs their shape)
        terms = defense.step(defense.augment(images), p.train_labels[idx], idx, it)
        opt.zero_grad()
        terms["loss"].backward()
        opt.step()
    assert torch.isfinite(terms["loss"]) and {"hash", "adv"} <= set(terms)
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_create_defense_errors_name_the_argument(planted_retrieval):
    from saat.defenses import create_defense

    p = planted_retrieval
    model = sequential_like(p.model)
    with pytest.raises(ValueError, match="train_codes must contain only \\+1 and -1"):
        create_defense("saat", model, "dpsh", train_codes=p.train_codes * 0.5, train_labels=p.train_labels)
    with pytest.raises(ValueError, match="hashing_loss must be a method name or a callable"):
        create_defense("saat", model, 3, train_codes=p.train_codes, train_labels=p.train_labels)
    with pytest.raises(ValueError, match="--lambd does not apply to defense 'saat'"):
        create_defense("saat", model, "dpsh", train_codes=p.train_codes, train_labels=p.train_labels, lambd=2)
    custom = create_defense("saat", model, lambda h, y, idx: (h ** 2).mean(), train_codes=p.train_codes,
                            train_labels=p.train_labels)
    assert float(custom.step(p.x[:4], p.train_labels[:4], torch.arange(4), 0)["hash"].detach()) >= 0


def test_state_hash_covers_every_entry_including_batchnorm_counters():
    from saat.attacks.api import state_hash

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.LazyLinear(8))
    model(torch.rand(2, 3, 8, 8))
    first = state_hash(model)
    assert first == state_hash(model) and len(first) == 16
    model[1].num_batches_tracked += 1  # a 0-dim integer buffer
    assert state_hash(model) != first
