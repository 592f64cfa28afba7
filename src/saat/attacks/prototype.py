"""THA's PrototypeNet and its training objective (Wang et al., "Targeted Attack and Defense for Deep Hashing",
SIGIR 2021), shared by the THA attack (:mod:`saat.attacks.tha`) and the ATRDH defense (:mod:`saat.defenses.atrdh`).

A PrototypeNet maps a label vector t to a prototype code p = P(t) (Linear C -> 4096, ReLU, Linear 4096 -> 512,
Linear 512 -> K, tanh: no activation before the hash layer). The objective is the one of the authors' code
(docs/baselines.md#baseline-attacks-and-defenses-as-the-paper-ran-them), for a batch of B label vectors against the
attacked model's +-1 training codes b_j with label sets Y_j:

- ``s_ij = p_i . b_j / K`` (an inner product scaled by K, not a cosine);
- positive pairs ``t_i . Y_j > 0``, negative pairs the rest, pooled over the **whole batch**;
- ``a_p = max(0, 2 - s)``, ``a_n = max(0, s + 2)`` (no gradient), gamma = 1, no margin;
- ``L = softplus(LSE_neg(a_n s gamma) + LSE_pos(-a_p s gamma)) / B + sum (sign(p) - p)^2 / (10^4 B)``,
  with one logsumexp per side over all pairs of the batch (not one per row).

The authors select pairs through an upper-triangular mask of the B x N pair matrix, which also drops the pairs
whose column index is at most the row index (at most B(B+1)/2 of the B N pairs — an artefact of a mask written for
square matrices). Here every pair counts.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..utils.codes import sign_codes
from ..utils.meters import read_scalars
from ..utils.progress import progress_bar
from ..utils.resume import Checkpointer
from ..utils.rng import SeededStream
from ..utils.schedule import lr_factor, lr_milestones
from .cache import CachedTraining

ADAM_BETAS = (0.5, 0.999)


class PrototypeNet(nn.Module):
    """The authors' network: label (C) -> Linear(C, 4096) -> ReLU -> Linear(4096, 512) = feature f, then the hash
    layer tanh(Linear(512, K) f). There is **no** activation between the 512-unit feature and the hash layer (the
    shape of ProS-GAN's feature + hash head; SPEC 7.2)."""

    def __init__(self, n_classes: int, bits: int):
        super().__init__()
        self.feature = nn.Sequential(nn.Linear(n_classes, 4096), nn.ReLU(inplace=True), nn.Linear(4096, 512))
        self.hash = nn.Linear(512, bits)

    def forward(self, labels: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.hash(self.feature(labels)))


def _pooled_logsumexp(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """logsumexp of ``values`` over the entries where ``mask`` holds, all rows pooled (the other entries are -inf,
    which add exp(-inf) = 0): -inf for an empty mask. Nothing is read on the host, and the masked entries get a
    gradient of exactly 0."""
    return torch.logsumexp(values.masked_fill(~mask, float("-inf")).reshape(-1), dim=0)


def prototype_loss(p: torch.Tensor, labels: torch.Tensor, codes: torch.Tensor, code_labels: torch.Tensor, *,
                   gamma: float = 1.0, quant_weight: float = 1e-4) -> torch.Tensor:
    """THA's PrototypeNet objective (module docstring) of prototypes ``p`` (B, K) for label vectors ``labels``
    (B, C) against +-1 ``codes`` (N, K) with labels ``code_labels`` (N, C). A batch without positive or without
    negative pairs has pair term 0 (the logsumexp of an empty side is -inf), decided on the device (no host read)."""
    b, k = p.shape
    s = p @ codes.T / k
    positive = (labels @ code_labels.T) > 0
    a_p = (2 - s).clamp_min(0).detach()
    a_n = (s + 2).clamp_min(0).detach()
    lse_neg = _pooled_logsumexp(gamma * a_n * s, ~positive)
    lse_pos = _pooled_logsumexp(-gamma * a_p * s, positive)
    quantisation = (sign_codes(p.detach()) - p).pow(2).sum() * quant_weight / b
    both_sides = positive.any() & (~positive).any()
    return torch.where(both_sides, F.softplus(lse_neg + lse_pos) / b, 0.0) + quantisation


def train_prototype_net(net: PrototypeNet, label_pool: torch.Tensor, codes: torch.Tensor,
                        code_labels: torch.Tensor, *, steps: int, batch: int, lr: float,
                        milestones: Sequence[float] = (0.5, 0.75), gamma: float = 1.0, quant_weight: float = 1e-4,
                        seed: int, cache: CachedTraining, progress: bool = False, save_every: int = 500) -> None:
    """THA's PrototypeNet training: ``steps`` Adam steps (betas 0.5, 0.999) on batches of ``batch`` label vectors
    drawn uniformly with replacement (seeded) from ``label_pool`` (the distinct database label vectors), lr x 0.1
    at each fraction in ``milestones`` of the steps. Resumable from ``cache``'s partial checkpoint. The loss is read
    on the host (for the progress bar, when it shows) only every ``save_every`` steps and at the end."""
    opt = torch.optim.Adam(net.parameters(), lr=lr, betas=ADAM_BETAS)
    gen = SeededStream(seed)
    decay_at = lr_milestones(milestones, steps)
    ckpt = Checkpointer({"net": net, "optimizer": opt, "generator": gen}, load=cache.load_partial,
                        save=cache.save_partial, every=save_every)
    start, _ = ckpt.resume()
    bar = progress_bar(total=steps, initial=start, desc="THA prototype net", unit="step", disable=not progress)
    net.train()
    for step in range(start, steps):
        for group in opt.param_groups:
            group["lr"] = lr * lr_factor(step, decay_at)
        pick = torch.randint(label_pool.shape[0], (batch,), generator=gen.on(label_pool.device),
                             device=label_pool.device)
        labels = label_pool[pick]
        loss = prototype_loss(net(labels), labels, codes, code_labels, gamma=gamma, quant_weight=quant_weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        bar.update(1)
        if not bar.disable and ((step + 1) % ckpt.every == 0 or step + 1 == steps):
            bar.set_postfix(loss=f"{read_scalars({'loss': loss})['loss']:.4f}", refresh=False)
        ckpt.after(step + 1, steps)
    bar.close()
    net.eval()
