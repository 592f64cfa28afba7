"""The cells of a reproduction grid: what ``saat reproduce`` (and ``saat demo``) runs, in which order, under which
names.

A grid is the protocol of the paper's Table I and Table II for one dataset, backbone and hashing method
(docs/reproduce.md): per bit length and seed an undefended model, the Table I attacks on it, the SAAT and ATRDH
defenses trained from it, the Table II attacks on each defended model, optional extra budgets of the SAAT attack
and the robustness card of each model; then one report. Every cell is a normal run or attack folder of
docs/conventions.md's layout, made by the same pipeline function as the single command; this module only names and
orders them. How much each cell computes comes from the :class:`Preset`.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..attacks import ATTACKS, TABLE1_ATTACKS, TABLE2_ATTACKS
from ..config import default_eps

DEFENSES_OF_TABLE2 = ("saat", "atrdh")  # the order the demo has always trained them in
MODELS = ("undefended", *DEFENSES_OF_TABLE2)
RUN_NAME = "{method}-{bits}bit-seed{seed}"
TABLES = (1, 2)


@dataclass(frozen=True)
class Preset:
    """How much work each cell does. ``None`` leaves a setting to the method's own defaults (the paper's on real
    datasets, the demo calibration on the demo datasets: docs/data.md#demo-calibration-and-presets)."""

    name: str
    help: str
    epochs: int | None  # hashing training epochs
    queries: int | None  # attacked queries per attack run and card (None: the whole query set)
    attack_steps: dict = field(default_factory=dict)  # iterations per attack
    attack_options: dict = field(default_factory=dict)  # other attack settings, per attack
    defense_epochs: int | None = None
    defense_limit: int | None = None  # iterate only the first N training images in adversarial training
    eps_sweep: tuple = ()  # extra budgets of the untargeted SAAT attack on every model (MAP vs eps)
    card_preset: str | None = "standard"  # the robustness card's ensemble; None: no cards
    card_models: tuple = MODELS  # the models that get a card
    card_checks: tuple = MODELS  # the models whose card runs the sanity checks too (about doubles its time)
    card_options: dict = field(default_factory=dict)  # {attack: {setting: value}} over the card preset's members


PRESETS: dict[str, Preset] = {
    "paper": Preset(
        "paper", "every setting the paper's (each method's defaults), every query, the standard robustness card "
        "with its sanity checks on every model", epochs=None, queries=None),
    "demo": Preset(
        "demo", "saat demo's amounts: 12 epochs, 100 queries, shortened attacks, 3 defense epochs, the budgets "
        "8/255 and 16/255 of the SAAT attack too, the quick card of the undefended and SAAT models",
        epochs=12, queries=100,
        attack_steps={"mainstay": 50, "hag": 100, "sdha": 100, "dhta": 100, "p2p": 100, "tha": 50},
        defense_epochs=3, eps_sweep=(8 / 255, 16 / 255), card_preset="quick", card_models=("undefended", "saat"),
        card_checks=("saat",)),
    "quick": Preset(
        "quick", "minutes: 3 epochs, 24 queries, 10-15 attack iterations, 1 defense epoch over 256 images, the "
        "quick card (no sanity checks) of the undefended and SAAT models at these iterations (and 100 model "
        "evaluations of the black-box member): a smoke test, not the quick profile's figure",
        epochs=3, queries=24,
        attack_steps={"mainstay": 10, "hag": 15, "sdha": 15, "dhta": 15, "p2p": 15, "tha": 10},
        attack_options={"tha": {"proto_steps": 100},
                        "prosgan": {"proto_steps": 50, "gan_epochs": 1, "gan_steps_per_epoch": 5}},
        defense_epochs=1, defense_limit=256, eps_sweep=(8 / 255,), card_preset="quick",
        card_models=("undefended", "saat"), card_checks=(),
        card_options={"mainstay": {"steps": 10}, "cgat": {"steps": 10}, "hag": {"steps": 15}, "sdha": {"steps": 15},
                      "square": {"steps": 100}}),
}


@dataclass(frozen=True)
class GridSpec:
    """What to reproduce (the command line of ``saat reproduce``)."""

    dataset: str
    backbone: str
    method: str
    bits: tuple[int, ...]
    seeds: tuple[int, ...] = (0,)
    tables: tuple[int, ...] = TABLES
    preset: str = "paper"
    run_name: str = RUN_NAME
    dataset_dir: str | None = None
    data_root: str | None = None
    pretrained: bool = False
    backbone_weights: str | None = None

    def identity(self) -> dict:
        """What a grid folder is bound to: a rerun may add or drop bit lengths, seeds and tables, never change
        these (the same folder names would then hold other work)."""
        return {k: v for k, v in asdict(self).items() if k not in ("bits", "seeds", "tables")}


@dataclass(frozen=True)
class Cell:
    """One unit of the grid: a training run, a defense run, an attack result, a robustness card or the report."""

    id: str  # "dph-16bit-seed0/attack/paper-hag-u-eps8": unique, stable across reruns
    kind: str  # train | defend | attack | card | report
    title: str  # what the progress lines print
    run: Path | None  # the run folder it writes (train, defend) or works on (attack, card)
    after: tuple[str, ...]  # ids of the cells it needs
    model: str  # undefended | saat | atrdh (report: "")
    bits: int | None = None
    seed: int | None = None
    source: Path | None = None  # defend: the run it starts from
    attack: str | None = None  # attack: the method
    targeted: bool = False
    eps: float | None = None
    name: str | None = None  # attack or card folder name


