"""The tensor-level attack API: any PyTorch hashing model, plain tensors in and out (torchattacks' call shape).

    from saat.attacks import create_attack
    atk = create_attack("mainstay", model, eps=8/255, steps=100, train_codes=U, train_labels=Y)
    adv = atk(images, labels)                          # untargeted; images (B, 3, H, W) float in [0, 1]
    adv = atk(images, labels, target_labels=T)         # targeted, for the methods that support it

``model`` is any ``nn.Module`` or callable mapping images in [0, 1] to continuous codes (B, K); ``alpha=`` (the
tanh continuation) is passed only to forwards that accept it. What a method needs beyond the model is passed by
name (``train_codes``/``train_labels``: mainstay, CgAT, THA, targeted SDHA; ``db_codes``/``db_labels``: DHTA and
P2P anchors, THA's label pool); a missing one raises an error naming it. Labels are multi-hot (B, C) or class
indices (B,) with ``num_classes``. Device and dtype come from the images; the model's train/eval mode and its
parameters' ``requires_grad`` are restored afterwards.
"""

from __future__ import annotations

import inspect
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from ..config import check_settings
from ..runs import AttackRecord
from ..utils.validation import check_eps, check_images, check_labels, check_outputs
from .base import frozen_eval
from .methods import ATTACKS, AttackContext, list_attacks

# What each method needs besides the model (untargeted, targeted). ProS-GAN trains a generator on a dataset split
# and is reached through `saat attack` only.
_NEEDS = {
    "mainstay": ({"train_codes", "train_labels"}, {"train_codes", "train_labels"}),
    "cgat": ({"train_codes", "train_labels"}, {"train_codes", "train_labels"}),
    "hag": (set(), set()),
    "sdha": (set(), {"train_codes", "train_labels"}),
    "dhta": (set(), {"db_codes", "db_labels"}),
    "p2p": (set(), {"db_codes", "db_labels"}),
    "tha": (set(), {"train_codes", "train_labels", "db_labels"}),
}


class HashingModel(nn.Module):
    """Wraps any model or callable images -> (B, K) continuous codes into the ``forward(x, alpha)`` the attacks
    call. ``alpha`` reaches the wrapped forward only if it has such a parameter (saat's HashModel does); otherwise
    the model runs as it is, and the continuation schedule has no effect on it."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.takes_alpha = _accepts_alpha(model)
        self.checked = False  # the outputs' values are checked on the first call only (no sync per attack step)

    def forward(self, x: torch.Tensor, alpha: float = 1.0) -> torch.Tensor:
        h = self.model(x, alpha=alpha) if self.takes_alpha else self.model(x)
        h = check_outputs(h, x.shape[0], values=not self.checked)
        self.checked = True
        return h


def _accepts_alpha(model) -> bool:
    fn = model.forward if isinstance(model, nn.Module) else model
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return "alpha" in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


class TensorAttack:
    """An attack method bound to a model and the attacker's knowledge; call it on a batch."""

    def __init__(self, name: str, model, *, eps: float, steps: int | None, knowledge: dict[str, Any],
                 num_classes: int | None, seed: int, progress: bool, settings: dict):
        self.name = ATTACKS.get(name).name
        if self.name not in _NEEDS:
            raise ValueError(f"attack {name!r} is not available on tensors (it trains on a dataset split); use "
                             f"'saat attack RUN --method {name}'. Tensor attacks: {', '.join(list_tensor_attacks())}")
        self.model = model
        self.wrapped = HashingModel(model)
        self.knowledge = knowledge
        self.num_classes = num_classes
        self.seed, self.progress = int(seed), bool(progress)
        self.settings = dict(settings)
        if eps is not None:
            self.settings["eps"] = check_eps(eps)
        if steps is not None:
            self.settings["steps"] = int(steps)
        check_settings(self.settings, ATTACKS.get(self.name).defaults, f"attack {self.name!r}")
        self._methods: dict[bool, Any] = {}

    def _needs(self, targeted: bool) -> None:
        missing = sorted(k for k in _NEEDS[self.name][targeted] if self.knowledge.get(k) is None)
        if missing:
            kind = "targeted" if targeted else "untargeted"
            raise ValueError(f"the {kind} {self.name} attack needs {', '.join(missing)}: pass "
                             f"{', '.join(f'{m}=...' for m in missing)} to create_attack")

    def _method(self, targeted: bool, like: torch.Tensor):
        cls = ATTACKS.get(self.name)
        if targeted and not cls.targeted:
            raise ValueError(f"the {self.name} attack is untargeted only: call it without target_labels")
        if not targeted and not cls.untargeted:
            raise ValueError(f"the {self.name} attack is targeted only: pass target_labels=... (B, C) or (B,)")
        if targeted not in self._methods:
            self._needs(targeted)
            k = self.knowledge
            dev = like.device
            with torch.no_grad():
                bits = self.wrapped(like[:1]).shape[1]

            def codes(name):
                c = k.get(name)
                return torch.zeros(0, bits, device=dev) if c is None else torch.as_tensor(c).to(dev, torch.float32)

            def labels(name, width):
                y = k.get(name)
                if y is None:
                    return torch.zeros(0, width, device=dev)
                return check_labels(y, name, self.num_classes or width).to(dev)

            width = self._width()
            ctx = AttackContext(self.wrapped, dev, codes("train_codes"), labels("train_labels", width),
                                codes("db_codes"), labels("db_labels", width), seed=self.seed, progress=self.progress)
            self._methods[targeted] = ATTACKS.get(self.name)(ctx, targeted=targeted, **self.settings)
        return self._methods[targeted]

    def _width(self, labels=None) -> int:
        """The number of classes: ``num_classes``, else the width of a multi-hot matrix given so far."""
        if self.num_classes is not None:
            return int(self.num_classes)
        for y in (self.knowledge.get("train_labels"), self.knowledge.get("db_labels"), labels):
            if y is not None and torch.as_tensor(y).ndim == 2:
                self.num_classes = int(torch.as_tensor(y).shape[1])
                return self.num_classes
        raise ValueError("class-index labels need num_classes= in create_attack (no multi-hot label matrix "
                         "to read the class count from)")

    def __call__(self, images: torch.Tensor, labels, target_labels=None) -> torch.Tensor:
        x = check_images(images)
        y = check_labels(labels, "labels", self._width(labels), batch=x.shape[0]).to(x.device)
        targeted = target_labels is not None
        t = (check_labels(target_labels, "target_labels", y.shape[1], batch=x.shape[0]).to(x.device)
             if targeted else None)
        method = self._method(targeted, x)
        with frozen_eval(self.wrapped):  # mode and requires_grad restored, whatever the method does inside
            adv = method.attack(x, y, t)
        return adv.detach()

    def theory_codes(self, images: torch.Tensor, labels, target_labels=None) -> torch.Tensor | None:
        """The codes the attack aims at (None where a method has none): -mainstay, +mainstay, anchors, prototypes."""
        x = check_images(images)
        targeted = target_labels is not None
        given = target_labels if targeted else labels
        y = check_labels(given, "labels", self._width(given), batch=x.shape[0]).to(x.device)
        return self._method(targeted, x).theory_codes(x, y)

    def __repr__(self) -> str:
        return f"TensorAttack({self.name!r}, settings={self.settings})"


