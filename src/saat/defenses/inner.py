"""The inner maximisers of the minimax defenses (docs/defenses.md#fast-adversarial-training): multi-step PGD (the
paper's), and the fast single-step ones of image classification adapted to hashing.

- ``pgd``: PGD from a random start, ``steps`` iterations of ``step`` (the paper: 7 of 2/255 at eps 8/255);
- ``fgsm-rs``: FGSM with a random start (Wong, Rice & Kolter, "Fast is better than free", ICLR 2020): a uniform
  start in the eps-ball, one signed step of 1.25 eps, projected back onto the ball and [0, 1];
- ``n-fgsm``: N-FGSM (de Jorge et al., NeurIPS 2022): noise U(-2 eps, 2 eps), one signed step of eps from the noisy
  image, and no projection onto the eps-ball (only onto [0, 1]);
- ``free``: "free" adversarial training (Shafahi et al., NeurIPS 2019): each batch is replayed ``replays`` times and
  the perturbation is carried across replays and batches; the backward pass of the training loss gives the
  weights' gradient and the perturbation's together, and the perturbation takes a signed step of eps up that
  gradient (clipped to the ball) after each replay.

Each is an object called as ``crafter(x, objective) -> x_adv`` that minimises ``objective(h, x_adv)`` (the
defense's inner objective, as every attack here); ``free`` also follows the training loop through
:meth:`FreeInner.observe` and :meth:`FreeInner.after_backward`.
"""

from __future__ import annotations

import torch

from ..attacks.base import Attack, Objective
from ..attacks.generators import PGD
from ..utils.rng import SeededStream

INNER_MAXIMISERS = ("pgd", "fgsm-rs", "n-fgsm", "free")
FGSM_RS_STEP = 1.25  # FGSM-RS's step, in units of eps
N_FGSM_NOISE = 2.0  # N-FGSM's noise radius, in units of eps (its step is eps)


class NFGSM(Attack):
    """N-FGSM: ``x_n = clip_[0,1](x + U(-2 eps, 2 eps))``, then
    ``x_adv = clip_[0,1](x_n - eps * sign(grad objective(x_n)))``; the result may lie up to 3 eps from x (no
    projection onto the eps-ball, the method's point)."""

    name = "n-fgsm"

    def perturb(self, x: torch.Tensor, objective: Objective) -> torch.Tensor:
        radius = N_FGSM_NOISE * self.eps
        x_noisy = (x + self.uniform(x, -radius, radius)).clamp(0.0, 1.0)
        if self.steps == 0:
            return x_noisy
        g = self.gradient(x_noisy, objective, 0)
        return (x_noisy - self.step * g.sign()).clamp(0.0, 1.0)

    def replay(self, like: torch.Tensor) -> None:
        self.uniform(like, -N_FGSM_NOISE * self.eps, N_FGSM_NOISE * self.eps)


class FreeInner:
    """The carried perturbation of free adversarial training. ``crafter(x, objective)`` returns
    ``clip_[0,1](x + delta)`` with ``delta`` a leaf that requires grad, so the defense's training loss reaches it.

    After the loop's backward pass, :meth:`after_backward` moves ``delta`` by ``eps * sign(g)`` and clips it to the
    eps-ball, where ``g`` is

    - the gradient of the training loss (``follows_loss``: ascend it; SAAT and CgAT, whose adversarial term is the
      negated inner objective: one backward pass gives both updates, as in Shafahi et al.), or
    - the gradient of the inner objective at the same forward pass, taken in :meth:`observe` (descend it; ATRDH,
      whose loss is not its inner objective: one extra input backward pass per replay).

    ``delta`` starts at 0 and is carried to the next replay and the next batch (re-zeroed when a batch has another
    shape, e.g. a single short batch)."""

    name = "free"

    def __init__(self, eps: float, follows_loss: bool, seed: int = 0):
        self.eps, self.follows_loss = float(eps), bool(follows_loss)
        self.rng = SeededStream(seed)  # draws nothing; kept so every crafter has a stream to save and restore
        self.delta: torch.Tensor | None = None
        self._objective: Objective | None = None
        self._x_adv: torch.Tensor | None = None
        self._grad: torch.Tensor | None = None

    def __call__(self, x: torch.Tensor, objective: Objective) -> torch.Tensor:
        if self.delta is None or self.delta.shape != x.shape or self.delta.device != x.device:
            self.delta = torch.zeros_like(x)
        self.delta = self.delta.detach().requires_grad_(True)
        self._objective, self._grad = objective, None
        self._x_adv = (x.detach() + self.delta).clamp(0.0, 1.0)
        return self._x_adv

    def observe(self, h_adv: torch.Tensor) -> None:
        """The inner objective's gradient at this forward pass (only when the loss is not what delta follows)."""
        if self.follows_loss or self._objective is None or not h_adv.requires_grad:
            return
        (self._grad,) = torch.autograd.grad(self._objective(h_adv, self._x_adv), self.delta, retain_graph=True)

    def after_backward(self) -> None:
        """One signed step of eps on delta, clipped to the eps-ball (up the loss, or down the inner objective)."""
        if self.delta is None:
            return
        if self.follows_loss:
            g = self.delta.grad
            step = 1.0
        else:
            g, step = self._grad, -1.0
        if g is not None:
            with torch.no_grad():
                moved = self.delta + step * self.eps * torch.nan_to_num(g).sign()
                self.delta = moved.clamp(-self.eps, self.eps)
        self.delta = self.delta.detach()
        self._objective = self._x_adv = self._grad = None

    def state_dict(self) -> dict:
        return {"delta": None if self.delta is None else self.delta.detach().cpu()}

    def load_state_dict(self, state: dict, device: torch.device) -> None:
        delta = state.get("delta")
        self.delta = None if delta is None else delta.to(device)


def make_inner(name: str, model, *, eps: float, step: float, steps: int, seed: int, eval_mode: bool = True,
               follows_loss: bool = True):
    """The inner maximiser ``name`` (one of :data:`INNER_MAXIMISERS`) on ``model``; ``step`` and ``steps`` are
    PGD's (the single-step ones set their own), ``follows_loss`` is free training's choice of gradient."""
    if name == "pgd":
        return PGD(model, eps=eps, step=step, steps=steps, alpha_schedule=False, random_start=True, seed=seed,
                   eval_mode=eval_mode)
    if name == "fgsm-rs":
        return PGD(model, eps=eps, step=FGSM_RS_STEP * eps, steps=1, alpha_schedule=False, random_start=True,
                   seed=seed, eval_mode=eval_mode)
    if name == "n-fgsm":
        return NFGSM(model, eps=eps, step=eps, steps=1, alpha_schedule=False, random_start=True, seed=seed,
                     eval_mode=eval_mode)
    if name == "free":
        return FreeInner(eps, follows_loss, seed)
    raise ValueError(f"inner must be one of {', '.join(INNER_MAXIMISERS)}, got {name!r}")
