"""The cost of a reproduction grid before it runs: a short probe of the package's own code paths on this device,
and the counting that turns it into each cell's wall time and disk space (docs/reproduce.md#the-plan).

**The probe** (under a minute) builds the grid's model at the dataset's image size, with the dataset's real labels
and random pixels, and times the code paths the cells run: one hashing-training iteration (``run_epoch`` with
``hashing_step`` and the run's optimiser), one step of each defense of the grid (``create_defense(...).step`` at
its settings: its inner PGD steps included), one iteration of an attack (``create_attack("mainstay")`` called with
3 iterations and with 1: the difference, so that the per-call set-up is not counted per iteration) and the encoding
of one batch. Each becomes seconds per image. On a CPU large images are probed in batches of at most 8 (the time per
image changes little with the batch there); on an accelerator at the run's batch. The networks THA and ProS-GAN
train before attacking are timed per step, at their settings, as the difference of two short trainings: THA's and
ProS-GAN's PrototypeNet (10 and 30 steps), ProS-GAN's generator with its discriminator (1 and 2 steps; on a CPU
with large images in batches of 2, scaled per image to its batch).

**The counting** is the one of ``benchmarks/bench_paper_scale.py`` (which uses this module): hashing training epochs
x floor(N / batch) x batch images (the loader drops the last partial batch), a defense the same with its epochs and
batch, an attack iterations x attacked queries images, THA and ProS-GAN their networks' steps (ProS-GAN's generator
gan_epochs x ceil(N / gan_batch) steps, at most gan_steps_per_epoch per epoch; without the network probe, as the
benchmark counts, the generator's steps as hashing-model passes of its batches, a lower bound, and the PrototypeNets
not at all), ATRDH's PrototypeNet inside its defense step (measured with it); encoding: the evaluation of each model
(database + queries), its training set once (the first attack or card that needs its codes; a defense encodes the
training set of the model it starts from), the adversarial queries of each attack. A robustness card is its
ensemble's iterations (restarts x iterations x queries per gradient member; the black-box member's model
evaluations at the encoding's cost per image) and, with the sanity checks, 3.5 runs of its main member more
(:class:`CardWork`). Under
torchrun (world size W) the sharded work is divided by W (ideal scaling); THA's and ProS-GAN's network training,
which every process runs whole, is not. Disk: model files from the parameter count (model.pt, and checkpoint.pt with
the optimiser's state and the method's or defense's memories), cached codes (int8), each attack's codes, query
indices and example images, the networks THA and ProS-GAN cache.
"""

from __future__ import annotations

import functools
import math
import time
from dataclasses import dataclass, field

import torch

from ..attacks import ATTACKS
from ..config import DEMO_DATASETS, TrainConfig
from ..defenses import DEFENSES
from .grid import PRESETS, Cell, GridSpec, Preset, build_grid, main_eps


@dataclass(frozen=True)
class Sizes:
    """What the counting needs to know about a dataset."""

    name: str
    train: int
    query: int
    database: int
    n_classes: int
    image_size: int
    channels: int = 3


@dataclass
class Probe:
    """Seconds per image of each code path on one device (``per_image``: train, attack, encode, defense:NAME)."""

    device: str
    batch: int
    per_image: dict
    params: int  # the model's parameter count (for the disk estimate)
    seconds: float = 0.0  # the probe's own wall time
    threads: int = 1
    setup: float = 0.0  # seconds a cell spends before its work: opening the dataset (measured by the plan)
    per_step: dict = field(default_factory=dict)  # seconds per step of the networks attacks train (module doc)

    def describe(self) -> str:
        parts = [f"{k} {v * 1e3:.3g} ms" for k, v in self.per_image.items()]
        steps = [f"{k} {v * 1e3:.3g} ms" for k, v in self.per_step.items()]
        return (f"probe on {self.device} ({self.threads} threads), batch {self.batch}, {self.seconds:.1f} s: per image "
                + ", ".join(parts) + (f"; per network step {', '.join(steps)}" if steps else "")
                + f"; per cell {self.setup:.2g} s to open the dataset")


@dataclass
class Estimate:
    """One cell's estimated wall time (seconds) and disk space (bytes), and the work it counted."""

    seconds: float
    disk: int
    work: str
    parts: dict = field(default_factory=dict)


