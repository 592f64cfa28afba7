"""Run directories: every file name of a run, in one place, and the typed record of an attack result.

A **run** is what ``saat train`` or ``saat defend`` writes::

    RUN/
      config.yaml        training settings (a training run)        RunDir.config
      defense.yaml       defense settings and origin (a defense run) RunDir.defense_config
      checkpoint.pt      per-epoch training state, for --resume       RunDir.checkpoint
      train_log.jsonl    one JSON record per logged step / epoch      RunDir.train_log
      model.pt           state_dict + metadata (weights_only)         RunDir.model
      metrics.json       clean retrieval metrics                      RunDir.metrics
      metrics-<split>.json                                            RunDir.split_metrics(split)
      cache/             encoded codes, attack networks               RunDir.cache, RunDir.codes_cache(key)
      purifiers/         ComDefend purifier (+ .partial.pt)           RunDir.purifier, RunDir.purifier_partial
      attacks/<name>/    one attack result                            RunDir.attack(name) -> AttackDir
      attacks/targets-seed<S>.npz   shared target labels              RunDir.targets(seed)
      attacks/summary-<kind>.json/.md  Table I summary                RunDir.attack_summary(kind)
      robustness/<name>/ one robustness card                          RunDir.robustness(name) -> RobustnessDir
      transfer/<name>/   a transfer matrix crafted from this run on   RunDir.transfer(name)

An **attack result** (:class:`AttackDir`) holds ``metrics.json`` (an :class:`AttackRecord`), ``adv_codes.npy``,
``query_indices.npy``, ``per_query_ap.npy`` (float64 (2, Q): each query's benign and adversarial AP, t-AP for a
targeted attack; results of earlier releases have none), ``examples.png`` and ``examples.npz``.

:class:`AttackRecord` is the schema of an attack's ``metrics.json``: the pipeline writes it, the report and the demo
read it, tests build it. ``from_json`` reads files of the current schema and of the release before it (no
``schema`` field); a file without the two fields every result has (``attack``, ``targeted``) is refused with an
error that names the field.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

ATTACK_SCHEMA_VERSION = 1


def _number(value: Any) -> float | None:
    """A finite float, or None for missing / null / non-numeric / NaN values."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _interval(value: Any) -> list[float] | None:
    """``[lo, hi]`` of two finite numbers with lo <= hi, or None (missing, malformed)."""
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        return None
    lo, hi = (_number(v) for v in value)
    return None if lo is None or hi is None or lo > hi else [lo, hi]


@dataclass(frozen=True)
class _ResultDir:
    """A result folder of a run: its name and the adversarial codes and query indices every result keeps."""

    path: Path

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def adv_codes(self) -> Path:
        return self.path / "adv_codes.npy"

    @property
    def query_indices(self) -> Path:
        return self.path / "query_indices.npy"


@dataclass(frozen=True)
class AttackDir(_ResultDir):
    """``RUN/attacks/<name>/``: the files of one attack result."""

    @property
    def metrics(self) -> Path:
        return self.path / "metrics.json"

    @property
    def per_query_ap(self) -> Path:
        """float64 (2, Q): row 0 each query's benign AP, row 1 its adversarial AP (t-AP with the target labels for a
        targeted attack), in the order of ``query_indices.npy``; the means are the record's ``benign`` and
        ``adversarial``."""
        return self.path / "per_query_ap.npy"

    @property
    def examples_png(self) -> Path:
        return self.path / "examples.png"

    @property
    def examples_npz(self) -> Path:
        return self.path / "examples.npz"

    def is_result(self) -> bool:
        """An attack result: a metrics.json inside an ``attacks/`` folder, with no model of its own."""
        return self.path.parent.name == "attacks" and self.metrics.is_file() and not (self.path / "model.pt").is_file()


@dataclass(frozen=True)
class RobustnessDir(_ResultDir):
    """``RUN/robustness/<name>/``: a robustness card (docs/robustness.md#the-card), the worst-case adversarial
    codes of its queries (``adv_codes``), the queries' indices, and in ``work/`` the per-attack results an
    interrupted evaluation resumes from."""

    @property
    def card(self) -> Path:
        return self.path / "card.json"

    @property
    def work(self) -> Path:
        return self.path / "work"


