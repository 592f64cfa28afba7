"""A robustness evaluation you can trust (docs/robustness.md): the per-query worst case over an attack ensemble,
sanity checks that flag gradient masking, and a transfer check, summarised in a versioned robustness card.

    from saat.robustness import evaluate
    card = evaluate(model, images, labels, db_codes=D, db_labels=DY, train_codes=U, train_labels=Y,
                    eps=8/255, topk=5000)
    card["robust_map"], card["per_attack"], card["flags"]
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .._version import __version__
from ..attacks import ATTACKS
from ..attacks.api import HashingModel, TensorAttack, gather_codes, own_batch_starts, state_hash, system_codes
from ..attacks.base import frozen_eval
from ..attacks.losses import mainstay_loss
from ..attacks.mainstay import mainstay_codes
from ..config import check_all, check_settings, type_problems
from ..retrieval import average_precision, paired_ci, random_ranking_map
from ..utils import dist
from ..utils.device import precision_name
from ..utils.io import atomic_save_npy, atomic_write_json, json_form, load_npy
from ..utils.progress import progress_bar
from ..utils.rng import derive_seed, seeded_generator
from ..utils.validation import check_eps, check_images, check_labels, codes_tensor

CARD_VERSION = 1
PRESETS = ("standard", "quick")
EPS_MULTIPLES = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0)  # the monotone check's curve, in units of eps
MONOTONE_TOLERANCE = 0.01
COLLAPSE_MARGIN = 0.05
CONVERGED_TOLERANCE = 0.01
ZERO_GRADIENT_SHARE = 0.01
_NOISE_STREAM = 7  # the uniform-noise check's random stream, derived from the seed
# The quick preset's THA: the demo recipe of its PrototypeNet (1,000 Adam steps at lr 1e-3 instead of 30,000 at
# 1e-4, the same objective and schedule shape) and 50 PGD iterations.
_THA_QUICK = {"steps": 50, "step": 2 / 255, "proto_steps": 1000, "proto_lr": 1e-3}
# The quick preset's budget of the black-box member (model evaluations per query; standard: its default, 1,000).
_SQUARE_QUICK_STEPS = 300
# The black-box flag: the score-based member beating the best gradient-based member by more than this.
BLACK_BOX_MARGIN = 0.02
# The transfer check: the mainstay objective crafted with APGD for this many iterations on the surrogate.
TRANSFER_STEPS = 100
# How the checks share work (part of what a profile computes): the eps-curve points, the collapse check and the
# converged check continue earlier runs (warm starts) instead of starting over (see _checks).
_CHECKS_SHARE = "warm-start"
# The monotone flag rises only for a rise the queries decide: above the tolerance with its paired 95 % bootstrap
# interval over the queries above 0 (a rise of one or two queries' APs on a small card is noise, not masking).
_MONOTONE_DECIDED = "paired-bootstrap-95"
# The curve's points above eps keep, per query, the better of their own result and their start's (see _checks).
_CURVE_ABOVE_EPS = "best-of-start"


@dataclass(frozen=True)
class Member:
    """One attack of the ensemble: ``attack`` (a registry name) with ``settings``, run ``restarts`` times with
    derived seeds (each restart is a candidate for every query's worst case)."""

    name: str
    attack: str
    settings: dict = field(default_factory=dict)
    restarts: int = 1


@dataclass(frozen=True)
class PriorRun:
    """An attack already run on the card's queries: on the evaluated model, the same queries in the same order and
    (targeted) the same target labels — the caller's promise — kept as the adversarial ±1 codes (Q, K) it gave.

    A member whose attack is ``seed_free`` (no random draw: the same settings give the same images whatever the
    seed) and whose settings (the attack's defaults, the overrides, the member's own, eps), targeting, batch size and
    precision equal a prior run's takes its codes instead of attacking again; the card names ``source`` in the
    member's ``reused`` field and counts no passes or seconds for it. ``settings``: every setting the run used, eps
    included (what an attack record holds; other keys are ignored)."""

    attack: str
    targeted: bool
    settings: dict
    batch_size: int
    codes: np.ndarray
    source: str
    amp: bool = False


def ensemble(preset: str = "standard", targeted: bool = False, overrides: dict | None = None) -> list[Member]:
    """The attacks of a preset (docs/robustness.md#the-ensemble). APGD runs the mainstay (and CgAT centre-code)
    objective without a hand-tuned step; HAG, SDHA, DHTA, P2P and THA keep their own procedures and defaults
    (``quick`` caps their iterations). ``overrides`` ``{attack: {setting: value}}`` (checked by
    :func:`check_overrides`) go over the profile's member settings: the members as a card runs them."""
    if overrides:
        return [replace(m, settings={**m.settings, **overrides.get(m.attack, {})}) for m in ensemble(preset, targeted)]
    if preset not in PRESETS:
        raise ValueError(f"preset must be one of {', '.join(PRESETS)}, got {preset!r}")
    quick = preset == "quick"
    apgd = {"generator": "apgd", "steps": 50 if quick else 100}
    # The score-based black-box member: only the model's outputs, so a model that masks its gradients cannot hide.
    square = Member("square", "square", {"steps": _SQUARE_QUICK_STEPS} if quick else {})
    if not targeted:
        return [Member("mainstay-apgd", "mainstay", apgd, 1 if quick else 3),
                Member("cgat-apgd", "cgat", apgd),
                Member("hag", "hag", {"steps": 100} if quick else {}),
                Member("sdha", "sdha", {"steps": 100} if quick else {}),
                square]
    return [Member("mainstay-apgd", "mainstay", apgd, 1 if quick else 3),
            Member("dhta", "dhta", {"steps": 100} if quick else {}),
            Member("p2p", "p2p", {"steps": 100} if quick else {}),
            Member("tha", "tha", _THA_QUICK if quick else {}),
            square]


def check_overrides(overrides: dict | None, preset: str = "standard") -> dict:
    """``overrides`` (``{attack: {setting: value}}`` over the preset's member settings), checked: each key an attack of
    one of the preset's ensembles (so that one mapping serves both; an ensemble without the attack ignores it), each
    setting one of that attack's. A ValueError names what is wrong."""
    members = sorted({m.attack for targeted in (False, True) for m in ensemble(preset, targeted)})
    if overrides is None:
        return {}
    if not isinstance(overrides, dict):
        raise ValueError(f"overrides must map attacks to settings ({{attack: {{setting: value}}}}), got "
                         f"{type(overrides).__name__}")
    checked = {}
    for attack, settings in overrides.items():
        if attack not in members:
            raise ValueError(f"overrides: {attack!r} is not an attack of the {preset} preset's ensembles; their "
                             f"attacks: {', '.join(members)}")
        if not isinstance(settings, dict):
            raise ValueError(f"overrides: {attack!r} needs a mapping of settings, got {settings!r}")
        what = f"the {preset} ensemble's attack {attack!r}"
        check_settings(settings, ATTACKS.get(attack).defaults, what)
        check_all(type_problems(settings, ATTACKS.get(attack).defaults, what))
        checked[attack] = dict(settings)
    return checked


# Each preset is a named, versioned profile: its version goes into every card, and its fingerprint (a hash of
# everything that decides what the preset computes: the members with their effective settings and restarts, and the
# sanity checks' constants) is recorded here per version. A change of a profile's settings is a new version with its
# own fingerprint, never an edit of an old entry (tests/test_robustness.py fails otherwise): cards of one profile
# version are comparable.
PROFILE_HISTORY: dict[str, dict[int, str]] = {
    # 2: the score-based black-box member (square) in both ensembles, and the black-box flag
    # 3: the checks share work: the eps curve, collapse and converged checks continue earlier runs (warm starts)
    # 4: the monotone flag needs a rise decided by the queries (its paired 95 % interval above 0), and the eps curve's
    #    points above eps keep per query the better of their result and their start's
    "standard": {1: "ca2de2d5208075f7", 2: "cacb169110032148", 3: "0e5744d7d7e89aeb", 4: "d220db04b8800f8a"},
    "quick": {1: "218909d989547ff5", 2: "3f5cd2720af72133", 3: "5e46e58c2bf4e586", 4: "4be28faa002c01a5"},
}


def profile_version(preset: str) -> int:
    """The current version of a robustness profile (``standard``, ``quick``)."""
    if preset not in PROFILE_HISTORY:
        raise ValueError(f"preset must be one of {', '.join(PRESETS)}, got {preset!r}")
    return max(PROFILE_HISTORY[preset])


def profile_fingerprint(preset: str) -> str:
    """A hash of what the profile computes: both ensembles (each member's attack, its settings over the attack's
    defaults, its restarts) and the sanity checks' constants."""

    def members(targeted: bool) -> list:
        return [{"name": m.name, "attack": m.attack, "restarts": m.restarts,
                 "settings": {**ATTACKS.get(m.attack).defaults, **m.settings}} for m in ensemble(preset, targeted)]

    described = {"untargeted": members(False), "targeted": members(True), "eps_multiples": EPS_MULTIPLES,
                 "monotone_tolerance": MONOTONE_TOLERANCE, "collapse_margin": COLLAPSE_MARGIN,
                 "converged_tolerance": CONVERGED_TOLERANCE, "zero_gradient_share": ZERO_GRADIENT_SHARE,
                 "noise_stream": _NOISE_STREAM, "black_box_margin": BLACK_BOX_MARGIN, "checks_share": _CHECKS_SHARE,
                 "monotone_decided": _MONOTONE_DECIDED, "curve_above_eps": _CURVE_ABOVE_EPS}
    return hashlib.sha256(json.dumps(json_form(described), sort_keys=True).encode()).hexdigest()[:16]


class PassCounter(nn.Module):
    """Counts the images a model forwards (``forwards``) and how many of them with autograd on (``backwards``:
    each is followed by a backward pass in the attacks), to report the cost per query."""

    def __init__(self, model):
        super().__init__()
        self.model = HashingModel(model) if not isinstance(model, HashingModel) else model
        self.forwards = self.backwards = 0
        self._key: str | None = None

    @property
    def key(self) -> str:
        """The content hash of the counted model (what networks trained against it are cached under)."""
        if self._key is None:
            self._key = state_hash(self)
        return self._key

    def forward(self, x: torch.Tensor, alpha: float = 1.0) -> torch.Tensor:
        self.forwards += x.shape[0]
        if torch.is_grad_enabled():
            self.backwards += x.shape[0]
        return self.model(x, alpha=alpha)


@dataclass
class _Problem:
    """Everything the checks share: the queries, the knowledge, the evaluated system, the crafting model."""

    model: Any
    crafter: PassCounter
    x: torch.Tensor
    y: torch.Tensor
    targets: torch.Tensor | None
    eps: float
    knowledge: dict
    db_codes: np.ndarray
    db_labels: np.ndarray
    topk: int | None
    batch_size: int
    seed: int
    progress: bool
    overrides: dict
    work_dir: Path | None
    cache_dir: Path
    amp: bool = False
    # adversarial images of the ensemble's first runs of warm-startable members (by member name): the checks
    # continue from them instead of starting over
    kept: dict = field(default_factory=dict)

    @property
    def targeted(self) -> bool:
        return self.targets is not None

    @property
    def relevance(self) -> np.ndarray:
        return (self.targets if self.targeted else self.y).cpu().numpy()

    def ap(self, codes: np.ndarray) -> np.ndarray:
        """Per-query AP (t-AP for a targeted evaluation) of ±1 codes."""
        return average_precision(codes, self.db_codes, self.relevance, self.db_labels, topk=self.topk)

    def encode(self, images: torch.Tensor) -> np.ndarray:
        return system_codes(self.model, images, self.batch_size)


def _resume_key(problem: _Problem, settings: dict, eps: float, seed: int, warm: str | None = None) -> dict:
    """What an attack's resume file must match: its settings, eps and seed, the run it was warm-started from, and
    the precision it was crafted in."""
    key = {**settings, "eps": eps, "seed": seed, **({"warm_start": warm} if warm else {})}
    return {**key, "amp": precision_name(problem.x.device, True)} if problem.amp else key


def runs_as(member: Member, eps: float, attack: str, settings: dict) -> bool:
    """Whether a run of ``attack`` with ``settings`` (every setting it used, eps included: an attack record's)
    computed what ``member`` computes at ``eps`` — for the same model, queries, targets and batch size, which the
    caller checks: the same attack, one that draws no random number (``seed_free``), and every setting the member runs
    with (the attack's defaults, then the member's) is the run's."""
    cls = ATTACKS.get(member.attack)
    if ATTACKS.get(attack) is not cls or not cls.seed_free:
        return False
    wanted = json_form({**cls.defaults, **member.settings, "eps": eps})
    return json_form({k: settings.get(k) for k in wanted}) == wanted


def _prior_for(problem: _Problem, member: Member, prior: list[PriorRun]) -> PriorRun | None:
    """The prior run that computed exactly what ``member`` would (see :class:`PriorRun`), or None."""
    shape = (problem.x.shape[0], problem.db_codes.shape[1])
    for p in prior:
        if (p.targeted == problem.targeted and p.batch_size == problem.batch_size and p.amp == problem.amp
                and tuple(p.codes.shape) == shape and runs_as(member, problem.eps, p.attack, p.settings)):
            return p
    return None


def _run_attack(problem: _Problem, attack: str, settings: dict, eps: float, seed: int, *,
                model=None, knowledge: dict | None = None, key: str | None = None,
                start: tuple[str, Callable[[], torch.Tensor]] | None = None,
                keep_images: bool = False) -> tuple[np.ndarray, dict, torch.Tensor | None]:
    """Adversarial codes of every query under one attack run (cached in ``work_dir`` under ``key``), with its
    time and passes per query, and with ``keep_images`` its adversarial images (None when the codes came from the
    cache; under torchrun only this process's batches are filled). ``start``: (the name of a run, a function giving
    its adversarial images) to warm-start from instead of a random start; the images are asked for only when the
    attack runs (not when its codes come from the cache)."""
    warm = start[0] if start is not None else None
    if key is not None and problem.work_dir is not None:
        codes_file, info_file = problem.work_dir / f"{key}.npy", problem.work_dir / f"{key}.json"
        if codes_file.is_file() and info_file.is_file():
            info = json.loads(info_file.read_text())
            if info.get("settings") == json_form(_resume_key(problem, settings, eps, seed, warm)):
                try:
                    return load_npy(codes_file), info, None
                except ValueError:  # a damaged resume file: the attack runs again
                    pass
    crafter = problem.crafter if model is None else PassCounter(model)
    start_f, start_b = crafter.forwards, crafter.backwards
    all_settings = {**problem.overrides.get(attack, {}), **settings, "eps": eps}
    # eps travels with the settings (not through create_attack's check): the checks use eps = 1 and eps = 0.
    # The networks some attacks train (THA's PrototypeNet) are kept in cache_dir: trained once per evaluation.
    atk = TensorAttack(attack, crafter, eps=None, steps=None, knowledge=knowledge or problem.knowledge,
                       num_classes=problem.y.shape[1], seed=seed, progress=False, settings=all_settings,
                       cache_dir=problem.cache_dir, cache_key=crafter.key, amp=problem.amp)
    t0 = time.perf_counter()
    q, bs = problem.x.shape[0], problem.batch_size
    # Under torchrun a replayable attack is sharded: this process replays the batches before its share, attacks its
    # share and gathers every process's codes (docs/scaling.md#sharded-attacks).
    starts, sharded = own_batch_starts(atk, q, bs, problem.x[:1], problem.y, problem.targets)
    start_images = start[1]() if start is not None else None
    images = torch.zeros_like(problem.x) if keep_images else None
    parts = []
    for s in starts:
        adv = atk(problem.x[s:s + bs], problem.y[s:s + bs],
                  target_labels=problem.targets[s:s + bs] if problem.targeted else None,
                  start=start_images[s:s + bs] if start_images is not None else None)
        parts.append(problem.encode(adv))
        if images is not None:
            images[s:s + bs] = adv
    bits = problem.db_codes.shape[1]
    codes = np.concatenate(parts) if parts else np.zeros((0, bits), np.int8)
    passes = torch.tensor([[crafter.forwards - start_f, crafter.backwards - start_b]], dtype=torch.float64)
    if sharded:
        codes = gather_codes(codes, bits)
        passes = dist.all_gather_rows(passes, equal=True).sum(0, keepdim=True)
    info = {"settings": json_form(_resume_key(problem, settings, eps, seed, warm)),
            "seconds": time.perf_counter() - t0, "forwards_per_query": float(passes[0, 0]) / q,
            "backwards_per_query": float(passes[0, 1]) / q}
    if key is not None and problem.work_dir is not None and dist.is_main_process():
        atomic_save_npy(problem.work_dir / f"{key}.npy", codes)
        atomic_write_json(problem.work_dir / f"{key}.json", info)
    return codes, info, images


def _mean(values: np.ndarray) -> float:
    return float(np.mean(values)) if len(values) else float("nan")


def evaluate(model, images: torch.Tensor, labels, *, db_codes, db_labels, train_codes=None, train_labels=None,
             eps: float = 8 / 255, topk: int | None = 5000, preset: str = "standard", targeted: bool = False,
             target_labels=None, surrogate=None, adaptive: bool = False, num_classes: int | None = None,
             seed: int = 0, batch_size: int = 64, overrides: dict | None = None, checks: bool = True,
             work_dir: str | Path | None = None, progress: bool = False, return_codes: bool = False,
             describe: dict | None = None, amp: bool = False, prior: list[PriorRun] | None = None):
    """The robustness card of ``model`` on the queries ``images`` (Q, 3, H, W) in [0, 1] with ``labels``
    (docs/robustness.md). Returns the card (a dict; with ``return_codes`` also the worst-case adversarial codes).

    - ``db_codes``/``db_labels``: the retrieval database; ``train_codes``/``train_labels``: the model's ±1 codes of
      its training set (mainstay and centre codes, THA).
    - ``targeted`` with ``target_labels`` (Q, C): the targeted ensemble, worst case = highest t-AP.
    - ``surrogate``: a model, or ``(model, its training codes)``, to craft a transfer attack on (the *transfer*
      check); without codes the transfer attack is HAG, which needs none.
    - ``adaptive``: craft every attack on ``model.bpda()`` — the model with its non-differentiable parts replaced by
      straight-through estimates — and evaluate on ``model``.
    - ``overrides``: ``{attack: {setting: value}}`` applied over the preset's settings (e.g. the demo presets').
    - ``checks=False`` skips the sanity checks (the card then has the ensemble only).
    - ``work_dir``: where each attack's codes are kept, so an interrupted evaluation resumes.
    - ``amp``: the attacks' passes through the model in mixed precision (docs/scaling.md#precision); the codes the
      APs are computed from are float32 encodings.
    - ``prior``: attacks already run on these queries (:class:`PriorRun`); a seed-free member that would compute the
      same takes their codes instead of running again (``saat robustness`` passes the run's attack results).
    """
    t_start = time.perf_counter()
    x = check_images(images)
    eps = check_eps(eps)
    y = check_labels(labels, "labels", num_classes, batch=x.shape[0]).to(x.device)
    width = y.shape[1]
    db_y = check_labels(db_labels, "db_labels", width).cpu().numpy()
    db = codes_tensor(db_codes, "db_codes").cpu().numpy().astype(np.int8)
    targets = None
    if targeted:
        if target_labels is None:
            raise ValueError("targeted=True needs target_labels (Q, C) or (Q,)")
        targets = check_labels(target_labels, "target_labels", width, batch=x.shape[0]).to(x.device)
    elif target_labels is not None:
        raise ValueError("target_labels given without targeted=True")
    overrides = check_overrides(overrides, preset)
    prior = list(prior or [])
    if not all(isinstance(p, PriorRun) for p in prior):
        raise TypeError("prior must be a list of PriorRun")
    for p in prior:
        if not np.isin(np.asarray(p.codes), (-1, 1)).all():
            raise ValueError(f"prior run {p.source}: its codes must be ±1 (the adversarial codes of the queries)")
    if adaptive:
        prior = []  # the card crafts on model.bpda(), not on the model the prior runs attacked
    knowledge = {"train_codes": train_codes, "train_labels": train_labels, "db_codes": db_codes,
                 "db_labels": db_labels}
    crafting = model
    if adaptive:
        if not callable(getattr(model, "bpda", None)):
            raise ValueError("adaptive=True needs a model with a bpda() method (its straight-through version); this "
                             "model declares no non-differentiable component")
        crafting = model.bpda()
    wdir = Path(work_dir) if work_dir is not None else None
    if wdir is not None:
        wdir.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        cache = wdir / "networks" if wdir is not None else Path(stack.enter_context(tempfile.TemporaryDirectory()))
        problem = _Problem(model, PassCounter(crafting), x, y, targets, eps, knowledge, db, db_y, topk, int(batch_size),
                           int(seed), progress, overrides, wdir, cache, bool(amp))
        card, worst_codes = _card(problem, preset, surrogate, adaptive, checks, describe, prior)
        if problem.amp:
            card["amp"] = precision_name(x.device, True)
    card["seconds"] = time.perf_counter() - t_start
    return (card, worst_codes) if return_codes else card


def _card(problem: _Problem, preset: str, surrogate, adaptive: bool, checks: bool,
          describe: dict | None, prior: list[PriorRun]) -> tuple[dict, np.ndarray]:
    from ..retrieval import CI_LEVEL, CI_RESAMPLES, ci_or_none

    model, x, targeted, eps, seed = problem.model, problem.x, problem.targeted, problem.eps, problem.seed
    clean_codes = problem.encode(x)
    clean_ap = problem.ap(clean_codes)
    members = ensemble(preset, targeted, problem.overrides)  # the preset's settings, then the caller's overrides
    bar = progress_bar(total=sum(m.restarts for m in members), desc="robustness ensemble", unit="attack",
                       disable=not problem.progress)

    # Ensemble: per query the lowest AP (untargeted) or the highest t-AP (targeted) over every attack and restart.
    better = np.greater if targeted else np.less
    worst_ap, worst_codes = clean_ap.copy(), clean_codes.copy()
    winner = np.full(len(clean_ap), -1)
    per_attack: dict[str, dict] = {}
    member_best: dict[str, np.ndarray] = {}
    for mi, member in enumerate(members):
        best_ap, seconds, forwards, backwards = None, 0.0, 0.0, 0.0
        keep = checks and ATTACKS.get(member.attack).warm_start  # the checks continue from its first run
        reused = None if keep else _prior_for(problem, member, prior)
        for r in range(member.restarts):
            if reused is not None:  # the same computation was already made: its codes (each restart's, no draws)
                codes, images = reused.codes.astype(np.int8), None
                info = {"seconds": 0.0, "forwards_per_query": 0.0, "backwards_per_query": 0.0}
            else:
                codes, info, images = _run_attack(problem, member.attack, member.settings, eps,
                                                  derive_seed(seed, 100 + r), key=f"{member.name}-r{r}",
                                                  keep_images=keep and r == 0)
            if images is not None:
                problem.kept[member.name] = images
            ap = problem.ap(codes)
            seconds += info["seconds"]
            forwards += info["forwards_per_query"]
            backwards += info["backwards_per_query"]
            take = better(ap, worst_ap)
            worst_ap, worst_codes[take], winner[take] = np.where(take, ap, worst_ap), codes[take], mi
            best_ap = ap if best_ap is None else np.where(better(ap, best_ap), ap, best_ap)
            bar.update(1)
        member_best[member.name] = best_ap
        per_attack[member.name] = {"attack": member.attack, "settings": {**member.settings, "eps": eps},
                                   "restarts": member.restarts, "map": _mean(best_ap),
                                   "map_ci": ci_or_none(best_ap), "wins": 0,
                                   "seconds": seconds, "forwards_per_query": forwards,
                                   "backwards_per_query": backwards,
                                   **({"reused": reused.source} if reused is not None else {})}
    bar.close()
    for mi, member in enumerate(members):
        per_attack[member.name]["wins"] = int((winner == mi).sum())
    robust = _mean(worst_ap)
    best_single = (max if targeted else min)(per_attack, key=lambda n: per_attack[n]["map"])

    card: dict[str, Any] = {
        "version": CARD_VERSION, "package_version": __version__,
        "model": {"class": type(model).__name__,
                  "weights_sha256": state_hash(model, 64) if isinstance(model, nn.Module) else None,
                  **(describe or {}).get("model", {})},
        "dataset": (describe or {}).get("dataset"),
        "threat_model": {"norm": "Linf", "eps": eps, "eps_255": eps * 255, "topk": problem.topk, "targeted": targeted,
                         "adaptive": adaptive, "preset": preset},
        "eps": eps, "topk": problem.topk, "queries": int(x.shape[0]), "seed": int(seed), "preset": preset,
        "profile": {"name": preset, "version": profile_version(preset), "fingerprint": profile_fingerprint(preset)},
        # the caller's changes of the profile's member settings (the demo's presets, a quicker smoke-test card)
        "overrides": json_form(problem.overrides),
        "targeted": targeted, "metric": "t-MAP" if targeted else "mAP",
        "clean_map": _mean(clean_ap), "robust_map": robust,
        # 95 % bootstrap intervals over the queries (docs/robustness.md#confidence-intervals)
        "clean_map_ci": ci_or_none(clean_ap), "robust_map_ci": ci_or_none(worst_ap),
        "ci": {"level": CI_LEVEL, "resamples": CI_RESAMPLES},
        "best_single": {"attack": best_single, "map": per_attack[best_single]["map"],
                        "map_ci": per_attack[best_single]["map_ci"]},
        "clean_wins": int((winner == -1).sum()),
        "random_ranking_map": random_ranking_map(problem.relevance, problem.db_labels, topk=problem.topk),
        "per_attack": per_attack,
    }
    if checks:
        card["flags"], card["eps_curve"], card["transfer"] = _checks(problem, card, members, member_best, worst_ap,
                                                                     clean_codes, clean_ap, surrogate)
    else:
        card["flags"], card["eps_curve"], card["transfer"] = {}, [], None
    card["flags_raised"] = sorted(k for k, v in card["flags"].items() if v["raised"])
    # each query's clean and worst-case AP (t-AP), in query order: for paired comparisons on the same queries
    card["per_query"] = {"clean": [float(v) for v in clean_ap], "worst": [float(v) for v in worst_ap]}
    # the passes every process made (under torchrun: their sum, the compute the card cost; it includes each
    # process's one-image code-length probe per attack and any check every process runs whole)
    passes = dist.all_gather_rows(torch.tensor([[problem.crafter.forwards, problem.crafter.backwards]],
                                               dtype=torch.float64), equal=True).sum(0)
    card["world_size"] = dist.world_size()
    card["forwards_per_query"] = float(passes[0]) / x.shape[0]
    card["backwards_per_query"] = float(passes[1]) / x.shape[0]
    return card, worst_codes


# ---------------------------------------------------------------------------------------------- sanity checks


def monotone_steps(per_query: list, targeted: bool) -> list[dict]:
    """Each step of an eps curve given per query (one array of APs per eps, in eps order, the same queries in each):
    how much the mean rises (t-MAP falls, for a targeted curve) from one eps to the next larger one, ``rise``, with
    the paired 95 % bootstrap interval of that rise over the queries, ``ci``."""
    steps = []
    for before, after in zip(per_query, per_query[1:]):
        higher, lower = (before, after) if targeted else (after, before)
        rise = float(np.mean(np.asarray(higher, float) - np.asarray(lower, float)))
        steps.append({"rise": rise, "ci": [float(v) for v in paired_ci(higher, lower)]})
    return steps


def monotone_raised(steps: list[dict]) -> bool:
    """The monotone flag: a step of the curve rises by more than the tolerance and its interval lies above 0."""
    return any(st["rise"] > MONOTONE_TOLERANCE and st["ci"][0] > 0 for st in steps)


def _flag(raised: bool, detail: str, **values) -> dict:
    return {"raised": bool(raised), "detail": detail, **values}


def _checks(problem: _Problem, card: dict, members: list[Member], member_best: dict, worst_ap: np.ndarray,
            clean_codes: np.ndarray, clean_ap: np.ndarray, surrogate) -> tuple[dict, list, dict | None]:
    eps, targeted, metric = card["eps"], card["targeted"], card["metric"]
    robust = card["robust_map"]
    main = members[0]  # the mainstay APGD attack
    flags: dict[str, dict] = {}
    first_run = derive_seed(problem.seed, 100)  # the seed of every member's first run
    wins = {m.name: card["per_attack"][m.name]["wins"] for m in members}
    strongest = max(members, key=lambda m: (wins[m.name], -members.index(m)))
    for name in [n for n in problem.kept if n not in (main.name, strongest.name)]:
        del problem.kept[name]  # only the main member's and the strongest member's images are continued

    def first_images(member: Member) -> torch.Tensor:
        """The adversarial images of the member's first run: kept by the ensemble, or crafted again (the same seed:
        the same images) when its codes came from the resume cache."""
        if member.name not in problem.kept:
            problem.kept[member.name] = _run_attack(problem, member.attack, member.settings, eps, first_run,
                                                    keep_images=True)[2]
        return problem.kept[member.name]

    # The checks share work: each eps-curve point continues the mainstay APGD attack from the images of its neighbour
    # nearer eps (projected onto its own ball) for half the iterations, the collapse check continues from the largest
    # point's images, and the converged check continues the strongest member's first run (docs/robustness.md).
    steps_main = int(main.settings.get("steps") or _default_steps(main.attack))
    warm = {**main.settings, "steps": max(1, steps_main // 2), "random_start": False}
    below = sorted((m for m in EPS_MULTIPLES if 0 < m < 1), reverse=True)
    above = sorted(m for m in EPS_MULTIPLES if m > 1)
    source = {m: ([1.0, *below][i]) for i, m in enumerate(below)} | {m: ([1.0, *above][i]) for i, m in enumerate(above)}
    point_images: dict[float, torch.Tensor] = {}

    def run_name(mult: float) -> str:
        return f"{main.name}-r0" if mult == 1 else f"curve-{mult:g}"

    def images_at(mult: float) -> torch.Tensor:
        if mult == 1:
            return first_images(main)
        if mult not in point_images:  # its codes came from the cache: crafted again from the same start
            point_images[mult] = curve_point(mult, key=None)[1]
        return point_images[mult]

    def curve_point(mult: float, key: str | None) -> tuple[np.ndarray, torch.Tensor | None]:
        src = source[mult]
        codes, _, images = _run_attack(problem, main.attack, warm, min(1.0, eps * mult), first_run, key=key,
                                       start=(run_name(src), lambda: images_at(src)), keep_images=True)
        if images is not None:
            point_images[mult] = images
        return codes, images

    # monotone: a stronger budget never helps the model.
    point_ap = {0.0: clean_ap, 1.0: member_best[main.name]}
    order, top = below + above, max(above, default=1.0)
    better = np.maximum if targeted else np.minimum
    for i, mult in enumerate(order):
        ap = problem.ap(curve_point(mult, key=f"curve-{mult:g}")[0])
        # A point above eps starts from its smaller neighbour's images, which lie inside its own ball: per query its
        # result is the better of the two (what the attack found within that budget), so the curve above eps
        # cannot rise and a rise below eps (the eps attack stopping short of a smaller ball's result) is the flag.
        point_ap[mult] = better(ap, point_ap[source[mult]]) if mult > 1 else ap
        needed = {source[m] for m in order[i + 1:]} | ({top} if not targeted else set())
        for m in [m for m in point_images if m not in needed]:
            del point_images[m]  # nothing later continues from it
    curve = [{"eps": min(1.0, eps * m), "eps_255": min(1.0, eps * m) * 255, "map": _mean(point_ap[m])}
             for m in EPS_MULTIPLES]
    steps = monotone_steps([point_ap[m] for m in EPS_MULTIPLES], targeted)
    worst = max(steps, key=lambda st: st["rise"])
    worst_rise = max(worst["rise"], 0.0)
    lo, hi = worst["ci"]
    flags["monotone"] = _flag(
        monotone_raised(steps),
        (f"{metric} under the mainstay APGD attack at eps x {list(EPS_MULTIPLES)}: its largest "
         f"{'rise' if not targeted else 'fall'} from one eps to the next larger one is {worst['rise']:+.3f} "
         f"[{lo:+.3f}, {hi:+.3f}] (flag: above {MONOTONE_TOLERANCE} with the paired 95 % interval over the queries "
         "above 0; the points above eps keep what their start found). A larger budget should never help the model; "
         "if it does, the attack is failing (gradient masking or a bad step) rather than the model being robust."),
        worst_increase=worst_rise, worst_increase_ci=[lo, hi])

    # collapse: with eps = 1 any image is allowed, so an attack that works reaches random-ranking quality.
    if not targeted:
        # From the largest curve point's images (not a random start: at eps = 1 a random start is a random image).
        codes, _, _ = _run_attack(problem, main.attack, warm, 1.0, first_run, key="collapse",
                                  start=(run_name(top), lambda: images_at(top)))
        value, bound = _mean(problem.ap(codes)), card["random_ranking_map"] + COLLAPSE_MARGIN
        flags["collapse"] = _flag(
            value > bound,
            (f"with eps = 1 (any image allowed) the mainstay attack, continued from the eps x {top:g} images, leaves "
             f"mAP {value:.3f}; a working attack brings it to the random-ranking mAP + {COLLAPSE_MARGIN} = "
             f"{bound:.3f} or below. Higher means the gradients are masked or obfuscated: the attack cannot find "
             "what is certainly there."),
            map=value, bound=bound)
    point_images.clear()

    # converged: twice the iterations of the strongest attack should not change the worst case.
    steps_now = int(strongest.settings.get("steps") or _default_steps(strongest.attack))
    if ATTACKS.get(strongest.attack).warm_start:  # its first run continued for as many iterations again
        codes, _, _ = _run_attack(problem, strongest.attack, {**strongest.settings, "random_start": False}, eps,
                                  first_run, key=f"converged-{strongest.name}",
                                  start=(f"{strongest.name}-r0", lambda: first_images(strongest)))
    else:
        codes, _, _ = _run_attack(problem, strongest.attack, {**strongest.settings, "steps": 2 * steps_now}, eps,
                                  first_run, key=f"converged-{strongest.name}")
    problem.kept.clear()
    ap = problem.ap(codes)
    combined = np.maximum(worst_ap, ap) if targeted else np.minimum(worst_ap, ap)
    moved = abs(_mean(combined) - robust)
    flags["converged"] = _flag(
        moved >= CONVERGED_TOLERANCE,
        (f"doubling the iterations of the strongest attack ({strongest.name}, {steps_now} -> {2 * steps_now}) moves "
         f"the robust {metric} by {moved:.3f} (tolerance {CONVERGED_TOLERANCE}); if it moves more, the attacks have "
         "not converged and the robust figure is too optimistic."),
        attack=strongest.name, moved=moved)

    # noise: random noise of the same budget must be weaker than the ensemble.
    g = seeded_generator(problem.seed, _NOISE_STREAM)
    noise = (torch.rand(problem.x.shape, generator=g) * 2 - 1).to(problem.x.device, problem.x.dtype) * eps
    noisy = problem.ap(problem.encode((problem.x + noise).clamp(0, 1)))
    noise_value = _mean(noisy)
    weaker = noise_value < robust if targeted else noise_value > robust
    flags["noise"] = _flag(
        not weaker,
        (f"uniform noise in the same eps-ball gives {metric} {noise_value:.3f} against the ensemble's {robust:.3f}; "
         "random noise doing as well as the attacks means the attacks are not using the gradient."),
        map=noise_value)

    # zero-gradient: the mainstay objective must have a gradient at the start.
    zero = _zero_gradient_share(problem)
    flags["zero-gradient"] = _flag(
        zero >= ZERO_GRADIENT_SHARE,
        (f"{zero:.1%} of the queries have an input gradient of exactly 0 for the mainstay objective at the start "
         f"(alpha = 0.1; flag at {ZERO_GRADIENT_SHARE:.0%}): gradient-based attacks cannot move them, a sign of a "
         "non-differentiable or saturated component (try adaptive=True with a straight-through version)."),
        share=zero)

    # stochastic: the same input must give the same codes (a second pass against the clean codes).
    differ = float((clean_codes != problem.encode(problem.x)).any(axis=1).mean())
    flags["stochastic"] = _flag(
        differ > 0,
        (f"{differ:.1%} of the queries get different codes from two passes of the same image; a randomised "
         "model needs attacks with an expectation over its randomness (EOT), which this evaluation does not do."),
        share=differ)

    # black-box: an attack that reads only the model's outputs must not beat every gradient-based one.
    box = _black_box(members, card, targeted)
    if box is not None:
        flags["black-box"] = _flag(
            box["beats_white_box"],
            (f"the score-based black-box attack ({box['attack']}, no gradients) gives {metric} {box['map']:.3f} "
             f"against {box['white_box_map']:.3f} for the best gradient-based attack ({box['white_box_attack']}); "
             f"beating it by more than {BLACK_BOX_MARGIN} means the gradients mislead the white-box attacks "
             "(gradient masking): trust the worst case, which includes the black-box attack, over any single "
             "gradient-based figure."),
            **{k: v for k, v in box.items() if k != "beats_white_box"})

    transfer = None
    if surrogate is not None:
        transfer = _transfer(problem, surrogate, eps, robust, targeted)
        flags["transfer"] = _flag(
            transfer["beats_white_box"],
            (f"an attack crafted on the surrogate ({transfer['attack']}) gives {metric} {transfer['map']:.3f} "
             f"against the white-box worst case {robust:.3f}; a black-box attack beating the white-box ones means "
             "the white-box gradients are misleading (gradient masking)."),
            map=transfer["map"])
    return flags, curve, transfer


def _black_box(members: list[Member], card: dict, targeted: bool) -> dict | None:
    """The best score-based member against the best gradient-based one (None when the ensemble lacks either)."""

    pick = max if targeted else min
    maps = {m.name: card["per_attack"][m.name]["map"] for m in members}
    black = [m.name for m in members if not ATTACKS.get(m.attack).uses_gradients]
    white = [m.name for m in members if ATTACKS.get(m.attack).uses_gradients]
    if not black or not white:
        return None
    b, w = pick(black, key=maps.get), pick(white, key=maps.get)
    beats = maps[b] > maps[w] + BLACK_BOX_MARGIN if targeted else maps[b] < maps[w] - BLACK_BOX_MARGIN
    return {"attack": b, "map": maps[b], "white_box_attack": w, "white_box_map": maps[w],
            "beats_white_box": bool(beats)}


def _default_steps(attack: str) -> int:
    """The attack's own iteration count (the members' settings already hold the caller's overrides)."""

    return int(ATTACKS.get(attack).defaults.get("steps", 100))


def _zero_gradient_share(problem: _Problem) -> float:
    train_codes, train_labels = problem.knowledge["train_codes"], problem.knowledge["train_labels"]
    if train_codes is None or train_labels is None:
        return float("nan")
    model = problem.crafter
    zero = 0
    with frozen_eval(model):
        for s in range(0, problem.x.shape[0], problem.batch_size):
            xb = problem.x[s:s + problem.batch_size].detach().clone().requires_grad_(True)
            labels = (problem.targets if problem.targeted else problem.y)[s:s + problem.batch_size]
            m = mainstay_codes(labels, train_codes, train_labels).to(xb.device)
            loss = mainstay_loss(model(xb, alpha=0.1), m, targeted=problem.targeted, per_sample=True)
            (grad,) = torch.autograd.grad(loss.sum(), xb)
            zero += int((grad.flatten(1).abs().sum(1) == 0).sum())
    return zero / problem.x.shape[0]


def _transfer(problem: _Problem, surrogate, eps: float, robust: float, targeted: bool) -> dict:
    model, codes = (surrogate if isinstance(surrogate, tuple) else (surrogate, None))
    if codes is not None:
        knowledge = {**problem.knowledge, "train_codes": codes}
        attack, settings = "mainstay", {"generator": "apgd", "steps": TRANSFER_STEPS}
    elif targeted:
        return {"attack": None, "map": float("nan"), "beats_white_box": False,
                "detail": "a targeted transfer attack needs the surrogate's training codes"}
    else:
        knowledge, attack, settings = {}, "hag", {}
    codes_adv, info, _ = _run_attack(problem, attack, settings, eps, derive_seed(problem.seed, 100), model=model,
                                  knowledge=knowledge, key="transfer")
    value = _mean(problem.ap(codes_adv))
    beats = value > robust + 1e-12 if targeted else value < robust - 1e-12
    return {"attack": attack, "map": value, "beats_white_box": bool(beats), "seconds": info["seconds"]}


def format_card(card: dict) -> str:
    """The card as plain text: the worst case, each attack's figure and wins, the eps curve and the flags. Each
    figure with its 95 % interval over the queries in brackets where the card has one."""
    from ..retrieval import format_ci

    metric = card["metric"]
    best = card["best_single"]
    lines = [f"robustness card: {card['queries']} queries, eps {card['eps'] * 255:.3g}/255, {metric}@{card['topk']}, "
             f"preset {card['preset']}" + (" (figures with their 95 % intervals over the queries)"
                                           if card.get("robust_map_ci") else ""),
             f"  clean {format_ci(card['clean_map'], card.get('clean_map_ci'))}   worst case "
             f"{format_ci(card['robust_map'], card.get('robust_map_ci'))}   best single attack "
             f"{best['attack']} {format_ci(best['map'], best.get('map_ci'))}"]
    for name, row in card["per_attack"].items():
        cost = f"reused: {row['reused']}" if row.get("reused") else f"{row['seconds']:.1f} s"
        lines.append(f"  {name:<15} {metric} {format_ci(row['map'], row.get('map_ci')):<20}  wins {row['wins']:>4}  "
                     f"{cost}")
    if card.get("eps_curve"):
        lines.append("  eps curve: " + ", ".join(f"{c['eps_255']:.3g}/255 {c['map']:.3f}" for c in card["eps_curve"]))
    for name, flag in card.get("flags", {}).items():
        mark = "RAISED" if flag["raised"] else "ok"
        lines.append(f"  [{mark:>6}] {name}: {flag['detail']}" if flag["raised"] else f"  [{mark:>6}] {name}")
    return "\n".join(lines)