def list_tensor_attacks() -> list[str]:
    """The attacks :func:`create_attack` builds (every registered attack but those that train on a dataset split)."""
    return [n for n in list_attacks() if n in _NEEDS]


def create_attack(name: str, model, *, eps: float | None = 8 / 255, steps: int | None = None,
                  train_codes=None, train_labels=None, db_codes=None, db_labels=None,
                  num_classes: int | None = None, seed: int = 0, progress: bool = False, **settings) -> TensorAttack:
    """Build an attack by name on any hashing model (module docstring). ``eps`` defaults to 8/255, the paper's;
    other settings (``step``, ``lr``, ``generator``, ``proto_steps``, ...) default to the method's paper values,
    as listed in ``saat.attacks.ATTACKS.get(name).defaults``."""
    knowledge = {"train_codes": train_codes, "train_labels": train_labels, "db_codes": db_codes, "db_labels": db_labels}
    return TensorAttack(name, model, eps=eps, steps=steps, knowledge=knowledge, num_classes=num_classes, seed=seed,
                        progress=progress, settings=settings)


@dataclass
class AttackRun:
    """What attacking a set of queries produced: adversarial and ideal codes, perceptibility, time, examples."""

    adv_codes: np.ndarray  # (Q, K) int8
    theory_codes: np.ndarray | None  # (Q, K) int8, None when the method has no ideal codes
    perceptibility: dict
    seconds: float
    shown: list  # up to `examples` (benign, adversarial) image pairs, on the CPU


