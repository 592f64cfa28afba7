"""Configuration as data: dataclasses with the paper's defaults, presets, YAML in and out, CLI overrides on top.

Resolution order (later wins): dataclass defaults (the paper's preset) -> named preset (``demo`` is chosen
automatically for the shipped demo datasets) -> YAML file (``--config``) -> explicit command-line flags.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from .utils.io import atomic_write_text

DEMO_DATASETS = ("fashion-mnist", "fashion-mosaic")
# Demo datasets: 8/255 barely moves these grayscale models (docs/data.md#demo-calibration-and-presets), so every attack
# and adversarial training on them uses this larger budget (chosen by measurement, see README); real datasets keep the
# paper's 8/255.
DEMO_EPS = 32 / 255


def default_eps(dataset: str | None) -> float:
    """The budget every command uses when none is given: the paper's 8/255, ``DEMO_EPS`` on the demo datasets."""
    return DEMO_EPS if dataset is not None and dataset.lower() in DEMO_DATASETS else 8 / 255


# --- value checks ---------------------------------------------------------------------------------------------------
# One rule per numeric or boolean setting, shared by every settings dataclass (training, attack, defense, robustness)
# and so by the command line, --config files, config.yaml on --resume and the Python API: (kind, minimum).
# None is always allowed for fields whose default is None ("use the preset's value").
VALUE_RULES: dict[str, tuple[str, float | None]] = {
    "epochs": ("int", 0), "batch_size": ("int", 1), "bits": ("int", 1), "image_size": ("int", 1),
    "num_workers": ("int", 0), "topk": ("int", 1), "eval_batch_size": ("int", 1), "log_every": ("int", 1),
    "seed": ("int", 0), "steps": ("int", 0), "num_queries": ("int", 1), "train_limit": ("int", 1),
    "lr": ("float", 0), "momentum": ("float", 0), "weight_decay": ("float", 0), "lr_gamma": ("float", 0),
    "eps": ("float", 0), "step": ("float", 0), "lambda_": ("float", 0), "mu": ("float", 0),
    "amp": ("bool", None), "pretrained": ("bool", None), "download": ("bool", None), "evaluate": ("bool", None),
    "targeted": ("bool", None), "parity": ("bool", None), "adaptive": ("bool", None), "checks": ("bool", None),
    "overwrite": ("bool", None), "sync_bn": ("bool", None), "tf32": ("bool", None),
    **{name: ("str", None) for name in ("dataset", "data_root", "dataset_dir", "image_root", "method", "backbone",
                                         "backbone_weights", "optimizer", "device", "preset", "generator", "defense",
                                         "surrogate", "name")},
    "method_hparams": ("dict", None), "options": ("dict", None), "lr_milestones": ("int list", None),
    "path_map": ("str list", None),
}
_KIND_WORDS = {"int": "an integer", "float": "a number", "bool": "true or false", "str": "a text",
               "dict": "a mapping of settings", "int list": "a list of integers",
               "str list": "a list of OLD=NEW texts"}


def check_value(name: str, value: Any) -> None:
    """Raise a one-line ValueError when ``value`` breaks the rule of setting ``name`` in :data:`VALUE_RULES` (the
    wrong type, e.g. ``epochs: many``, ``lr: fast``; or below the minimum, e.g. ``--epochs -1``, ``--batch-size
    0``). The message names the setting as a flag and as a config key. None passes (a preset decides)."""
    problem = value_problem(name, value)
    if problem is not None:
        raise ValueError(problem)


def check_all(problems: list[str]) -> None:
    """One ValueError listing every problem found (a config with several bad values names all of them)."""
    problems = [p for p in problems if p]
    if len(problems) == 1:
        raise ValueError(problems[0])
    if problems:
        raise ValueError(f"{len(problems)} problems: " + "; ".join(problems))