@dataclass(frozen=True)
class RunDir:
    """The files of a training or defense run directory (module docstring)."""

    path: Path

    def __init__(self, path: str | Path):
        object.__setattr__(self, "path", Path(path))

    # the run's own files
    @property
    def config(self) -> Path:
        return self.path / "config.yaml"

    @property
    def defense_config(self) -> Path:
        return self.path / "defense.yaml"

    @property
    def checkpoint(self) -> Path:
        return self.path / "checkpoint.pt"

    @property
    def train_log(self) -> Path:
        return self.path / "train_log.jsonl"

    @property
    def model(self) -> Path:
        return self.path / "model.pt"

    @property
    def metrics(self) -> Path:
        return self.path / "metrics.json"

    def split_metrics(self, split: str) -> Path:
        """Clean metrics of the queries of ``split``: ``metrics.json`` for the query split ("test"), else
        ``metrics-<split>.json``."""
        return self.metrics if split == "test" else self.path / f"metrics-{split}.json"

    # caches and auxiliary networks
    @property
    def cache(self) -> Path:
        return self.path / "cache"

    def codes_cache(self, key: str) -> Path:
        return self.cache / f"{key}.npy"

    @property
    def purifier(self) -> Path:
        return self.path / "purifiers" / "comdefend.pt"

    @property
    def purifier_partial(self) -> Path:
        return self.path / "purifiers" / "comdefend.partial.pt"

    # attack results
    @property
    def attacks(self) -> Path:
        return self.path / "attacks"

    def attack(self, name: str) -> AttackDir:
        return AttackDir(self.attacks / name)

    def targets(self, seed: int) -> Path:
        """The seeded target labels every targeted attack of the run shares."""
        return self.attacks / f"targets-seed{seed}.npz"

    def attack_summary(self, kind: str, suffix: str = ".json") -> Path:
        """The Table I summary of ``saat attack --method all`` (kind "untargeted" or "targeted"), .json or .md."""
        return self.attacks / f"summary-{kind}{suffix}"

    def attack_dirs(self) -> list[AttackDir]:
        """Every attack result folder, sorted by name."""
        if not self.attacks.is_dir():
            return []
        return [AttackDir(p) for p in sorted(self.attacks.iterdir()) if p.is_dir()]

    # robustness cards
    @property
    def robustness_root(self) -> Path:
        return self.path / "robustness"

    def robustness(self, name: str) -> RobustnessDir:
        return RobustnessDir(self.robustness_root / name)

    def robustness_dirs(self) -> list[RobustnessDir]:
        """Every robustness folder holding a card, sorted by name."""
        if not self.robustness_root.is_dir():
            return []
        return [RobustnessDir(p) for p in sorted(self.robustness_root.iterdir()) if (p / "card.json").is_file()]

    def transfer(self, name: str) -> Path:
        """``RUN/transfer/<name>/``: a transfer matrix whose first model is this run (``metrics.json``, ``work/``)."""
        return self.path / "transfer" / name

    def transfer_metrics(self, name: str) -> Path:
        """``RUN/transfer/<name>/metrics.json``: the transfer matrix's result."""
        return self.transfer(name) / "metrics.json"

    def transfer_results(self) -> list[Path]:
        """Every ``transfer/<name>/metrics.json`` of the run, sorted."""
        root = self.path / "transfer"
        return sorted(p / "metrics.json" for p in root.iterdir() if (p / "metrics.json").is_file()) \
            if root.is_dir() else []

    # what the run is
    MARKERS = ("model.pt", "metrics.json", "config.yaml", "defense.yaml")

    def is_run(self) -> bool:
        return (self.path.is_dir() and not AttackDir(self.path).is_result()
                and any((self.path / m).is_file() for m in self.MARKERS))

    def is_defense_run(self) -> bool:
        return self.defense_config.is_file()

    def has_started(self) -> bool:
        """Training state or a finished model exists: a new run here would overwrite it."""
        return self.checkpoint.exists() or self.model.exists()