# ------------------------------------------------------------------------------------------------ resolved settings

def train_config(spec: GridSpec, preset: Preset, bits: int, seed: int, device: str = "auto") -> TrainConfig:
    """The training config a grid's train cell runs with (as ``saat train`` resolves it)."""
    from ..config import resolve_config

    return resolve_config(TrainConfig, {
        "dataset": spec.dataset, "dataset_dir": spec.dataset_dir, "data_root": spec.data_root,
        "method": spec.method.lower(), "backbone": spec.backbone.lower(), "bits": bits, "epochs": preset.epochs,
        "seed": seed, "device": device, "pretrained": spec.pretrained or None,
        "backbone_weights": spec.backbone_weights})


def is_demo(spec: GridSpec) -> bool:
    return spec.dataset.lower() in DEMO_DATASETS


def attack_config(preset: Preset, cell: Cell):
    from ..pipelines.attack import AttackConfig

    cfg = AttackConfig(method=cell.attack, targeted=cell.targeted, num_queries=preset.queries, seed=cell.seed,
                       name=cell.name, steps=preset.attack_steps.get(cell.attack),
                       options=dict(preset.attack_options.get(cell.attack, {})))
    if "eps" in ATTACKS.get(cell.attack).defaults:
        cfg.eps = cell.eps
    return cfg


def defense_config(preset: Preset, cell: Cell, device: str = "auto"):
    from ..pipelines.defend import DefenseConfig

    return DefenseConfig(method=cell.model, epochs=preset.defense_epochs, seed=cell.seed, device=device,
                         train_limit=preset.defense_limit)


def card_config(preset: Preset, cell: Cell):
    from ..pipelines.robustness import RobustnessConfig

    return RobustnessConfig(preset=preset.card_preset, num_queries=preset.queries, seed=cell.seed, name=cell.name,
                            checks=cell.model in preset.card_checks, options=preset.card_options or None)


def resolved_attack(spec: GridSpec, preset: Preset, cell: Cell) -> dict:
    from ..pipelines.attack import attack_settings

    return attack_settings(ATTACKS.get(cell.attack), attack_config(preset, cell), demo=is_demo(spec))


def resolved_defense(spec: GridSpec, preset: Preset, name: str) -> dict:
    from ..pipelines.defend import DefenseConfig, defense_settings

    return defense_settings(DEFENSES.get(name), DefenseConfig(method=name, epochs=preset.defense_epochs),
                            demo=is_demo(spec))


# ------------------------------------------------------------------------------------------------------ the probe

class _Synthetic(torch.utils.data.Dataset):
    """n items with the dataset's labels; image i is pool[i % len(pool)] (random pixels cost what real ones do)."""

    def __init__(self, labels: torch.Tensor, pool: torch.Tensor):
        self.labels, self.pool = labels, pool

    def __len__(self) -> int:
        return len(self.labels)

    def __getitems__(self, indices):
        idx = torch.as_tensor(indices, dtype=torch.int64)
        return self.pool[idx % len(self.pool)], self.labels[idx], idx