def check_spec(spec: GridSpec) -> None:
    """Every problem of a grid's settings in one ValueError (before anything is loaded)."""
    from ..hashing import list_methods
    from ..models import list_backbones

    problems = []
    if spec.preset not in PRESETS:
        problems.append(f"--preset must be one of {', '.join(PRESETS)}, got {spec.preset!r}")
    if not spec.bits or any(not isinstance(b, int) or b < 1 for b in spec.bits):
        problems.append(f"--bits must be positive integers such as 16,32,48,64, got {list(spec.bits)}")
    if not spec.seeds or any(not isinstance(s, int) or s < 0 for s in spec.seeds):
        problems.append(f"--seeds must be integers >= 0 such as 0,1,2, got {list(spec.seeds)}")
    for what, values in (("--bits", spec.bits), ("--seeds", spec.seeds), ("--tables", spec.tables)):
        if len(set(values)) != len(values):
            problems.append(f"{what} lists a value twice: {list(values)}")
    if not spec.tables or any(t not in TABLES for t in spec.tables):
        problems.append(f"--tables must be 1, 2 or 1,2, got {list(spec.tables)}")
    if spec.backbone.lower() not in list_backbones():
        problems.append(f"--backbone {spec.backbone!r} is not one of {', '.join(list_backbones())}")
    if spec.method.lower() not in list_methods():
        problems.append(f"--method {spec.method!r} is not one of {', '.join(list_methods())}")
    try:
        names = [spec.run_name.format(method=spec.method.lower(), bits=b, seed=s, backbone=spec.backbone.lower())
                 for b in spec.bits for s in spec.seeds]
    except (KeyError, IndexError, ValueError) as exc:
        problems.append(f"--run-name {spec.run_name!r}: {exc!r}; it may use {{method}}, {{bits}}, {{seed}} and "
                        "{backbone}")
    else:
        bad = [n for n in names if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", n)]
        if bad:
            problems.append(f"--run-name gives folder names with characters other than letters, digits, '.', '_' "
                            f"and '-': {bad[0]!r}")
        elif len(set(names)) != len(names):
            problems.append(f"--run-name {spec.run_name!r} gives one folder to several (bits, seed) pairs; include "
                            "{bits} and {seed}")
    if problems:
        raise ValueError("; ".join(problems))


def main_eps(dataset: str) -> float:
    """The budget of the grid's attacks: the one every command uses (:func:`saat.config.default_eps`)."""
    return default_eps(dataset)


def attack_folder(preset: Preset, method: str, targeted: bool, eps: float) -> str:
    """``demo-hag-u-eps32``: the preset, the attack, untargeted/targeted and the budget in /255."""
    return f"{preset.name}-{method}-{'t' if targeted else 'u'}-eps{round(eps * 255)}"


def card_folder(preset: Preset) -> str:
    return f"{preset.name}-{preset.card_preset}"


def build_grid(spec: GridSpec, out: Path) -> list[Cell]:
    """The cells of ``spec`` under ``out``, in the order they run: per (seed, bits) the undefended model and its
    Table I attacks, each defense and its Table II attacks, the extra budgets, the cards; the report last."""
    check_spec(spec)
    preset = PRESETS[spec.preset]
    eps = main_eps(spec.dataset)
    method = spec.method.lower()
    cells: list[Cell] = []
    runs: list[str] = []
    for seed in spec.seeds:
        for bits in spec.bits:
            name = spec.run_name.format(method=method, bits=bits, seed=seed, backbone=spec.backbone.lower())
            base = out / name
            tag = dict(bits=bits, seed=seed)

            def attack(run: Path, owner: str, model: str, atk: str, targeted: bool, budget: float,
                       tag=tag) -> None:
                if atk not in ATTACKS:
                    return
                folder = attack_folder(preset, atk, targeted, budget)
                if any(c.id == f"{run.name}/attack/{folder}" for c in cells):
                    return  # an extra budget that is the main one
                cells.append(Cell(
                    f"{run.name}/attack/{folder}", "attack",
                    f"attack {run.name} with {atk} ({'targeted' if targeted else 'untargeted'}, eps "
                    f"{budget * 255:g}/255)", run, (owner,), model, attack=atk, targeted=targeted, eps=budget,
                    name=folder, **tag))

            train_id = f"{name}/train"
            cells.append(Cell(train_id, "train", f"train {method.upper()} {spec.backbone.lower()} {bits} bits"
                              + (f" seed {seed}" if len(spec.seeds) > 1 else ""), base, (), "undefended", **tag))
            runs.append(train_id)
            if 1 in spec.tables:
                for targeted in (False, True):
                    for atk in TABLE1_ATTACKS[targeted]:
                        attack(base, train_id, "undefended", atk, targeted, eps)
            robust: dict[str, tuple[Path, str]] = {}
            if 2 in spec.tables:
                for defense in DEFENSES_OF_TABLE2:
                    run = out / f"{name}-{defense}"
                    did = f"{run.name}/defend"
                    cells.append(Cell(did, "defend", f"adversarial training: {defense.upper()}"
                                      + (f" of {name}" if len(spec.bits) * len(spec.seeds) > 1 else ""),
                                      run, (train_id,), defense, source=base, **tag))
                    runs.append(did)
                    robust[defense] = (run, did)
                    for atk in TABLE2_ATTACKS:
                        attack(run, did, defense, atk, False, eps)
            models = [("undefended", base, train_id)] + [(d, r, i) for d, (r, i) in robust.items()]
            for budget in preset.eps_sweep:
                for model, run, owner in models:
                    attack(run, owner, model, "mainstay", False, budget)
            if preset.card_preset:
                for model, run, owner in models:
                    if model in preset.card_models:
                        cells.append(Cell(f"{run.name}/card/{card_folder(preset)}", "card",
                                          f"robustness card of {run.name} ({preset.card_preset} preset)", run,
                                          (owner,), model, name=card_folder(preset), **tag))
    cells.append(Cell("report", "report", "report", out / "report", tuple(runs), ""))
    return cells
