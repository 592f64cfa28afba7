"""ProS-GAN (Wang et al., "Prototype-supervised Adversarial Network for Targeted Attack of Deep Hashing",
CVPR 2021), docs/baselines.md#baseline-attacks-and-defenses-as-the-paper-ran-them: a generative targeted attack, one
generator forward pass per query.

Training, once per attacked checkpoint and settings (cached and resumable, see :mod:`saat.attacks.cache`):

1. **PrototypeNet** (label -> feature f, prototype p = tanh(.), label reconstruction), trained alone on batches of
   label vectors drawn (seeded) from the distinct non-zero database label vectors, with
   ``mean_pairs(softplus(theta) - S theta) + MSE(y_hat, y) + mean_i ||sign(p_i) - p_i||^2 / 1e4``,
   ``theta = p b^T / 2`` against the attacked model's training codes b and ``S = 1[y . y_train > 0]`` (the DPSH
   likelihood); Adam (0.5, 0.999), lr x0.1 at 50 % and 75 % of the steps. Then frozen.
2. **Generator and discriminator** (:mod:`saat.attacks._prosgan_nets`) on the attacked model's training images,
   each paired with a target label drawn (seeded) from the same distinct database label vectors. Generator loss
   ``beta MSE(x', x) + 5 (1 - mean(b_t * h(x'))) + 1 L_adv`` with ``b_t = sign(p(y_t))``; the MSE is taken on
   [-1, 1] images (the authors' scale, so beta keeps its meaning: it is 4x the MSE of [0, 1] images) and h is the
   frozen attacked model (eval mode, parameter gradients off: gradients reach x' only). One discriminator step
   every ``d_every`` = 3 generator steps (before that step's generator update, on the same batch); Adam 1e-4
   (0.5, 0.999) for both.

Least squares GAN losses (the authors' formulation, StarGAN-style auxiliary labels regressed, not classified):
the discriminator's C + 1 outputs are regressed onto ``[y, 1]`` for a real image with its label ``y`` and onto
``[y_t, 0]`` for a generated image with its target ``y_t``, ``L_D = (MSE_real + MSE_fake) / 2``; the generator's
``L_adv = MSE(D(x'), [y_t, 1])``. (The authors' code names the flags the other way round, real 0 / fake 1 — the
same objective.) All MSEs average over the C + 1 outputs.

Learning-rate decay: the authors keep lr for the first half of the epochs and decay it linearly to 0 over the
second half, once per epoch; here the same rule is applied per iteration (``lr * min(1, 2 (1 - step/steps))``) so
that short demo runs decay smoothly too.

Output modes (a deliberate deviation, docs/baselines.md#baseline-attacks-and-defenses-as-the-paper-ran-them):
``bounded=True`` (default): ``x' = clip(x + eps tanh(G_raw), 0, 1)``, so
``||x' - x||_inf <= eps``; ``bounded=False``: the authors' unbounded image ``x' = (tanh(G_raw) + 1) / 2`` (the
pipeline reports its L_inf / L2 / PSNR). Targets are the shared seeded target labels the pipeline passes.
"""

from __future__ import annotations

import hashlib
import math
import time
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from ..data import EpochShuffleSampler, make_loader, to_device_batch
from ..utils.codes import sign_codes
from ..utils.meters import DeviceSums, read_scalars
from ..utils.progress import progress_bar
from ..utils.resume import Checkpointer
from ..utils.rng import SeededStream, derive_seed, seeded_init
from ..utils.schedule import lr_factor, lr_milestones
from ._prosgan_nets import ProSDiscriminator, ProSGenerator, PrototypeNet
from .base import frozen_eval
from .cache import CachedTraining
from .methods import ATTACKS, AttackContext, AttackMethod
from .targets import distinct_label_rows

ADAM_BETAS = (0.5, 0.999)
QUANTISATION_SCALE = 1e-4  # ||sign(p) - p||^2 / 1e4 (authors' PrototypeNet regulariser)
PROTO_LR_MILESTONES = (0.5, 0.75)  # lr x0.1 at each fraction of the PrototypeNet steps
PROTO_LR_GAMMA = 0.1
CACHE_VERSION = 1  # bump when a change invalidates cached networks

# Independent random streams derived from the run seed.
_INIT_PROTOTYPE, _DRAW_PROTOTYPE, _INIT_GENERATOR, _INIT_DISCRIMINATOR, _DRAW_TARGETS, _DATA_ORDER = range(6)


