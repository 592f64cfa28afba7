"""SAAT: semantic-aware adversarial training guided by mainstay codes (the paper's defense,
docs/defenses.md#saat-training)."""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from ..attacks.mainstay import mainstay_from_memory
from ..utils.codes import sign_codes
from .base import DEFENSES, FAST_TRAINING_DEFAULTS, DefenseContext, GuidedDefense


@DEFENSES.register("saat")
class SAATDefense(GuidedDefense):
    """Minimax adversarial training (docs/defenses.md#saat-training). For each batch (x, y, idx):

    1. ``m = mainstay(y; U_ben, Y_train)`` from the +-1 code memory ``U_ben`` (initialised with the encoded
       training set);
    2. inner maximisation: PGD from a random start (eps 8/255, step 2/255, 7 iterations, alpha = 1) minimising
       ``mean(h * m)``, i.e. maximising the Hamming distance to the mainstay code;
    3. ``h_adv = f(x_adv)``, ``h_ben = f(x)``; refresh ``U_ben[idx] = sign(h_ben)``; recompute m;
    4. ``L = L_hash(h_ben, y, idx) + lambda * (-mean(h_adv * m)) + mu * mean((h_adv - sign(h_adv))^2)``,
       lambda = 1, mu = 1e-4, L_hash the original model's hashing loss;
    5. SGD lr 0.05, weight decay 1e-5, no momentum, lr x0.1 at 50 % and 75 % of all iterations; 20 epochs; batch 32.

    Crafting happens in **eval mode** by default (FIX). In train mode — what the authors' code does — BatchNorm
    normalises each crafting step with the statistics of the batch being attacked, dropout masks change between
    steps, and the 7 crafting forward passes update the BN running averages with adversarial inputs. The
    perturbation is then tuned against a stochastic network that is not the one evaluated, and the running
    statistics drift toward adversarial data. ``parity=True`` reproduces the authors' code: train-mode crafting
    and a code memory that *is* the hashing loss's memory U, so that the loss overwrites refreshed rows with
    continuous tanh outputs (for methods without a memory only the train-mode crafting applies).
    """

    name = "saat"
    defaults: ClassVar[dict[str, Any]] = {
        "eps": 8 / 255, "step": 2 / 255, "steps": 7, "lambda_": 1.0, "mu": 1e-4, "parity": False,
        "epochs": 20, "batch_size": 32, "optimizer": "sgd", "lr": 0.05, "momentum": 0.0, "weight_decay": 1e-5,
        "lr_milestones": (0.5, 0.75),
        **FAST_TRAINING_DEFAULTS,
    }
    # The demo's larger eps needs a larger step for 7 iterations to reach the boundary of the ball.
    demo_defaults: ClassVar[dict[str, Any]] = {"step": 8 / 255, "epochs": 3}

    def __init__(self, ctx: DefenseContext, **settings):
        super().__init__(ctx, **settings)
        o = self.settings
        shared = o["parity"] and getattr(ctx.method, "uses_memory", False)
        # Parity: the code memory is the hashing loss's own memory (same storage). Default: a separate +-1 memory.
        self.memory = ctx.method.U if shared else torch.empty_like(ctx.train_codes)
        self.memory.copy_(ctx.train_codes)
        self.memory_labels = ctx.train_labels
        self.crafter = self.make_crafter(eval_mode=not o["parity"])

    def guide(self, y: torch.Tensor) -> torch.Tensor:
        """The mainstay codes of the labels from the current memory."""
        return mainstay_from_memory(y, self.memory, self.memory_labels)

    def adversarial_terms(self, h_adv, guide):
        adv = -(h_adv * guide).mean()
        quant = (h_adv - sign_codes(h_adv.detach())).pow(2).mean()
        return {"total": self.settings["lambda_"] * adv + self.settings["mu"] * quant, "adv": adv, "quant": quant}
