"""ProS-GAN (SPEC 7.2) on tiny synthetic data: network shapes at any size, the two output modes, PrototypeNet
training, a frozen attacked model, caching, resume after an interruption and seeding."""

import functools
import json
import math

import pytest
import torch

import saat.attacks.prosgan as prosgan
from saat.attacks import ATTACKS, AttackContext
from saat.attacks._prosgan_nets import ProSDiscriminator, ProSGenerator, PrototypeNet
from saat.attacks.cache import CachedTraining
from saat.attacks.prosgan import (
    ProSGANAttack,
    adversarial_images,
    gan_lr_factor,
    lsgan_loss,
    prototype_loss,
    prototype_lr_factor,
    train_prototype_net,
)
from saat.data import FloatTensorSplit, TensorSplit
from saat.models import HashModel

EPS = 8 / 255
SIZE = 16
CLASSES = 3
BITS = 8
TINY = {"proto_steps": 2, "proto_batch": 8, "gan_epochs": 2, "gan_batch": 6, "proto_checkpoint_every": 2,
        "gan_checkpoint_every": 2}  # 12 images / batch 6 = 2 steps per epoch, 4 generator steps in all


@pytest.fixture(autouse=True)
def narrow_networks(monkeypatch):
    """The attack's networks at a fraction of the paper's widths: same code paths, a fraction of the time (the
    paper's widths are checked by the shape tests, which build the classes directly)."""
    monkeypatch.setattr(prosgan, "PrototypeNet", functools.partial(PrototypeNet, hidden=64))
    monkeypatch.setattr(prosgan, "ProSGenerator", functools.partial(ProSGenerator, width=8, label_channels=16))
    monkeypatch.setattr(prosgan, "ProSDiscriminator", functools.partial(ProSDiscriminator, width=4))


def tiny_model(seed=0):
    torch.manual_seed(seed)
    return HashModel("small_cnn", BITS).eval()


def tiny_context(model=None, *, n=12, seed=0, cache_dir=None, checkpoint_hash="tiny"):
    g = torch.Generator().manual_seed(123)
    images = torch.randint(0, 256, (n, 3, SIZE, SIZE), generator=g, dtype=torch.uint8)
    labels = torch.eye(CLASSES)[torch.arange(n) % CLASSES]
    labels[::4, (torch.arange(n)[::4] + 1) % CLASSES] = 1.0  # a few multi-label items
    codes = torch.where(torch.rand(n, BITS, generator=g) < 0.5, 1.0, -1.0)
    model = tiny_model() if model is None else model
    return AttackContext(model, torch.device("cpu"), codes, labels, codes, labels, seed=seed, progress=False,
                         train_split=TensorSplit("train", images, labels), cache_dir=cache_dir,
                         checkpoint_hash=checkpoint_hash)


def build(ctx, **settings):
    return ProSGANAttack(ctx, targeted=True, **{**TINY, **settings})


def weights(module):
    return {k: v.clone() for k, v in module.state_dict().items()}


def assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def count_calls(monkeypatch, name, fail_after=None):
    """Wrap prosgan.<name> to count its calls (and raise once ``fail_after`` calls have run)."""
    real = getattr(prosgan, name)
    calls = []

    def wrapped(*args, **kwargs):
        if fail_after is not None and len(calls) >= fail_after:
            raise KeyboardInterrupt("simulated interruption")
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(prosgan, name, wrapped)
    return calls


# ------------------------------------------------------------------------------------------------- networks

@pytest.mark.parametrize("size", [28, 56, 224, 37, (24, 41)])
def test_networks_adapt_to_any_input_size(size):
    h, w = (size, size) if isinstance(size, int) else size
    torch.manual_seed(0)
    proto, gen, disc = PrototypeNet(CLASSES, BITS), ProSGenerator((h, w)), ProSDiscriminator(CLASSES, (h, w))
    labels = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    with torch.no_grad():
        f, p, y_hat = proto(labels)
    assert f.shape == (2, 512) and p.shape == (2, BITS) and y_hat.shape == (2, CLASSES)
    assert float(p.abs().max()) < 1 and 0 < float(y_hat.min()) and float(y_hat.max()) < 1
    x = torch.rand(2, 3, h, w) * 2 - 1
    with torch.no_grad():
        assert gen.label_encoder(f).shape == (2, 3, h, w)
        assert gen(x, f).shape == (2, 3, h, w)
        assert disc(x).shape == (2, CLASSES + 1)
        with pytest.raises(ValueError, match="built for"):
            gen(torch.rand(2, 3, h + 1, w), f)


