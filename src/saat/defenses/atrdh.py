"""ATRDH (adversarial training of the THA paper, Wang et al., SIGIR 2021), SPEC 8.2."""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from ..attacks.generators import PGD
from ..attacks.targets import distinct_label_rows
from ..attacks.tha import PrototypeNet, circle_loss
from ..utils.device import autocast
from .base import DEFENSES, Defense, DefenseContext


@DEFENSES.register("atrdh")
class ATRDHDefense(Defense):
    """Per batch: one training step of a PrototypeNet (THA's: label -> prototype code, circle loss against the
    current codes of the training memory plus quantisation), then PGD (random start, 7 steps, 2/255, eps 8/255)
    pulling h(x + delta) toward the prototype code of a random target label (drawn, seeded, from the distinct
    training label vectors); the model minimises the benign hashing loss plus
    ``2 * sum_ij (h_adv,i . U_j / K - (2 S_ij - 1))^2 / (N B)`` where U is a memory of benign continuous outputs of
    the training set (initialised from the encoded training set — FIX: the authors start from zeros — and
    refreshed with each batch) and S_ij = 1[y_i . Y_j > 0] uses the adversarial image's own label.
    Adam lr 1e-4, betas (0.5, 0.999), 100 epochs (the PrototypeNet has its own Adam with the same settings).
    """

    name = "atrdh"
    defaults: ClassVar[dict[str, Any]] = {
        "eps": 8 / 255, "step": 2 / 255, "steps": 7, "weight": 2.0, "epochs": 100, "batch_size": 32,
        "optimizer": "adam", "lr": 1e-4, "betas": (0.5, 0.999), "weight_decay": 0.0, "lr_milestones": (),
        "proto_lr": 1e-4, "margin": 0.25, "gamma": 1.0, "quant_weight": 0.1,
    }
    demo_defaults: ClassVar[dict[str, Any]] = {"step": 8 / 255, "epochs": 3, "lr": 1e-3, "proto_lr": 1e-3}

    def __init__(self, ctx: DefenseContext, **settings):
        super().__init__(ctx, **settings)
        o = self.opts
        self.memory = ctx.train_outputs.clone()  # benign continuous outputs
        self.crafter = PGD(ctx.model, eps=o["eps"], step=o["step"], steps=o["steps"], alpha_schedule=False,
                           random_start=True, seed=ctx.seed)
        gen_state = torch.random.get_rng_state()
        torch.manual_seed(ctx.seed + 2)  # the PrototypeNet's initial weights, without disturbing the global stream
        self.prototypes = PrototypeNet(ctx.train_labels.shape[1], ctx.train_codes.shape[1]).to(ctx.device)
        torch.random.set_rng_state(gen_state)
        self.proto_opt = torch.optim.Adam(self.prototypes.parameters(), lr=o["proto_lr"], betas=(0.5, 0.999))
        self.label_pool = distinct_label_rows(ctx.train_labels)
        self.target_generator = torch.Generator().manual_seed(ctx.seed + 3)

    def _train_prototypes(self) -> torch.Tensor:
        o = self.opts
        self.prototypes.train()
        pick = torch.randint(self.label_pool.shape[0], (64,), generator=self.target_generator)
        labels = self.label_pool[pick.to(self.label_pool.device)]
        codes = torch.where(self.memory >= 0, 1.0, -1.0)
        p = self.prototypes(labels)
        positive = ((labels @ self.ctx.train_labels.T) > 0).to(p.dtype)
        loss = circle_loss(p, codes, positive, o["margin"], o["gamma"])
        loss = loss + o["quant_weight"] * (torch.where(p >= 0, 1.0, -1.0) - p).pow(2).mean()
        self.proto_opt.zero_grad(set_to_none=True)
        loss.backward()
        self.proto_opt.step()
        self.prototypes.eval()
        return loss.detach()

    def step(self, x, y, idx, it):
        o, model = self.opts, self.ctx.model
        proto_loss = self._train_prototypes()
        pick = torch.randint(self.label_pool.shape[0], (x.shape[0],), generator=self.target_generator)
        with torch.no_grad():
            target_code = torch.where(self.prototypes(self.label_pool[pick.to(self.label_pool.device)]) >= 0,
                                      1.0, -1.0)
        x_adv = self.crafter(x, lambda h, _x: -(h * target_code).mean())
        with autocast(self.ctx.device, self.ctx.amp):
            h_ben = model(x).float()
            h_adv = model(x_adv).float()
        with torch.no_grad():
            self.memory[idx] = h_ben.detach()
        hash_term = self.ctx.method(h_ben, y, idx)
        similar = ((y @ self.ctx.train_labels.T) > 0).to(h_adv.dtype)
        inner = h_adv @ self.memory.T / h_adv.shape[1]
        adv_term = (inner - (2 * similar - 1)).pow(2).sum() / similar.numel()
        loss = hash_term + o["weight"] * adv_term
        return {"loss": loss, "hash": hash_term, "adv": adv_term, "prototype": proto_loss}

    def state_dict(self) -> dict:
        return {"memory": self.memory.detach().cpu(), "prototypes": self.prototypes.state_dict(),
                "proto_opt": self.proto_opt.state_dict(), "crafter_generator": self.crafter.generator.get_state(),
                "target_generator": self.target_generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.memory.copy_(state["memory"].to(self.memory.device))
        self.prototypes.load_state_dict(state["prototypes"])
        self.proto_opt.load_state_dict(state["proto_opt"])
        self.crafter.generator.set_state(state["crafter_generator"])
        self.target_generator.set_state(state["target_generator"])
