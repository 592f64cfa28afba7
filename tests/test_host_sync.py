"""No host read of a tensor value inside the hot loops (issue 24): on CUDA every such read (``float(t)``,
``t.item()``, ``bool(t)``, a boolean-mask index, ``nonzero``) waits for the device, so one per iteration stalls the
pipeline at every iteration.

A TorchDispatchMode counts the operators that read a value on the host: ``aten._local_scalar_dense`` (what
``item``, ``float``, ``int`` and ``bool`` of a tensor run), ``item``, ``is_nonzero``, every ``nonzero`` and
``masked_select``, and ``index`` / ``index_put`` with a boolean index (its size is the mask's count, read on the
host). Each loop runs on a tiny in-memory model with 5 and with 10 iterations; the counts must be equal, i.e. an
iteration adds no read (reads once per call, epoch or log record are allowed).

Not counted: reads made inside ``torch.optim`` (Adam keeps its step counter on the CPU precisely so that reading it
never waits for the device), and ``tolist()`` of host tensors (the draws of the CPU generators), which reads host
memory without an operator. The data splits index host tensors; the loops here get their batches prepared
beforehand (a list) or from a split without host reads, so only the loop itself is measured.
"""

from __future__ import annotations

import os
import sys
from collections import Counter

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from conftest import TinyHashModel
from saat.attacks import ATTACKS, AttackContext
from saat.attacks.cache import CachedTraining
from saat.attacks.generators import GENERATORS, create_generator
from saat.attacks.losses import mainstay_loss
from saat.defenses import DEFENSES, DefenseContext
from saat.hashing import create_method
from saat.pipelines.loop import hashing_step, run_epoch

aten = torch.ops.aten
READS = {aten._local_scalar_dense, aten.item, aten.is_nonzero, aten.nonzero, aten.masked_select}
INDEXING = {aten.index, aten.index_put, aten.index_put_, aten._index_put_impl_}
OPTIM_DIR = os.path.dirname(torch.optim.__file__)