def test_generator_and_discriminator_match_the_paper_at_224():
    gen, disc = ProSGenerator(224), ProSDiscriminator(38, 224)
    assert gen.label_encoder.grid == (14, 14)  # 128 x 14 x 14, as the authors' fixed-size label encoder
    assert disc.out.kernel_size == (7, 7)  # 224 / 2^5
    assert [c.out_channels for c in disc.convs] == [64, 128, 256, 512, 1024]
    norms = [m for m in gen.modules() if isinstance(m, torch.nn.InstanceNorm2d)]
    assert norms and not any(m.affine for m in norms)


# ------------------------------------------------------------------------------------------------- output modes

def test_bounded_output_stays_in_the_eps_ball_and_the_box_even_for_huge_generator_outputs():
    x = torch.rand(3, 3, 8, 8)
    x[0], x[1] = 0.0, 1.0
    raw = torch.randn(3, 3, 8, 8) * 1e3
    adv = adversarial_images(raw, x, EPS, bounded=True)
    assert float((adv - x).abs().max()) <= EPS + 1e-6
    assert float(adv.min()) >= 0 and float(adv.max()) <= 1
    assert float((adv - x).abs().max()) > EPS - 1e-4  # saturated tanh uses the whole budget


@pytest.mark.parametrize("bounded", [True, False])
def test_attack_output_modes_on_an_untrained_generator_with_large_outputs(bounded):
    attack = build(tiny_context(), gan_epochs=0, eps=EPS, bounded=bounded)
    with torch.no_grad():
        attack.generator.head.weight.mul_(1e3)
    x = torch.full((4, 3, SIZE, SIZE), 0.5)
    x[0] = 0.0
    target = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 1.0, 0.0]])
    adv = attack.attack(x, None, target)
    assert adv.shape == x.shape and not adv.requires_grad
    assert float(adv.min()) >= 0 and float(adv.max()) <= 1
    linf = float((adv - x).abs().max())
    if bounded:
        assert linf <= EPS + 1e-6
    else:  # the authors' generator: nothing ties x' to the eps-ball
        assert linf > 0.4


# ------------------------------------------------------------------------------------------------- PrototypeNet

def test_prototype_loss_is_the_dpsh_likelihood_plus_label_mse_plus_quantisation():
    torch.manual_seed(0)
    net = PrototypeNet(CLASSES, BITS)
    labels = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]])
    codes = torch.where(torch.rand(5, BITS) < 0.5, 1.0, -1.0)
    code_labels = torch.tensor([[1.0, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0], [0, 0, 0]])
    loss, terms = prototype_loss(net, labels, codes, code_labels)
    with torch.no_grad():
        _, p, y_hat = net(labels)
    expected = 0.0
    for i in range(2):
        for j in range(5):
            theta = 0.5 * float(p[i] @ codes[j])
            s = float(labels[i] @ code_labels[j] > 0)
            expected += math.log1p(math.exp(theta)) - s * theta
    expected /= 10
    quant = float(((torch.where(p >= 0, 1.0, -1.0) - p) ** 2).sum(1).mean()) / 1e4
    assert terms["likelihood"] == pytest.approx(expected, rel=1e-5)
    assert terms["quantisation"] == pytest.approx(quant, rel=1e-5)
    assert float(loss.detach()) == pytest.approx(expected + float(((y_hat - labels) ** 2).mean()) + quant, rel=1e-5)


def test_prototype_net_learns_codes_close_to_the_training_codes_sharing_its_label():
    g = torch.Generator().manual_seed(0)
    class_codes = torch.where(torch.rand(CLASSES, 16, generator=g) < 0.5, 1.0, -1.0)
    cls = torch.arange(60) % CLASSES
    flips = torch.where(torch.rand(60, 16, generator=g) < 0.1, -1.0, 1.0)  # noisy copies of a code per class
    ctx = tiny_context()
    ctx.train_codes, ctx.train_labels = class_codes[cls] * flips, torch.eye(CLASSES)[cls]
    ctx.db_labels = torch.cat([torch.eye(CLASSES), torch.zeros(1, CLASSES)])  # an unlabelled item is never drawn
    torch.manual_seed(0)
    net = PrototypeNet(CLASSES, 16, hidden=256)  # narrower than the paper's 4096, for speed

    def margins():  # per class: mean agreement with the codes of its items minus that with the other items' codes
        with torch.no_grad():
            protos = torch.where(net(torch.eye(CLASSES))[1] >= 0, 1.0, -1.0)
        return [float((ctx.train_codes[cls == c] @ protos[c]).mean() - (ctx.train_codes[cls != c] @ protos[c]).mean())
                for c in range(CLASSES)]

    assert min(margins()) < 0  # untrained: some prototype is closer to other classes' codes
    train_prototype_net(net, ctx, {"proto_steps": 100, "proto_batch": 16, "proto_lr": 1e-2,
                                   "proto_checkpoint_every": 1000}, CachedTraining(None, "p", "", {}))
    assert min(margins()) > 4  # trained: every prototype is closer (by > 2 bits of 16) to its own class's codes


