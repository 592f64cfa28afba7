"""A model handed to any entry point comes back as it went in: every module's train/eval mode, every parameter's
``requires_grad``, the weights, BatchNorm's running statistics and ``num_batches_tracked`` (issue 23, part 1).

The models hold BatchNorm and Dropout (the layers whose behaviour the mode changes) and are handed over in the modes
a user has: eval (the usual one after training), train, and a fine-tuning mix (train mode with BatchNorm frozen in
eval). Before the fix, the attacks recorded the mode of their own wrapper module (a fresh module, so in train mode)
and restored *that*, putting an eval-mode model into train mode."""

import pytest
import torch
from torch import nn

from saat.attacks import ATTACKS, create_attack, list_attacks
from saat.attacks.api import evaluate_attack, system_codes
from saat.defenses import create_defense, list_defenses
from saat.defenses.comdefend import ComDefend, PurifiedModel
from saat.robustness import HardSign, Party, ensemble, transfer_matrix
from saat.robustness import evaluate as robustness_evaluate

MODES = ("eval", "train", "mixed")
# Each method's fast_settings (the test is about state, not strength), also as the robustness card's overrides.
QUICK = {name: ATTACKS.get(name).fast_settings for name in list_attacks()}
# the quick profile's members at their fast-test settings (a card's overrides name only attacks of its ensembles)
CARD_QUICK = {m.attack: QUICK[m.attack] for targeted in (False, True) for m in ensemble("quick", targeted)}


class BNDropNet(nn.Module):
    """Conv → BatchNorm → ReLU → Dropout → Linear → tanh on 3 × 8 × 8 images; ``bits``, ``encode`` and an ``alpha``
    argument as saat's own models have (so it can also sit behind a ComDefend purifier)."""

    def __init__(self, bits=16, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.bits = bits
        self.features = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                                      nn.Dropout(0.5))
        self.head = nn.Linear(4 * 8 * 8, bits)
        with torch.no_grad():  # running statistics that a training-mode forward would visibly move
            bn = self.features[1]
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
            bn.num_batches_tracked.fill_(7)

    def forward(self, x, alpha=1.0):
        return torch.tanh(alpha * self.head(self.features(x)))

    @torch.no_grad()
    def encode(self, x):
        return torch.where(self(x) >= 0, 1, -1).to(torch.int8)


def put_in_mode(model: nn.Module, mode: str) -> nn.Module:
    model.train(mode != "eval")
    if mode == "mixed":  # fine-tuning with frozen BatchNorm, and one frozen parameter
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.eval()
        model.head.bias.requires_grad_(False)
    return model


def snapshot(model: nn.Module) -> dict:
    return {"modes": {name: m.training for name, m in model.named_modules()},
            "requires_grad": {name: p.requires_grad for name, p in model.named_parameters()},
            "state": {k: v.detach().clone() for k, v in model.state_dict().items()},
            "grads": [name for name, p in model.named_parameters() if p.grad is not None]}


def assert_unchanged(model: nn.Module, before: dict, what: str, *, buffers: bool = True) -> None:
    after = snapshot(model)
    assert after["modes"] == before["modes"], f"{what}: modes {before['modes']} -> {after['modes']}"
    assert after["requires_grad"] == before["requires_grad"], f"{what}: requires_grad changed"
    if buffers:
        for key, value in before["state"].items():
            assert torch.equal(after["state"][key], value), f"{what}: {key} changed"
        assert after["grads"] == before["grads"], f"{what}: parameter .grad touched"


@pytest.fixture
def problem():
    """Images, labels, training and database codes of a BNDropNet (8 training, 12 database, 6 query images)."""
    g = torch.Generator().manual_seed(1)
    net = BNDropNet().eval()
    x_train, x_db, x = (torch.rand(n, 3, 8, 8, generator=g) for n in (8, 12, 6))
    eye = torch.eye(3)
    y_train, y_db, y = (eye[torch.arange(n) % 3] for n in (8, 12, 6))
    train_codes, db_codes = net.encode(x_train).float(), net.encode(x_db).float()
    return dict(x=x, y=y, targets=eye[(torch.arange(6) + 1) % 3], train_codes=train_codes, train_labels=y_train,
                db_codes=db_codes, db_labels=y_db, train_images=x_train)


def knowledge(p):
    return {k: p[k] for k in ("train_codes", "train_labels", "db_codes", "db_labels", "train_images")}


CASES = [(name, False) for name in list_attacks(targeted=False)] + [(name, True) for name in
                                                                   list_attacks(targeted=True)]


# "mixed" is train mode at the top: it also catches an attack that leaves a train-mode model in eval mode.
@pytest.mark.parametrize("mode", ["eval", "mixed"])
@pytest.mark.parametrize("name, targeted", CASES)
def test_every_attack_leaves_the_model_as_it_was(problem, mode, name, targeted):
    model = put_in_mode(BNDropNet(), mode)
    before = snapshot(model)
    atk = create_attack(name, model, eps=8 / 255, **knowledge(problem), **QUICK[name])
    atk(problem["x"], problem["y"], target_labels=problem["targets"] if targeted else None)
    assert_unchanged(model, before, f"create_attack({name!r}) targeted={targeted}")
    atk.theory_codes(problem["x"], problem["y"], target_labels=problem["targets"] if targeted else None)
    assert_unchanged(model, before, f"{name}.theory_codes")


