"""ATRDH (adversarial training of the THA paper, Wang et al., SIGIR 2021), docs/defenses.md#baseline-defenses."""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from ..attacks.prototype import ADAM_BETAS, PrototypeNet, prototype_loss
from ..attacks.targets import distinct_label_rows
from ..utils.codes import sign_codes
from ..utils.dist import global_count, local_rows, set_rows
from ..utils.rng import SeededStream, seeded_init
from ..utils.schedule import lr_factor, lr_milestones
from .base import DEFENSES, FAST_TRAINING_DEFAULTS, PROTOTYPE_INIT_STREAM, TARGET_STREAM, Defense, DefenseContext


@DEFENSES.register("atrdh")
class ATRDHDefense(Defense):
    """The authors' per-batch procedure, for a batch (x, y, idx) of B images:

    1. ``h_ben = f(x)``; the +-1 code memory takes ``sign(h_ben)`` for the batch's rows;
    2. B target label vectors drawn uniformly (seeded) from the distinct *database* label vectors;
    3. one PrototypeNet step on exactly those labels with THA's objective (:mod:`saat.attacks.prototype`) against
       the +-1 code memory; ``sign(P(t))`` from this step's forward pass, i.e. before the update, is the target code;
    4. PGD (random start, 7 steps of 2/255, eps 8/255, no continuation) minimising ``-mean(h * sign(P(t)))``;
    5. the continuous memory ``U[idx] = h_ben``;
    6. ``L = L_hash(h_ben) + 2 * sum_ij (h_adv,i . U_j / K - (2 S_ij - 1))^2 / (N B)`` with ``S_ij = 1[y_i . Y_j > 0]``.

    Adam lr 1e-4, betas (0.5, 0.999) for the model and the PrototypeNet, both x 0.1 at 50 % and 75 % of all
    iterations; 100 epochs, batch 32. Both memories start from the encoded training set (FIX: the authors start
    from zeros), and the crafting runs in eval mode like every defense here.
    """

    name = "atrdh"
    defaults: ClassVar[dict[str, Any]] = {
        "eps": 8 / 255, "step": 2 / 255, "steps": 7, "weight": 2.0, "epochs": 100, "batch_size": 32,
        "optimizer": "adam", "lr": 1e-4, "betas": ADAM_BETAS, "weight_decay": 0.0, "lr_milestones": (0.5, 0.75),
        "proto_lr": 1e-4, "gamma": 1.0, "quant_weight": 1e-4,
        **FAST_TRAINING_DEFAULTS,
    }
    demo_defaults: ClassVar[dict[str, Any]] = {"step": 8 / 255, "epochs": 3, "lr": 1e-3, "proto_lr": 1e-3}

    # Its loss is not its (targeted) inner objective: free training's perturbation follows the inner objective.
    free_follows_loss = False

    def __init__(self, ctx: DefenseContext, **settings):
        super().__init__(ctx, **settings)
        o = self.settings
        self.memory = ctx.train_outputs.clone()  # U: benign continuous outputs
        self.code_memory = ctx.train_codes.clone()  # +-1 codes: what the PrototypeNet is trained against
        self.crafter = self.make_crafter()
        with seeded_init(ctx.seed + PROTOTYPE_INIT_STREAM):  # its initial weights
            self.prototypes = PrototypeNet(ctx.train_labels.shape[1], ctx.train_codes.shape[1])
        self.prototypes.to(ctx.device)
        self.proto_opt = torch.optim.Adam(self.prototypes.parameters(), lr=o["proto_lr"], betas=ADAM_BETAS)
        # The model's lr schedule (stepped per iteration by the training loop), repeated for the PrototypeNet.
        self.proto_milestones = (lr_milestones(self.lr_milestone_fractions(), ctx.total_iterations)
                                 if ctx.total_iterations else [])
        pool_source = ctx.db_labels if ctx.db_labels is not None else ctx.train_labels
        self.label_pool = distinct_label_rows(pool_source.to(ctx.device))
        self.target_stream = SeededStream(ctx.seed + TARGET_STREAM)

    def draw_targets(self, n: int) -> torch.Tensor:
        dev = self.label_pool.device
        return self.label_pool[torch.randint(self.label_pool.shape[0], (n,), generator=self.target_stream.on(dev),
                                             device=dev)]

    def prototype_step(self, targets: torch.Tensor, it: int) -> tuple[torch.Tensor, torch.Tensor]:
        """One PrototypeNet step on ``targets``; returns (the target codes before the step, the loss)."""
        o = self.settings
        for group in self.proto_opt.param_groups:
            group["lr"] = o["proto_lr"] * lr_factor(it, self.proto_milestones)
        self.prototypes.train()
        p = self.prototypes(targets)
        loss = prototype_loss(p, targets, self.code_memory, self.ctx.train_labels, gamma=o["gamma"],
                              quant_weight=o["quant_weight"])
        self.proto_opt.zero_grad(set_to_none=True)
        loss.backward()
        self.proto_opt.step()
        self.prototypes.eval()
        return sign_codes(p.detach()), loss.detach()

    def step(self, x, y, idx, it):
        o = self.settings
        h_ben = self.outputs(x)
        with torch.no_grad():
            set_rows(idx, (self.code_memory, sign_codes(h_ben.detach())))  # under torchrun: every rank's rows
        # Under torchrun every rank draws the whole global batch's targets and takes the same PrototypeNet step on
        # them (identical on all ranks, nothing to synchronise); its own rows of the target codes drive its PGD.
        target_code, proto_loss = self.prototype_step(self.draw_targets(global_count(x.shape[0])), it)
        target_code = local_rows(target_code)
        x_adv = self.crafter(x, lambda h, _x: -(h * target_code).mean())
        h_adv = self.outputs(x_adv)
        self.observe(h_adv)
        with torch.no_grad():
            set_rows(idx, (self.memory, h_ben.detach()))
        hash_term = self.ctx.method(h_ben, y, idx)
        similar = ((y @ self.ctx.train_labels.T) > 0).to(h_adv.dtype)
        inner = h_adv @ self.memory.T / h_adv.shape[1]
        adv_term = (inner - (2 * similar - 1)).pow(2).sum() / similar.numel()
        loss = hash_term + o["weight"] * adv_term
        return {"loss": loss, "hash": hash_term, "adv": adv_term, "prototype": proto_loss}

    def watch_objective(self, y, targets):
        """Towards the PrototypeNet's current codes of the watch's fixed target labels."""
        with torch.no_grad():
            code = sign_codes(self.prototypes(targets))
        return lambda h, _x: -(h * code).mean()

    def watch_database(self):
        return self.code_memory, self.ctx.train_labels

    def state_dict(self) -> dict:
        return {**super().state_dict(), "code_memory": self.code_memory.detach().cpu(),
                "prototypes": self.prototypes.state_dict(), "proto_opt": self.proto_opt.state_dict(),
                "target_generator": self.target_stream.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.code_memory.copy_(state["code_memory"].to(self.code_memory.device))
        if "net.0.weight" in state["prototypes"]:  # written before the PrototypeNet had the authors' architecture
            raise ValueError("this ATRDH checkpoint holds a PrototypeNet of an older saat (an extra ReLU before the "
                             "hash layer) and cannot be resumed; run the defense again into a new --out directory")
        self.prototypes.load_state_dict(state["prototypes"])
        self.proto_opt.load_state_dict(state["proto_opt"])
        self.target_stream.load_state_dict(state["target_generator"])
