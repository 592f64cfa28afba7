"""Mixed precision where it pays (issue 24, item 5): ``--amp`` reaches the attacks' and the defenses' inner passes,
float16 training gets a gradient scaler, TF32 and cuDNN autotuning are switches, and cached codes say which
precision made them. On this CPU autocast runs in bfloat16 (float16 autocast on the CPU stands in for a GPU without
bfloat16)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from conftest import TinyHashModel
from saat.attacks import create_attack
from saat.attacks.losses import mainstay_loss
from saat.defenses import DEFENSES, DefenseContext
from saat.hashing import create_method
from saat.pipelines.loop import run_epoch
from saat.utils import device as device_mod
from saat.utils.device import Autocast, configure_backends, grad_scaler, precision_tag, with_amp

CPU = torch.device("cpu")
EPS = 8 / 255


class RecordingModel(TinyHashModel):
    """A TinyHashModel that records the dtype its linear layer computed in, and the dtype it returned."""

    def __init__(self):
        super().__init__(bits=8)
        self.seen: list[torch.dtype] = []

    def forward(self, x, alpha=1.0):
        z = self.linear(x.flatten(1))
        self.seen.append(z.dtype)
        return torch.tanh(alpha * z)


@pytest.fixture
def backend_flags():
    """The process-wide flags configure_backends sets, restored afterwards."""
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark)
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark = saved


def test_autocast_wrapper_runs_the_model_in_bf16_and_returns_float32():
    model = RecordingModel().eval()
    wrapped = with_amp(model, CPU, True)
    assert isinstance(wrapped, Autocast) and with_amp(model, CPU, False) is model
    h = wrapped(torch.rand(2, 3, 8, 8), alpha=0.5)
    assert model.seen == [torch.bfloat16] and h.dtype == torch.float32
    assert wrapped.bits == 8 and wrapped.encode is not None  # the wrapped model's attributes
    wrapped.train()
    assert model.training


@pytest.mark.parametrize("name", ["mainstay", "hag", "sdha"])
def test_attack_under_amp_crafts_in_bf16_and_stays_in_the_ball(name):
    torch.manual_seed(0)
    model = RecordingModel().eval()
    x = torch.rand(4, 3, 8, 8)
    y = torch.eye(3)[[0, 1, 2, 0]]
    codes = torch.sign(torch.randn(12, 8))
    labels = torch.eye(3)[torch.arange(12) % 3]
    kw = {"train_codes": codes, "train_labels": labels} if name == "mainstay" else {}
    fp32 = create_attack(name, model, eps=EPS, steps=5, **kw)(x, y)
    assert set(model.seen) == {torch.float32}
    model.seen.clear()
    amp = create_attack(name, model, eps=EPS, steps=5, amp=True, **kw)(x, y)
    crafted = model.seen[1:]  # [0]: the one float32 pass that reads the code length
    assert crafted and set(crafted) == {torch.bfloat16}
    assert amp.dtype == torch.float32 and not model.training
    # the projection runs on float32 images: never a bfloat16 step outside the ball or [0, 1]
    assert (amp - x).abs().max() <= EPS + 1e-7 and amp.min() >= 0 and amp.max() <= 1
    assert not torch.equal(amp, fp32)  # the passes really ran in another precision


def test_attack_objective_sees_float32_outputs():
    from saat.attacks.generators import PGD

    seen = []
    model = Autocast(TinyHashModel(bits=8).eval(), CPU)

    def objective(h, _x):
        seen.append(h.dtype)
        return h.sum()

    PGD(model, eps=EPS, step=2 / 255, steps=3, seed=0)(torch.rand(2, 3, 8, 8), objective)
    assert seen == [torch.float32] * 3


def test_defense_inner_pgd_runs_under_amp():
    n, bits = 16, 8
    model = RecordingModel().train()
    method = create_method("dpsh", bits=bits, n_classes=3, n_train=n, seed=0)
    codes = torch.sign(torch.randn(n, bits))
    labels = torch.eye(3)[torch.arange(n) % 3]
    method.init_memory(codes, labels)
    for amp, expected in ((False, {torch.float32}), (True, {torch.bfloat16})):
        ctx = DefenseContext(model, method, CPU, codes.clone(), codes.clone(), labels, seed=0, amp=amp)
        defense = DEFENSES.get("saat")(ctx, steps=2)
        model.seen.clear()
        terms = defense.step(torch.rand(4, 3, 8, 8), labels[:4], torch.arange(4), 0)
        assert set(model.seen) == expected  # outer passes and the crafter's
        assert terms["loss"].dtype == torch.float32


def _tiny_epoch(scaler, poison_step=None):
    torch.manual_seed(3)
    model = nn.Linear(6, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    data = [(torch.rand(4, 6), torch.zeros(4, 1), torch.arange(4)) for _ in range(3)]
    to_float = [(x.mul(255).to(torch.uint8), y, i) for x, y, i in data]

    def step_fn(x, y, idx, step):
        loss = model(x).pow(2).mean()
        return {"loss": loss * float("inf") if step == poison_step else loss}

    log = []
    run_epoch(model, to_float, step_fn, opt, device=CPU, epoch=0, step=0, log=log, log_every=0, progress=False,
              scaler=scaler)
    return [p.detach().clone() for p in model.parameters()]


def test_grad_scaler_scales_and_unscales_exactly():
    plain = _tiny_epoch(None)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
    scaled = _tiny_epoch(scaler)
    assert all(torch.equal(a, b) for a, b in zip(plain, scaled))  # a power-of-two scale is exact
    assert scaler.get_scale() == 2.0**10  # no overflow: the scale is kept (growth only after 2000 steps)


def test_grad_scaler_skips_an_overflowing_step():
    # an infinite loss at the only step: plain training would write non-finite weights; the scaler skips the step
    # and halves the scale (the non-finite loss is still reported at the read, with its step)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
    with pytest.raises(FloatingPointError, match="step 1"):
        _tiny_epoch(scaler, poison_step=1)
    assert scaler.get_scale() == 2.0**9


def test_grad_scaler_only_for_float16(monkeypatch):
    assert grad_scaler(CPU, True) is None and grad_scaler(CPU, False) is None  # bfloat16 needs none
    monkeypatch.setattr(device_mod, "amp_dtype", lambda device: torch.float16)
    assert isinstance(grad_scaler(CPU, True), torch.amp.GradScaler)
    assert grad_scaler(CPU, False) is None
    assert precision_tag(CPU, True) == "-fp16"


def test_precision_tag(backend_flags):
    assert precision_tag(CPU, False) == "" and precision_tag(CPU, True) == "-bf16"
    cuda = torch.device("cuda")
    torch.backends.cuda.matmul.allow_tf32 = True
    assert precision_tag(cuda, False) == "-tf32"
    torch.backends.cuda.matmul.allow_tf32 = False
    assert precision_tag(cuda, False) == ""


def test_configure_backends_defaults(backend_flags):
    cuda = torch.device("cuda")
    assert configure_backends(cuda) is True
    assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32 and torch.backends.cudnn.benchmark
    assert configure_backends(cuda, parity=True) is False
    assert not (torch.backends.cuda.matmul.allow_tf32 or torch.backends.cudnn.benchmark)
    assert configure_backends(cuda, True, parity=True) is True  # an explicit choice wins
    assert configure_backends(cuda, False) is False and not torch.backends.cudnn.allow_tf32
    assert configure_backends(CPU) is False and not torch.backends.cudnn.benchmark


def test_mainstay_loss_in_float32_under_amp():
    h = Autocast(TinyHashModel(bits=8).eval(), CPU)(torch.rand(3, 3, 8, 8))
    m = torch.sign(torch.randn(3, 8))
    assert mainstay_loss(h, m).dtype == torch.float32


# ------------------------------------------------------------------------------ the pipelines: caches and records


@pytest.fixture
def toy_run(tmp_path):
    """A tiny trained run on a folder of PNG files (tests/test_data.py's helper): small_cnn, 8 bits, 1 epoch."""
    import saat
    from test_data import make_dataset

    root = tmp_path / "toy"
    make_dataset(root, "paired", n_classes=3, sizes={"train": 24, "query": 6, "database": 30})
    run = tmp_path / "run"
    saat.train(out=run, dataset_dir=str(root), backbone="small_cnn", bits=8, image_size=16, epochs=1, batch_size=8,
               method="dpsh", device="cpu", evaluate=False, progress=False, num_workers=0)
    return run


def test_codes_cache_is_keyed_by_precision(toy_run):
    from saat.pipelines.common import codes_for, load_run, open_dataset

    run = load_run(toy_run, CPU)
    ds = open_dataset(run.config, run.image_size)
    fp32, _ = codes_for(run, "database", ds.database, device=CPU, batch_size=8, progress=False, num_workers=0)
    bf16, _ = codes_for(run, "database", ds.database, device=CPU, batch_size=8, progress=False, amp=True,
                        num_workers=0)
    names = sorted(p.name for p in (toy_run / "cache").glob("codes-database-*"))
    assert len(names) == 2 and sum(n.endswith("-bf16.npy") for n in names) == 1, names
    # each cache holds its own precision's codes: a later fp32 read is not the bf16 encoding, whichever came first
    again, _ = codes_for(run, "database", ds.database, device=CPU, batch_size=8, progress=False, num_workers=0)
    assert (again == fp32).all()
    from saat.pipelines.common import encode_split

    fresh = encode_split(run.model, ds.database, batch_size=8, device=CPU, amp=True, progress=False, num_workers=0)
    assert (bf16 == fresh.numpy()).all()


def test_attack_under_amp_is_its_own_result(toy_run):
    from saat.pipelines.attack import AttackConfig, run_attack

    base = {"method": "mainstay", "steps": 3, "num_queries": 4, "eps": 8 / 255}
    fp32 = run_attack(toy_run, AttackConfig(**base), device="cpu", progress=False, examples=0, num_workers=0)
    amp = run_attack(toy_run, AttackConfig(**base, amp=True), device="cpu", progress=False, examples=0,
                     num_workers=0)
    assert "precision" not in fp32["settings"] and amp["settings"]["precision"] == "bf16"
    assert "amp" not in fp32["settings"] and "tf32" not in fp32["settings"]
    assert fp32["name"] != amp["name"]  # the settings key differs: a float32 result is never replaced
    assert (toy_run / "attacks" / fp32["name"] / "metrics.json").is_file()
    assert (toy_run / "attacks" / amp["name"] / "metrics.json").is_file()