BITS, CLASSES, N_TRAIN, BATCH = 8, 3, 48, 4
CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def one_thread():
    """The tensors here are tiny: one intra-op thread runs them faster, and several times faster on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _boolean_index(args) -> bool:
    indices = args[1] if len(args) > 1 and isinstance(args[1], (list, tuple)) else ()
    return any(torch.is_tensor(i) and i.dtype in (torch.bool, torch.uint8) for i in indices)


def _inside_torch_optim() -> bool:
    frame = sys._getframe(2)
    while frame is not None:
        if frame.f_code.co_filename.startswith(OPTIM_DIR):
            return True
        frame = frame.f_back
    return False


class HostReads(TorchDispatchMode):
    """Counts, per operator, the host reads dispatched while the mode is on."""

    def __init__(self):
        super().__init__()
        self.calls: Counter[str] = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        packet = func.overloadpacket
        if (packet in READS or (packet in INDEXING and _boolean_index(args))) and not _inside_torch_optim():
            self.calls[str(func)] += 1
        return func(*args, **(kwargs or {}))


def host_reads(run, iterations: int) -> Counter:
    """The host reads of ``run(iterations)`` (everything it builds included: the same for any count)."""
    torch.manual_seed(0)
    with HostReads() as mode:
        run(iterations)
    return mode.calls


def assert_no_read_per_iteration(run):
    five, ten = host_reads(run, 5), host_reads(run, 10)
    assert ten == five, f"5 iterations: {dict(five)}; 10 iterations: {dict(ten)}"


# ------------------------------------------------------------------------------------------------- tiny problem


def problem(seed=0, shape=(3, 8, 8)):
    g = torch.Generator().manual_seed(seed)
    model = TinyHashModel(shape, bits=BITS, seed=seed)
    labels = torch.eye(CLASSES)[torch.arange(N_TRAIN) % CLASSES]
    labels[::5, 0] = 1.0  # a few multi-label items
    images = 0.5 + 0.1 * (2 * torch.rand((N_TRAIN, *shape), generator=g) - 1)
    with torch.no_grad():
        outputs = model(images)
    codes = torch.where(outputs >= 0, 1.0, -1.0)
    return model, images, labels, outputs, codes


def batches(images, labels, n):
    """n batches of BATCH items (images in [0, 1], labels, indices), prepared outside the measured loop."""
    return [(images[i:i + BATCH], labels[i:i + BATCH], torch.arange(i, i + BATCH))
            for i in range(0, n * BATCH, BATCH)]


# ------------------------------------------------------------------------------------------------ the loops


@pytest.mark.parametrize("method", ["dph", "csq"])  # a pairwise (memory) and a point-wise loss
def test_hashing_training_epoch(method):
    def run(n):
        model, images, labels, outputs, _ = problem()
        loss = create_method(method, bits=BITS, n_classes=CLASSES, n_train=N_TRAIN)
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        run_epoch(model, batches(images, labels, n), hashing_step(model, loss, CPU, False), opt, device=CPU,
                  epoch=0, step=0, log=[], log_every=50, progress=False)

    assert_no_read_per_iteration(run)


def test_hswd_call():
    def run(n):
        method = create_method("hswd", bits=BITS, n_classes=CLASSES, n_train=N_TRAIN)
        g = torch.Generator().manual_seed(1)
        h = torch.tanh(torch.randn(BATCH, BITS, generator=g))
        y = torch.eye(CLASSES)[torch.arange(BATCH) % CLASSES]
        for _ in range(n):
            method(h, y, torch.arange(BATCH))

    assert_no_read_per_iteration(run)


@pytest.mark.parametrize("name", ["saat", "atrdh", "cgat"])
def test_defense_training_steps(name):
    def run(n):
        model, images, labels, outputs, codes = problem()
        method = create_method("dph", bits=BITS, n_classes=CLASSES, n_train=N_TRAIN)
        method.init_memory(outputs, labels)
        ctx = DefenseContext(model, method, CPU, codes.clone(), outputs.clone(), labels, seed=0,
                             db_labels=labels, total_iterations=20)
        defense = DEFENSES.get(name)(ctx, eps=8 / 255, step=2 / 255, steps=2)
        opt = defense.build_optimizer(model.parameters())
        run_epoch(model, batches(images, labels, n),
                  lambda x, y, idx, it: defense.step(defense.augment(x), y, idx, it), opt, device=CPU, epoch=0,
                  step=0, log=[], log_every=50, progress=False)

    assert_no_read_per_iteration(run)


def test_atrdh_prototype_step():
    def run(n):
        model, _, labels, outputs, codes = problem()
        method = create_method("dph", bits=BITS, n_classes=CLASSES, n_train=N_TRAIN)
        ctx = DefenseContext(model, method, CPU, codes, outputs, labels, seed=0, db_labels=labels,
                             total_iterations=2 * n)
        defense = DEFENSES.get("atrdh")(ctx)
        for it in range(n):
            defense.prototype_step(defense.draw_targets(BATCH), it)

    assert_no_read_per_iteration(run)


@pytest.mark.parametrize("name", sorted({GENERATORS.get(n).name for n in GENERATORS.names()}))
def test_generator_iterations(name):
    assert name in {"pgd", "bim", "di-fgsm", "ni-fgsm", "si-ni-fgsm", "vmi-fgsm", "apgd"}

    def run(n):
        model, images, labels, _, codes = problem()
        x, m = images[:BATCH], codes[BATCH:2 * BATCH]
        attack = create_generator(name, model, eps=8 / 255, step=2 / 255, steps=n, seed=0)
        per_sample = name == "apgd"
        attack(x, lambda h, _x: mainstay_loss(h, m, per_sample=per_sample))

    assert_no_read_per_iteration(run)


def _attack_context(model, images, labels, codes, **extra):
    return AttackContext(model, CPU, codes, labels, codes, labels, seed=0, progress=False, **extra)


@pytest.mark.parametrize("name", ["hag", "sdha"])  # the optimiser-based attacks (SGD and Adam)
def test_optimizer_attack_iterations(name):
    def run(n):
        model, images, labels, _, codes = problem()
        attack = ATTACKS.get(name)(_attack_context(model, images, labels, codes), eps=8 / 255, steps=n)
        attack.attack(images[:BATCH], labels[:BATCH], None)

    assert_no_read_per_iteration(run)


def test_tha_prototype_network_training():
    from saat.attacks.prototype import PrototypeNet, train_prototype_net

    def run(n):
        _, _, labels, _, codes = problem()
        net = PrototypeNet(CLASSES, BITS)
        train_prototype_net(net, torch.eye(CLASSES), codes, labels, steps=n, batch=8, lr=1e-3, seed=0,
                            cache=CachedTraining(None, "tha", "", {}))

    assert_no_read_per_iteration(run)


class _FloatSplit:
    """Float images served by a long-tensor index (no host read), for ProS-GAN's own batch loop."""

    def __init__(self, images, labels):
        self.images, self.labels = images, labels

    def __len__(self):
        return self.images.shape[0]

    def __getitems__(self, indices):
        idx = torch.as_tensor(indices, dtype=torch.int64)
        return self.images[idx], self.labels[idx], idx


def test_prosgan_prototype_network_steps():
    from saat.attacks import prosgan
    from saat.attacks._prosgan_nets import PrototypeNet

    def run(n):
        model, images, labels, _, codes = problem()
        net = PrototypeNet(CLASSES, BITS, hidden=64)
        opts = {"proto_steps": n, "proto_batch": 8, "proto_lr": 1e-3, "proto_checkpoint_every": 1000}
        prosgan.train_prototype_net(net, _attack_context(model, images, labels, codes), opts,
                                    CachedTraining(None, "p", "", {}))

    assert_no_read_per_iteration(run)


