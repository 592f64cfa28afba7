"""ComDefend purifier: its network, training, and evaluation behind it (non-adaptive and adaptive attacks)."""

import pytest
import torch

from saat.defenses.comdefend import ComDefend, PurifiedModel, purifier_path
from saat.models import HashModel
from saat.pipelines.attack import AttackConfig, run_attack
from saat.pipelines.comdefend import train_comdefend


def test_network_shapes_binarisation_and_straight_through_gradients():
    torch.manual_seed(0)
    net = ComDefend(12, width=0.125).eval()
    x = torch.rand(2, 3, 20, 20, requires_grad=True)
    rec, z = net(x)
    assert rec.shape == x.shape and z.shape == (2, 12, 20, 20)
    assert rec.min().item() >= 0 and rec.max().item() <= 1
    hard = net.binarise(z)
    assert set(hard.unique().tolist()) <= {0.0, 1.0}
    noisy = net.binarise(z, noise=torch.randn_like(z) * 20)
    assert ((noisy > 0.99) | (noisy < 0.01)).float().mean() > 0.8  # std 20 noise saturates the sigmoid
    ste = net.binarise(z, straight_through=True)
    assert torch.equal(ste, hard)
    ste.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0  # the hard path alone would give no gradient


def test_purified_model_is_model_after_purifier():
    torch.manual_seed(0)
    model, net = HashModel("small_cnn", 8).eval(), ComDefend(12, width=0.125).eval()
    system = PurifiedModel(net, model)
    x = torch.rand(3, 3, 16, 16)
    torch.testing.assert_close(system(x), model(net(x)[0]))
    assert torch.equal(system.encode(x), model.encode(net(x)[0]))
    # The adaptive robustness evaluation crafts on bpda(): the same function, with a gradient through the
    # binarisation (the non-adaptive system's input gradient is exactly 0).
    adaptive = system.bpda()
    torch.testing.assert_close(adaptive(x), system(x))
    assert adaptive.straight_through and not system.straight_through and adaptive.purifier is net
    xv = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(system(xv).sum(), xv)  # connected to the input, with a gradient of exactly 0
    assert float(grad.abs().sum()) == 0


@pytest.mark.slow
def test_training_and_evaluation_behind_the_purifier(mosaic_run_copy):
    mosaic_run = mosaic_run_copy  # trains a purifier into the run and caches codes behind it: a private copy
    with pytest.raises(FileNotFoundError, match="--method comdefend"):
        run_attack(mosaic_run, AttackConfig(defense="comdefend", num_queries=4), progress=False)
    # the narrowest purifier that keeps the architecture (4 to 16 channels): the card attacks through it
    out = train_comdefend(mosaic_run, epochs=1, width=0.0625, limit=64, progress=False)
    assert purifier_path(mosaic_run).is_file() and out["log"][0]["loss"] > 0
    cfg = dict(num_queries=8, batch_size=8, steps=2)
    plain = run_attack(mosaic_run, AttackConfig(defense="comdefend", **cfg), progress=False, write=False)
    adaptive = run_attack(mosaic_run, AttackConfig(defense="comdefend", adaptive=True, **cfg), progress=False,
                          write=False)
    assert plain["name"].endswith("-comdefend") and adaptive["name"].endswith("-comdefend-adaptive")
    assert plain["benign_mAP"] == adaptive["benign_mAP"]  # the same purified system evaluates both
    cached = [p.name for p in (mosaic_run / "cache").iterdir() if "-comdefend-" in p.name]
    assert any(n.startswith("codes-database-") for n in cached)
    with pytest.raises(ValueError, match="--adaptive needs --defense"):
        run_attack(mosaic_run, AttackConfig(adaptive=True, num_queries=4), progress=False)
    # The robustness card of the purified system: white-box attacks meet the purifier's zero gradient; --adaptive
    # crafts through its straight-through version.
    from saat.pipelines.robustness import RobustnessConfig, run_robustness

    # the quick profile at smoke-test iterations: the zero-gradient check does not depend on them
    few = {"steps": 10}
    quick = dict(preset="quick", num_queries=6, batch_size=6, defense="comdefend",
                 options={"mainstay": few, "cgat": few, "hag": few, "sdha": few, "square": {"steps": 20}})
    card = run_robustness(mosaic_run, RobustnessConfig(**quick), progress=False, write=False)
    adaptive_card = run_robustness(mosaic_run, RobustnessConfig(**quick, adaptive=True, checks=False),
                                   progress=False, write=False)
    assert card["model"]["input_defense"] == "comdefend" and adaptive_card["threat_model"]["adaptive"]
    assert card["clean_map"] == adaptive_card["clean_map"]
    assert "zero-gradient" in card["flags_raised"]  # the hard binarisation: exactly 0 for every query
    assert card["flags"]["zero-gradient"]["share"] == 1.0