@dataclass
class AttackRecord:
    """The result of one attack on a run's queries: ``RUN/attacks/<name>/metrics.json``.

    ``adversarial`` is the mAP of the adversarial queries (untargeted) or their t-MAP (targeted: the target labels
    decide relevance); ``benign`` the same measure for the benign queries (``benign_map`` is always the benign mAP
    with the queries' own labels); ``theory`` the measure of the attack's ideal codes (None where an attack has
    none). In the file these are ``adversarial_mAP`` / ``adversarial_t-MAP``, ``benign_mAP``, ``benign_t-MAP``,
    ``theory_mAP`` / ``theory_t-MAP``.

    ``benign_ci`` and ``adversarial_ci`` are the ``ci_level`` (0.95) bootstrap intervals ``[lo, hi]`` over the queries
    of ``benign`` and ``adversarial`` (``ci_resamples`` resamples; :func:`saat.retrieval.mean_ci` of the rows of
    ``per_query_ap.npy``); in the file ``benign_mAP_ci`` / ``benign_t-MAP_ci`` and ``adversarial_mAP_ci`` /
    ``adversarial_t-MAP_ci``. Results written before intervals existed read them as None.
    """

    attack: str
    targeted: bool
    name: str = ""
    dataset: str | None = None
    run: str | None = None
    checkpoint: str | None = None
    defense: dict | None = None
    topk: int | None = None
    queries: int | None = None
    benign_map: float | None = None
    adversarial: float | None = None
    theory: float | None = None
    benign_tmap: float | None = None
    random_ranking_map: float | None = None
    perceptibility: dict = field(default_factory=dict)
    seconds: float | None = None
    images_per_s: float | None = None
    network_training_seconds: float | None = None
    settings: dict = field(default_factory=dict)
    pr_curve: dict | None = None
    precision_at_n: dict | None = None
    device: str | None = None
    world_size: int | None = None  # the processes that shared the attacked queries (torchrun); 1 in one process
    benign_ci: list[float] | None = None
    adversarial_ci: list[float] | None = None
    ci_level: float | None = None
    ci_resamples: int | None = None
    schema: int = ATTACK_SCHEMA_VERSION

    @property
    def metric_key(self) -> str:
        return "t-MAP" if self.targeted else "mAP"

    @property
    def benign(self) -> float | None:
        """Benign value of the attack's measure: mAP (untargeted) or t-MAP (targeted) of the benign queries."""
        return self.benign_tmap if self.targeted else self.benign_map

    def to_json(self) -> dict:
        key = self.metric_key
        out = {
            "schema": self.schema, "attack": self.attack, "targeted": self.targeted, "name": self.name,
            "dataset": self.dataset, "run": self.run, "checkpoint": self.checkpoint, "defense": self.defense,
            "topk": self.topk, "queries": self.queries, "benign_mAP": self.benign_map,
            f"adversarial_{key}": self.adversarial, f"theory_{key}": self.theory,
            "random_ranking_mAP": self.random_ranking_map, "perceptibility": self.perceptibility,
            "seconds": self.seconds, "images_per_s": self.images_per_s,
            "network_training_seconds": self.network_training_seconds, "settings": self.settings,
            "pr_curve": self.pr_curve, "precision_at_n": self.precision_at_n, "device": self.device,
            "world_size": self.world_size, f"benign_{key}_ci": self.benign_ci,
            f"adversarial_{key}_ci": self.adversarial_ci, "ci_level": self.ci_level, "ci_resamples": self.ci_resamples,
        }
        if self.targeted:
            out["benign_t-MAP"] = self.benign_tmap
        return out

    @classmethod
    def from_json(cls, data: Any, source: str = "metrics.json") -> AttackRecord:
        """Read a ``metrics.json`` object; a value of the wrong type reads as missing (None)."""
        if not isinstance(data, dict):
            raise ValueError(f"{source}: an attack result must be a JSON object, got {type(data).__name__}")
        for required in ("attack", "targeted"):
            if required not in data:
                raise ValueError(f"{source}: field {required!r} is missing; is this an attack result of saat?")
        schema = data.get("schema", 0)
        if isinstance(schema, int) and schema > ATTACK_SCHEMA_VERSION:
            raise ValueError(f"{source}: written by a newer saat (attack schema {schema}); upgrade saat")
        targeted = bool(data["targeted"])
        key = "t-MAP" if targeted else "mAP"

        def number(k):
            return _number(data.get(k))

        def mapping(k):
            v = data.get(k)
            return v if isinstance(v, dict) else None

        def integer(k):
            v = _number(data.get(k))
            return None if v is None else int(v)

        def text(k):
            v = data.get(k)
            return None if v is None else str(v)

        def interval(k):
            return _interval(data.get(k))

        return cls(
            attack=str(data["attack"]), targeted=targeted, name=str(data.get("name") or ""),
            dataset=text("dataset"), run=text("run"), checkpoint=text("checkpoint"), defense=mapping("defense"),
            topk=integer("topk"), queries=integer("queries"), benign_map=number("benign_mAP"),
            adversarial=number(f"adversarial_{key}"), theory=number(f"theory_{key}"),
            benign_tmap=number("benign_t-MAP"), random_ranking_map=number("random_ranking_mAP"),
            perceptibility=mapping("perceptibility") or {}, seconds=number("seconds"),
            images_per_s=number("images_per_s"), network_training_seconds=number("network_training_seconds"),
            settings=mapping("settings") or {}, pr_curve=mapping("pr_curve"),
            precision_at_n=mapping("precision_at_n"), device=text("device"), world_size=integer("world_size"),
            benign_ci=interval(f"benign_{key}_ci"), adversarial_ci=interval(f"adversarial_{key}_ci"),
            ci_level=number("ci_level"), ci_resamples=integer("ci_resamples"), schema=ATTACK_SCHEMA_VERSION,
        )

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in fields(cls)]


