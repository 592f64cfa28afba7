"""Each baseline's crafting loop pinned to the procedure of SPEC 7.2 (corrected 2026-12-02).

The references below are written from the SPEC's text — optimiser or sign step, the tanh continuation alpha_t,
projection after every step, the loss — without the package's helpers, and run on a tiny float64 model. The
package's adversarial images must equal theirs to 1e-6. THA's prototype objective and one ATRDH step are checked
against values computed by hand.
"""

import math

import pytest
import torch
from torch import nn

from saat.attacks import ATTACKS, AttackContext
from saat.attacks.cache import CachedTraining
from saat.attacks.prototype import PrototypeNet, prototype_loss, train_prototype_net
from saat.defenses import DEFENSES, DefenseContext
from saat.hashing.base import HashingMethod

TOL = 1e-6
ALPHAS = [0.1, 0.1, 0.1, 0.1, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0]


def alpha_at(i, steps):
    return ALPHAS[min(9, (10 * i) // steps)]


class TinyHash(nn.Module):
    """h = tanh(alpha * (W vec(x) + c)) on 2 x 3 x 3 images, float64."""

    def __init__(self, bits=6, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.W = nn.Parameter(torch.randn(bits, 18, generator=g, dtype=torch.float64) * 0.8)
        self.c = nn.Parameter(torch.randn(bits, generator=g, dtype=torch.float64) * 0.1)
        self.bits = bits

    def forward(self, x, alpha=1.0):
        return torch.tanh(alpha * (x.flatten(1) @ self.W.T + self.c))


def sgn(t):
    return torch.where(t >= 0, 1.0, -1.0).to(t.dtype)


def project(x_adv, x, eps):
    return torch.clamp(torch.min(torch.max(x_adv, x - eps), x + eps), 0.0, 1.0)


@pytest.fixture
def problem():
    """A tiny model, 4 images, 4 classes; training/database codes from the model itself."""
    torch.manual_seed(0)
    model = TinyHash()
    g = torch.Generator().manual_seed(1)
    x = torch.rand(4, 2, 3, 3, generator=g, dtype=torch.float64)
    train_x = torch.rand(12, 2, 3, 3, generator=g, dtype=torch.float64)
    # class 3 has no training item: query 3 (label [0,0,0,1]) has no training positive
    train_y = torch.tensor([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [1, 1, 0, 0]] * 3, dtype=torch.float64)
    y = torch.tensor([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]], dtype=torch.float64)
    with torch.no_grad():
        train_codes = sgn(model(train_x))
    # database: target [0,1,0,0] is carried by exactly two items, [0,0,1,0] by one, [1,0,0,0] by one
    db_y = torch.tensor([[0, 1, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [1, 0, 0, 0], [1, 1, 0, 0]],
                        dtype=torch.float64)
    db_codes = torch.tensor([[1, -1, 1, -1, 1, 1], [1, 1, -1, -1, 1, -1], [-1, -1, 1, 1, -1, 1],
                             [1, 1, 1, -1, -1, -1], [-1, 1, -1, 1, 1, 1]], dtype=torch.float64)
    targets = torch.tensor([[0, 1, 0, 0], [0, 0, 1, 0], [1, 0, 0, 0], [0, 1, 0, 0]], dtype=torch.float64)
    ctx = AttackContext(model, torch.device("cpu"), train_codes, train_y, db_codes, db_y, seed=3)
    return {"model": model, "x": x, "y": y, "targets": targets, "ctx": ctx, "train_codes": train_codes,
            "train_y": train_y, "db_codes": db_codes, "db_y": db_y}


def grad_of(loss_fn, x_adv, *args):
    x_var = x_adv.detach().clone().requires_grad_(True)
    (g,) = torch.autograd.grad(loss_fn(x_var, *args), x_var)
    return g


# ------------------------------------------------------------------------------------------------ references


def reference_hag(model, x, eps, steps, lr=100.0, momentum=0.9):
    with torch.no_grad():
        h = model(x)
    b = sgn(h)
    x_adv, velocity = x.clone(), torch.zeros_like(x)

    def loss(xa, a):
        ha = model(xa, alpha=a)
        mask = ((ha - b).abs() < 1.5).to(ha.dtype).detach()
        k = ha.shape[1]
        total = 0.0
        for i in range(ha.shape[0]):
            agree = (mask[i] * ha[i] * h[i]).sum() / (mask[i].sum() + 1e-8)
            balance = (mask[i] * ha[i]).sum() / k
            total = total + (agree + 1) ** 2 / ha.shape[0] + balance ** 2 / ha.shape[0]
        return total

    for i in range(steps):
        g = grad_of(loss, x_adv, alpha_at(i, steps))
        velocity = momentum * velocity + g
        x_adv = project(x_adv - lr * velocity, x, eps)
    return x_adv


def sdha_distance(q, r, targeted):
    qr = q * r
    if targeted:
        return 0.5 * ((q - r).abs() * torch.sigmoid(-10 * qr)).sum()
    return 0.5 * ((q - r).abs() * torch.sigmoid(5 * qr)).sum() + (1 - torch.sigmoid(5 * qr)).sum()


def reference_sdha(model, x, labels, train_codes, train_labels, eps, steps, targeted, lr=0.01, weight=25.0):
    k = train_codes.shape[1]
    with torch.no_grad():
        own = sgn(model(x))
    positives = []
    for i in range(x.shape[0]):
        rows = [train_codes[j] for j in range(train_codes.shape[0]) if float(labels[i] @ train_labels[j]) > 0]
        if not rows and not targeted:
            rows = [own[i]]  # no training positive: the query's own benign code
        positives.append(rows)

    def loss(xa, a):
        q = model(xa, alpha=a)
        surrogate = 0.0
        for i in range(q.shape[0]):
            if not positives[i]:
                continue
            hamming = [float((sgn(q[i].detach()) != r).sum()) for r in positives[i]]
            total = 0.0
            for r, d in zip(positives[i], hamming):
                w = d ** 0.3 if targeted else (d + 1e-8) ** -0.5
                total = total + w * sdha_distance(q[i], r, targeted)
            surrogate = surrogate + total / len(positives[i])
        surrogate = surrogate / q.shape[0]
        mse = ((xa - x) ** 2).mean()
        return mse + (weight / k) * surrogate if targeted else mse - (weight / k) * surrogate

    x_adv = x.clone()
    m, v = torch.zeros_like(x), torch.zeros_like(x)
    b1, b2, adam_eps = 0.9, 0.999, 1e-8
    for t in range(1, steps + 1):
        g = grad_of(loss, x_adv, alpha_at(t - 1, steps))
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        m_hat, v_hat = m / (1 - b1 ** t), v / (1 - b2 ** t)
        x_adv = project(x_adv - lr * m_hat / (v_hat.sqrt() + adam_eps), x, eps)
    return x_adv


def reference_sign_steps(model, x, code, eps, step, steps, start):
    """PGD toward ``code`` from ``start``: x <- proj(x - step sign(grad(-mean(h * code)))), alpha_t every step."""
    def loss(xa, a):
        return -(model(xa, alpha=a) * code).mean()

    x_adv = start.clone()
    for i in range(steps):
        g = grad_of(loss, x_adv, alpha_at(i, steps))
        x_adv = project(x_adv - step * g.sign(), x, eps)
    return x_adv


# --------------------------------------------------------------------------------------------------- tests


# At eps 8/255 no bit of this model gets past the mask's threshold; at 64/255 several do, so the masked balance
# term matters there (the unmasked one moves the images by up to 0.5).
@pytest.mark.parametrize("eps, lr", [(8 / 255, 100.0), (64 / 255, 100.0), (64 / 255, 1.0)])
def test_hag_crafting_loop_matches_the_reference(problem, eps, lr):
    p = problem
    atk = ATTACKS.get("hag")(p["ctx"], eps=eps, steps=40, lr=lr)
    adv = atk.attack(p["x"], p["y"], None)
    ref = reference_hag(p["model"], p["x"], eps, 40, lr=lr)
    assert (adv - p["x"]).abs().max() > 1 / 255  # the loop did something
    torch.testing.assert_close(adv, ref, atol=TOL, rtol=0)


@pytest.mark.parametrize("targeted", [False, True])
def test_sdha_crafting_loop_matches_the_reference(problem, targeted):
    p = problem
    labels = p["targets"] if targeted else p["y"]
    atk = ATTACKS.get("sdha")(p["ctx"], targeted=targeted, eps=8 / 255, steps=40)
    adv = atk.attack(p["x"], p["y"], p["targets"] if targeted else None)
    ref = reference_sdha(p["model"], p["x"], labels, p["train_codes"], p["train_y"], 8 / 255, 40, targeted)
    assert (adv - p["x"]).abs().max() > 1 / 255
    torch.testing.assert_close(adv, ref, atol=TOL, rtol=0)


def test_sdha_query_without_training_positive_is_pushed_away_from_itself(problem):
    p = problem
    atk = ATTACKS.get("sdha")(p["ctx"], eps=8 / 255, steps=40)
    codes, positive = atk.positives(p["x"], p["y"])
    assert positive[3].sum() == 1 and torch.equal(codes[positive[3].bool()][0], sgn(p["model"](p["x"][3:4]))[0])
    assert torch.equal(positive[:3, : p["train_codes"].shape[0]], ((p["y"][:3] @ p["train_y"].T) > 0).double())
    adv = atk.attack(p["x"], p["y"], None)
    assert (adv[3] - p["x"][3]).abs().max() > 1 / 255  # not only the MSE term acting on it


@pytest.mark.parametrize("name, anchors", [("dhta", 9), ("p2p", 1)])
def test_dhta_and_p2p_crafting_loops_match_the_reference(problem, name, anchors):
    p = problem
    atk = ATTACKS.get(name)(p["ctx"], targeted=True, eps=8 / 255, step=1 / 255, steps=30)
    adv = atk.attack(p["x"], p["y"], p["targets"])
    # the anchor of a target: the sign of the summed codes of the database items carrying exactly that label
    anchor = []
    for t in p["targets"]:
        items = [c for c, l in zip(p["db_codes"], p["db_y"]) if torch.equal(l, t)]
        if anchors == 1:
            assert len(items) >= 1
            chosen = atk.anchors(t[None])[0]
            assert any(torch.equal(chosen, c) for c in items)  # P2P: the code of one carrying item
            anchor.append(chosen)
        else:
            anchor.append(sgn(torch.stack(items).sum(0)))  # at most 9 carry it: all of them vote
    anchor = torch.stack(anchor)
    ref = reference_sign_steps(p["model"], p["x"], anchor, 8 / 255, 1 / 255, 30, start=p["x"])
    assert (adv - p["x"]).abs().max() > 1 / 255
    torch.testing.assert_close(adv, ref, atol=TOL, rtol=0)


def test_tha_crafting_loop_matches_the_reference(problem):
    p = problem
    atk = ATTACKS.get("tha")(p["ctx"], targeted=True, eps=8 / 255, step=1 / 255, steps=30, proto_steps=3)
    adv = atk.attack(p["x"], p["y"], p["targets"])
    with torch.no_grad():
        code = sgn(atk.prototypes(p["targets"]))
    eps = 8 / 255
    # random start: U(-eps, eps) from the attack's seed, drawn in float32 on the CPU, projected
    noise = torch.rand(p["x"].shape, generator=torch.Generator().manual_seed(3), dtype=torch.float32)
    start = project(p["x"] + (noise * 2 * eps - eps).double(), p["x"], eps)
    ref = reference_sign_steps(p["model"], p["x"], code, eps, 1 / 255, 30, start=start)
    torch.testing.assert_close(adv, ref, atol=TOL, rtol=0)


# ------------------------------------------------------------------------------- THA's prototype objective


def test_prototype_loss_equals_the_hand_computed_value():
    p = torch.tensor([[0.5, -0.5], [0.8, 0.2]], dtype=torch.float64, requires_grad=True)
    codes = torch.tensor([[1.0, -1.0], [1.0, 1.0], [-1.0, -1.0]], dtype=torch.float64)
    t = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    code_labels = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], dtype=torch.float64)
    # s = p b^T / K: [[0.5, 0, 0], [0.3, 0.5, -0.5]]; positives (t . Y > 0): [[1, 0, 1], [0, 1, 1]]
    # positive logits -a_p s with a_p = 2 - s: -0.75, 0, -0.75, 1.25; negative logits a_n s, a_n = s + 2: 0, 0.69
    lse_pos = math.log(2 * math.exp(-0.75) + math.exp(0.0) + math.exp(1.25))
    lse_neg = math.log(math.exp(0.0) + math.exp(0.69))
    pair = math.log1p(math.exp(lse_pos + lse_neg)) / 2  # softplus, / B
    quant = (0.5 ** 2 + 0.5 ** 2 + 0.2 ** 2 + 0.8 ** 2) * 1e-4 / 2  # sum (sign(p) - p)^2 / (1e4 B)
    loss = prototype_loss(p, t, codes, code_labels)
    assert float(loss.detach()) == pytest.approx(pair + quant, abs=1e-12)
    # the pooled form is not the per-row mean of the same expression
    per_row = 0.0
    for i in range(2):
        sp = prototype_loss(p[i:i + 1], t[i:i + 1], codes, code_labels, quant_weight=0.0)
        per_row += float(sp.detach()) / 2
    assert abs(per_row - (pair)) > 1e-3
    loss.backward()
    assert torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0


def test_prototype_loss_with_an_empty_side_is_the_quantisation_term():
    p = torch.tensor([[0.5, -0.5]], dtype=torch.float64)
    codes = torch.tensor([[1.0, -1.0], [1.0, 1.0]], dtype=torch.float64)
    t = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    loss = prototype_loss(p, t, codes, torch.tensor([[1.0, 0.0], [1.0, 1.0]], dtype=torch.float64))
    assert float(loss) == pytest.approx(0.5 * 1e-4)


def test_prototype_net_is_the_authors_architecture():
    """Linear(C, 4096) -> ReLU -> Linear(4096, 512), then Linear(512, K) -> tanh, with no activation between the
    512-unit layer and the hash layer: the layers in order, and P(t) with fixed weights against a hand-written
    forward of that network (an extra ReLU before the hash layer changes P(t) wherever a feature is negative)."""
    net = PrototypeNet(5, 12).double()
    layers = [m for m in net.modules() if not isinstance(m, (PrototypeNet, nn.Sequential))]
    assert [type(m) for m in layers] == [nn.Linear, nn.ReLU, nn.Linear, nn.Linear]
    assert [(m.in_features, m.out_features) for m in layers if isinstance(m, nn.Linear)] == [(5, 4096), (4096, 512),
                                                                                            (512, 12)]
    g = torch.Generator().manual_seed(3)
    shapes = [(4096, 5), (4096,), (512, 4096), (512,), (12, 512), (12,)]
    w1, b1, w2, b2, w3, b3 = (torch.randn(s, generator=g, dtype=torch.float64) * 0.05 for s in shapes)
    with torch.no_grad():
        for layer, (w, b) in zip([m for m in layers if isinstance(m, nn.Linear)], [(w1, b1), (w2, b2), (w3, b3)]):
            layer.weight.copy_(w)
            layer.bias.copy_(b)
    t = torch.tensor([[1.0, 0, 0, 1, 0], [0, 1, 0, 0, 0], [0, 0, 1, 1, 1]], dtype=torch.float64)
    feature = torch.clamp_min(t @ w1.T + b1, 0) @ w2.T + b2
    assert (feature < 0).any()  # so the test would see a ReLU on the feature
    with torch.no_grad():
        assert torch.allclose(net(t), torch.tanh(feature @ w3.T + b3), atol=1e-12)


def test_a_cached_prototype_net_of_the_old_architecture_is_retrained_not_loaded(planted_retrieval, tmp_path):
    """A THA cache written before the architecture fix (version 2, the extra ReLU) sits where the attack looks:
    the attack must train a new network instead of loading it (loading would fail on the old layer names)."""
    from saat.attacks import create_attack

    p = planted_retrieval
    settings = {"proto_steps": 3, "proto_batch": 32, "proto_lr": 1e-4, "proto_lr_milestones": (0.5, 0.75),
                "gamma": 1.0, "quant_weight": 1e-4}
    old = nn.Sequential(nn.Linear(4, 4096), nn.ReLU(), nn.Linear(4096, 512), nn.ReLU(), nn.Linear(512, 16))
    stale = CachedTraining(tmp_path, "tha-prototype", "k", {**settings, "seed": 0, "version": 2})
    stale.save_final({"net": {f"net.{key}": v for key, v in old.state_dict().items()}})
    atk = create_attack("tha", p.model, eps=8 / 255, steps=2, train_codes=p.train_codes, train_labels=p.train_labels,
                        db_codes=p.db_codes, db_labels=p.db_labels, cache_dir=tmp_path, cache_key="k", **settings)
    atk(p.x, p.y, target_labels=p.targets)
    assert len(list(tmp_path.glob("tha-prototype-k-*.pt"))) == 2  # the stale file and the new network


def test_an_atrdh_checkpoint_with_the_old_prototype_net_is_refused_in_one_line():
    k = 4
    model = TinyHash(bits=k, seed=2).float()
    labels = torch.tensor([[1.0, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0]])
    codes = torch.where(torch.randn(4, k) >= 0, 1.0, -1.0)
    ctx = DefenseContext(model, ZeroLoss(bits=k, n_classes=3, n_train=4), torch.device("cpu"), codes.clone(),
                         codes.clone(), labels, seed=0)
    atrdh = DEFENSES.get("atrdh")(ctx, steps=1)
    state = atrdh.state_dict()
    old = nn.Sequential(nn.Linear(3, 4096), nn.ReLU(), nn.Linear(4096, 512), nn.ReLU(), nn.Linear(512, k))
    state["prototypes"] = {f"net.{key}": v for key, v in old.state_dict().items()}
    with pytest.raises(ValueError, match="older saat.*new --out directory") as info:
        atrdh.load_state_dict(state)
    assert "\n" not in str(info.value)


def test_prototype_training_makes_each_prototype_closest_to_its_own_class(tmp_path):
    torch.manual_seed(0)
    labels = torch.eye(4)
    codes = torch.where(torch.rand(4, 16) < 0.5, 1.0, -1.0)  # one code per class
    net = PrototypeNet(4, 16)

    def margins():  # per class: agreement with its own code minus the largest agreement with another class's
        with torch.no_grad():
            agreement = torch.where(net(labels) >= 0, 1.0, -1.0) @ codes.T / 16
        own = agreement.diagonal()
        others = agreement.masked_fill(torch.eye(4, dtype=torch.bool), -2.0).max(1).values
        return own - others

    assert margins().min() < 0  # untrained
    cache = CachedTraining(tmp_path, "tha", "abc", {"s": 1})
    train_prototype_net(net, labels, codes, labels, steps=200, batch=8, lr=1e-3, seed=0, cache=cache)
    assert margins().min() >= 0.25, margins()  # trained: closer to its own class's code by >= 2 of 16 bits


# ------------------------------------------------------------------------------------------- one ATRDH step


class ZeroLoss(HashingMethod):
    name = "zero"

    def forward(self, h, y, idx):
        return 0.0 * h.sum()


def test_one_atrdh_step_by_hand():
    torch.manual_seed(0)
    k, n = 4, 5
    model = TinyHash(bits=k, seed=2).float()
    train_labels = torch.tensor([[1.0, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0], [0, 1, 1]])
    outputs = torch.tanh(torch.randn(n, k))
    codes = sgn(outputs)
    ctx = DefenseContext(model, ZeroLoss(bits=k, n_classes=3, n_train=n), torch.device("cpu"), codes.clone(),
                         outputs.clone(), train_labels, seed=0, db_labels=torch.tensor([[0.0, 0, 1], [1, 0, 0]]),
                         total_iterations=4)
    atrdh = DEFENSES.get("atrdh")(ctx, eps=0.0, steps=1, proto_lr=1e-3)  # eps 0: x_adv = x
    assert atrdh.label_pool.tolist() == [[0.0, 0, 1], [1, 0, 0]]  # targets come from the database's labels
    targets = torch.tensor([[0.0, 0, 1], [1, 0, 0]])
    atrdh.draw_targets = lambda b: targets
    crafted = []
    real_crafter = atrdh.crafter
    atrdh.crafter = lambda x, objective: (crafted.append(objective), real_crafter(x, objective))[1]
    before = PrototypeNet(3, k)
    before.load_state_dict(atrdh.prototypes.state_dict())

    x = torch.rand(2, 2, 3, 3)
    y = train_labels[[0, 4]]
    idx = torch.tensor([0, 4])
    terms = atrdh.step(x, y, idx, it=2)  # iteration 2 of 4: past the 50 % milestone

    with torch.no_grad():
        h = model(x)
        expected_codes = codes.clone()
        expected_codes[idx] = sgn(h)
        expected_memory = outputs.clone()
        expected_memory[idx] = h
        p_before = before(targets)
    assert torch.equal(atrdh.code_memory, expected_codes) and torch.allclose(atrdh.memory, expected_memory)
    # the PrototypeNet step used the refreshed +-1 memory, and ran at lr 1e-3 x 0.1
    assert float(terms["prototype"]) == pytest.approx(float(prototype_loss(p_before, targets, expected_codes,
                                                                           train_labels)), rel=1e-6)
    assert atrdh.proto_opt.param_groups[0]["lr"] == pytest.approx(1e-4)
    assert any(not torch.equal(a, b) for a, b in zip(before.state_dict().values(),
                                                     atrdh.prototypes.state_dict().values()))
    # PGD aimed at sign(P(t)) from before the update
    probe = torch.randn(2, k)
    assert float(crafted[0](probe, x)) == pytest.approx(float(-(probe * sgn(p_before)).mean()))
    # loss: 2 sum_ij (h_i . U_j / K - (2 S_ij - 1))^2 / (N B), U refreshed, h_adv = h_ben (eps 0)
    total = 0.0
    for i in range(2):
        for j in range(n):
            s_ij = 1.0 if float(y[i] @ train_labels[j]) > 0 else 0.0
            total += (float(h[i] @ expected_memory[j]) / k - (2 * s_ij - 1)) ** 2
    assert float(terms["loss"].detach()) == pytest.approx(2 * total / (n * 2), rel=1e-5)
