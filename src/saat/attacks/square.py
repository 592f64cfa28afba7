"""Square: a score-based black-box attack on hashing models (docs/attacks.md#square-black-box).

The random search of Square Attack (Andriushchenko et al., ECCV 2020, the L-infinity version) with the hashing
objective of the white-box members, computed from the model's outputs only — never its gradients — so that a model
whose gradients are masked (a sign layer, a non-differentiable purifier, a saturated head) cannot look robust
against it.

Per query, with ``m`` the mainstay code of the query's labels (untargeted) or of the target labels (targeted) and
``s = h(x') * m`` bit by bit:

- the score is ``mean_k (s_k + 2) s_k`` (untargeted, minimised) or its negative (targeted). It is the SAAT attack's
  per-bit term without the saturation mask ``1[s > -0.5]`` (a device of the gradient attacks: with it the score of a
  model that outputs ±1 codes stays flat until every bit has flipped). ``(s + 2) s`` increases on [-1, 1], so on ±1
  codes the score is ``4 (K - d) / K - 1`` for the Hamming distance ``d`` to ``m``, and its smooth version on
  continuous outputs;
- the start: vertical stripes of ±eps (one random sign per column and channel), projected to [0, 1];
- each further model evaluation proposes a new square window of side ``s_i`` at a random position whose every pixel
  of a channel gets the same random ±eps, and keeps the proposal unless it raises the score (ties are kept: on ±1
  codes the score has long plateaus, and moving along them reaches the next bit flip). A proposal that would
  leave the image unchanged has its signs flipped (the original draws again until it differs);
- the side follows the query budget: ``s_i = round(sqrt(p_i H W))`` (at least 1 pixel, less than the image), with
  ``p_i`` the area fraction ``p_init`` (0.8) halved after 0.1 %, 0.5 %, 2 %, 5 %, 10 %, 20 %, 40 %, 60 % and 80 % of
  the budget (the original schedule's breakpoints, 10 to 8,000 of 10,000 queries, rescaled to ``steps``).

``steps`` is the budget: model evaluations per query, the start included. Every random draw depends only on the
batch's shape, so a sharded run can replay the batches before its own share.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch

from .base import Attack
from .mainstay import mainstay_codes
from .methods import ATTACKS, AttackContext, AttackMethod

# Fractions of the budget (of 10,000 in the original) after which the square's area fraction is halved.
_HALVING_POINTS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)


def square_fraction(i: int, steps: int, p_init: float) -> float:
    """The area fraction of the square proposed at model evaluation ``i`` of ``steps``."""
    t = int(i / max(steps, 1) * 10000)
    halvings = sum(t > point for point in _HALVING_POINTS)
    return p_init / 2 ** halvings


def hamming_score(h: torch.Tensor, m: torch.Tensor, targeted: bool) -> torch.Tensor:
    """Per-sample score to minimise: ``mean_k (s_k + 2) s_k`` with ``s = h * m`` (negated when targeted)."""
    s = h.float() * m
    score = ((s + 2) * s).mean(dim=1)
    return -score if targeted else score


class SquareSearch(Attack):
    """The random search itself, on any per-sample score ``score(h) -> (B,)`` of the model's outputs (no gradient).

    ``steps`` counts model evaluations per image (the start included); ``step`` is unused (the proposals are ±eps).
    """

    name = "square"
    default_random_start = True  # the stripes start; the search draws inside its iterations

    def __init__(self, *args, p_init: float = 0.8, **kwargs):
        super().__init__(*args, alpha_schedule=False, **kwargs)
        if not 0 < p_init <= 1:
            raise ValueError(f"p_init must be in (0, 1], got {p_init}")
        self.p_init = float(p_init)

    def settings_record(self) -> dict:
        record = super().settings_record()
        record.pop("step"), record.pop("alpha_schedule"), record.pop("random_start")
        return {**record, "p_init": self.p_init}

    # The draws of one batch, in order: the stripes, then per proposal one uniform row per image (its position
    # and its channels' signs). They depend on the batch's shape only.
    def _stripes(self, x: torch.Tensor) -> torch.Tensor:
        b, c, _, w = x.shape
        signs = torch.where(self.uniform(x[:, :, :1, :], 0.0, 1.0) < 0.5, -1.0, 1.0)
        return (signs * self.eps).expand(b, c, x.shape[2], w).to(x.dtype)

    def _proposal_draw(self, x: torch.Tensor) -> torch.Tensor:
        return self.uniform(x.new_empty((x.shape[0], 2 + x.shape[1])), 0.0, 1.0)  # (B, 2 + C)

    def replay(self, like: torch.Tensor) -> None:
        if self.eps > 0 and self.steps > 0:
            self._stripes(like)
            for _ in range(1, self.steps):
                self._proposal_draw(like)

    def perturb(self, x: torch.Tensor, objective) -> torch.Tensor:
        if self.eps == 0 or self.steps == 0:
            return x.clone()
        b, c, height, width = x.shape
        with torch.no_grad():
            delta = self._stripes(x)
            best = objective(self.model(self.project(x + delta, x)), None)
            rows = torch.arange(height, device=x.device)
            cols = torch.arange(width, device=x.device)
            for i in self.iterations(start=1):
                side = max(1, min(height - 1, width - 1, round(math.sqrt(
                    square_fraction(i, self.steps, self.p_init) * height * width))))
                u = self._proposal_draw(x)
                top = (u[:, 0] * (height - side + 1)).long().clamp_max(height - side)
                left = (u[:, 1] * (width - side + 1)).long().clamp_max(width - side)
                signs = torch.where(u[:, 2:] < 0.5, -1.0, 1.0).to(x.dtype)[:, :, None, None] * self.eps
                in_rows = (rows[None] >= top[:, None]) & (rows[None] < top[:, None] + side)
                in_cols = (cols[None] >= left[:, None]) & (cols[None] < left[:, None] + side)
                window = (in_rows[:, :, None] & in_cols[:, None, :])[:, None]  # (B, 1, H, W)
                current = self.project(x + delta, x)
                proposal = torch.where(window, signs, delta)
                unchanged = ((self.project(x + proposal, x) != current) & window).flatten(1).any(1).logical_not()
                proposal = torch.where(window & unchanged[:, None, None, None], -signs, proposal)
                score = objective(self.model(self.project(x + proposal, x)), None)
                better = score <= best
                delta = torch.where(better[:, None, None, None], proposal, delta)
                best = torch.where(better, score, best)
        return self.project(x + delta, x)

    def iterations(self, start: int = 0):
        from ..utils.progress import progress_bar

        return iter(progress_bar(range(start, self.steps), desc=self.name, unit="eval", disable=not self.progress))


@ATTACKS.register("square")
class SquareAttack(AttackMethod):
    """Square (score-based black-box): random search of square ±eps patches that lowers the Hamming-type score of
    the model's outputs against the mainstay code (away from the query's, untargeted; toward the target labels',
    targeted). Uses the model's outputs only — it works on models that return ±1 codes or hide their gradients.
    ``steps`` is its budget of model evaluations per query."""

    uses_gradients = False
    needs_untargeted: ClassVar[frozenset[str]] = frozenset({"train_codes", "train_labels"})
    needs_targeted: ClassVar[frozenset[str]] = frozenset({"train_codes", "train_labels"})
    defaults: ClassVar[dict[str, Any]] = {"eps": 8 / 255, "steps": 1000, "p_init": 0.8}
    fast_settings: ClassVar[dict[str, Any]] = {"steps": 5}

    def __init__(self, ctx: AttackContext, *, targeted: bool = False, **settings):
        super().__init__(ctx, targeted=targeted, **settings)
        o = self.settings
        self.crafter = SquareSearch(ctx.model, eps=o["eps"], step=0.0, steps=o["steps"], seed=ctx.seed,
                                    p_init=o["p_init"], progress=ctx.progress)

    def settings_record(self) -> dict:
        return self.crafter.settings_record()

    def guide(self, labels: torch.Tensor) -> torch.Tensor:
        return mainstay_codes(labels, self.ctx.train_codes, self.ctx.train_labels)

    def theory_codes(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        m = self.guide(labels)
        return m if self.is_targeted else -m

    def attack(self, x, y, target):
        m = self.guide(target if self.is_targeted else y)
        return self.crafter(x, lambda h, _x: hamming_score(h, m, self.is_targeted))
