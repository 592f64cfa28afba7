"""THA (Wang et al., "Targeted Attack and Defense for Deep Hashing", SIGIR 2021),
docs/baselines.md#baseline-attacks-and-defenses-as-the-paper-ran-them.

A PrototypeNet (:mod:`saat.attacks.prototype`) maps a label vector to a prototype code. It is trained once per
attacked checkpoint (cached and resumable, see :mod:`saat.attacks.cache`) with the authors' objective against the
attacked model's training codes; then PGD pulls h(x + delta) toward sign(prototype(target)).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from ..utils.codes import sign_codes
from ..utils.rng import seeded_init
from .cache import CachedTraining
from .generators import PGD
from .methods import ATTACKS, AttackMethod
from .prototype import PrototypeNet, train_prototype_net
from .targets import distinct_label_rows

# Bump when a change makes cached PrototypeNets stale. 2: the authors' objective (was: a per-row circle loss).
# 3: the authors' architecture (was: a ReLU between the 512-unit layer and the hash layer).
CACHE_VERSION = 3


@ATTACKS.register("tha")
class THAAttack(AttackMethod):
    """Targeted: PGD (random start, step 1/255, 100 iterations, tanh continuation) minimising
    ``-mean(h * sign(prototype(target)))``. The PrototypeNet: 30,000 Adam steps (lr 1e-4, betas 0.5, 0.999, x 0.1 at
    50 % and 75 %) of 32 label vectors drawn from the distinct database label vectors. Theory codes: the
    prototype codes."""

    untargeted = False
    needs_targeted: ClassVar[frozenset[str]] = frozenset({"train_codes", "train_labels", "db_labels"})
    defaults: ClassVar[dict[str, Any]] = {"eps": 8 / 255, "step": 1 / 255, "steps": 100, "alpha_schedule": True,
                                          "proto_steps": 30000, "proto_batch": 32, "proto_lr": 1e-4,
                                          "proto_lr_milestones": (0.5, 0.75), "gamma": 1.0, "quant_weight": 1e-4}
    # The same objective and schedule shape, 30x fewer PrototypeNet steps at a 10x larger learning rate.
    demo_defaults: ClassVar[dict[str, Any]] = {"step": 2 / 255, "steps": 50, "proto_steps": 1000,
                                               "proto_lr": 1e-3}
    fast_settings: ClassVar[dict[str, Any]] = {"step": 4 / 255, "steps": 5, "proto_steps": 5, "proto_lr": 1e-3}

    def __init__(self, ctx, *, targeted: bool = True, **settings):
        super().__init__(ctx, targeted=targeted, **settings)
        o = self.settings
        self.crafter = PGD(ctx.model, eps=o["eps"], step=o["step"], steps=o["steps"],
                             alpha_schedule=o["alpha_schedule"], seed=ctx.seed)
        self.prototypes = self._prototype_net()

    def _prototype_net(self) -> PrototypeNet:
        o, ctx = self.settings, self.ctx
        keys = ("proto_steps", "proto_batch", "proto_lr", "proto_lr_milestones", "gamma", "quant_weight")
        cache = CachedTraining(ctx.cache_dir, "tha-prototype", ctx.checkpoint_hash,
                               {**{k: o[k] for k in keys}, "seed": ctx.seed, "version": CACHE_VERSION})
        with seeded_init(ctx.seed):  # the network's initial weights
            net = PrototypeNet(ctx.db_labels.shape[1], ctx.train_codes.shape[1])
        net = net.to(ctx.device, ctx.train_codes.dtype)
        done = cache.load_final()
        if done is not None:
            net.load_state_dict(done["net"])
        else:
            train_prototype_net(net, distinct_label_rows(ctx.db_labels), ctx.train_codes, ctx.train_labels,
                                steps=int(o["proto_steps"]), batch=int(o["proto_batch"]), lr=float(o["proto_lr"]),
                                milestones=tuple(o["proto_lr_milestones"]), gamma=float(o["gamma"]),
                                quant_weight=float(o["quant_weight"]), seed=ctx.seed, cache=cache,
                                progress=ctx.progress)
            cache.save_final({"net": net.state_dict()})
        net.eval().requires_grad_(False)
        return net

    def theory_codes(self, x, labels):
        with torch.no_grad():
            return sign_codes(self.prototypes(labels))

    def attack(self, x, y, target):
        code = self.theory_codes(x, target)
        return self.crafter(x, lambda h, _x: -(h * code).mean())
