"""The six perturbation generators of docs/attacks.md#the-saat-attack, one class each, all on the
:class:`~saat.attacks.base.Attack` base.

Each minimises an objective ``objective(h, x_adv)`` inside the eps-ball (the mainstay loss for the SAAT attack).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..utils.registry import Registry
from .base import Attack, Objective

GENERATORS = Registry("generator")


def _unit_mean_abs(g: torch.Tensor) -> torch.Tensor:
    """g divided by its mean absolute value, per sample (as in MI/NI/VMI-FGSM)."""
    scale = g.abs().mean(dim=tuple(range(1, g.ndim)), keepdim=True)
    return g / torch.where(scale > 0, scale, torch.ones_like(scale))


@GENERATORS.register("pgd")
class PGD(Attack):
    """Projected gradient descent (Madry et al., ICLR 2018): random start in the eps-ball, then
    ``x <- proj(x - step * sign(grad))`` for T iterations (docs/attacks.md#the-saat-attack: T = 100, step 1/255, eps
    8/255).

    Example::

        adv = PGD(model, eps=8/255, step=1/255, steps=100)(images, lambda h, x: mainstay_loss(h, m))
    """

    name = "pgd"

    def perturb(self, x: torch.Tensor, objective: Objective) -> torch.Tensor:
        x_adv = self.start(x)
        for i in self.iterations():
            g = self.gradient(x_adv, objective, i)
            x_adv = self.project(x_adv - self.step * g.sign(), x)
        return x_adv


@GENERATORS.register("bim")
class BIM(PGD):
    """Basic iterative method (Kurakin et al., 2017): PGD without the random start."""

    name = "bim"
    default_random_start = False


@GENERATORS.register("di-fgsm", "difgsm", "di")
class DIFGSM(PGD):
    """DI-FGSM (Xie et al., CVPR 2019): sign steps on the gradient through a random input-diversity transform,
    applied with probability 0.5: resize to a random side in [0.9 H, H) and zero-pad back to H at a random offset.
    No random start, no momentum."""

    name = "di-fgsm"
    default_random_start = False
    replayable = False  # input diversity draws every iteration

    def __init__(self, *args, diversity_prob: float = 0.5, resize_rate: float = 0.9, **kwargs):
        super().__init__(*args, **kwargs)
        self.diversity_prob = diversity_prob
        self.resize_rate = resize_rate

    def settings_record(self) -> dict:
        return {**super().settings_record(), "diversity_prob": self.diversity_prob, "resize_rate": self.resize_rate}

    # The draws are the sizes and offsets that shape the resized and padded tensors: numbers the host needs, so
    # they come from the CPU generator of the attack's stream (a draw on the device would have to be read back, a
    # sync per iteration); nothing is copied to the device.
    def _randint(self, low: int, high: int) -> int:
        return torch.randint(low, high, (1,), generator=self.rng.on("cpu")).tolist()[0]

    def diversity(self, x: torch.Tensor) -> torch.Tensor:
        if torch.rand(1, generator=self.rng.on("cpu")).tolist()[0] >= self.diversity_prob:
            return x
        h, w = x.shape[-2:]
        side = self._randint(int(self.resize_rate * min(h, w)), min(h, w))
        resized = F.interpolate(x, size=(side, side), mode="nearest")
        top, left = self._randint(0, h - side + 1), self._randint(0, w - side + 1)
        return F.pad(resized, (left, w - side - left, top, h - side - top), value=0.0)

    def perturb(self, x: torch.Tensor, objective: Objective) -> torch.Tensor:
        x_adv = self.start(x)
        for i in self.iterations():
            g = self.gradient(x_adv, objective, i, transform=self.diversity)
            x_adv = self.project(x_adv - self.step * g.sign(), x)
        return x_adv


@GENERATORS.register("ni-fgsm", "nifgsm", "ni")
class NIFGSM(Attack):
    """NI-FGSM (Lin et al., ICLR 2020): Nesterov look-ahead ``x - step * decay * momentum``, gradient normalised
    by its mean absolute value, momentum accumulation with decay 1.0, sign steps. No random start."""

    name = "ni-fgsm"
    default_random_start = False

    def __init__(self, *args, decay: float = 1.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.decay = decay

    def settings_record(self) -> dict:
        return {**super().settings_record(), "decay": self.decay}

    def look_ahead_gradient(self, x_nes: torch.Tensor, objective: Objective, i: int) -> torch.Tensor:
        return self.gradient(x_nes, objective, i)

    def perturb(self, x: torch.Tensor, objective: Objective) -> torch.Tensor:
        x_adv = self.start(x)
        momentum = torch.zeros_like(x)
        for i in self.iterations():
            x_nes = x_adv - self.step * self.decay * momentum
            g = _unit_mean_abs(self.look_ahead_gradient(x_nes, objective, i))
            momentum = self.decay * momentum + g
            x_adv = self.project(x_adv - self.step * momentum.sign(), x)
        return x_adv


@GENERATORS.register("si-ni-fgsm", "sinifgsm", "si-ni")
class SINIFGSM(NIFGSM):
    """SI-NI-FGSM (Lin et al., ICLR 2020): NI-FGSM whose look-ahead gradient is the average over the scale copies
    ``x_nes / 2^i``, i = 0..4 (scale invariance)."""

    name = "si-ni-fgsm"

    def __init__(self, *args, n_scales: int = 5, **kwargs):
        super().__init__(*args, **kwargs)
        self.n_scales = n_scales

    def settings_record(self) -> dict:
        return {**super().settings_record(), "n_scales": self.n_scales}

    def look_ahead_gradient(self, x_nes: torch.Tensor, objective: Objective, i: int) -> torch.Tensor:
        total = torch.zeros_like(x_nes)
        for s in range(self.n_scales):
            total += self.gradient(x_nes, objective, i, transform=lambda z, f=2.0 ** s: z / f)
        return total / self.n_scales


@GENERATORS.register("vmi-fgsm", "vmifgsm", "vmi")
class VMIFGSM(Attack):
    """VMI-FGSM (Wang & He, CVPR 2021): momentum iterations whose gradient is corrected by the variance term
    ``v = mean of the gradients at N = 5 neighbours x + U(-beta eps, beta eps) (beta = 1.5) - the gradient at x``
    of the previous iteration; decay 1.0, sign steps, no random start."""

    name = "vmi-fgsm"
    default_random_start = False
    replayable = False  # neighbours drawn every iteration

    def __init__(self, *args, decay: float = 1.0, n_neighbours: int = 5, beta: float = 1.5, **kwargs):
        super().__init__(*args, **kwargs)
        self.decay, self.n_neighbours, self.beta = decay, n_neighbours, beta

    def settings_record(self) -> dict:
        return {**super().settings_record(), "decay": self.decay, "n_neighbours": self.n_neighbours, "beta": self.beta}

    def perturb(self, x: torch.Tensor, objective: Objective) -> torch.Tensor:
        x_adv = self.start(x)
        momentum = torch.zeros_like(x)
        variance = torch.zeros_like(x)
        radius = self.beta * self.eps
        for i in self.iterations():
            g_adv = self.gradient(x_adv, objective, i)
            g = _unit_mean_abs(g_adv + variance) + self.decay * momentum
            momentum = g
            neighbours = torch.zeros_like(x)
            for _ in range(self.n_neighbours):
                neighbours += self.gradient(x_adv + self.uniform(x, -radius, radius), objective, i)
            variance = neighbours / self.n_neighbours - g_adv
            x_adv = self.project(x_adv - self.step * g.sign(), x)
        return x_adv


def create_generator(name: str, model, **kwargs) -> Attack:
    return GENERATORS.get(name)(model, **kwargs)


def list_generators() -> list[str]:
    return sorted({cls.name for cls in (GENERATORS.get(n) for n in GENERATORS.names())})


def apgd_checkpoints(steps: int) -> list[int]:
    """The iterations at which APGD may halve its step (Croce & Hein, 2020): ``ceil(p_j N)`` with ``p_0 = 0``,
    ``p_1 = 0.22``, ``p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06)`` while ``p_j < 1``; [22, 41, 57, 70, 80, 87,
    93, 99] for N = 100."""
    p = [0.0, 0.22]
    while p[-1] + max(p[-1] - p[-2] - 0.03, 0.06) < 1:
        p.append(p[-1] + max(p[-1] - p[-2] - 0.03, 0.06))
    return sorted({max(1, math.ceil(q * steps - 1e-9)) for q in p[1:]} - {steps})


@GENERATORS.register("apgd", "auto-pgd")
class APGD(Attack):
    """Auto-PGD (Croce & Hein, "Reliable evaluation of adversarial robustness with an ensemble of diverse
    parameter-free attacks", ICML 2020) for the L-infinity ball, minimising a **per-sample** objective
    (docs/robustness.md#the-ensemble): no hand-tuned step.

    The step starts at 2 eps for every sample; iterates move with momentum 0.75,
    ``z = P(x_k - eta sign(grad))``, ``x_{k+1} = P(x_k + 0.75 (z - x_k) + 0.25 (x_k - x_{k-1}))``. At the checkpoints
    of :func:`apgd_checkpoints` a sample's step is halved, and it restarts from its best point, when fewer than
    ``rho`` = 75 % of the iterations since the last checkpoint lowered its objective, or when neither its step nor
    its best objective changed since then. The best point (lowest objective) is returned. With the tanh
    continuation schedule on, a change of alpha re-scores the best point at the new alpha (one forward pass), so
    objectives are compared at equal alpha only. ``step`` is ignored (recorded as 2 eps).
    """

    name = "apgd"
    per_sample_objective = True

    def __init__(self, *args, rho: float = 0.75, momentum: float = 0.75, **kwargs):
        super().__init__(*args, **kwargs)
        self.step = 2 * self.eps
        self.rho, self.momentum = float(rho), float(momentum)

    def settings_record(self) -> dict:
        return {**super().settings_record(), "rho": self.rho, "momentum": self.momentum}

    def _loss(self, x_adv: torch.Tensor, objective: Objective, i: int, grad: bool):
        x_var = x_adv.detach().requires_grad_(grad)
        with torch.set_grad_enabled(grad):
            loss = objective(self.model(x_var, alpha=self.alpha(i)), x_var)
        if loss.ndim != 1 or loss.shape[0] != x_adv.shape[0]:
            raise ValueError("APGD needs a per-sample objective returning (B,) losses (e.g. mainstay_loss(..., "
                             "per_sample=True))")
        if not grad:
            return loss.detach(), None
        (g,) = torch.autograd.grad(loss.sum(), x_var)
        return loss.detach(), g

    def perturb(self, x: torch.Tensor, objective: Objective) -> torch.Tensor:
        if self.steps == 0 or self.eps == 0:
            return self.start(x)
        shape = (x.shape[0],) + (1,) * (x.ndim - 1)
        eta = torch.full(shape, 2 * self.eps, dtype=x.dtype, device=x.device)
        checkpoints = set(apgd_checkpoints(self.steps))
        x_adv = self.start(x)
        x_prev = x_adv.clone()
        x_best, best, g_best = x_adv.clone(), None, None
        prev_loss = None
        successes = torch.zeros(x.shape[0], device=x.device)
        since, eta_then, best_then = 0, eta.clone(), None
        alpha_now = None
        for i in self.iterations():
            if self.alpha(i) != alpha_now and best is not None:  # re-score the best point at the new alpha
                best, _ = self._loss(x_best, objective, i, grad=False)
                prev_loss = None
            alpha_now = self.alpha(i)
            loss, g = self._loss(x_adv, objective, i, grad=True)
            if best is None:
                best, best_then, g_best = loss.clone(), loss.clone(), g.clone()
            better = loss < best  # kept on the device: masked selections, never a boolean index (a host read)
            x_best = torch.where(better.view(shape), x_adv, x_best)
            g_best = torch.where(better.view(shape), g, g_best)
            best = torch.where(better, loss, best)
            successes += 1.0 if prev_loss is None else (loss < prev_loss).float()
            prev_loss = loss
            since += 1
            if i in checkpoints:
                flat = eta.view(-1)
                halve = (successes < self.rho * since) | ((flat == eta_then.view(-1)) & (best == best_then))
                eta = torch.where(halve.view(shape), eta / 2, eta)
                x_adv = torch.where(halve.view(shape), x_best, x_adv)
                x_prev = torch.where(halve.view(shape), x_best, x_prev)
                g = torch.where(halve.view(shape), g_best, g)
                prev_loss = torch.where(halve, best, prev_loss)
                successes.zero_()
                since, eta_then, best_then = 0, eta.clone(), best.clone()
            z = self.project(x_adv - eta * g.sign(), x)
            if i == 0:  # the first step has no momentum
                x_next = z
            else:
                x_next = self.project(x_adv + self.momentum * (z - x_adv) + (1 - self.momentum) * (x_adv - x_prev),
                                      x)
            x_prev, x_adv = x_adv, x_next
        loss, _ = self._loss(x_adv, objective, self.steps - 1, grad=False)
        return torch.where((loss < best).view(shape), x_adv, x_best)
