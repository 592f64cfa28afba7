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

from ..attacks.losses import simple_loss
from ..config import check_settings
from ..utils.codes import sign_codes
from ..utils.device import autocast, with_amp
from ..utils.dist import set_rows
from ..utils.registry import Registry
from .inner import INNER_MAXIMISERS, FreeInner, make_inner

DEFENSES = Registry("defense")

# The defenses' random streams, at fixed offsets from the run seed (their derivation since the first release, kept
# so that seeded runs reproduce): PGD random starts, CgAT's augmentation, ATRDH's PrototypeNet initial weights and
# its target draws.
CRAFTER_STREAM, AUGMENT_STREAM, PROTOTYPE_INIT_STREAM, TARGET_STREAM = 0, 1, 2, 3
WATCH_STREAM = 4  # the catastrophic-overfitting watch's batch, starts and targets (it never touches the others)

# The fast-training settings every minimax defense has (docs/defenses.md#fast-adversarial-training): the inner
# maximiser (the paper's PGD by default), free training's replays, and the catastrophic-overfitting watch ("auto":
# on for the single-step maximisers and free training, off for PGD).
FAST_TRAINING_DEFAULTS: dict[str, Any] = {
    "inner": "pgd", "replays": 4, "watch": "auto", "watch_every": 0, "watch_size": 64, "collapse_threshold": 0.1,
    "on_collapse": "warn",
}
ON_COLLAPSE = ("warn", "stop", "fallback")
WATCH_MODES = ("auto", "on", "off")


