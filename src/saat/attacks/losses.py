"""Attack objectives on hash outputs (docs/attacks.md#the-saat-attack). Each returns a scalar that the attack MINIMISES.

With ``s = h * m`` (elementwise) for the network output ``h`` and the mainstay code ``m``:

- untargeted: ``w = 1[s > -0.5]`` (no gradient), ``L = sum w (s + 2) s / sum w`` pushes h away from m, bit by
  bit, until a bit is past -0.5;
- targeted: ``w = 1[s < 0.5]``, ``L = -sum w (s + 2) s / sum w`` pulls h toward m;
- simple (inside SAAT training): ``L = mean(h * m)``.

Normalisation: the default is per sample (each row's sum over its own weights, then the mean over rows), so the
objective does not depend on the batch size and a row whose weights are all zero contributes 0 (never NaN).
``parity=True`` normalises once over the whole batch as the authors' code does. For sign-gradient generators
(PGD, BIM, DI-FGSM) both give the same perturbation: the two differ by a positive factor per sample.
"""

from __future__ import annotations

import torch


def _weighted_mean(values: torch.Tensor, weights: torch.Tensor, parity: bool, per_sample: bool) -> torch.Tensor:
    if parity:
        if per_sample:
            raise ValueError("parity=True normalises over the whole batch: it has no per-sample objective")
        total = weights.sum()
        return (weights * values).sum() / torch.where(total > 0, total, torch.ones_like(total))
    per_row = weights.sum(dim=1)
    rows = (weights * values).sum(dim=1) / torch.where(per_row > 0, per_row, torch.ones_like(per_row))
    return rows if per_sample else rows.mean()


def mainstay_loss(h: torch.Tensor, m: torch.Tensor, targeted: bool = False, parity: bool = False,
                  per_sample: bool = False) -> torch.Tensor:
    """The SAAT attack objective (to minimise) of outputs ``h`` against mainstay codes ``m``; ``per_sample`` gives
    the (B,) row losses whose mean is the default scalar (what APGD's step-size rule compares)."""
    s = h * m
    if targeted:
        w = (s < 0.5).to(h.dtype).detach()
        return -_weighted_mean((s + 2) * s, w, parity, per_sample)
    w = (s > -0.5).to(h.dtype).detach()
    return _weighted_mean((s + 2) * s, w, parity, per_sample)


def simple_loss(h: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """``mean(h * m)``: minimising it maximises the Hamming distance to m (used by SAAT's inner maximisation)."""
    return (h * m).mean()