@pytest.mark.parametrize("mode", MODES)
def test_evaluate_attack_and_system_codes(problem, mode):
    model = put_in_mode(BNDropNet(), mode)
    before = snapshot(model)
    system_codes(model, problem["x"], batch_size=4)
    assert_unchanged(model, before, "system_codes")
    atk = create_attack("mainstay", model, **knowledge(problem), steps=2)
    evaluate_attack(model, atk, problem["x"], problem["y"], problem["db_codes"], problem["db_labels"], topk=None)
    assert_unchanged(model, before, "evaluate_attack")


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("targeted", [False, True])
def test_robustness_card(problem, mode, targeted):
    model = put_in_mode(BNDropNet(), mode)
    before = snapshot(model)
    k = knowledge(problem)
    del k["train_images"]
    robustness_evaluate(model, problem["x"], problem["y"], **k, preset="quick", overrides=CARD_QUICK, topk=None,
                        targeted=targeted, target_labels=problem["targets"] if targeted else None,
                        surrogate=(put_in_mode(BNDropNet(seed=1), "eval"), problem["train_codes"]))
    assert_unchanged(model, before, "saat.robustness.evaluate")


@pytest.mark.parametrize("mode", MODES)
def test_hard_sign_and_its_adaptive_card(problem, mode):
    model = put_in_mode(BNDropNet(), mode)
    before = snapshot(model)
    k = knowledge(problem)
    del k["train_images"]
    masked = HardSign(model)
    robustness_evaluate(masked, problem["x"], problem["y"], **k, preset="quick", overrides=CARD_QUICK, topk=None)
    assert_unchanged(model, before, "HardSign through the card")
    robustness_evaluate(masked, problem["x"], problem["y"], **k, preset="quick", overrides=CARD_QUICK, topk=None,
                        adaptive=True, checks=False)
    assert_unchanged(model, before, "HardSign.bpda() through the adaptive card")
    create_attack("hag", masked, steps=2)(problem["x"], problem["y"])
    assert_unchanged(model, before, "create_attack on HardSign")


@pytest.mark.parametrize("mode", MODES)
def test_purified_system(problem, mode):
    model = put_in_mode(BNDropNet(), mode)
    purifier = ComDefend(4, 0.05)
    purifier.train(mode == "train")
    before, before_purifier = snapshot(model), snapshot(purifier)
    for system in (PurifiedModel(purifier, model), PurifiedModel(purifier, model).bpda()):
        atk = create_attack("mainstay", system, **knowledge(problem), steps=2)
        evaluate_attack(system, atk, problem["x"], problem["y"], problem["db_codes"], problem["db_labels"], topk=None)
        assert_unchanged(model, before, "the purified system's model")
        assert_unchanged(purifier, before_purifier, "the purifier")


@pytest.mark.parametrize("mode", MODES)
def test_transfer_matrix(problem, mode):
    a, b = put_in_mode(BNDropNet(), mode), put_in_mode(BNDropNet(seed=1), mode)
    before_a, before_b = snapshot(a), snapshot(b)
    parties = [Party(name, m, problem["train_codes"], problem["train_labels"], problem["db_codes"],
                     problem["db_labels"]) for name, m in (("a", a), ("b", b))]
    transfer_matrix(parties, problem["x"], problem["y"], eps=8 / 255, topk=None, settings={"steps": 2})
    assert_unchanged(a, before_a, "transfer_matrix (source a)")
    assert_unchanged(b, before_b, "transfer_matrix (source b)")


@pytest.mark.parametrize("mode", ["train", "eval", "mixed"])
@pytest.mark.parametrize("name", list_defenses())
def test_a_defense_step_leaves_the_mode_the_loop_set(problem, mode, name):
    """The loop sets the mode (train, usually; eval or mixed for fine-tuning with frozen statistics); crafting the
    adversarial batch inside ``step`` must not change it. (The step's own training forward may move BatchNorm's
    statistics in train mode; that is training, so only modes and requires_grad are compared.)"""
    model = BNDropNet()
    defense = create_defense(name, model, "csq", train_codes=problem["train_codes"],
                             train_labels=problem["train_labels"], steps=2, total_iterations=2)
    opt = defense.build_optimizer([p for p in model.parameters() if p.requires_grad])
    x, y = problem["train_images"], problem["train_labels"]
    idx = torch.arange(len(x))
    for it in range(2):
        put_in_mode(model, mode)
        before = snapshot(model)
        loss = defense.step(x, y, idx, it)["loss"]
        assert_unchanged(model, before, f"defense {name} step {it}", buffers=False)
        if mode != "train":  # no training-mode forward anywhere: statistics untouched too
            bn = model.features[1]
            assert torch.equal(bn.running_mean, before["state"]["features.1.running_mean"])
            assert int(bn.num_batches_tracked) == int(before["state"]["features.1.num_batches_tracked"])
        opt.zero_grad()
        loss.backward()
        opt.step()