def check_fast_settings(settings: dict, what: str) -> None:
    """One ValueError naming every fast-training setting out of its range."""
    problems = []
    if settings["inner"] not in INNER_MAXIMISERS:
        problems.append(f"inner must be one of {', '.join(INNER_MAXIMISERS)}, got {settings['inner']!r}")
    if int(settings["replays"]) < 1:
        problems.append(f"replays must be at least 1, got {settings['replays']}")
    if settings["watch"] not in WATCH_MODES:
        problems.append(f"watch must be one of {', '.join(WATCH_MODES)}, got {settings['watch']!r}")
    if int(settings["watch_every"]) < 0:
        problems.append(f"watch_every must be 0 (epoch ends only) or a positive number of steps, got "
                        f"{settings['watch_every']}")
    if int(settings["watch_size"]) < 1:
        problems.append(f"watch_size must be at least 1, got {settings['watch_size']}")
    if not float(settings["collapse_threshold"]) > 0:
        problems.append(f"collapse_threshold must be positive, got {settings['collapse_threshold']}")
    if settings["on_collapse"] not in ON_COLLAPSE:
        problems.append(f"on_collapse must be one of {', '.join(ON_COLLAPSE)}, got {settings['on_collapse']!r}")
    if problems:
        raise ValueError(f"{what}: " + "; ".join(problems))


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
    # Free training: whether the carried perturbation follows the training loss's gradient (True when the loss's
    # adversarial term is the negated inner objective) or its own inner objective's (inner.FreeInner).
    free_follows_loss: ClassVar[bool] = True

    def __init__(self, ctx: DefenseContext, **settings):
        check_settings(settings, self.defaults, f"defense {self.name!r}")
        self.ctx = ctx
        self.settings: dict[str, Any] = {**self.defaults, **settings}
        if "inner" in self.settings:
            check_fast_settings(self.settings, f"defense {self.name!r}")
        # the inner maximiser in use: the setting's, until a catastrophic-overfitting fallback switches it to PGD
        self.inner = self.settings.get("inner", "pgd")

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

    def make_crafter(self, eval_mode: bool = True):
        """The inner maximisation of every defense here (:mod:`saat.defenses.inner`): by default PGD from a random
        start at alpha = 1 (7 steps are too few for a continuation schedule, and the authors' defenses use none),
        seeded with the run seed; under AMP its passes run in mixed precision like the outer ones (the objective on
        float32 outputs)."""
        s = self.settings
        self._crafter_eval_mode = eval_mode
        model = with_amp(self.ctx.model, self.ctx.device, self.ctx.amp)
        return make_inner(self.inner, model, eps=s["eps"], step=s["step"], steps=s["steps"],
                          seed=self.ctx.seed + CRAFTER_STREAM, eval_mode=eval_mode,
                          follows_loss=self.free_follows_loss)

    # --- fast training ------------------------------------------------------------------------------------

    @property
    def replays(self) -> int:
        """How many times the loop replays each batch (free training's M; 1 otherwise)."""
        return int(self.settings["replays"]) if self.settings.get("inner") == "free" else 1

    @property
    def watched(self) -> bool:
        """Whether the catastrophic-overfitting watch runs (``watch``: on, off, or auto = not PGD)."""
        mode = self.settings.get("watch", "off")
        return mode == "on" or (mode == "auto" and self.settings.get("inner", "pgd") != "pgd")

    def switch_inner(self, name: str) -> None:
        """Use another inner maximiser from now on (the catastrophic-overfitting fallback to PGD)."""
        self.inner = name
        self.crafter = self.make_crafter(eval_mode=self._crafter_eval_mode)

    def observe(self, h_adv: torch.Tensor) -> None:
        """The step's adversarial outputs, for a crafter that follows the training (free training)."""
        observe = getattr(self.crafter, "observe", None)
        if observe is not None:
            observe(h_adv)

    def after_backward(self) -> None:
        """Called by the loop after each backward pass, before the optimiser steps (free training's update)."""
        after = getattr(self.crafter, "after_backward", None)
        if after is not None:
            after()

    def watch_objective(self, y: torch.Tensor, targets: torch.Tensor | None):
        """The inner objective for the watch's fixed batch (labels ``y``; ``targets``: the watch's fixed target
        labels, for a defense whose inner attack is targeted)."""
        raise NotImplementedError

    def watch_database(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The +-1 codes and labels the watch ranks against: the defense's training-set code memory."""
        return self.memory, self.ctx.train_labels

    def outputs(self, x: torch.Tensor) -> torch.Tensor:
        """h = f(x) in float32, under autocast when the run uses AMP."""
        with autocast(self.ctx.device, self.ctx.amp):
            return self.ctx.model(x).float()

    # --- state ------------------------------------------------------------------------------------------------

    def state_dict(self) -> dict:
        """The training-set memory and the crafter's random state (subclasses add theirs); with fast training the
        inner maximiser in use and free training's carried perturbation."""
        state = {"memory": self.memory.detach().cpu(), "crafter_generator": self.crafter.rng.state_dict()}
        if "inner" in self.settings:
            state["inner"] = self.inner
            if isinstance(self.crafter, FreeInner):
                state["crafter_state"] = self.crafter.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        self.memory.copy_(state["memory"].to(self.memory.device))
        if state.get("inner", self.inner) != self.inner:  # the run had fallen back to PGD
            self.switch_inner(state["inner"])
        self.crafter.rng.load_state_dict(state["crafter_generator"])
        if "crafter_state" in state and isinstance(self.crafter, FreeInner):
            self.crafter.load_state_dict(state["crafter_state"], self.ctx.device)

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

    def watch_objective(self, y, targets):
        guide = self.guide(y)
        return lambda h, _x: simple_loss(h, guide)

    def adversarial_terms(self, h_adv: torch.Tensor, guide: torch.Tensor) -> dict:
        """``{"total": added to the loss, <name>: logged term, ...}``."""
        raise NotImplementedError

    def step(self, x, y, idx, it):
        guide = self.guide(y)
        x_adv = self.crafter(x, lambda h, _x: simple_loss(h, guide))
        h_ben, h_adv = self.outputs(x), self.outputs(x_adv)
        self.observe(h_adv)
        with torch.no_grad():
            set_rows(idx, (self.memory, sign_codes(h_ben.detach())))  # under torchrun: every rank's rows
        guide = self.guide(y)
        hash_term = self.ctx.method(h_ben, y, idx)
        terms = self.adversarial_terms(h_adv, guide)
        return {"loss": hash_term + terms.pop("total"), "hash": hash_term, **terms}