def value_problem(name: str, value: Any) -> str | None:
    """What :func:`check_value` would raise for ``value`` of setting ``name``, or None when it is fine."""
    rule = VALUE_RULES.get(name)
    if rule is None or value is None:
        return None
    kind, minimum = rule
    where = f"--{name.rstrip('_').replace('_', '-')} (config key {name})"
    if kind == "bool":
        ok = isinstance(value, bool)
    elif kind == "str":
        ok = isinstance(value, str)
    elif kind == "dict":
        ok = isinstance(value, dict)
    elif kind == "str list":
        ok = isinstance(value, (list, tuple)) and all(isinstance(v, str) and "=" in v and v.split("=", 1)[0]
                                                      for v in value)
    elif kind == "int list":
        ok = isinstance(value, (list, tuple)) and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    elif kind == "int":
        ok = isinstance(value, (int, np.integer)) and not isinstance(value, bool)
    else:
        ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool) and \
            math.isfinite(float(value))
    if not ok:
        return f"{where} must be {_KIND_WORDS[kind]}, got {value!r}"
    if minimum is not None and value < minimum:
        bound = f">= {minimum:g}" if kind == "float" or minimum != 1 else "at least 1"
        return f"{where} must be {bound}, got {value!r}"
    return None


def check_values(config) -> None:
    """:func:`check_value` for every field of a settings dataclass (training, attack, defense, robustness): one
    ValueError that names every bad value."""
    check_all([value_problem(f.name, getattr(config, f.name)) for f in dataclasses.fields(config)])


def _like_default(value: Any, default: Any) -> str | None:
    """The kind of value a setting takes, judged by its default ("a number" for 0.9), when ``value`` is not of it;
    None when it fits (or the default, None, says nothing)."""
    import numbers

    if default is None or value is None:
        return None
    if isinstance(default, bool):
        return None if isinstance(value, bool) else "true or false"
    if isinstance(default, numbers.Integral):
        return None if isinstance(value, numbers.Integral) and not isinstance(value, bool) else "an integer"
    if isinstance(default, numbers.Real):
        ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(float(value))
        return None if ok else "a number"
    if isinstance(default, str):
        return None if isinstance(value, str) else "a text"
    if isinstance(default, (list, tuple)):
        return None if isinstance(value, (list, tuple)) else "a list"
    if isinstance(default, dict):
        return None if isinstance(value, dict) else "a mapping of settings"
    return None


def type_problems(values: dict, defaults: dict, what: str) -> list[str]:
    """Settings whose value is not of the kind of their default (``--option steps=fast`` for an integer setting),
    one message each, naming ``what`` the setting belongs to."""
    problems = []
    for key, value in values.items():
        kind = _like_default(value, defaults.get(key))
        if kind is not None:
            problems.append(f"{what}: {key} must be {kind} (default {defaults[key]!r}), got {value!r}")
    return problems


@dataclass
class TrainConfig:
    """Hashing-model training (docs/hashing.md#hashing-methods 'paper' preset by default: DPH + AlexNet + 32 bits, SGD
    0.01, 100 epochs)."""

    dataset: str = "FLICKR-25K"
    data_root: str | None = None
    dataset_dir: str | None = None
    image_root: str | None = None
    path_map: list[str] | None = None  # ["OLD=NEW", ...]: rewrite listed image path prefixes
    download: bool = False
    method: str = "dph"
    method_hparams: dict = field(default_factory=dict)
    backbone: str = "alexnet"
    bits: int = 32
    pretrained: bool = False
    backbone_weights: str | None = None
    image_size: int | None = None  # None: 224 for torchvision backbones, the dataset's native size for small_cnn
    epochs: int = 100
    batch_size: int = 32
    optimizer: str = "sgd"  # sgd | adam
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    lr_milestones: list[int] | None = None  # None: epochs floor(E/3) and floor(2E/3)
    lr_gamma: float = 0.1
    seed: int = 0
    device: str = "auto"
    amp: bool = False  # mixed precision: bfloat16 autocast, float16 with a gradient scaler where no bfloat16
    tf32: bool | None = None  # TF32 matmuls and cuDNN autotuning; None: on for CUDA (docs/scaling.md#precision)
    num_workers: int | None = None  # None: the input pipeline's default (docs/data.md#the-input-pipeline)
    sync_bn: bool = False  # under torchrun: BatchNorm statistics of the global batch (docs/scaling.md)
    topk: int | None = None  # None: the dataset's default topK
    evaluate: bool = True  # clean retrieval metrics at the end of training
    eval_batch_size: int | None = None  # None: 256 on accelerators, 64 on CPU (measured faster there)
    log_every: int = 50  # a step record in train_log.jsonl, and the one host read of the loss terms, every N steps
    preset: str = "paper"

    def __post_init__(self):
        check_values(self)


