"""SDHA (Lu et al., "Smart Adversarial Attack on Deep Hashing Based Image Retrieval", ICMR 2021),
docs/baselines.md#baseline-attacks-and-defenses-as-the-paper-ran-them."""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from ..utils.codes import sign_codes
from .base import OptimizerAttack
from .methods import ATTACKS, AttackMethod


def _positives(labels: torch.Tensor, train_labels: torch.Tensor) -> torch.Tensor:
    """(B, N) 0/1: training items sharing at least one label with each row of ``labels``."""
    return ((labels @ train_labels.T) > 0).to(labels.dtype)


def _per_bit_terms(q: torch.Tensor, targeted: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """The summand of ``D`` for one bit, as a function of q (B, K), at ``r = +1`` and at ``r = -1``."""
    terms = []
    for r in (1.0, -1.0):
        diff = (q - r).abs()
        if targeted:
            terms.append(0.5 * diff * torch.sigmoid(-10 * r * q))
        else:
            s = torch.sigmoid(5 * r * q)
            terms.append(0.5 * diff * s + (1 - s))
    return terms[0], terms[1]


def sdha_surrogate(q: torch.Tensor, codes: torch.Tensor, positive: torch.Tensor, targeted: bool) -> torch.Tensor:
    """SDHA's weighted distance between outputs q (B, K) and the positives' codes (N, K), averaged over each row's
    positives (rows without positives give 0), then over the batch.

    untargeted: ``D = 1/2 sum_k |q - r| sigmoid(5 q r) + sum_k (1 - sigmoid(5 q r))``, weight
    ``(d_H(sign q, r) + 1e-8)^-0.5`` (to be maximised); targeted: ``D = 1/2 sum_k |q - r| sigmoid(-10 q r)``,
    weight ``d_H^0.3`` (to be minimised). Weights carry no gradient. All pairs of a batch at once.

    ``codes`` must hold only +1 and -1 (the callers' training codes and sign codes; :class:`SDHAAttack` checks
    once per attack call). Then each bit's summand ``g(q_k, r_k)`` is affine in ``r_k``:
    ``g(q_k, r_k) = (g(q_k, +1) + g(q_k, -1)) / 2 + r_k (g(q_k, +1) - g(q_k, -1)) / 2``, so
    ``D(q_i, r_n) = sum_k (g+ + g-)_ik / 2 + sum_k (g+ - g-)_ik r_nk / 2``: a (B, 1) row sum plus one (B, K) @ (K, N)
    product. No (B, N, K) tensor is formed, forward or backward.
    """
    plus, minus = _per_bit_terms(q, targeted)  # (B, K) each: g(q, +1), g(q, -1)
    dist = (0.5 * (plus + minus)).sum(1, keepdim=True) + (0.5 * (plus - minus)) @ codes.T  # (B, N)
    return weighted_mean(dist, q, codes, positive, targeted)


def weighted_mean(dist: torch.Tensor, q: torch.Tensor, codes: torch.Tensor, positive: torch.Tensor,
                  targeted: bool) -> torch.Tensor:
    """The surrogate from the pair distances ``dist`` (B, N): each weighted by SDHA's Hamming weight (no gradient),
    averaged over each row's positives (0 without any), then over the batch."""
    with torch.no_grad():
        hamming = 0.5 * (q.shape[1] - sign_codes(q) @ codes.T)
        weight = hamming.pow(0.3) if targeted else (hamming + 1e-8).pow(-0.5)
    per_row = (positive * weight * dist).sum(1) / positive.sum(1).clamp_min(1)
    return per_row.mean()


@ATTACKS.register("sdha")
class SDHAAttack(AttackMethod):
    """Optimise x̂ (from x) with Adam lr 0.01 for 1,500 iterations under the tanh continuation schedule, projecting
    onto the eps-ball and [0, 1]: ``MSE(x̂, x) -/+ (25/K) surrogate`` with the training codes sharing a label with
    the query (untargeted, surrogate maximised) or the target (targeted, minimised). An untargeted query without
    such a training item takes its own benign code sign(f(x)) as its one positive, so it is still pushed away
    from where it is (the authors' rule). No theory codes."""

    seed_free = True  # starts at the query itself
    # untargeted: a query without training positives takes its own code, so the training set is optional there
    needs_targeted: ClassVar[frozenset[str]] = frozenset({"train_codes", "train_labels"})
    defaults: ClassVar[dict[str, Any]] = {"eps": 8 / 255, "steps": 1500, "lr": 0.01, "weight": 25.0,
                                          "alpha_schedule": True}
    demo_defaults: ClassVar[dict[str, Any]] = {"steps": 300}
    fast_settings: ClassVar[dict[str, Any]] = {"steps": 15}

    def __init__(self, ctx, *, targeted: bool = False, **settings):
        super().__init__(ctx, targeted=targeted, **settings)
        o = self.settings
        self.crafter = OptimizerAttack(ctx.model, eps=o["eps"], steps=o["steps"], optimizer="adam", lr=o["lr"],
                                         alpha_schedule=o["alpha_schedule"], seed=ctx.seed)

    def positives(self, x: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(codes (N', K), positive (B, N')): the training codes and which of them are each row's positives. For an
        untargeted attack, rows without a training positive get their own benign code appended as their positive."""
        codes = self.ctx.train_codes
        if not bool(((codes == 1) | (codes == -1)).all()):  # sdha_surrogate's precondition, once per attack call
            raise ValueError("the SDHA attack needs training codes of +1 and -1 only (hash codes, not continuous "
                             "outputs); binarise them with saat.utils.codes.sign_codes")
        positive = _positives(labels, self.ctx.train_labels)
        lonely = positive.sum(1) == 0
        if self.is_targeted or not bool(lonely.any()):
            return codes, positive
        own = sign_codes(self.benign_outputs(x[lonely]))
        extra = torch.zeros(x.shape[0], own.shape[0], dtype=positive.dtype, device=positive.device)
        extra[torch.nonzero(lonely).flatten(), torch.arange(own.shape[0], device=positive.device)] = 1.0
        return torch.cat([codes, own]), torch.cat([positive, extra], dim=1)

    def attack(self, x, y, target):
        codes, positive = self.positives(x, target if self.is_targeted else y)
        scale = self.settings["weight"] / codes.shape[1]
        sign = 1.0 if self.is_targeted else -1.0

        def objective(h, x_adv):
            return torch.mean((x_adv - x) ** 2) + sign * scale * sdha_surrogate(h, codes, positive, self.is_targeted)

        return self.crafter(x, objective)
