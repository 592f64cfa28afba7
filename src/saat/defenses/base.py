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

from ..utils.registry import Registry

DEFENSES = Registry("defense")


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
        unknown = sorted(set(settings) - set(self.defaults))
        if unknown:
            raise ValueError(f"defense {self.name!r} has no setting(s) {', '.join(unknown)}; "
                             f"its settings: {', '.join(sorted(self.defaults))}")
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

    # --- state ------------------------------------------------------------------------------------------------

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass

    def settings_record(self) -> dict:
        return dict(self.settings)
