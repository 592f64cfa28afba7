"""Attack methods by name (``saat attack --method NAME``): what each one aims at and how it perturbs a batch.

An attack method binds the attacked model's knowledge (its training codes and labels, the database) to a
perturbation procedure. ``attack(x, y, target)`` returns adversarial images; ``theory_codes(x, labels)`` the
ideal codes the method aims at for those images (``labels``: the query labels, or the target labels of a targeted
attack) — the "theory MAP" bound —, or None where none exists.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch

from ..config import check_settings
from ..utils.registry import Registry
from .base import frozen_eval
from .generators import create_generator
from .losses import mainstay_loss
from .mainstay import center_codes, mainstay_codes

ATTACKS = Registry("attack")

# The attacks of the paper's Table I in its column order: untargeted (MAP) and targeted (t-MAP). Table II attacks the
# defended models with the untargeted ones. The one list that `saat attack --method all`, the demo and the report use.
TABLE1_ATTACKS: dict[bool, tuple[str, ...]] = {False: ("hag", "sdha", "mainstay"),
                                               True: ("p2p", "dhta", "tha", "prosgan", "mainstay")}
TABLE2_ATTACKS = TABLE1_ATTACKS[False]

# What an attacker may know besides the model (the keywords of create_attack); a method's needs name some of them.
KNOWLEDGE = frozenset({"train_codes", "train_labels", "db_codes", "db_labels", "train_images"})


@dataclass
class AttackContext:
    """What an attacker of a hashing model knows: the model, its training codes/labels, the database."""

    model: torch.nn.Module
    device: torch.device
    train_codes: torch.Tensor  # (N, K) +-1 float, on device
    train_labels: torch.Tensor  # (N, C) 0/1 float, on device
    db_codes: torch.Tensor  # (M, K) +-1 float, on device
    db_labels: torch.Tensor  # (M, C) 0/1 float, on device
    seed: int = 0
    progress: bool = False
    train_split: Any = None  # the training split (images) for attacks that train a network of their own
    cache_dir: Path | None = None  # where trained attack networks are cached (RUN/cache)
    checkpoint_hash: str = ""  # content hash of the attacked checkpoint: the cache key


class AttackMethod:
    """Base of the attack methods (docs/architecture.md#where-new-code-goes: a new attack is one file and one test).

    A subclass is registered with ``@ATTACKS.register("name", *aliases)``, which sets its ``name`` to the first
    name. It declares, as class attributes that the tensor API, ``saat attack``, ``saat list`` and the tests read:

    - ``untargeted`` / ``targeted``: the modes it runs in;
    - ``needs_untargeted`` / ``needs_targeted``: what it needs besides the model in each mode, among
      ``train_codes``, ``train_labels``, ``db_codes``, ``db_labels`` and ``train_images`` (``create_attack``
      refuses a call that lacks one, naming it);
    - ``seed_free``: True when it draws no random number (same inputs, same images, whatever the seed);
    - ``defaults`` (the paper's settings, every key overridable), ``demo_defaults`` (what the demo preset changes
      besides the shared demo eps) and ``fast_settings``: the settings tests and smoke runs use, the fewest
      iterations (and the shortest training of networks of its own) that still run every part of the method — well
      under a second on the tests' tiny models, short of networks at the paper's widths.

    It implements :meth:`attack` and, where the method aims at known codes, :meth:`theory_codes`. Settings are
    available as ``self.settings``.
    """

    name = "attack"  # ATTACKS.register sets the registered name
    untargeted = True
    targeted = True
    needs_untargeted: ClassVar[frozenset[str]] = frozenset()
    needs_targeted: ClassVar[frozenset[str]] = frozenset()
    uses_generator = False  # True: the "generator" setting chooses the perturbation procedure
    # False: the method reads the model's outputs only, never its gradients (a score-based black-box attack); the
    # robustness card compares such members with the gradient-based ones (the black-box flag)
    uses_gradients = True
    # True: attack() takes start= (images to start from instead of a random start; the robustness card's checks
    # continue an attack from another budget's result with it)
    warm_start = False
    # True: the method draws no random number, so its result does not depend on the seed (the robustness card may
    # then take an earlier run of it with the same settings on the same queries instead of running it again);
    # tests/test_attack_methods_fast.py checks the claim with two seeds
    seed_free = False
    defaults: ClassVar[dict[str, Any]] = {}
    demo_defaults: ClassVar[dict[str, Any]] = {}
    fast_settings: ClassVar[dict[str, Any]] = {}

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        unknown = sorted((cls.needs_untargeted | cls.needs_targeted) - KNOWLEDGE)
        if unknown:
            raise TypeError(f"{cls.__qualname__} needs {', '.join(unknown)}: not something an attacker can be given "
                            f"(known: {', '.join(sorted(KNOWLEDGE))})")

    def __init__(self, ctx: AttackContext, *, targeted: bool = False, **settings):
        if targeted and not self.targeted:
            raise ValueError(f"attack {self.name!r} is untargeted only; drop --targeted")
        if not targeted and not self.untargeted:
            raise ValueError(f"attack {self.name!r} is targeted only; add --targeted")
        check_settings(settings, self.defaults, f"attack {self.name!r}")
        self.ctx = ctx
        self.is_targeted = targeted
        self.settings: dict[str, Any] = {**self.defaults, **settings}

    def settings_record(self) -> dict:
        return dict(self.settings)

    def theory_codes(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor | None:
        return None

    def benign_outputs(self, x: torch.Tensor) -> torch.Tensor:
        """h = f(x) of the benign images (eval mode, alpha = 1, no gradient)."""
        with frozen_eval(self.ctx.model), torch.no_grad():
            return self.ctx.model(x)

    def attack(self, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
        raise NotImplementedError

    @property
    def replayable(self) -> bool:
        """Whether :meth:`replay` makes every random draw :meth:`attack` would make on a batch: true when the
        method's only draws are its crafter's and the crafter can replay them (its random start)."""
        crafter = getattr(self, "crafter", None)
        return crafter is not None and crafter.replayable

    def replay(self, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None) -> None:
        """Advance the method's random streams as attacking this batch would, without attacking: a process of a
        sharded attack replays the batches before its own share (``x`` only gives the shape and device)."""
        if not self.replayable:
            raise NotImplementedError(f"attack {self.name!r} cannot skip a batch (it draws inside its iterations or "
                                      "trains on the queries)")
        self.crafter.replay(x)


class _CodeGuidedPGD(AttackMethod):
    """Sign-gradient attacks guided by a code derived from labels (mainstay or CgAT center)."""

    uses_generator = True
    warm_start = True
    needs_untargeted: ClassVar[frozenset[str]] = frozenset({"train_codes", "train_labels"})
    needs_targeted: ClassVar[frozenset[str]] = frozenset({"train_codes", "train_labels"})
    # random_start None: the generator's own default (a random start for PGD and APGD, none for the FGSM family).
    defaults: ClassVar[dict[str, Any]] = {"generator": "pgd", "eps": 8 / 255, "step": 1 / 255, "steps": 100,
                                          "parity": False, "random_start": None}
    fast_settings: ClassVar[dict[str, Any]] = {"step": 4 / 255, "steps": 5}

    def __init__(self, ctx: AttackContext, *, targeted: bool = False, **settings):
        super().__init__(ctx, targeted=targeted, **settings)
        o = self.settings
        self.crafter = create_generator(o["generator"], ctx.model, eps=o["eps"], step=o["step"],
                                          steps=o["steps"], seed=ctx.seed, random_start=o["random_start"])

    def settings_record(self) -> dict:
        return {**self.crafter.settings_record(), "parity": self.settings["parity"]}

    def guide(self, labels: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def theory_codes(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        m = self.guide(labels)
        return m if self.is_targeted else -m

    def attack(self, x, y, target, start=None):
        m = self.guide(target if self.is_targeted else y)
        parity = self.settings["parity"]
        per_sample = getattr(self.crafter, "per_sample_objective", False)  # APGD compares each sample's objective
        return self.crafter(x, lambda h, _x: mainstay_loss(h, m, targeted=self.is_targeted, parity=parity,
                                                         per_sample=per_sample), start=start)


@ATTACKS.register("mainstay", "saat")
class MainstayAttack(_CodeGuidedPGD):
    """The SAAT attack (docs/attacks.md#the-saat-attack): push h(x + delta) away from the query's mainstay code
    (untargeted) or pull it toward the target label's mainstay code (targeted), with PGD (or another generator), T =
    100, step 1/255, eps 8/255, the tanh continuation schedule. Theory codes: -mainstay (untargeted), +mainstay
    (targeted)."""

    def guide(self, labels):
        return mainstay_codes(labels, self.ctx.train_codes, self.ctx.train_labels)


@ATTACKS.register("cgat")
class CenterAttack(_CodeGuidedPGD):
    """CgAT's attack (Wang et al., CgAT, 2023): PGD away from (toward) the center code — the sign of the mean
    positive training code minus the mean negative one, all positives weighing equally
    (docs/attacks.md#mainstay-codes)."""

    def guide(self, labels):
        return center_codes(labels, self.ctx.train_codes, self.ctx.train_labels)


def list_attacks(pattern: str = "*", *, targeted: bool | None = None) -> list[str]:
    """Registered attack names (aliases excluded), sorted, like timm's ``list_models``: ``pattern`` a shell-style
    wildcard (``"*hta"``); ``targeted`` True / False keeps the methods that run targeted / untargeted."""
    from fnmatch import fnmatch

    names = sorted({ATTACKS.get(n).name for n in ATTACKS.names()})
    return [n for n in names if fnmatch(n, pattern)
            and (targeted is None or (ATTACKS.get(n).targeted if targeted else ATTACKS.get(n).untargeted))]