# Presets override the dataclass defaults. The demo preset was chosen by measurement: on both demo datasets CSQ
# reached the best clean mAP of the seven methods at 32 bits in 12 Adam epochs (fashion-mosaic 0.91 vs DPH 0.60;
# fashion-mnist 0.84 vs DPH 0.62; benchmarks/bench_hashing_methods.py), in about 80 s on 2 CPU cores.
PRESETS: dict[str, dict[str, Any]] = {
    "paper": {},
    "demo": {
        "backbone": "small_cnn",
        "method": "csq",
        "epochs": 12,
        "batch_size": 64,
        "optimizer": "adam",
        "lr": 1e-3,
        "weight_decay": 1e-5,
    },
}


def default_preset(dataset: str | None) -> str:
    return "demo" if dataset is not None and dataset.lower() in DEMO_DATASETS else "paper"


def check_settings(given, known, what: str, *, as_flags: bool = False) -> None:
    """The one unknown-setting check, for training configs, attacks, defenses and ComDefend alike: a ValueError
    that names the unknown key (as a command-line flag when ``as_flags``) and lists the known ones."""
    unknown = sorted(set(given) - set(known))
    if not unknown:
        return
    listing = ", ".join(sorted(known))
    if as_flags:
        flags = ", ".join("--" + key.rstrip("_").replace("_", "-") for key in unknown)
        raise ValueError(f"{flags} {'does' if len(unknown) == 1 else 'do'} not apply to {what}; its settings: "
                         f"{listing}")
    raise ValueError(f"{what}: unknown setting(s) {', '.join(unknown)}; its settings: {listing}")


def class_presets(defaults: dict, demo_defaults: dict) -> dict[str, dict]:
    """The two presets of an attack or defense class: ``paper`` (its defaults) and ``demo`` (the shared demo eps
    where the class has an eps, then the class's own demo changes)."""
    return {"paper": {}, "demo": {**({"eps": DEMO_EPS} if "eps" in defaults else {}), **demo_defaults}}


def resolve_settings(defaults: dict, *, what: str, presets: dict[str, dict] | None = None, preset: str = "paper",
                     file_values: dict | None = None, file_name: str = "--config", explicit: dict | None = None,
                     explicit_as_flags: bool = True) -> dict:
    """Settings, later layers winning: ``defaults`` (the paper's) <- ``presets[preset]`` <- a config file's values
    <- explicit settings (flags or keyword arguments; None means "not given"). Every layer is checked against the
    defaults' keys once, here, so a misspelt setting fails before any work."""
    presets = presets if presets is not None else {"paper": {}}
    if preset not in presets:
        raise ValueError(f"unknown preset {preset!r} for {what}; available: {', '.join(presets)}")
    explicit = {k: v for k, v in (explicit or {}).items() if v is not None}
    file_values = file_values or {}
    check_settings(presets[preset], defaults, f"{what} (preset {preset!r})")
    problems = []  # every unknown key and every value of the wrong kind, in one message
    for values, label, as_flags in ((file_values, f"{what} ({file_name})", False), (explicit, what, explicit_as_flags)):
        try:
            check_settings(values, defaults, label, as_flags=as_flags)
        except ValueError as exc:
            problems.append(str(exc))
        problems += type_problems(values, defaults, label)
    check_all(problems)
    return {**defaults, **presets[preset], **file_values, **explicit}