RUN_SCHEMA_VERSION = 1


@dataclass
class TrainRecord:
    """A training run's ``metrics.json``: the clean retrieval metrics of its query split (``evaluation``, the
    dictionary :meth:`saat.retrieval.RetrievalMetrics.to_dict` gives: mAP, topk, counts, curves, ...) and what
    the run was. In the file the evaluation's keys and the run's fields sit side by side, with ``schema``."""

    evaluation: dict = field(default_factory=dict)
    dataset: str | None = None
    split: str | None = None
    method: str | None = None
    backbone: str | None = None
    bits: int | None = None
    checkpoint: str | None = None
    defense: dict | None = None
    seconds: dict | None = None
    training_seconds_this_session: float | None = None
    epochs: int | None = None
    schema: int = RUN_SCHEMA_VERSION

    RUN_FIELDS = ("dataset", "split", "method", "backbone", "bits", "checkpoint", "defense", "seconds",
                  "training_seconds_this_session", "epochs")

    @property
    def map(self) -> float | None:
        return _number(self.evaluation.get("mAP"))

    @property
    def map_ci(self) -> list[float] | None:
        """The 95 % bootstrap interval of ``map`` over the queries (``mAP_ci``), or None (written before intervals
        existed)."""
        return _interval(self.evaluation.get("mAP_ci"))

    @property
    def queries(self) -> int | None:
        counts = self.evaluation.get("counts")
        q = _number(counts.get("queries")) if isinstance(counts, dict) else None
        return None if q is None else int(q)

    def to_json(self) -> dict:
        return {"schema": self.schema, **self.evaluation, **{k: getattr(self, k) for k in self._fields()}}

    @classmethod
    def _fields(cls) -> tuple[str, ...]:
        return cls.RUN_FIELDS

    @classmethod
    def from_json(cls, data: Any, source: str = "metrics.json") -> TrainRecord:
        """Read a run's ``metrics.json`` (a defense run's gives a :class:`DefenseRecord`); values of the wrong
        type read as missing."""
        if not isinstance(data, dict):
            raise ValueError(f"{source}: a run's metrics must be a JSON object, got {type(data).__name__}")
        schema = data.get("schema", 0)
        if isinstance(schema, int) and schema > RUN_SCHEMA_VERSION:
            raise ValueError(f"{source}: written by a newer saat (run schema {schema}); upgrade saat")
        kind = DefenseRecord if isinstance(data.get("defense"), dict) else TrainRecord
        names = kind._fields()
        typed = {"bits": int, "epochs": int, "training_seconds_this_session": float, "seconds_per_epoch": float,
                 "plain_training_seconds_per_epoch": float, "epoch_time_ratio_to_plain_training": float,
                 "defense": dict, "seconds": dict}
        values = {}
        for k in names:
            v = data.get(k)
            want = typed.get(k, str)
            if want is dict:
                values[k] = v if isinstance(v, dict) else None
            elif want in (int, float):
                n = _number(v)
                values[k] = None if n is None else want(n)
            else:
                values[k] = None if v is None else str(v)
        evaluation = {k: v for k, v in data.items() if k not in names and k != "schema"}
        return kind(evaluation=evaluation, **values)


@dataclass
class DefenseRecord(TrainRecord):
    """A defense run's ``metrics.json``: a :class:`TrainRecord` with ``defense`` set (the method, its mode and
    settings) and the cost of adversarial training against plain training."""

    seconds_per_epoch: float | None = None
    plain_training_seconds_per_epoch: float | None = None
    epoch_time_ratio_to_plain_training: float | None = None

    @classmethod
    def _fields(cls) -> tuple[str, ...]:
        return (*TrainRecord.RUN_FIELDS, "seconds_per_epoch", "plain_training_seconds_per_epoch",
                "epoch_time_ratio_to_plain_training")
