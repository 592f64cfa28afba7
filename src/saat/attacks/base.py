"""The attack base: what every L-infinity attack on a hashing model shares (STYLE: torchattacks' Attack).

- the model runs in **eval** mode with parameter gradients **off** during the attack; both are restored afterwards,
  and gradients are taken with respect to the input only, so parameter ``.grad`` is never touched
  (docs/attacks.md#what-every-attack-shares; a deliberate deviation);
- projection onto the eps-ball around the benign images and onto [0, 1];
- the tanh continuation schedule: at iteration i of T the model runs with
  ``alpha = [0.1, 0.1, 0.1, 0.1, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0][floor(10 i / T)]``;
- seeded randomness (random starts, neighbour sampling) from the attack's own stream, drawn on the device of the
  images (``utils.rng.SeededStream``: on the CPU exactly the numbers of the CPU generator of the seed; a GPU draws
  its own numbers, nothing is copied from the host); input diversity's sizes and offsets, which the host needs to
  shape the tensors, from the same stream's CPU generator;
- an optional progress bar over iterations.

An *objective* is a callable ``objective(h, x_adv) -> scalar`` that the attack minimises (e.g. the mainstay
loss with the batch's mainstay codes bound in). Subclasses implement :meth:`perturb`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch
from torch import nn

from .._torch_utils import kept_modes
from ..utils.dist import draw_for_shard
from ..utils.progress import progress_bar
from ..utils.rng import SeededStream

ALPHA_SCHEDULE = (0.1, 0.1, 0.1, 0.1, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0)

Objective = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def continuation_alpha(i: int, steps: int) -> float:
    """tanh scale at iteration ``i`` of ``steps`` (docs/attacks.md#the-saat-attack)."""
    return ALPHA_SCHEDULE[min(len(ALPHA_SCHEDULE) - 1, (len(ALPHA_SCHEDULE) * i) // max(steps, 1))]


@contextlib.contextmanager
def frozen_eval(model: nn.Module, eval_mode: bool = True) -> Iterator[nn.Module]:
    """Eval mode and ``requires_grad=False`` on every parameter inside the block; afterwards every module's mode
    and every parameter's ``requires_grad`` are the ones it had (module by module: ``model`` is often a wrapper whose
    own flag is not the wrapped model's). ``eval_mode=False`` only freezes the parameters and leaves the mode as
    it is."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    with kept_modes(model):
        if eval_mode:
            model.eval()
        for p, _ in flags:
            p.requires_grad_(False)
        try:
            yield model
        finally:
            for p, flag in flags:
                p.requires_grad_(flag)


class Attack:
    """Base class of the L-infinity attacks.

    Args:
        model: a hashing model with ``forward(x, alpha)`` on [0, 1] images.
        eps: L-infinity budget in [0, 1] pixel units (8/255 = 8 grey levels).
        step: step size per iteration.
        steps: number of iterations T.
        alpha_schedule: use the tanh continuation schedule (else alpha = 1 throughout).
        random_start: start from x + U(-eps, eps) (projected to [0, 1]).
        seed: seeds every random choice of the attack.
        progress: show a progress bar over iterations.
        eval_mode: run the model in eval mode while attacking (default). ``False`` keeps the model's current
            mode — SAAT's parity mode crafts in train mode, as the authors' code does.
    """

    name = "attack"
    default_random_start = True
    _warm: torch.Tensor | None = None  # the warm start of the current call (see __call__)
    # Whether :meth:`replay` advances the random stream exactly as :meth:`perturb` does (its only draw is the random
    # start); attacks that draw inside their iterations say False.
    replayable = True

    def __init__(self, model: nn.Module, eps: float = 8 / 255, step: float = 1 / 255, steps: int = 100, *,
                 alpha_schedule: bool = True, random_start: bool | None = None, seed: int = 0,
                 progress: bool = False, eval_mode: bool = True):
        if eps < 0 or step < 0 or steps < 0:
            raise ValueError(f"eps, step and steps must be non-negative, got {eps}, {step}, {steps}")
        self.model = model
        self.eps = float(eps)
        self.step = float(step)
        self.steps = int(steps)
        self.alpha_schedule = alpha_schedule
        self.random_start = self.default_random_start if random_start is None else bool(random_start)
        self.seed = int(seed)
        self.progress = progress
        self.eval_mode = eval_mode
        self.rng = SeededStream(self.seed)

    def __call__(self, images: torch.Tensor, objective: Objective, start: torch.Tensor | None = None) -> torch.Tensor:
        """Adversarial versions of ``images`` (B, 3, H, W) in [0, 1] that minimise ``objective``. ``start``: images
        to start from instead of the benign ones (a warm start: e.g. another budget's adversarial images), projected
        onto this attack's eps-ball; it replaces the random start, so the attack must have ``random_start=False``."""
        if start is not None:
            if self.random_start and self.eps > 0:
                raise ValueError("a warm start replaces the random start: build the attack with random_start=False")
            if start.shape != images.shape:
                raise ValueError(f"the warm start has shape {tuple(start.shape)}, the images {tuple(images.shape)}")
        self._warm = None if start is None else start.detach().to(device=images.device, dtype=images.dtype)
        try:
            with frozen_eval(self.model, eval_mode=self.eval_mode):
                adv = self.perturb(images.detach(), objective)
        finally:
            self._warm = None
        return adv.detach()

    def perturb(self, x: torch.Tensor, objective: Objective) -> torch.Tensor:
        raise NotImplementedError

    def settings_record(self) -> dict:
        return {"generator": self.name, "eps": self.eps, "step": self.step, "steps": self.steps,
                "alpha_schedule": self.alpha_schedule, "random_start": self.random_start, "seed": self.seed}

    # ---------------------------------------------------------------------------------------------- helpers

    def alpha(self, i: int) -> float:
        return continuation_alpha(i, self.steps) if self.alpha_schedule else 1.0

    def uniform(self, like: torch.Tensor, low: float, high: float) -> torch.Tensor:
        """U(low, high) noise shaped like ``like``, drawn from the attack's stream on ``like``'s device (in a
        data-parallel training step: this rank's rows of the draw for the whole global batch, utils/dist.py)."""
        gen = self.rng.on(like.device)
        noise = draw_for_shard(lambda n: torch.rand((n, *like.shape[1:]), generator=gen, dtype=torch.float32,
                                                    device=like.device), like.shape[0])
        return (noise * (high - low) + low).to(dtype=like.dtype)

    def project(self, x_adv: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Into the eps-ball around x, then into [0, 1]."""
        return torch.clamp(torch.minimum(torch.maximum(x_adv, x - self.eps), x + self.eps), 0.0, 1.0)

    def replay(self, like: torch.Tensor) -> None:
        """Advance the random stream as attacking a batch shaped like ``like`` would, without attacking: what lets a
        process of a sharded attack start at its own first batch with the stream one process would have there."""
        if not self.replayable:
            raise NotImplementedError(f"{self.name} draws inside its iterations: it cannot skip a batch")
        if self.random_start and self.eps > 0:
            self.uniform(like, -self.eps, self.eps)

    def start(self, x: torch.Tensor) -> torch.Tensor:
        if self._warm is not None:
            return self.project(self._warm, x)
        if self.random_start and self.eps > 0:
            return self.project(x + self.uniform(x, -self.eps, self.eps), x)
        return x.clone()

    def gradient(self, x_adv: torch.Tensor, objective: Objective, i: int,
                 transform: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
        """d objective / d x_adv, with the model at the continuation alpha of iteration i."""
        x_var = x_adv.detach().requires_grad_(True)
        inputs = transform(x_var) if transform is not None else x_var
        loss = objective(self.model(inputs, alpha=self.alpha(i)), x_var)
        (grad,) = torch.autograd.grad(loss, x_var)
        return grad

    def iterations(self) -> Iterator[int]:
        return iter(progress_bar(range(self.steps), desc=self.name, unit="it", disable=not self.progress))


class OptimizerAttack(Attack):
    """Optimise the adversarial image itself with a torch optimiser (SGD or Adam), projecting onto the eps-ball
    and [0, 1] after every step — the procedure of HAG (SGD lr 100, momentum 0.9) and SDHA (Adam lr 0.01).

    The objective receives ``(h, x_adv)`` and may use the image (SDHA's MSE term). No random start.
    """

    name = "optimizer"
    default_random_start = False

    def __init__(self, *args, optimizer: str = "sgd", lr: float = 100.0, momentum: float = 0.9, **kwargs):
        super().__init__(*args, **kwargs)
        if optimizer not in ("sgd", "adam"):
            raise ValueError(f"optimizer must be 'sgd' or 'adam', got {optimizer!r}")
        self.optimizer, self.lr, self.momentum = optimizer, float(lr), float(momentum)

    def settings_record(self) -> dict:
        return {**super().settings_record(), "optimizer": self.optimizer, "lr": self.lr, "momentum": self.momentum}

    def perturb(self, x: torch.Tensor, objective: Objective) -> torch.Tensor:
        x_adv = self.start(x).requires_grad_(True)
        if self.optimizer == "sgd":
            opt = torch.optim.SGD([x_adv], lr=self.lr, momentum=self.momentum)
        else:
            opt = torch.optim.Adam([x_adv], lr=self.lr)
        for i in self.iterations():
            loss = objective(self.model(x_adv, alpha=self.alpha(i)), x_adv)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            with torch.no_grad():
                x_adv.copy_(self.project(x_adv, x))
        return x_adv.detach()
