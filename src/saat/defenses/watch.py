"""The catastrophic-overfitting watch of fast adversarial training (docs/defenses.md#catastrophic-overfitting).

Single-step adversarial training can overfit catastrophically (Wong et al. 2020; de Jorge et al. 2022): within an
epoch the model learns to defeat the single-step attack it is trained on while multi-step PGD goes through it.
The watch measures both on a fixed batch of training images (drawn once, seeded; Wong et al. watch a training
minibatch too): the batch is attacked with the defense's training attack and with PGD-10 (step eps/4, random
start) on the same inner objective, both in eval mode, and the adversarial codes are ranked against the defense's
+-1 code memory of the training set (mAP over the whole memory, relevance = a shared label). A *collapse* is a
PGD-10 mAP more than ``threshold`` below its best so far while the training attack's mAP is not more than
``threshold`` below its own best, both bests taken since the training attack last changed (a fallback to PGD
starts the comparison over).

The watch draws from its own stream (``WATCH_STREAM``) and takes no step of the model: with the watch on, the
training itself is unchanged.
"""

from __future__ import annotations

import numpy as np
import torch

from ..attacks.api import system_codes
from ..attacks.generators import PGD
from ..retrieval import average_precision
from ..utils.codes import sign_codes
from ..utils.device import with_amp
from ..utils.rng import derive_seed, seeded_generator
from .base import WATCH_STREAM, Defense
from .inner import make_inner

WATCH_PGD_STEPS = 10


class CollapseWatch:
    """Measures a defense's robustness to its training attack and to PGD-10 on a fixed batch ``(x, y)``.

    ``measure(epoch, step)`` returns the record written to the training log (``kind: "watch"``: the clean, training
    attack and PGD-10 mAPs of the batch, and ``collapse``: whether this point is a collapse)."""

    def __init__(self, defense: Defense, x: torch.Tensor, y: torch.Tensor, *, seed: int = 0, keep_best: bool = False):
        self.defense = defense
        self.keep_best = bool(keep_best)  # keep the model's weights at the best PGD-10 point (to restore them)
        self.best_state: dict | None = None
        self.x, self.y = x, y
        self.seed = int(seed)
        self.threshold = float(defense.settings["collapse_threshold"])
        self.targets = None
        pool = getattr(defense, "label_pool", None)
        if pool is not None:  # a targeted inner attack (ATRDH): fixed target labels for the watch
            g = seeded_generator(self.seed, WATCH_STREAM, "targets")
            self.targets = pool[torch.randint(pool.shape[0], (x.shape[0],), generator=g).to(pool.device)]
        self.history: list[dict] = []
        self.calls = 0

    def _attack(self, name: str):
        s = self.defense.settings
        model = with_amp(self.defense.ctx.model, self.defense.ctx.device, self.defense.ctx.amp)
        seed = derive_seed(self.seed, WATCH_STREAM, name, self.calls)
        if name == "pgd-10":
            return PGD(model, eps=s["eps"], step=s["eps"] / 4, steps=WATCH_PGD_STEPS, alpha_schedule=False,
                       random_start=True, seed=seed)
        # the training attack; free training's is one replay's step: from a random start, one signed step of eps
        if name == "free":
            return PGD(model, eps=s["eps"], step=s["eps"], steps=1, alpha_schedule=False, random_start=True,
                       seed=seed)
        return make_inner(name, model, eps=s["eps"], step=s["step"], steps=s["steps"], seed=seed)

    def _map(self, images: torch.Tensor, db: tuple[np.ndarray, np.ndarray]) -> float:
        """mAP of the codes of ``images`` (the labels of the watch batch) against ``db`` (codes, labels)."""
        ap = average_precision(system_codes(self.defense.ctx.model, images), db[0], self.y.cpu().numpy(), db[1],
                               topk=None)
        return float(np.mean(ap))

    def measure(self, epoch: int, step: int) -> dict:
        objective = self.defense.watch_objective(self.y, self.targets)
        training = self.defense.inner
        codes, labels = self.defense.watch_database()
        db = (sign_codes(codes).to(torch.int8).cpu().numpy(), labels.cpu().numpy())
        values = {"clean": self._map(self.x, db)}
        for key, name in (("train_attack", training), ("pgd10", "pgd-10")):
            values[key] = self._map(self._attack(name)(self.x, objective), db)
        self.calls += 1
        # the bests since the training attack last changed (a fallback to PGD starts the comparison over)
        same = [h for h in self.history if h["inner"] == training]
        best_pgd = max([h["pgd10"] for h in same] + [values["pgd10"]])
        best_train = max([h["train_attack"] for h in same] + [values["train_attack"]])
        collapse = (best_pgd - values["pgd10"] > self.threshold
                    and best_train - values["train_attack"] <= self.threshold)
        record = {"kind": "watch", "epoch": epoch, "step": step, "inner": training, **values,
                  "best_pgd10": best_pgd, "collapse": bool(collapse)}
        if self.keep_best and values["pgd10"] >= best_pgd:
            self.best_state = {"epoch": epoch, "step": step, "pgd10": values["pgd10"],
                               "model": {k: v.detach().cpu().clone()
                                         for k, v in self.defense.ctx.model.state_dict().items()}}
        self.history.append(record)
        return record

    def restore_best(self) -> dict | None:
        """Load the weights of the best PGD-10 point into the model; returns where they were taken (None: none)."""
        if self.best_state is None:
            return None
        self.defense.ctx.model.load_state_dict(self.best_state["model"])
        return {k: v for k, v in self.best_state.items() if k != "model"}

    def state_dict(self) -> dict:
        return {"history": list(self.history), "calls": self.calls, "best_state": self.best_state}

    def load_state_dict(self, state: dict) -> None:
        self.history, self.calls = list(state.get("history", [])), int(state.get("calls", 0))
        self.best_state = state.get("best_state")
