"""DHTA (Bai et al., "Targeted Attack for Deep Hashing based Retrieval", ECCV 2020) and its one-item variant P2P.

The anchor code of a target label is the sign of the sum of the database codes of ``anchors`` items (9 for DHTA,
1 for P2P) whose label vector equals the target label, drawn with the attack's seed; the attack minimises
``-mean(h * anchor)`` with PGD without random start, step 1/255, 2,000 iterations, under the tanh continuation
schedule as in the authors' code (docs/baselines.md#baseline-attacks-and-defenses-as-the-paper-ran-them).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from ..utils.codes import sign_codes
from ..utils.rng import seeded_generator
from .generators import BIM
from .methods import ATTACKS, AttackMethod


def anchor_codes(targets: torch.Tensor, db_codes: torch.Tensor, db_labels: torch.Tensor, n_items: int,
                 generator: torch.Generator) -> torch.Tensor:
    """sign(sum of the codes of up to ``n_items`` database items whose label equals each target), sign(0) = +1.

    Items are drawn without replacement from all exact matches (all of them when fewer exist). A target that no
    database item carries exactly falls back to the items sharing the most classes with it.
    """
    out = torch.empty(targets.shape[0], db_codes.shape[1], device=db_codes.device)
    shared = targets @ db_labels.T  # (B, M) classes in common
    exact = (shared == targets.sum(1, keepdim=True)) & (shared == db_labels.sum(1)[None, :])
    for i in range(targets.shape[0]):
        pool = torch.nonzero(exact[i]).flatten()
        if pool.numel() == 0:
            pool = torch.nonzero(shared[i] == shared[i].max()).flatten()
        order = torch.randperm(pool.numel(), generator=generator)[:n_items].to(pool.device)
        total = db_codes[pool[order]].sum(0)
        out[i] = sign_codes(total)
    return out


class _AnchorAttack(AttackMethod):
    untargeted = False
    needs_targeted: ClassVar[frozenset[str]] = frozenset({"db_codes", "db_labels"})
    defaults: ClassVar[dict[str, Any]] = {"eps": 8 / 255, "step": 1 / 255, "steps": 2000, "anchors": 9,
                                          "alpha_schedule": True}
    demo_defaults: ClassVar[dict[str, Any]] = {"step": 2 / 255, "steps": 200}
    fast_settings: ClassVar[dict[str, Any]] = {"step": 4 / 255, "steps": 5}

    def __init__(self, ctx, *, targeted: bool = True, **settings):
        super().__init__(ctx, targeted=targeted, **settings)
        o = self.settings
        self.crafter = BIM(ctx.model, eps=o["eps"], step=o["step"], steps=o["steps"],
                             alpha_schedule=o["alpha_schedule"], seed=ctx.seed)
        self._anchor_generator = seeded_generator(ctx.seed)
        self._anchors: dict[tuple, torch.Tensor] = {}

    def anchors(self, targets: torch.Tensor) -> torch.Tensor:
        """Anchor code per target row; one draw per distinct target label, reused for every query with it."""
        rows = []
        for t in targets:
            key = tuple(int(v) for v in t.tolist())
            if key not in self._anchors:
                self._anchors[key] = anchor_codes(t[None], self.ctx.db_codes, self.ctx.db_labels,
                                                  int(self.settings["anchors"]), self._anchor_generator)[0]
            rows.append(self._anchors[key])
        return torch.stack(rows)

    def theory_codes(self, x, labels):
        return self.anchors(labels)

    def attack(self, x, y, target):
        anchor = self.anchors(target)
        return self.crafter(x, lambda h, _x: -(h * anchor).mean())

    def replay(self, x, y, target):
        self.anchors(target)  # the anchor draw of a target label first seen in this batch
        super().replay(x, y, target)


@ATTACKS.register("dhta")
class DHTAAttack(_AnchorAttack):
    """DHTA: anchor = majority vote (sign of the sum) of 9 database items carrying the target label."""


@ATTACKS.register("p2p")
class P2PAttack(_AnchorAttack):
    """P2P (point-to-point, the DHTA paper's baseline): the anchor is the code of one database item carrying the
    target label."""

    defaults: ClassVar[dict[str, Any]] = {**_AnchorAttack.defaults, "anchors": 1}