def _stream_seed(seed: int, stream: int) -> int:
    return derive_seed(seed, stream)


def _terms(**values: torch.Tensor) -> dict[str, torch.Tensor]:
    """Logged loss terms, detached and left on the device: the training loops read them on the host only where they
    log them (every read of a device value waits for the device, utils/meters.py)."""
    return {k: v.detach() for k, v in values.items()}


def prototype_terms(net: PrototypeNet, labels: torch.Tensor, train_codes: torch.Tensor,
                    train_labels: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """:func:`prototype_loss` with its terms left on the device (0-d tensors)."""
    _, p, y_hat = net(labels)
    similar = (labels @ train_labels.T > 0).to(p.dtype)
    theta = 0.5 * p @ train_codes.T
    likelihood = (F.softplus(theta) - similar * theta).mean()
    label_mse = F.mse_loss(y_hat, labels)
    quantisation = (sign_codes(p.detach()) - p).pow(2).sum(1).mean() * QUANTISATION_SCALE
    loss = likelihood + label_mse + quantisation
    return loss, _terms(likelihood=likelihood, label_mse=label_mse, quantisation=quantisation)


def prototype_loss(net: PrototypeNet, labels: torch.Tensor, train_codes: torch.Tensor,
                   train_labels: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
    """DPSH pairwise likelihood of the prototypes against the training codes + label MSE + quantisation; the
    terms as floats (read on the host)."""
    loss, terms = prototype_terms(net, labels, train_codes, train_labels)
    return loss, read_scalars(terms)


def prototype_lr_factor(step: int, steps: int) -> float:
    return lr_factor(step, lr_milestones(PROTO_LR_MILESTONES, steps), PROTO_LR_GAMMA)


def gan_lr_factor(step: int, steps: int) -> float:
    """Constant for the first half, then linear to 0 (per iteration)."""
    return min(1.0, 2.0 * (1.0 - step / max(steps, 1)))


def adversarial_images(raw: torch.Tensor, x: torch.Tensor, eps: float, bounded: bool) -> torch.Tensor:
    """[0, 1] adversarial images from the generator's pre-tanh output ``raw`` and the benign ``x`` in [0, 1]."""
    if bounded:
        return torch.clamp(x + eps * torch.tanh(raw), 0.0, 1.0)
    return (torch.tanh(raw) + 1.0) / 2.0


def lsgan_loss(scores: torch.Tensor, labels: torch.Tensor, real: bool) -> torch.Tensor:
    """Least squares loss of the discriminator's (B, C + 1) outputs against ``[labels, 1 if real else 0]``."""
    flag = torch.full((labels.shape[0], 1), 1.0 if real else 0.0, dtype=scores.dtype, device=scores.device)
    return F.mse_loss(scores, torch.cat([labels.to(scores.dtype), flag], dim=1))


def prototype_step(net: PrototypeNet, opt: torch.optim.Optimizer, labels: torch.Tensor, train_codes: torch.Tensor,
                   train_labels: torch.Tensor) -> dict[str, torch.Tensor]:
    """One PrototypeNet step; returns its loss terms on the device."""
    loss, terms = prototype_terms(net, labels, train_codes, train_labels)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return {**_terms(loss=loss), **terms}


def train_prototype_net(net: PrototypeNet, ctx: AttackContext, opts: dict, cache: CachedTraining) -> dict:
    """Train ``net`` (resuming ``cache``'s partial checkpoint if any); returns the final cache entry."""
    steps, batch, lr = int(opts["proto_steps"]), int(opts["proto_batch"]), float(opts["proto_lr"])
    pool = distinct_label_rows(ctx.db_labels)
    opt = torch.optim.Adam(net.parameters(), lr=lr, betas=ADAM_BETAS)
    rng = SeededStream(ctx.seed, _DRAW_PROTOTYPE)
    ckpt = Checkpointer({"prototype_net": net, "optimizer": opt, "rng": rng}, load=cache.load_partial,
                        save=cache.save_partial, every=int(opts["proto_checkpoint_every"]))
    start, saved = ckpt.resume()
    seconds, log = float(saved.get("seconds", 0.0)), list(saved.get("log", []))
    bar = progress_bar(total=steps, initial=start, desc="ProS-GAN prototype net", unit="step",
                       disable=not ctx.progress)
    every = int(opts["proto_checkpoint_every"])
    t0 = time.perf_counter()
    net.train()
    for step in range(start, steps):
        for group in opt.param_groups:
            group["lr"] = lr * prototype_lr_factor(step, steps)
        pick = torch.randint(pool.shape[0], (batch,), generator=rng.on(pool.device), device=pool.device)
        terms = prototype_step(net, opt, pool[pick], ctx.train_codes, ctx.train_labels)
        if (step + 1) % every == 0 or step + 1 == steps:  # the one host read of the terms: a logged step
            values = read_scalars(terms)
            log.append({"step": step + 1, **values})
            bar.set_postfix(loss=f"{values['loss']:.4f}", refresh=False)
        bar.update(1)
        ckpt.after(step + 1, steps, seconds=seconds + time.perf_counter() - t0, log=log)
    bar.close()
    net.eval()
    return {"prototype_net": net.state_dict(), "seconds": seconds + time.perf_counter() - t0, "log": log}


def gan_step(nets: dict, opts: dict, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor,
             step: int) -> dict[str, torch.Tensor]:
    """One generator step (and a discriminator step first when ``step % d_every == 0``) on a batch; returns its
    loss terms on the device."""
    generator, discriminator, prototype_net, model = (nets["generator"], nets["discriminator"],
                                                      nets["prototype_net"], nets["model"])
    with torch.no_grad():
        feature, p, _ = prototype_net(target)
        target_codes = sign_codes(p)
    x_pm = 2.0 * x - 1.0
    x_adv = adversarial_images(generator(x_pm, feature), x, float(opts["eps"]), bool(opts["bounded"]))
    fake_pm = 2.0 * x_adv - 1.0
    terms: dict[str, torch.Tensor] = {}
    if step % int(opts["d_every"]) == 0:
        discriminator.requires_grad_(True)
        d_loss = 0.5 * (lsgan_loss(discriminator(x_pm), y, real=True)
                        + lsgan_loss(discriminator(fake_pm.detach()), target, real=False))
        nets["opt_d"].zero_grad(set_to_none=True)
        d_loss.backward()
        nets["opt_d"].step()
        terms.update(_terms(d_loss=d_loss))
    discriminator.requires_grad_(False)  # the generator's step leaves the discriminator's .grad alone
    adv = lsgan_loss(discriminator(fake_pm), target, real=True)
    reconstruction = F.mse_loss(fake_pm, x_pm)
    hash_loss = 1.0 - (model(x_adv) * target_codes).mean()
    g_loss = float(opts["beta"]) * reconstruction + float(opts["hash_weight"]) * hash_loss \
        + float(opts["adv_weight"]) * adv
    nets["opt_g"].zero_grad(set_to_none=True)
    g_loss.backward()
    nets["opt_g"].step()
    terms.update(_terms(g_loss=g_loss, hash_loss=hash_loss, reconstruction=reconstruction, adv_loss=adv))
    return terms


def train_gan(generator: ProSGenerator, discriminator: ProSDiscriminator, prototype_net: PrototypeNet,
              ctx: AttackContext, opts: dict, cache: CachedTraining) -> dict:
    """Train the generator against the frozen attacked model (resuming ``cache``'s partial checkpoint if any);
    returns the final cache entry (the generator's weights, time, a per-epoch loss log). The loss terms are summed
    on the device and read on the host only at the end of an epoch and at a partial checkpoint."""
    split, device = ctx.train_split, ctx.device
    n, batch = len(split), int(opts["gan_batch"])
    per_epoch = math.ceil(n / batch)
    if opts["gan_steps_per_epoch"] is not None:
        per_epoch = min(per_epoch, int(opts["gan_steps_per_epoch"]))
    steps = int(opts["gan_epochs"]) * per_epoch
    lr = float(opts["gan_lr"])
    pool = distinct_label_rows(ctx.db_labels)
    opt_g = torch.optim.Adam(generator.parameters(), lr=lr, betas=ADAM_BETAS)
    opt_d = torch.optim.Adam(discriminator.parameters(), lr=lr, betas=ADAM_BETAS)
    rng = SeededStream(ctx.seed, _DRAW_TARGETS)
    ckpt = Checkpointer({"generator": generator, "discriminator": discriminator, "opt_g": opt_g, "opt_d": opt_d,
                         "rng": rng}, load=cache.load_partial, save=cache.save_partial,
                        every=int(opts["gan_checkpoint_every"]))
    start, saved = ckpt.resume()
    seconds, log, totals = float(saved.get("seconds", 0.0)), list(saved.get("log", [])), dict(saved.get("sums", {}))
    sums = DeviceSums(totals)  # this epoch's {term: (sum, count)} so far, on the device
    nets = {"generator": generator, "discriminator": discriminator, "prototype_net": prototype_net,
            "model": ctx.model, "opt_g": opt_g, "opt_d": opt_d}
    sampler = EpochShuffleSampler(n, _stream_seed(ctx.seed, _DATA_ORDER))
    batches, batches_epoch = None, -1
    bar = progress_bar(total=steps, initial=start, desc="ProS-GAN generator", unit="step",
                       disable=not ctx.progress)
    t0 = time.perf_counter()
    generator.train()
    discriminator.train()
    with frozen_eval(ctx.model):
        for step in range(start, steps):
            epoch, b = divmod(step, per_epoch)
            if epoch != batches_epoch:  # the epoch's batches b, b + 1, ... of its order, read by a loader's workers
                sampler.set_epoch(epoch)
                rest = list(sampler)[b * batch:per_epoch * batch]
                batches = iter(make_loader(split, batch, sampler=rest, seed=sampler.seed, epoch=epoch, device=device))
                batches_epoch = epoch
            x, y, _ = to_device_batch(next(batches), device)
            target = pool[torch.randint(pool.shape[0], (x.shape[0],), generator=rng.on(pool.device),
                                        device=pool.device)]
            for opt in (opt_g, opt_d):
                for group in opt.param_groups:
                    group["lr"] = lr * gan_lr_factor(step, steps)
            terms = gan_step(nets, opts, x, y, target, step)
            sums.add(terms)
            epoch_end = b + 1 == per_epoch
            if epoch_end or ckpt.due(step + 1, steps) or step + 1 == steps:  # the host reads of the terms
                totals = sums.read()
                shown = read_scalars({k: terms[k] for k in ("hash_loss", "reconstruction")})
                bar.set_postfix(hash=f"{shown['hash_loss']:.3f}", rec=f"{shown['reconstruction']:.4f}",
                                refresh=False)
                if epoch_end:
                    log.append({"epoch": epoch + 1, **{k: t / c for k, (t, c) in totals.items()}})
                    sums, totals = DeviceSums(), {}
            bar.update(1)
            ckpt.after(step + 1, steps, seconds=seconds + time.perf_counter() - t0, log=log, sums=totals)
    bar.close()
    generator.eval()
    return {"generator": generator.state_dict(), "seconds": seconds + time.perf_counter() - t0, "log": log}


def _labels_fingerprint(*tensors: torch.Tensor) -> str:
    h = hashlib.sha256()
    for t in tensors:
        h.update(str(tuple(t.shape)).encode())
        h.update(t.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


_INTEGER_SETTINGS = {"proto_steps": 0, "proto_batch": 1, "gan_epochs": 0, "gan_batch": 1, "d_every": 1,
                     "proto_checkpoint_every": 1, "gan_checkpoint_every": 1}  # name: smallest value
_NUMBER_SETTINGS = ("eps", "beta", "hash_weight", "adv_weight", "proto_lr", "gan_lr")  # non-negative numbers
_PROTOTYPE_KEYS = ("proto_steps", "proto_batch", "proto_lr")
_GAN_KEYS = ("bounded", "beta", "hash_weight", "adv_weight", "gan_epochs", "gan_steps_per_epoch", "gan_batch",
             "gan_lr", "d_every")


def _is_number(value) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))


def _checked_settings(opts: dict) -> dict:
    """Settings validated once, integers as int and numbers as float (so they serialise as given)."""
    out = dict(opts)
    for key, minimum in _INTEGER_SETTINGS.items():
        value = out[key]
        if not (_is_number(value) and float(value).is_integer() and value >= minimum):
            raise ValueError(f"ProS-GAN setting {key} must be an integer >= {minimum}, got {value!r}")
        out[key] = int(value)
    value = out["gan_steps_per_epoch"]
    if value is not None:
        if not (_is_number(value) and float(value).is_integer() and value >= 1):
            raise ValueError(f"ProS-GAN setting gan_steps_per_epoch must be None (a full pass) or an integer >= 1, "
                             f"got {value!r}")
        out["gan_steps_per_epoch"] = int(value)
    for key in _NUMBER_SETTINGS:
        value = out[key]
        if not (_is_number(value) and math.isfinite(value) and value >= 0):
            raise ValueError(f"ProS-GAN setting {key} must be a non-negative number, got {value!r}")
        out[key] = float(value)
    if not isinstance(out["bounded"], (bool, np.bool_)):
        raise ValueError(f"ProS-GAN setting bounded must be true or false, got {out['bounded']!r}")
    out["bounded"] = bool(out["bounded"])
    return out


@ATTACKS.register("prosgan", "pros-gan")
class ProSGANAttack(AttackMethod):
    """ProS-GAN (Wang et al., CVPR 2021): a generator trained once per attacked model turns (image, target label)
    into an adversarial image in one forward pass. Targeted only. Theory codes: ``sign(p(target))``, the
    PrototypeNet's prototype codes.

    Settings (``defaults`` = the paper's, all overridable):

    - ``eps`` 8/255 and ``bounded`` True: ``x' = clip(x + eps tanh(G_raw), 0, 1)`` (a deliberate deviation);
      ``bounded=False`` is the authors' unbounded generator, ``x' = (tanh(G_raw) + 1) / 2``, eps unused.
    - ``beta`` 50: weight of the reconstruction MSE (on [-1, 1] images). The paper uses 100 on FLICKR-25K and 50 on
      NUS-WIDE and MS-COCO; 50 is the default (two of the three), set ``beta=100`` for FLICKR-25K.
    - ``hash_weight`` 5, ``adv_weight`` 1: the other generator-loss weights.
    - ``proto_steps`` 30,000, ``proto_batch`` 64, ``proto_lr`` 1e-4: PrototypeNet training.
    - ``gan_epochs`` 100, ``gan_batch`` 24, ``gan_lr`` 1e-4, ``d_every`` 3 (one discriminator step per three
      generator steps), ``gan_steps_per_epoch`` None (a full pass over the training split; a number caps each
      epoch to that many batches, taken from that epoch's shuffled order).
    - ``proto_checkpoint_every`` / ``gan_checkpoint_every`` 1,000 steps: how often an interrupted training leaves
      a resumable partial checkpoint (the generator's holds both GAN networks and their Adam states: ~250 MB at
      56 px, ~400 MB at 224 px). Not part of the cache key: results do not depend on them.

    ``demo_defaults`` (fashion-mosaic / fashion-mnist, with the shared demo eps 32/255): the same networks, trained
    far less — PrototypeNet 500 steps at lr 1e-3; generator 10 epochs of 10 batches of 8 (100 steps, 800 images)
    at lr 1e-3 — and ``beta`` 5: with beta 50 a 100-step generator learns only to shrink its perturbation (hash
    loss stays at 1.0, t-MAP unchanged); in bounded mode the eps-ball, not beta, bounds the perturbation.
    Measured on 2 idle CPU cores (fashion-mosaic, 3,000 training images of 56 px, CSQ small_cnn 32 bits, clean
    mAP 0.80, 200 queries, seed 0): training 110 s (PrototypeNet 14 s, generator 96 s), then 35 images/s.
    t-MAP 0.31 -> 0.53 bounded at 32/255 (theory 0.94; PSNR 25.6 dB), 0.40 at 8/255 (PSNR 33.0 dB);
    unbounded 0.72 at PSNR 16.6 dB (mean L_inf 214/255: visibly altered images), 0.39 with beta 50 (PSNR 22.0 dB).
    The paper's 100 epochs (12,500 steps of 24 here) would take about 10 h on these cores: the demo shows the
    mechanism, not the paper's figures.

    Example::

        attack = ProSGANAttack(ctx, targeted=True)          # trains (or loads from RUN/cache) the networks
        x_adv = attack.attack(x, y, target_labels)           # one generator pass per batch
    """

    untargeted = False
    needs_targeted: ClassVar[frozenset[str]] = frozenset({"train_images", "train_codes", "train_labels", "db_labels"})
    defaults: ClassVar[dict[str, Any]] = {
        "eps": 8 / 255, "bounded": True, "beta": 50.0, "hash_weight": 5.0, "adv_weight": 1.0,
        "proto_steps": 30000, "proto_batch": 64, "proto_lr": 1e-4,
        "gan_epochs": 100, "gan_steps_per_epoch": None, "gan_batch": 24, "gan_lr": 1e-4, "d_every": 3,
        "proto_checkpoint_every": 1000, "gan_checkpoint_every": 1000,
    }
    demo_defaults: ClassVar[dict[str, Any]] = {
        "beta": 5.0, "proto_steps": 500, "proto_lr": 1e-3,
        "gan_epochs": 10, "gan_steps_per_epoch": 10, "gan_batch": 8, "gan_lr": 1e-3,
        "proto_checkpoint_every": 250, "gan_checkpoint_every": 50,
    }
    # Every part runs (PrototypeNet steps, a discriminator step, generator steps); nothing is learnt.
    fast_settings: ClassVar[dict[str, Any]] = {"proto_steps": 2, "gan_epochs": 1, "gan_steps_per_epoch": 1,
                                               "gan_batch": 8}

    def __init__(self, ctx: AttackContext, *, targeted: bool = True, **settings):
        super().__init__(ctx, targeted=targeted, **settings)
        self.settings = _checked_settings(self.settings)
        if ctx.train_split is None or len(ctx.train_split) == 0:
            raise ValueError("ProS-GAN trains its generator on the attacked model's training images: "
                             "the AttackContext needs a non-empty train_split")
        self.image_size = tuple(int(s) for s in ctx.train_split.__getitems__([0])[0].shape[-2:])
        self.training_seconds = {"prototype_net": 0.0, "generator": 0.0}  # 0: loaded from the cache
        self.training_log: dict[str, list] = {}
        self.prototype_net = self._fit_prototype_net()
        self.generator = self._fit_generator()

    # ---------------------------------------------------------------------------------------------- training

    def _prototype_key(self) -> dict:
        ctx = self.ctx
        return {"version": CACHE_VERSION, "seed": int(ctx.seed), **{k: self.settings[k] for k in _PROTOTYPE_KEYS},
                "labels": _labels_fingerprint(distinct_label_rows(ctx.db_labels), ctx.train_labels)}

    def _fit_prototype_net(self) -> PrototypeNet:
        ctx = self.ctx
        with seeded_init(ctx.seed, _INIT_PROTOTYPE):
            net = PrototypeNet(ctx.db_labels.shape[1], ctx.train_codes.shape[1])
        net.to(ctx.device)
        cache = CachedTraining(ctx.cache_dir, "prosgan-prototype", ctx.checkpoint_hash, self._prototype_key())
        state = cache.load_final()
        if state is None:
            state = train_prototype_net(net, ctx, self.settings, cache)
            cache.save_final(state)
            self.training_seconds["prototype_net"] = float(state["seconds"])
        net.load_state_dict(state["prototype_net"])
        self.training_log["prototype_net"] = list(state["log"])
        return net.eval().requires_grad_(False)

    def _fit_generator(self) -> ProSGenerator:
        ctx, o = self.ctx, self.settings
        with seeded_init(ctx.seed, _INIT_GENERATOR):
            generator = ProSGenerator(self.image_size)
        generator.to(ctx.device)
        key = {**self._prototype_key(), **{k: o[k] for k in _GAN_KEYS}, "image_size": list(self.image_size),
               "train_items": len(ctx.train_split)}
        if o["bounded"]:  # the unbounded generator does not depend on eps
            key["eps"] = o["eps"]
        cache = CachedTraining(ctx.cache_dir, "prosgan-generator", ctx.checkpoint_hash, key)
        state = cache.load_final()
        if state is None:
            with seeded_init(ctx.seed, _INIT_DISCRIMINATOR):
                discriminator = ProSDiscriminator(ctx.db_labels.shape[1], self.image_size).to(ctx.device)
            state = train_gan(generator, discriminator, self.prototype_net, ctx, o, cache)
            cache.save_final(state)
            self.training_seconds["generator"] = float(state["seconds"])
        generator.load_state_dict(state["generator"])
        self.training_log["generator"] = list(state["log"])
        return generator.eval().requires_grad_(False)

    # ---------------------------------------------------------------------------------------------- attack

    def theory_codes(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return sign_codes(self.prototype_net(labels.to(self.ctx.device).float())[1])

    # Its networks trained, the attack is one deterministic generator pass per batch: nothing to replay.
    replayable = True

    def replay(self, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None) -> None:
        return None

    def attack(self, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
        if target is None:
            raise ValueError("ProS-GAN is a targeted attack: pass target labels")
        if tuple(x.shape[-2:]) != self.image_size:
            raise ValueError(f"ProS-GAN's generator was trained on {self.image_size[0]}x{self.image_size[1]} images, "
                             f"got {x.shape[-2]}x{x.shape[-1]}: attack images of the training images' size")
        with torch.no_grad():
            feature = self.prototype_net(target.to(x.device).float())[0]
            raw = self.generator(2.0 * x - 1.0, feature)
            return adversarial_images(raw, x, float(self.settings["eps"]), bool(self.settings["bounded"]))
