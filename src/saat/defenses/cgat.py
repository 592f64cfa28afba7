"""CgAT (Wang et al., "CgAT: Center-Guided Adversarial Training for Deep Hashing-Based Retrieval", WWW 2023),
docs/defenses.md#baseline-defenses: the SAAT loop shape with center codes instead of mainstay codes."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from ..attacks.mainstay import center_from_memory
from ..utils.dist import draw_for_shard
from ..utils.rng import SeededStream
from .base import AUGMENT_STREAM, DEFENSES, FAST_TRAINING_DEFAULTS, DefenseContext, GuidedDefense


@DEFENSES.register("cgat")
class CgATDefense(GuidedDefense):
    """Per batch: center codes c from the +-1 memory before the batch drive PGD (7 steps, 2/255, random start,
    eps 8/255) maximising the distance to c; after refreshing the memory with the batch's benign codes, c is
    recomputed and the loss is ``L_hash(h_ben) - mean(h_adv * c)`` (no quantisation term). SGD lr 0.01, momentum
    0.9, weight decay 5e-4, 30 epochs, lr x0.1 at 50 % and 75 % of iterations. Training images get a random crop
    (zero padding of 1/8 of the side, then a crop back to the side) and a random horizontal flip, seeded."""

    name = "cgat"
    defaults: ClassVar[dict[str, Any]] = {
        "eps": 8 / 255, "step": 2 / 255, "steps": 7, "epochs": 30, "batch_size": 32, "optimizer": "sgd",
        "lr": 0.01, "momentum": 0.9, "weight_decay": 5e-4, "lr_milestones": (0.5, 0.75), "augment": True,
        **FAST_TRAINING_DEFAULTS,
    }
    demo_defaults: ClassVar[dict[str, Any]] = {"step": 8 / 255, "epochs": 3}

    def __init__(self, ctx: DefenseContext, **settings):
        super().__init__(ctx, **settings)
        self.memory = ctx.train_codes.clone()
        self.crafter = self.make_crafter()
        self.aug_stream = SeededStream(ctx.seed + AUGMENT_STREAM)

    def augment(self, x: torch.Tensor) -> torch.Tensor:
        """The random crop and flip of each image, drawn and applied on ``x``'s device: one gather from the padded
        batch (rows ``top + i``, columns ``left + j`` or, flipped, ``left + w - 1 - j``), no host read."""
        if not self.settings["augment"]:
            return x
        b, c, h, w = x.shape
        pad = max(1, h // 8)
        padded = F.pad(x, (pad, pad, pad, pad))
        dev, gen = x.device, self.aug_stream.on(x.device)
        # Under torchrun: this rank's rows of the draws for the whole global batch (utils/dist.py).
        tops = draw_for_shard(lambda n: torch.randint(0, 2 * pad + 1, (n,), generator=gen, device=dev), b)
        lefts = draw_for_shard(lambda n: torch.randint(0, 2 * pad + 1, (n,), generator=gen, device=dev), b)
        flips = draw_for_shard(lambda n: torch.rand(n, generator=gen, device=dev), b) < 0.5
        rows = tops[:, None] + torch.arange(h, device=dev)
        j = torch.arange(w, device=dev)
        cols = lefts[:, None] + torch.where(flips[:, None], w - 1 - j, j)
        out = padded[torch.arange(b, device=dev)[:, None, None, None], torch.arange(c, device=dev)[None, :, None, None],
                     rows[:, None, :, None], cols[:, None, None, :]]
        channels_last = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
        return out.contiguous(memory_format=torch.channels_last) if channels_last else out.contiguous()

    def guide(self, y: torch.Tensor) -> torch.Tensor:
        """The center codes of the labels from the current memory."""
        return center_from_memory(y, self.memory, self.ctx.train_labels)

    def adversarial_terms(self, h_adv, guide):
        adv = -(h_adv * guide).mean()
        return {"total": adv, "adv": adv}

    def state_dict(self) -> dict:
        return {**super().state_dict(), "aug_generator": self.aug_stream.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.aug_stream.load_state_dict(state["aug_generator"])