def preset_settings(defaults: dict, demo_defaults: dict, *, what: str, demo: bool, explicit: dict) -> dict:
    """An attack's, defense's or ComDefend's settings: its paper defaults, the demo preset on the demo datasets
    (:func:`class_presets`), then the explicit settings."""
    return resolve_settings(defaults, what=what, presets=class_presets(defaults, demo_defaults),
                            preset="demo" if demo else "paper", explicit=explicit)


def _dataclass_defaults(cls) -> dict:
    values = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            values[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            values[f.name] = f.default_factory()
    return values


def load_yaml(path: str | Path, what: str = "--config") -> dict:
    """A YAML mapping from ``path``; one-line errors (naming ``what`` and the file) for a missing file, invalid YAML,
    tags that would construct Python objects (refused by ``safe_load``) and anything but a mapping."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what}: file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        first = " ".join(str(exc).split())[:200]
        raise ValueError(f"{what}: {path} is not valid saat YAML ({first})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{what}: {path} cannot be read ({exc})") from None
    return _check_mapping(data, f"{what}: {path}")


def _check_mapping(data: Any, source: str) -> dict:
    """``data`` if it is a mapping with text keys (settings read from a file), else a one-line ValueError."""
    if not isinstance(data, dict):
        raise ValueError(f"{source} must hold a mapping of settings, got {type(data).__name__}")
    odd = [k for k in data if not isinstance(k, str)]
    if odd:
        raise ValueError(f"{source}: setting names must be text, got {odd[0]!r}")
    return data


def resolve_config(cls=TrainConfig, overrides: dict | None = None, config_file: str | Path | None = None,
                   presets: dict[str, dict] | None = None):
    """Build a config: defaults <- preset <- YAML <- overrides (None values in overrides are ignored); the preset
    is ``demo`` for the shipped demo datasets unless one is named."""
    presets = PRESETS if presets is None else presets
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    file_values = load_yaml(config_file) if config_file else {}
    given = {**file_values, **overrides}
    problems = [value_problem(key, value) for key, value in given.items()]  # types first: the preset choice reads them
    if any(problems):  # every bad value and unknown key in one message
        defaults = [f.name for f in dataclasses.fields(cls)]
        for layer, what in ((file_values, f"training config (--config {config_file})"), (overrides, "training config")):
            try:
                check_settings(layer, defaults, what)
            except ValueError as exc:
                problems.append(str(exc))
        check_all(problems)
    if given.get("dataset_dir") and "dataset" not in given and hasattr(cls, "dataset"):
        # --dataset-dir alone: a custom dataset (class count from the files), never the default catalog entry.
        overrides = {**overrides, "dataset": ""}
    dataset = overrides.get("dataset", file_values.get("dataset", getattr(cls, "dataset", None)))
    preset = overrides.get("preset", file_values.get("preset", default_preset(dataset)))
    values = resolve_settings(_dataclass_defaults(cls), what="training config", presets=presets, preset=preset,
                              file_values=file_values, file_name=f"--config {config_file}", explicit=overrides,
                              explicit_as_flags=False)
    values["preset"] = preset
    return cls(**values)


def save_config(config, path: str | Path) -> None:
    atomic_write_text(path, yaml.safe_dump(asdict(config), sort_keys=False))


def config_from_dict(cls, data, source: str = "config"):
    """A settings dataclass from a mapping read from a file (``source`` names it in errors)."""
    names = [f.name for f in dataclasses.fields(cls)]
    problems = [value_problem(key, value) for key, value in _check_mapping(data, source).items() if key in names]
    try:
        check_settings(data, names, source)
    except ValueError as exc:
        problems.append(str(exc))
    check_all(problems)  # every unknown key and bad value at once
    return cls(**data)