def probe(spec: GridSpec, sizes: Sizes, train_labels: torch.Tensor, *, device: str = "auto",
          defenses: tuple[str, ...] = (), networks: bool = True, bits: int | None = None) -> Probe:
    """Time the grid's code paths on ``device`` (module docstring); ``train_labels`` (N, C) are the dataset's.
    ``networks``: also the steps of the networks THA and ProS-GAN train."""
    from ..attacks import create_attack
    from ..defenses import create_defense
    from ..hashing import METHODS, create_method
    from ..models import HashModel
    from ..pipelines.common import encode_batch_size, encode_split
    from ..pipelines.loop import build_optimizer, hashing_step, run_epoch
    from ..utils.device import resolve_device
    from ..utils.rng import seeded_generator

    t_start = time.perf_counter()
    preset = PRESETS[spec.preset]
    bits = bits or spec.bits[0]
    cfg = train_config(spec, preset, bits, spec.seeds[0])
    dev = resolve_device(device)
    accel = dev.type != "cpu"
    gen = seeded_generator(0, "reproduce/probe")
    model = HashModel(cfg.backbone, bits, head_norm=METHODS.get(cfg.method).head_norm).to(dev)
    channels_last = model.channels_last
    if channels_last:
        model.to(memory_format=torch.channels_last)
    batch = cfg.batch_size if accel or sizes.image_size < 128 else min(cfg.batch_size, 8)
    enc_batch = encode_batch_size(cfg.eval_batch_size, dev)
    pool = torch.randint(0, 256, (max(batch, enc_batch), sizes.channels, sizes.image_size, sizes.image_size),
                         dtype=torch.uint8, generator=gen)
    labels = train_labels.float()
    split = _Synthetic(labels, pool)
    codes = torch.where(torch.rand(len(labels), bits, generator=gen) < 0.5, 1.0, -1.0).to(dev)
    labels_dev = labels.to(dev)

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        elif dev.type == "mps":
            torch.mps.synchronize()

    def timed(fn) -> float:
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        return time.perf_counter() - t0

    def batch_of(n: int):
        return split.__getitems__(torch.randint(0, len(split), (n,), generator=gen).tolist())

    method = create_method(cfg.method, bits=bits, n_classes=sizes.n_classes, n_train=len(labels), seed=0,
                           **cfg.method_hparams).to(dev)
    if hasattr(method, "init_memory"):
        method.init_memory(codes, labels_dev)
    opt = build_optimizer(cfg.optimizer, model.parameters(), cfg.lr, cfg.momentum, cfg.weight_decay)

    def train_once():
        run_epoch(model, [batch_of(batch)], hashing_step(model, method, dev, False), opt, device=dev, epoch=0,
                  step=0, log=[], log_every=0, progress=False, channels_last=channels_last)

    per_image = {}
    train_once()  # warm-up
    per_image["train"] = min(timed(train_once), timed(train_once)) / batch

    x = pool[:batch].to(dev).float().div_(255)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    y = labels_dev[:batch] if len(labels_dev) >= batch else labels_dev[torch.arange(batch) % len(labels_dev)]
    one = create_attack("mainstay", model, eps=8 / 255, steps=1, train_codes=codes, train_labels=labels_dev, seed=0)
    three = create_attack("mainstay", model, eps=8 / 255, steps=3, train_codes=codes, train_labels=labels_dev, seed=0)
    one(x, y)  # warm-up
    t1, t3 = timed(lambda: one(x, y)), timed(lambda: three(x, y))
    per_image["attack"] = max(t3 - t1, t1 / 2) / 2 / batch

    for name in defenses:
        d = create_defense(name, model, cfg.method, train_codes=codes, train_labels=labels_dev, seed=0,
                           **resolved_defense(spec, preset, name))
        dopt = d.build_optimizer(model.parameters())
        per_image[f"defense:{name}"] = timed(lambda d=d, dopt=dopt: run_epoch(
            model, [batch_of(batch)], lambda xb, yb, idx, it, d=d: d.step(d.augment(xb), yb, idx, it), dopt,
            device=dev, epoch=0, step=0, log=[], log_every=0, progress=False, channels_last=channels_last)) / batch

    per_step = (_network_steps(spec, preset, model, x, y, codes, labels_dev, split, timed,
                               gan_batch=None if accel or sizes.image_size < 128 else 2) if networks else {})

    enc = _Synthetic(labels[:enc_batch] if len(labels) >= enc_batch else labels[torch.arange(enc_batch) % len(labels)],
                     pool)
    encode_split(model, enc, batch_size=enc_batch, device=dev, progress=False, num_workers=0)  # warm-up
    per_image["encode"] = timed(lambda: encode_split(model, enc, batch_size=enc_batch, device=dev, progress=False,
                                                     num_workers=0)) / enc_batch
    params = sum(p.numel() for p in model.parameters())
    return Probe(str(dev), batch, per_image, params, time.perf_counter() - t_start, torch.get_num_threads(),
                 per_step=per_step)


def _difference(run, lo: int, hi: int, timed) -> float:
    """Seconds per unit of ``run(n)``'s work, from a call with ``lo`` and one with ``hi`` units (the calls' fixed
    cost cancels; never below a tenth of the larger call's time per unit, against noise)."""
    t_lo, t_hi = timed(lambda: run(lo)), timed(lambda: run(hi))
    return max(t_hi - t_lo, 0.1 * t_hi) / (hi - lo)


