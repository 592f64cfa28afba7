"""Adversarial-training defenses on one minimax loop (docs/defenses.md#the-shared-training-loop).

A defense is a small object that says how to craft adversarial examples for a batch and what to add to the
benign hashing loss; the loop (:func:`saat.pipelines.loop.run_epoch`) and the run directory handling
(:mod:`saat.pipelines.defend`) are shared. Each defense declares its paper settings (``defaults``) and the demo
preset's changes (``demo_defaults``), and its optimiser and learning-rate schedule.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from ..attacks.generators import PGD
from ..attacks.losses import simple_loss
from ..config import check_settings
from ..utils.codes import sign_codes
from ..utils.device import autocast, with_amp
from ..utils.dist import set_rows
from ..utils.registry import Registry

DEFENSES = Registry("defense")

# The defenses' random streams, at fixed offsets from the run seed (their derivation since the first release, kept
# so that seeded runs reproduce): PGD random starts, CgAT's augmentation, ATRDH's PrototypeNet initial weights and
# its target draws.
CRAFTER_STREAM, AUGMENT_STREAM, PROTOTYPE_INIT_STREAM, TARGET_STREAM = 0, 1, 2, 3


@dataclass
class DefenseContext:
    """What a defense trains with: the model, its hashing loss, the encoded training set."""

    model: torch.nn.Module
    method: torch.nn.Module  # the original hashing loss (any of the seven): the benign term
    device: torch.device
    train_codes: torch.Tensor  # (N, K) +-1 float: sign(f(X_train)) of the model before defense training
    train_outputs: torch.Tensor  # (N, K) continuous f(X_train) (eval mode), same moment
    train_labels: torch.Tensor  # (N, C) 0/1 float
    seed: int = 0
    amp: bool = False
    db_labels: torch.Tensor | None = None  # (M, C) database labels: where ATRDH draws target labels (else: train)
    total_iterations: int = 0  # of the whole training, for schedules a defense keeps itself (0: unknown, no decay)


class Defense:
    """Base of the adversarial-training defenses.

    Subclasses set ``name``, ``defaults`` / ``demo_defaults`` and implement :meth:`step`; they may keep state
    (memories, auxiliary networks) that :meth:`state_dict` / :meth:`load_state_dict` save for resuming.
    """

    name = "defense"
    defaults: ClassVar[dict[str, Any]] = {}
    demo_defaults: ClassVar[dict[str, Any]] = {}

    def __init__(self, ctx: DefenseContext, **settings):
        check_settings(settings, self.defaults, f"defense {self.name!r}")
        self.ctx = ctx
        self.settings: dict[str, Any] = {**self.defaults, **settings}

    # --- what the shared loop needs -------------------------------------------------------------------------

    def build_optimizer(self, params) -> torch.optim.Optimizer:
        o = self.settings
        if o["optimizer"] == "sgd":
            return torch.optim.SGD(params, lr=o["lr"], momentum=o.get("momentum", 0.0),
                                   weight_decay=o.get("weight_decay", 0.0))
        return torch.optim.Adam(params, lr=o["lr"], betas=tuple(o.get("betas", (0.9, 0.999))),
                                weight_decay=o.get("weight_decay", 0.0))

    def lr_milestone_fractions(self) -> tuple[float, ...]:
        """Fractions of all iterations at which the lr is multiplied by 0.1 (stepped per iteration)."""
        return tuple(self.settings.get("lr_milestones", ()))

    def step(self, x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor, it: int) -> dict:
        """Loss terms of one batch (``"loss"`` is back-propagated; the others are logged)."""
        raise NotImplementedError

    def augment(self, x: torch.Tensor) -> torch.Tensor:
        """Training-image augmentation applied before crafting (none by default)."""
        return x

    # --- what the defenses share ------------------------------------------------------------------------------

    def make_crafter(self, eval_mode: bool = True) -> PGD:
        """The inner maximisation of every defense here: PGD from a random start at alpha = 1 (7 steps are too few
        for a continuation schedule, and the authors' defenses use none), seeded with the run seed; under AMP its
        passes run in mixed precision like the outer ones (the objective on float32 outputs)."""
        s = self.settings
        model = with_amp(self.ctx.model, self.ctx.device, self.ctx.amp)
        return PGD(model, eps=s["eps"], step=s["step"], steps=s["steps"], alpha_schedule=False,
                   random_start=True, seed=self.ctx.seed + CRAFTER_STREAM, eval_mode=eval_mode)

    def outputs(self, x: torch.Tensor) -> torch.Tensor:
        """h = f(x) in float32, under autocast when the run uses AMP."""
        with autocast(self.ctx.device, self.ctx.amp):
            return self.ctx.model(x).float()

    # --- state ------------------------------------------------------------------------------------------------

    def state_dict(self) -> dict:
        """The training-set memory and the crafter's random state (subclasses add theirs)."""
        return {"memory": self.memory.detach().cpu(), "crafter_generator": self.crafter.rng.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.memory.copy_(state["memory"].to(self.memory.device))
        self.crafter.rng.load_state_dict(state["crafter_generator"])

    def settings_record(self) -> dict:
        return dict(self.settings)


class GuidedDefense(Defense):
    """The SAAT loop shape, shared by SAAT and CgAT. Per batch (x, y, idx):

    1. a guide code per image from the +-1 code memory of the training set (SAAT: the mainstay code, CgAT: the
       center code; :meth:`guide`);
    2. PGD minimising ``mean(h * guide)``, i.e. maximising the Hamming distance to the guide;
    3. ``h_ben = f(x)``, ``h_adv = f(x_adv)``; the memory's rows of the batch take ``sign(h_ben)``; the guide is
       recomputed from the refreshed memory;
    4. ``L = L_hash(h_ben, y, idx) + total`` of :meth:`adversarial_terms` (h_adv, guide).
    """

    def guide(self, y: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def adversarial_terms(self, h_adv: torch.Tensor, guide: torch.Tensor) -> dict:
        """``{"total": added to the loss, <name>: logged term, ...}``."""
        raise NotImplementedError

    def step(self, x, y, idx, it):
        guide = self.guide(y)
        x_adv = self.crafter(x, lambda h, _x: simple_loss(h, guide))
        h_ben, h_adv = self.outputs(x), self.outputs(x_adv)
        with torch.no_grad():
            set_rows(idx, (self.memory, sign_codes(h_ben.detach())))  # under torchrun: every rank's rows
        guide = self.guide(y)
        hash_term = self.ctx.method(h_ben, y, idx)
        terms = self.adversarial_terms(h_adv, guide)
        return {"loss": hash_term + terms.pop("total"), "hash": hash_term, **terms}
