"""THA (Wang et al., "Targeted Attack and Defense for Deep Hashing", SIGIR 2021), SPEC 7.2.

A PrototypeNet maps a label vector to a prototype code (MLP C -> 4096 -> 512 -> K, tanh). It is trained once per
attacked checkpoint (cached and resumable, see :mod:`saat.attacks.cache`) with a circle loss between the prototype
and the attacked model's training codes — items sharing a label are positives, the others negatives — plus a
quantisation term; then PGD pulls h(x + delta) toward sign(prototype(target)).

Circle loss (Sun et al., CVPR 2020) on cosine similarities s: ``softplus(logsumexp_n(g a_n (s_n - m)) +
logsumexp_p(-g a_p (s_p - 1 + m)))`` with ``a_p = [1 + m - s_p]_+``, ``a_n = [s_n + m]_+`` (no gradient),
margin m = 0.25 and scale g; the SPEC does not fix m, g or the quantisation weight, so they are settings.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from ..utils.progress import progress_bar
from .cache import CachedTraining
from .generators import PGD
from .methods import ATTACKS, AttackMethod
from .targets import distinct_label_rows


class PrototypeNet(nn.Module):
    """label (C) -> Linear(C, 4096) -> ReLU -> Linear(4096, 512) -> ReLU -> Linear(512, K) -> tanh."""

    def __init__(self, n_classes: int, bits: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(n_classes, 4096), nn.ReLU(inplace=True), nn.Linear(4096, 512),
                                 nn.ReLU(inplace=True), nn.Linear(512, bits))

    def forward(self, labels: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.net(labels))


def circle_loss(p: torch.Tensor, codes: torch.Tensor, positive: torch.Tensor, margin: float = 0.25,
                gamma: float = 1.0) -> torch.Tensor:
    """Mean circle loss of prototypes p (B, K) against codes (N, K); ``positive`` (B, N) 0/1."""
    s = (p / p.norm(dim=1, keepdim=True).clamp_min(1e-12)) @ (codes / codes.norm(dim=1, keepdim=True)).T
    a_p = (1 + margin - s).clamp_min(0).detach()
    a_n = (s + margin).clamp_min(0).detach()
    off = torch.full_like(s, -1e4)  # an empty side contributes exp(-1e4) = 0, not NaN
    logit_p = torch.where(positive > 0, -gamma * a_p * (s - 1 + margin), off)
    logit_n = torch.where(positive > 0, off, gamma * a_n * (s - margin))
    return nn.functional.softplus(torch.logsumexp(logit_n, 1) + torch.logsumexp(logit_p, 1)).mean()


def train_prototype_net(net: PrototypeNet, label_pool: torch.Tensor, codes: torch.Tensor,
                        code_labels: torch.Tensor, *, steps: int, batch: int, lr: float, margin: float,
                        gamma: float, quant_weight: float, seed: int, cache: CachedTraining,
                        progress: bool = False, save_every: int = 500) -> None:
    """Adam (betas 0.5, 0.999) on batches of label vectors drawn (seeded) from ``label_pool``; resumable."""
    opt = torch.optim.Adam(net.parameters(), lr=lr, betas=(0.5, 0.999))
    gen = torch.Generator().manual_seed(seed)
    start = 0
    partial = cache.load_partial()
    if partial is not None:
        net.load_state_dict(partial["net"])
        opt.load_state_dict(partial["optimizer"])
        gen.set_state(partial["generator"])
        start = int(partial["step"])
    bar = None
    if progress:

        bar = progress_bar(total=steps, initial=start, desc="THA prototype net", unit="step")
    net.train()
    for step in range(start, steps):
        pick = torch.randint(label_pool.shape[0], (batch,), generator=gen).to(label_pool.device)
        labels = label_pool[pick]
        p = net(labels)
        positive = ((labels @ code_labels.T) > 0).to(p.dtype)
        loss = circle_loss(p, codes, positive, margin, gamma)
        loss = loss + quant_weight * (torch.where(p >= 0, 1.0, -1.0) - p).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.4f}", refresh=False)
        if (step + 1) % save_every == 0 and step + 1 < steps:
            cache.save_partial({"net": net.state_dict(), "optimizer": opt.state_dict(),
                                "generator": gen.get_state(), "step": step + 1})
    if bar is not None:
        bar.close()
    net.eval()


@ATTACKS.register("tha")
class THAAttack(AttackMethod):
    """Targeted: PGD (random start, step 1/255, 100 iterations, tanh continuation) minimising
    ``-mean(h * sign(prototype(target)))``. Theory codes: the prototype codes."""

    name = "tha"
    untargeted = False
    defaults: ClassVar[dict[str, Any]] = {"eps": 8 / 255, "step": 1 / 255, "steps": 100, "alpha_schedule": True,
                                          "proto_steps": 5000, "proto_batch": 64, "proto_lr": 1e-4,
                                          "margin": 0.25, "gamma": 1.0, "quant_weight": 0.1}
    demo_defaults: ClassVar[dict[str, Any]] = {"step": 2 / 255, "steps": 50, "proto_steps": 1000,
                                               "proto_lr": 1e-3}

    def __init__(self, ctx, *, targeted: bool = True, **settings):
        super().__init__(ctx, targeted=targeted, **settings)
        o = self.opts
        self.procedure = PGD(ctx.model, eps=o["eps"], step=o["step"], steps=o["steps"],
                             alpha_schedule=o["alpha_schedule"], seed=ctx.seed)
        self.prototypes = self._prototype_net()

    def _prototype_net(self) -> PrototypeNet:
        o, ctx = self.opts, self.ctx
        keys = ("proto_steps", "proto_batch", "proto_lr", "margin", "gamma", "quant_weight")
        cache = CachedTraining(ctx.cache_dir, "tha-prototype", ctx.checkpoint_hash,
                               {**{k: o[k] for k in keys}, "seed": ctx.seed})
        torch.manual_seed(ctx.seed)  # the network's initial weights
        net = PrototypeNet(ctx.db_labels.shape[1], ctx.train_codes.shape[1]).to(ctx.device)
        done = cache.load_final()
        if done is not None:
            net.load_state_dict(done["net"])
        else:
            train_prototype_net(net, distinct_label_rows(ctx.db_labels), ctx.train_codes, ctx.train_labels,
                                steps=int(o["proto_steps"]), batch=int(o["proto_batch"]), lr=float(o["proto_lr"]),
                                margin=float(o["margin"]), gamma=float(o["gamma"]),
                                quant_weight=float(o["quant_weight"]), seed=ctx.seed, cache=cache,
                                progress=ctx.progress)
            cache.save_final({"net": net.state_dict()})
        net.eval().requires_grad_(False)
        return net

    def theory_codes(self, x, labels):
        with torch.no_grad():
            return torch.where(self.prototypes(labels) >= 0, 1.0, -1.0)

    def attack(self, x, y, target):
        code = self.theory_codes(x, target)
        return self.procedure(x, lambda h, _x: -(h * code).mean())