def _network_steps(spec: GridSpec, preset: Preset, model, x, y, codes, labels, split, timed,
                   gan_batch: int | None = None) -> dict:
    """Seconds per step of the networks THA and ProS-GAN train before they attack: THA's PrototypeNet, ProS-GAN's
    PrototypeNet and its generator (with the discriminator), each at the grid's settings (their batches), measured
    as the difference of two short trainings through ``create_attack``."""
    from ..attacks import create_attack
    from ..pipelines.attack import AttackConfig, attack_settings

    x, y = x[:2], y[:2]  # the attack pass after each training is not what is measured: keep it small
    target = labels[torch.arange(len(x)) % len(labels)].roll(1, 0)
    out = {}

    def settings(name: str) -> dict:
        cfg = AttackConfig(method=name, targeted=True, options=dict(preset.attack_options.get(name, {})))
        s = attack_settings(ATTACKS.get(name), cfg, demo=is_demo(spec))
        return {k: v for k, v in s.items() if k not in ("eps", "steps", "proto_steps", "gan_epochs",
                                                        "gan_steps_per_epoch", "proto_checkpoint_every",
                                                        "gan_checkpoint_every")}

    def run(name: str, **over):
        atk = create_attack(name, model, eps=8 / 255, train_codes=codes, train_labels=labels, db_codes=codes,
                            db_labels=labels, train_images=split, seed=0, **{**settings(name), **over})
        atk(x, y, target)

    out["tha:proto"] = _difference(lambda n: run("tha", steps=1, proto_steps=n), 10, 30, timed)
    out["prosgan:proto"] = _difference(lambda n: run("prosgan", proto_steps=n, gan_epochs=0), 10, 30, timed)
    # the generator's steps in batches of at most ``gan_batch`` images (2 on a CPU for large images: a step at 224
    # px and the paper's 24 takes most of a minute there), scaled to the grid's batch per image
    full = int(settings("prosgan")["gan_batch"])
    batch = min(full, gan_batch) if gan_batch else full
    out["prosgan:gan"] = _difference(lambda n: run("prosgan", proto_steps=1, gan_epochs=1, gan_steps_per_epoch=n,
                                                   gan_batch=batch), 1, 2, timed) * full / batch
    return out


# --------------------------------------------------------------------------------------------------- the counting

def _iters(n: int, batch: int) -> int:
    return n // batch if n > batch else 1  # drop_last, as the training loop does


def _net_params(kind: str, sizes: Sizes, bits: int) -> int:
    """Parameters of the networks an attack trains and caches (THA: its PrototypeNet; ProS-GAN: that and its
    generator and discriminator)."""
    return _count_net_params(kind == "prosgan", sizes.n_classes, sizes.image_size, bits)


@functools.lru_cache(maxsize=64)
def _count_net_params(gan: bool, classes: int, image_size: int, bits: int) -> int:
    from ..attacks._prosgan_nets import ProSDiscriminator, ProSGenerator, PrototypeNet

    with torch.device("meta"):  # counted without allocating anything
        nets = [PrototypeNet(classes, bits)]
        if gan:
            nets += [ProSGenerator(image_size), ProSDiscriminator(classes, image_size)]
    return sum(p.numel() for n in nets for p in n.parameters())


@dataclass(frozen=True)
class CardWork:
    """Per attacked query, what one card's ensemble costs: iterations with a backward pass (the gradient members,
    restarts included), model evaluations without one (the black-box member), and what the sanity checks add in
    iterations of the main member (profile version 3: the four eps-curve points and the collapse check at half its
    iterations, the converged check's continuation at its full count) and the transfer check's on the surrogate."""

    gradient: int
    forward: int
    checks: float
    members: list[str]
    transfer: int = 0  # the transfer check's iterations on the surrogate (a defended model's card with checks)


def _card_members(spec: GridSpec, preset: Preset) -> list:
    """The untargeted card's members as the card runs them (the profile's settings, the demo presets, the options)."""
    from ..pipelines.robustness import RobustnessConfig, card_overrides
    from ..robustness.evaluate import ensemble

    overrides = card_overrides(RobustnessConfig(preset=preset.card_preset, options=preset.card_options or None),
                               is_demo(spec))
    return ensemble(preset.card_preset, False, overrides)