def test_prosgan_generator_steps():
    from saat.attacks import prosgan
    from saat.attacks._prosgan_nets import ProSDiscriminator, ProSGenerator, PrototypeNet

    def run(n):
        model, images, labels, _, codes = problem()
        ctx = _attack_context(model.eval(), images, labels, codes, train_split=_FloatSplit(images, labels))
        opts = {"eps": 8 / 255, "bounded": True, "beta": 5.0, "hash_weight": 5.0, "adv_weight": 1.0,
                "gan_epochs": 1, "gan_steps_per_epoch": n, "gan_batch": 2, "gan_lr": 1e-4, "d_every": 3,
                "gan_checkpoint_every": 1000}
        prosgan.train_gan(ProSGenerator((8, 8), width=4, label_channels=16),
                          ProSDiscriminator(CLASSES, (8, 8), width=2), PrototypeNet(CLASSES, BITS, hidden=64),
                          ctx, opts, CachedTraining(None, "g", "", {}))

    assert_no_read_per_iteration(run)


def test_comdefend_training_step():
    from saat.defenses.comdefend import ComDefend
    from saat.pipelines.comdefend import comdefend_epoch
    from saat.utils.rng import SeededStream

    def run(n):
        _, images, labels, _, _ = problem()
        net = ComDefend(12, width=0.125)
        opt = torch.optim.Adam(net.parameters(), lr=1e-4)
        comdefend_epoch(net, opt, batches(images, labels, n), SeededStream(0), code_weight=1e-4, device=CPU)

    assert_no_read_per_iteration(run)


# ------------------------------------------------------------------------------------- what is read, and when


@pytest.mark.parametrize("log_every", [0, 2, 50])
def test_a_non_finite_loss_stops_training_at_the_next_read_naming_its_step(log_every):
    model, images, labels, _, _ = problem()
    seen = []

    def step_fn(x, y, idx, step):
        seen.append(step)
        loss = model(x).pow(2).mean()
        if step == 7:
            loss = loss * float("inf")
        elif step > 7:
            loss = loss * float("nan")
        return {"loss": loss, "extra": 1.0}

    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    log = []
    with pytest.raises(FloatingPointError, match=r"^non-finite loss inf at epoch 3, step 7$"):
        run_epoch(model, batches(images, labels, 6), step_fn, opt, device=CPU, epoch=2, step=4, log=log,
                  log_every=log_every, progress=False)
    # read at the first log step after step 7 (step counter 8 with log_every 2), else at the end of the epoch
    assert seen == ([4, 5, 6, 7] if log_every == 2 else [4, 5, 6, 7, 8, 9])
    assert [r["step"] for r in log] == ([6] if log_every == 2 else [])


def test_logged_terms_are_the_per_step_values_and_their_epoch_means():
    model, images, labels, _, _ = problem()
    values = iter([0.5, 0.25, 2.0, 1.0])

    def step_fn(x, y, idx, step):
        v = next(values)
        return {"loss": model(x).sum() * 0 + v, "term": torch.tensor(v * 2, dtype=torch.float64), "number": v}

    log = []
    summary, step = run_epoch(model, batches(images, labels, 4), step_fn, torch.optim.SGD(model.parameters(), lr=0.1),
                              device=CPU, epoch=0, step=0, log=log, log_every=2, progress=False)
    assert step == 4 and [r["kind"] for r in log] == ["step", "step", "epoch"]
    assert {k: log[0][k] for k in ("step", "loss", "term", "number")} == {"step": 2, "loss": 0.25, "term": 0.5,
                                                                          "number": 0.25}
    assert {k: log[1][k] for k in ("loss", "term", "number")} == {"loss": 1.0, "term": 2.0, "number": 1.0}
    assert all(isinstance(log[0][k], float) for k in ("loss", "term", "number"))
    assert {k: summary[k] for k in ("loss", "term", "number")} == {"loss": 0.9375, "term": 1.875, "number": 0.9375}


# ----------------------------------------------------------------------------------------- the counter itself


def test_the_counter_sees_host_reads_and_leaves_torch_optim_alone():
    def reads(n):
        w = torch.nn.Parameter(torch.ones(3))
        opt = torch.optim.Adam([w], lr=0.1)  # its CPU step counter is read every step, inside torch.optim
        for _ in range(n):
            loss = (w * 2).sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
            float(loss.detach())  # a host read per iteration
            w.detach()[w.detach() > 0]  # a boolean-mask index per iteration
            bool((w > 0).any())

    five, ten = host_reads(reads, 5), host_reads(reads, 10)
    assert sum(ten.values()) - sum(five.values()) >= 5 * 3
    assert host_reads(lambda n: [torch.ones(2).tolist() for _ in range(n)], 5) == Counter()