def attack_queries(batches, attack, theory, encode, *, examples: int = 0, bar=None) -> AttackRun:
    """The one attack loop behind :func:`evaluate_attack` and ``saat attack``: for each batch ``(x, y, t)`` (t the
    target labels or None) craft ``attack(x, y, t)``, encode it with ``encode`` (the evaluated system: -> int8 +-1
    codes), take the ideal codes ``theory(x, t or y)``, and accumulate perceptibility."""
    from .perceptibility import Perceptibility

    adv_parts, theory_parts = [], []
    percept, shown = Perceptibility(), []
    t0 = time.perf_counter()
    for x, y, t in batches:
        x_adv = attack(x, y, t)
        adv_parts.append(encode(x_adv))
        ideal = theory(x, t if t is not None else y)
        theory_parts.append(None if ideal is None else ideal.cpu().numpy().astype(np.int8))
        percept.update(x, x_adv)
        if len(shown) < examples:
            shown.extend((x[i].cpu(), x_adv[i].cpu()) for i in range(min(x.shape[0], examples - len(shown))))
        if bar is not None:
            bar.update(x.shape[0])
    seconds = time.perf_counter() - t0
    has_theory = bool(theory_parts) and all(part is not None for part in theory_parts)
    return AttackRun(np.concatenate(adv_parts), np.concatenate(theory_parts) if has_theory else None,
                     percept.result(), seconds, shown)


def attack_record(result: AttackRun, *, benign_codes, db_codes, labels, db_labels, target_labels, topk,
                  **fields) -> AttackRecord:
    """The :class:`~saat.runs.AttackRecord` of an :class:`AttackRun` (``result``): benign and adversarial mAP (or
    t-MAP with the target labels as relevance), theory MAP, random-ranking mAP, curves; ``fields`` fill the rest."""
    from ..retrieval import evaluate_retrieval, mean_average_precision

    targeted = target_labels is not None
    relevance = target_labels if targeted else labels
    adv_eval = evaluate_retrieval(result.adv_codes, db_codes, relevance, db_labels, topk=topk)
    curves = adv_eval.to_dict()
    return AttackRecord(
        targeted=targeted, topk=topk, queries=len(result.adv_codes),
        benign_map=mean_average_precision(benign_codes, db_codes, labels, db_labels, topk=topk),
        adversarial=adv_eval.map,
        theory=(None if result.theory_codes is None
                else mean_average_precision(result.theory_codes, db_codes, relevance, db_labels, topk=topk)),
        benign_tmap=(mean_average_precision(benign_codes, db_codes, target_labels, db_labels, topk=topk)
                     if targeted else None),
        random_ranking_map=adv_eval.extra["random_ranking_mAP"], perceptibility=result.perceptibility,
        seconds=result.seconds, images_per_s=len(result.adv_codes) / max(result.seconds, 1e-9),
        pr_curve=curves["pr_curve"], precision_at_n=curves["precision_at_n"], **fields)


def evaluate_attack(model, atk: TensorAttack, images: torch.Tensor, labels, db_codes, db_labels, *,
                    topk: int | None = 5000, target_labels=None, batch_size: int = 64) -> dict:
    """Attack ``images`` with ``atk`` and measure retrieval against the database codes: the dictionary an attack's
    ``metrics.json`` holds (:class:`saat.runs.AttackRecord` as JSON: benign and adversarial mAP — or t-MAP and the
    benign t-MAP for a targeted attack —, theory MAP, perceptibility, seconds). Writes nothing.

    Example::

        m = evaluate_attack(model, create_attack("mainstay", model, train_codes=U, train_labels=Y),
                            images, labels, db_codes, db_labels, topk=1000)
        m["benign_mAP"], m["adversarial_mAP"]
    """
    from ..utils.codes import sign_codes

    x = check_images(images)
    width = atk._width(labels)
    y = check_labels(labels, "labels", width, batch=x.shape[0])
    db_y = check_labels(db_labels, "db_labels", width)
    targeted = target_labels is not None
    t = check_labels(target_labels, "target_labels", width, batch=x.shape[0]) if targeted else None
    wrapped = HashingModel(model)

    def encode(batch: torch.Tensor) -> np.ndarray:
        was_training = wrapped.training
        wrapped.eval()
        try:
            with torch.no_grad():
                return sign_codes(wrapped(batch)).to(torch.int8).cpu().numpy()
        finally:
            wrapped.train(was_training)

    def batches():
        for start in range(0, x.shape[0], batch_size):
            end = start + batch_size
            yield x[start:end], y[start:end], (t[start:end] if targeted else None)

    def theory(xb, labels_b):  # labels_b: the target labels of a targeted attack, else the query labels
        return atk.theory_codes(xb, None, target_labels=labels_b) if targeted else atk.theory_codes(xb, labels_b)

    run = attack_queries(batches(), lambda xb, yb, tb: atk(xb, yb, target_labels=tb), theory, encode)
    benign = np.concatenate([encode(x[s:s + batch_size]) for s in range(0, x.shape[0], batch_size)])
    record = attack_record(run, benign_codes=benign, db_codes=torch.as_tensor(db_codes).cpu().numpy(),
                           labels=y.cpu().numpy(), db_labels=db_y.cpu().numpy(),
                           target_labels=t.cpu().numpy() if targeted else None, topk=topk, attack=atk.name,
                           name=atk.name, settings=dict(atk.settings), device=str(x.device))
    return record.to_json()
