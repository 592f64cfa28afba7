"""Noise drawn on the device it is used on (issue 24, item 3): ``saat.utils.rng.SeededStream``.

On the CPU every stream must give exactly the numbers the CPU generator of the same seed gave before the draws
moved to the device, so each loop's seeded result is compared with a reference written the old way (draw on a
CPU generator, then move). That a GPU draws on itself is checked by scripts/gpu_check.py on a GPU; here the
stream's device bookkeeping is checked with a recording generator factory."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from saat.attacks.generators import PGD, VMIFGSM
from saat.utils import rng as rng_mod
from saat.utils.rng import SeededStream, seeded_generator


class TinyHash(torch.nn.Module):
    def __init__(self, bits: int = 8):
        super().__init__()
        torch.manual_seed(0)
        self.net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, bits))

    def forward(self, x, alpha: float = 1.0):
        return torch.tanh(alpha * self.net(x))


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**40), key=st.one_of(st.just(()), st.tuples(st.integers(0, 99)),
                                                    st.tuples(st.text(min_size=1, max_size=8))),
       n=st.integers(1, 50))
def test_stream_on_cpu_is_the_cpu_generator(seed, key, n):
    stream, gen = SeededStream(seed, *key), seeded_generator(seed, *key)
    assert torch.equal(torch.rand(n, generator=stream.on("cpu")), torch.rand(n, generator=gen))
    assert torch.equal(torch.randint(0, 7, (n,), generator=stream.on(torch.device("cpu")), device="cpu"),
                       torch.randint(0, 7, (n,), generator=gen))
    assert torch.equal(torch.randn(n, generator=stream.on("cpu")), torch.randn(n, generator=gen))


def test_stream_makes_one_generator_per_device_type_on_that_device(monkeypatch):
    made = []
    real = torch.Generator

    def recording(device="cpu"):
        made.append(torch.device(device))
        return real()  # a CPU generator stands in for the device's (no GPU here)

    monkeypatch.setattr(rng_mod.torch, "Generator", recording)
    stream = SeededStream(3)
    g_cpu = stream.on("cpu")
    g_cuda = stream.on(torch.device("cuda", 1))
    assert stream.on("cuda:1") is g_cuda and stream.on("cpu") is g_cpu and g_cpu is not g_cuda
    assert made == [torch.device("cpu"), torch.device("cuda", 1)]
    assert set(stream.state_dict()) == {"cpu", "cuda"}


def test_stream_state_resumes_and_reads_old_checkpoints():
    stream = SeededStream(11)
    torch.rand(5, generator=stream.on("cpu"))
    state = stream.state_dict()
    expected = torch.rand(5, generator=stream.on("cpu"))
    resumed = SeededStream(11)
    resumed.load_state_dict(state)
    assert torch.equal(torch.rand(5, generator=resumed.on("cpu")), expected)
    # a checkpoint written before the streams: a bare CPU generator state
    old = seeded_generator(11)
    torch.rand(5, generator=old)
    from_old = SeededStream(11)
    from_old.load_state_dict(old.get_state())
    assert torch.equal(torch.rand(5, generator=from_old.on("cpu")), torch.rand(5, generator=old))
    # a state saved on another device type does not disturb this one's fresh start
    mixed = SeededStream(11)
    mixed.load_state_dict({"cuda": torch.zeros(16, dtype=torch.uint8)})
    assert torch.equal(torch.rand(5, generator=mixed.on("cpu")), torch.rand(5, generator=seeded_generator(11)))


def test_pgd_random_start_is_the_cpu_draw():
    x = torch.rand(4, 3, 8, 8, generator=seeded_generator(1))
    eps = 8 / 255
    attack = PGD(TinyHash(), eps=eps, steps=0, seed=7)
    start = attack.start(x)
    noise = torch.rand(x.shape, generator=seeded_generator(7)) * (2 * eps) - eps  # the old draw, on the CPU
    assert torch.equal(start, torch.clamp(torch.minimum(torch.maximum(x + noise, x - eps), x + eps), 0, 1))


def test_vmi_fgsm_unchanged_against_a_cpu_generator_reference():
    model = TinyHash()
    x = torch.rand(3, 3, 8, 8, generator=seeded_generator(2))
    target = torch.sign(torch.randn(3, 8, generator=seeded_generator(3)))

    def objective(h, _x):
        return (h * target).sum()

    eps, step, steps, radius = 8 / 255, 2 / 255, 3, 1.5 * 8 / 255
    got = VMIFGSM(model, eps=eps, step=step, steps=steps, seed=5, alpha_schedule=False)(x, objective)
    gen = seeded_generator(5)

    def grad(z):
        z = z.detach().requires_grad_(True)
        (g,) = torch.autograd.grad(objective(model(z), z), z)
        return g

    def unit(g):
        return g / g.abs().mean(dim=(1, 2, 3), keepdim=True)

    x_adv, momentum, variance = x.clone(), torch.zeros_like(x), torch.zeros_like(x)
    for _ in range(steps):
        g_adv = grad(x_adv)
        g = unit(g_adv + variance) + momentum
        momentum = g
        nb = torch.zeros_like(x)
        for _ in range(5):
            nb += grad(x_adv + (torch.rand(x.shape, generator=gen) * (2 * radius) - radius))
        variance = nb / 5 - g_adv
        x_adv = torch.clamp(torch.minimum(torch.maximum(x_adv - step * g.sign(), x - eps), x + eps), 0, 1)
    assert torch.allclose(got, x_adv, atol=0, rtol=0)


def _old_cgat_augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """CgAT's augmentation as it was written before the draws moved to the device (host lists, a stack)."""
    b, _, h, w = x.shape
    pad = max(1, h // 8)
    padded = F.pad(x, (pad, pad, pad, pad))
    tops = torch.randint(0, 2 * pad + 1, (b,), generator=gen).tolist()
    lefts = torch.randint(0, 2 * pad + 1, (b,), generator=gen).tolist()
    flips = (torch.rand(b, generator=gen) < 0.5).tolist()
    out = torch.stack([padded[i, :, t:t + h, l:l + w] for i, (t, l) in enumerate(zip(tops, lefts))])
    idx = [i for i, f in enumerate(flips) if f]
    if idx:
        out[idx] = out[idx].flip(-1)
    return out


def _cgat(seed: int):
    from saat.defenses.base import AUGMENT_STREAM
    from saat.defenses.cgat import CgATDefense

    d = CgATDefense.__new__(CgATDefense)  # only the augmentation and its stream are exercised
    d.settings = {"augment": True}
    d.aug_stream = SeededStream(seed + AUGMENT_STREAM)
    return d, seeded_generator(seed + AUGMENT_STREAM)


def test_cgat_augmentation_is_the_old_crop_and_flip():
    d, gen = _cgat(4)
    for b in (1, 5, 16):  # three calls: the stream advances as the old generator did
        x = torch.rand(b, 3, 16, 12, generator=seeded_generator(b))
        got = d.augment(x)
        assert torch.equal(got, _old_cgat_augment(x, gen))
    x = torch.rand(6, 3, 16, 16).contiguous(memory_format=torch.channels_last)
    out = d.augment(x)
    assert out.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(out, _old_cgat_augment(x, gen))


def test_cgat_state_round_trip_continues_the_draws():
    d, _ = _cgat(9)
    x = torch.rand(4, 3, 8, 8)
    d.augment(x)
    state = d.aug_stream.state_dict()
    expected = d.augment(x)
    e, _ = _cgat(9)
    e.aug_stream.load_state_dict(state)
    assert torch.equal(e.augment(x), expected)


def test_atrdh_targets_are_the_old_draws():
    from saat.defenses.atrdh import ATRDHDefense
    from saat.defenses.base import TARGET_STREAM

    d = ATRDHDefense.__new__(ATRDHDefense)  # only the target draw and its stream are exercised
    d.label_pool = torch.eye(6)[[0, 1, 2, 3, 4, 5]] + torch.eye(6)[[1, 2, 3, 4, 5, 0]]
    d.target_stream = SeededStream(12 + TARGET_STREAM)
    gen = seeded_generator(12 + TARGET_STREAM)
    for n in (3, 8):
        assert torch.equal(d.draw_targets(n), d.label_pool[torch.randint(6, (n,), generator=gen)])