def test_learning_rate_schedules():
    assert [prototype_lr_factor(s, 100) for s in (0, 49, 50, 74, 75, 99)] == pytest.approx(
        [1, 1, 0.1, 0.1, 0.01, 0.01])
    assert [gan_lr_factor(s, 10) for s in (0, 4, 5, 6, 9)] == pytest.approx([1, 1, 1, 0.8, 0.2])


def test_lsgan_targets_are_labels_plus_a_real_flag():
    labels = torch.tensor([[1.0, 0.0]])
    assert float(lsgan_loss(torch.tensor([[1.0, 0.0, 1.0]]), labels, real=True)) == 0
    assert float(lsgan_loss(torch.tensor([[1.0, 0.0, 0.0]]), labels, real=False)) == 0
    assert float(lsgan_loss(torch.tensor([[1.0, 0.0, 0.0]]), labels, real=True)) == pytest.approx(1 / 3)


# ------------------------------------------------------------------------------------------------- the attack

def test_training_leaves_the_attacked_model_untouched():
    model = tiny_model()
    model.train()
    model.hash_layer.weight.requires_grad_(False)
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    marker = torch.full_like(model.features.body[0].weight, 0.25)
    model.features.body[0].weight.grad = marker.clone()
    before = weights(model)
    attack = build(tiny_context(model))
    assert attack.training_log["generator"]  # it did train
    assert_same_weights(before, weights(model))  # parameters and BatchNorm statistics
    assert {n: p.requires_grad for n, p in model.named_parameters()} == flags
    assert torch.equal(model.features.body[0].weight.grad, marker)
    assert model.hash_layer.bias.grad is None
    assert model.training


def test_attack_theory_codes_settings_and_registry():
    ctx = tiny_context()
    attack = build(ctx)
    assert ATTACKS.get("pros-gan") is ProSGANAttack and ATTACKS.get("ProSGAN") is ProSGANAttack
    target = ctx.train_labels[:5]
    x = ctx.train_split.__getitems__(list(range(5)))[0].float() / 255
    codes = attack.theory_codes(x, target)
    with torch.no_grad():
        expected = torch.where(attack.prototype_net(target)[1] >= 0, 1.0, -1.0)
    assert torch.equal(codes, expected) and set(codes.unique().tolist()) <= {-1.0, 1.0}
    adv = attack.attack(x, None, target)
    assert adv.shape == x.shape and float((adv - x).abs().max()) <= EPS + 1e-6
    settings = attack.settings_record()
    assert json.loads(json.dumps(settings)) == settings and settings["proto_steps"] == TINY["proto_steps"]
    assert set(ProSGANAttack.defaults) == set(settings)
    with pytest.raises(ValueError, match="targeted"):
        attack.attack(x, None, None)
    with pytest.raises(ValueError, match="trained on 16x16 images, got 8x8"):
        attack.attack(x[..., :8, :8], None, target)
    with pytest.raises(ValueError, match="targeted only"):
        ProSGANAttack(ctx, targeted=False, **TINY)


def test_float_images_train_the_same_networks_as_the_uint8_split():
    """A user's own float images (FloatTensorSplit, what create_attack(train_images=...) builds) are the uint8 split's
    images / 255: the same generator, bit for bit."""
    ctx = tiny_context()
    split = ctx.train_split
    floats = FloatTensorSplit("train", split.__getitems__(list(range(len(split))))[0].float() / 255, split.labels)
    a = build(ctx)
    b = build(AttackContext(ctx.model, ctx.device, ctx.train_codes, ctx.train_labels, ctx.db_codes, ctx.db_labels,
                            seed=ctx.seed, train_split=floats))
    assert_same_weights(weights(a.generator), weights(b.generator))


@pytest.mark.parametrize("key, value", [("gan_batch", 0), ("proto_steps", 2.5), ("gan_lr", -1e-4), ("beta", "50"),
                                        ("bounded", "yes"), ("gan_steps_per_epoch", 0)])
def test_invalid_settings_are_rejected_with_their_name(key, value):
    with pytest.raises(ValueError, match=key):
        build(tiny_context(), **{key: value})


