"""HAG (Yang et al., "Adversarial Examples for Hamming Space Search", IEEE T-Cybernetics 2018),
docs/baselines.md#baseline-attacks-and-defenses-as-the-paper-ran-them."""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from ..utils.codes import sign_codes
from .base import OptimizerAttack
from .methods import ATTACKS, AttackMethod


def hag_loss(h_adv: torch.Tensor, h_benign: torch.Tensor) -> torch.Tensor:
    """``mean_i((sum_k M ĥ h / (sum_k M + 1e-8) + 1)^2) + mean_i((mean_k M ĥ)^2)`` with
    ``M = 1[|ĥ - sign(h)| < 1.5]``: only bits not yet pushed past -0.5 on the far side keep pulling (the mask
    carries no gradient); the second term keeps the masked adversarial outputs balanced. Both terms use the mask,
    as the authors' code does (docs/baselines.md#baseline-attacks-and-defenses-as-the-paper-ran-them, corrected
    2026-12-02)."""
    target = sign_codes(h_benign)
    mask = ((h_adv - target).abs() < 1.5).to(h_adv.dtype).detach()
    agreement = (mask * h_adv * h_benign).sum(dim=1) / (mask.sum(dim=1) + 1e-8)
    return ((agreement + 1) ** 2).mean() + ((mask * h_adv).mean(dim=1) ** 2).mean()


@ATTACKS.register("hag")
class HAGAttack(AttackMethod):
    """Untargeted: optimise x̂ (from x) with SGD lr 100, momentum 0.9, 2,000 iterations, the tanh continuation
    schedule, projecting onto the eps-ball and [0, 1] after each step, to minimise :func:`hag_loss` against the
    benign output h = f(x) (alpha = 1). Theory codes: -sign(h), every bit flipped."""

    targeted = False
    seed_free = True  # starts at the query itself
    defaults: ClassVar[dict[str, Any]] = {"eps": 8 / 255, "steps": 2000, "lr": 100.0, "momentum": 0.9,
                                          "alpha_schedule": True}
    demo_defaults: ClassVar[dict[str, Any]] = {"steps": 300}
    fast_settings: ClassVar[dict[str, Any]] = {"steps": 10}

    def __init__(self, ctx, *, targeted: bool = False, **settings):
        super().__init__(ctx, targeted=targeted, **settings)
        o = self.settings
        self.crafter = OptimizerAttack(ctx.model, eps=o["eps"], steps=o["steps"], optimizer="sgd", lr=o["lr"],
                                         momentum=o["momentum"], alpha_schedule=o["alpha_schedule"], seed=ctx.seed)

    def theory_codes(self, x, labels):
        return -sign_codes(self.benign_outputs(x))

    def attack(self, x, y, target):
        h = self.benign_outputs(x)
        return self.crafter(x, lambda h_adv, _x: hag_loss(h_adv, h))