def card_reuses(spec: GridSpec, preset: Preset, cell: Cell) -> frozenset[str]:
    """The members of a card cell that take the codes of an attack cell of the same run instead of attacking again:
    a seed-free attack run at the card's budget, batch size and settings (docs/robustness.md#reused-attacks)."""
    from ..robustness.evaluate import runs_as

    eps = main_eps(spec.dataset)
    batch = card_config(preset, cell).batch_size
    done = [c for c in build_grid(spec, cell.run.parent) if c.kind == "attack" and c.run == cell.run
            and not c.targeted and c.eps == eps and attack_config(preset, c).batch_size == batch]
    return frozenset(m.name for m in _card_members(spec, preset)
                     if any(runs_as(m, eps, c.attack, resolved_attack(spec, preset, c)) for c in done))


def card_iterations(spec: GridSpec, preset: Preset, reused: frozenset[str] = frozenset()) -> CardWork:
    """What one card of ``preset`` costs per attacked query (:class:`CardWork`); ``reused``: members that take an
    attack cell's codes (:func:`card_reuses`) and cost nothing."""
    from ..robustness.evaluate import EPS_MULTIPLES, TRANSFER_STEPS

    gradient, forward, names, main_steps = 0, 0, [], None
    for m in _card_members(spec, preset):  # the members as the card runs them
        cls = ATTACKS.get(m.attack)
        steps = int({**cls.defaults, **m.settings}.get("steps") or 1)
        main_steps = steps if main_steps is None else main_steps
        if m.name in reused:
            names.append(m.name)
            continue
        if cls.uses_gradients:
            gradient += m.restarts * steps
        else:
            forward += m.restarts * steps
        names.append(m.name)
    points = len([x for x in EPS_MULTIPLES if x not in (0, 1)])
    checks = (points + 1) * (main_steps // 2) + main_steps + 1  # curve + collapse, converged, zero-gradient pass
    return CardWork(gradient, forward, checks, names, TRANSFER_STEPS)


def estimate_cell(cell: Cell, spec: GridSpec, sizes: Sizes, pr: Probe, *, world_size: int = 1,
                  encoded: set | None = None, preset: Preset | None = None) -> Estimate:
    """Seconds and bytes of one cell (module docstring). ``encoded``: the runs whose training-set codes an earlier
    cell computed (updated here), so that each model encodes its training set once. ``preset``: instead of the
    spec's (e.g. the paper's with fewer attacked queries)."""
    preset = preset or PRESETS[spec.preset]
    encoded = set() if encoded is None else encoded
    t = pr.per_image
    w = max(1, world_size)
    n, q, m, k = sizes.train, sizes.query, sizes.database, cell.bits or spec.bits[0]
    a = min(preset.queries or q, q)
    param_bytes = 4 * pr.params
    image_bytes = sizes.channels * sizes.image_size ** 2
    parts: dict[str, float] = {}

    def first_train_encoding(run) -> float:
        if run in encoded:
            return 0.0
        encoded.add(run)
        return n * t["encode"]

    if cell.kind == "train":
        cfg = train_config(spec, preset, cell.bits, cell.seed)
        images = cfg.epochs * _iters(n, cfg.batch_size) * cfg.batch_size
        parts = {"train": images * t["train"], "encode": (m + q) * t["encode"] if cfg.evaluate else 0.0}
        work = f"{cfg.epochs} epochs x {_iters(n, cfg.batch_size):,} it x {cfg.batch_size}"
        opt_copies = 2 if cfg.optimizer == "adam" else 1
        disk = param_bytes * (2 + opt_copies) + 4 * n * k + (m + q) * k
    elif cell.kind == "defend":
        s = resolved_defense(spec, preset, cell.model)
        n_eff = min(n, preset.defense_limit or n)
        images = s["epochs"] * _iters(n_eff, s["batch_size"]) * s["batch_size"]
        encoded.add(cell.source)
        parts = {"defense": images * t[f"defense:{cell.model}"], "encode": (n + m + q) * t["encode"]}
        work = (f"{s['epochs']} epochs x {_iters(n_eff, s['batch_size']):,} it x {s['batch_size']} "
                f"({s.get('steps')} steps)")
        proto = _net_params("tha", sizes, k) * 4 * 3 if cell.model == "atrdh" else 0
        disk = param_bytes * 3 + 2 * 4 * n * k + proto + (n + m + q) * k
    elif cell.kind == "attack":
        s = resolved_attack(spec, preset, cell)
        steps = int(s.get("steps") or 1)
        parts = {"attack": a * steps * t["attack"], "encode": a * t["encode"] + first_train_encoding(cell.run)}
        work = f"{a:,} q x {steps} it"
        disk = a * (k + 8) + 2 * 6 * image_bytes * 2
        steps_of = pr.per_step
        if cell.attack == "tha" and "tha:proto" in steps_of:
            parts["networks"] = s["proto_steps"] * steps_of["tha:proto"] * w
            work += f", PrototypeNet {s['proto_steps']:,} steps"
        if cell.attack == "prosgan":
            per_epoch = math.ceil(n / s["gan_batch"])
            if s.get("gan_steps_per_epoch") is not None:
                per_epoch = min(per_epoch, int(s["gan_steps_per_epoch"]))
            gan_steps = s["gan_epochs"] * per_epoch
            parts = {"attack": a * t["attack"], "encode": parts["encode"]}
            if "prosgan:gan" in steps_of:
                parts["networks"] = (s["proto_steps"] * steps_of.get("prosgan:proto", 0.0)
                                     + gan_steps * steps_of["prosgan:gan"]) * w
            else:  # no network probe: the generator's steps as hashing-model passes of its batches (a lower bound)
                parts["generator"] = gan_steps * s["gan_batch"] * t["attack"] * w
            work = (f"PrototypeNet {s['proto_steps']:,} steps, generator {s['gan_epochs']} epochs x {per_epoch:,} it "
                    f"x {s['gan_batch']}, {a:,} q")
        if cell.attack in ("tha", "prosgan"):
            disk += 4 * _net_params(cell.attack, sizes, k)
    elif cell.kind == "card":
        cw = card_iterations(spec, preset, card_reuses(spec, preset, cell))
        checks = cell.model in preset.card_checks
        # a defended model's card crafts the transfer check on the run it was trained from (its surrogate)
        transfer = cw.transfer if checks and cell.model != "undefended" else 0
        its = a * (cw.gradient + (cw.checks if checks else 0) + transfer)
        parts = {"attack": its * t["attack"],
                 "encode": a * (cw.forward + len(cw.members)) * t["encode"] + first_train_encoding(cell.run)}
        work = (f"{a:,} q x {cw.gradient} it + {cw.forward} evals ({len(cw.members)} attacks)"
                + (f" + {cw.checks:g} it (checks)" if checks else "")
                + (f" + {transfer} it (transfer)" if transfer else ""))
        disk = a * k * (len(cw.members) + 2) + 8 * a + 4 * _net_params("tha", sizes, k)
    else:  # the report: a few seconds per run, a few figures
        runs = len(spec.bits) * len(spec.seeds) * (1 + 2 * (2 in spec.tables))
        parts = {"report": 3.0 * runs * w}  # written by one process
        work = f"{runs} runs"
        disk = runs * (4 * image_bytes * 12 + 200_000)
    if cell.kind != "report":
        parts["setup"] = pr.setup * w  # every process opens the dataset at once
    seconds = sum(parts.values()) / w
    return Estimate(seconds, int(disk), work, parts)


def sizes_of(ds) -> Sizes:
    """:class:`Sizes` of an opened dataset (nothing is decoded)."""
    # an in-memory split delivers an item without decoding anything; image files are decoded to RGB
    channels = int(ds.train.__getitems__([0])[0].shape[1]) if hasattr(ds.train, "images") and len(ds.train) else 3
    return Sizes(ds.name, len(ds.train), len(ds.query), len(ds.database), ds.n_classes, ds.image_size, channels)


def human_seconds(s: float) -> str:
    if s < 90:
        return f"{s:.0f} s"
    if s < 90 * 60:
        return f"{s / 60:.1f} min"
    if s < 48 * 3600:
        return f"{s / 3600:.1f} h"
    return f"{s / 86400:.1f} days"


def human_bytes(b: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if b < 1000 or unit == "TB":
            return f"{b:.0f} {unit}" if unit == "B" else f"{b:.1f} {unit}"
        b /= 1000
    return f"{b:.1f} TB"