def test_paper_defaults():
    d = ProSGANAttack.defaults
    assert (d["eps"], d["bounded"], d["proto_steps"], d["proto_batch"], d["proto_lr"]) == (8 / 255, True, 30000, 64,
                                                                                         1e-4)
    assert (d["gan_epochs"], d["gan_batch"], d["gan_lr"], d["d_every"]) == (100, 24, 1e-4, 3)
    assert (d["hash_weight"], d["adv_weight"]) == (5.0, 1.0) and d["beta"] in (50.0, 100.0)
    assert set(ProSGANAttack.demo_defaults) <= set(d)


@pytest.mark.slow  # trains the PrototypeNet and the GAN three times
def test_seeded_training_repeats_exactly_and_the_seed_matters():
    a, b, c = (build(tiny_context(seed=s)) for s in (7, 7, 8))
    assert_same_weights(weights(a.generator), weights(b.generator))
    assert_same_weights(weights(a.prototype_net), weights(b.prototype_net))
    assert not torch.equal(a.generator.head.weight, c.generator.head.weight)
    x = torch.rand(2, 3, SIZE, SIZE)
    t = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]])
    assert torch.equal(a.attack(x, None, t), b.attack(x, None, t))


@pytest.mark.slow
def test_cache_loads_without_training_and_a_changed_setting_retrains_only_what_depends_on_it(tmp_path,
                                                                                              monkeypatch):
    first = build(tiny_context(cache_dir=tmp_path))
    assert sorted(p.name.split("-")[1] for p in tmp_path.glob("*.pt")) == ["generator", "prototype"]
    with monkeypatch.context() as mp:
        mp.setattr(prosgan, "train_prototype_net", lambda *a, **k: pytest.fail("PrototypeNet retrained"))
        mp.setattr(prosgan, "train_gan", lambda *a, **k: pytest.fail("generator retrained"))
        again = build(tiny_context(cache_dir=tmp_path))
    assert_same_weights(weights(first.generator), weights(again.generator))
    assert_same_weights(weights(first.prototype_net), weights(again.prototype_net))
    assert again.training_seconds == {"prototype_net": 0.0, "generator": 0.0}
    with monkeypatch.context() as mp:
        gan_calls = count_calls(mp, "train_gan")
        mp.setattr(prosgan, "train_prototype_net", lambda *a, **k: pytest.fail("PrototypeNet retrained"))
        other = build(tiny_context(cache_dir=tmp_path), beta=2.0)  # the prototypes do not depend on beta
    assert len(gan_calls) == 1
    assert not torch.equal(other.generator.head.weight, first.generator.head.weight)
    with monkeypatch.context() as mp:
        proto_calls = count_calls(mp, "train_prototype_net")
        build(tiny_context(cache_dir=tmp_path, checkpoint_hash="another-model"))
    assert len(proto_calls) == 1


@pytest.mark.slow
def test_interrupted_prototype_training_resumes_to_the_same_weights(tmp_path, monkeypatch):
    reference = build(tiny_context(cache_dir=tmp_path / "a"), proto_steps=4)
    with monkeypatch.context() as mp, pytest.raises(KeyboardInterrupt):
        count_calls(mp, "prototype_step", fail_after=3)  # a partial checkpoint at step 2
        build(tiny_context(cache_dir=tmp_path / "b"), proto_steps=4)
    assert len(list((tmp_path / "b").glob("prosgan-prototype-*.partial.pt"))) == 1
    with monkeypatch.context() as mp:
        steps = count_calls(mp, "prototype_step")
        resumed = build(tiny_context(cache_dir=tmp_path / "b"), proto_steps=4)
    assert len(steps) == 2  # steps 3 and 4 only
    assert not list((tmp_path / "b").glob("*.partial.pt"))
    assert_same_weights(weights(reference.prototype_net), weights(resumed.prototype_net))
    assert_same_weights(weights(reference.generator), weights(resumed.generator))


@pytest.mark.slow
def test_interrupted_gan_training_resumes_to_the_same_weights(tmp_path, monkeypatch):
    reference = build(tiny_context(cache_dir=tmp_path / "a"), d_every=3)
    with monkeypatch.context() as mp, pytest.raises(KeyboardInterrupt):
        calls = count_calls(mp, "gan_step", fail_after=3)  # a partial checkpoint at step 2
        build(tiny_context(cache_dir=tmp_path / "b"), d_every=3)
    assert len(calls) == 3
    assert len(list((tmp_path / "b").glob("prosgan-generator-*.partial.pt"))) == 1
    with monkeypatch.context() as mp:
        calls = count_calls(mp, "gan_step")
        resumed = build(tiny_context(cache_dir=tmp_path / "b"), d_every=3)
    assert len(calls) == 2  # steps 3 and 4 (a discriminator step): its weights, optimisers and RNG came back too
    assert_same_weights(weights(reference.generator), weights(resumed.generator))
    assert reference.training_log["generator"] == resumed.training_log["generator"]
