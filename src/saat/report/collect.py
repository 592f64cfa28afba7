"""Reading what ``saat train / attack / defend`` wrote: runs and their attack results (the choice of the results
that go into the paper-style tables is :mod:`saat.report.select`).

Nothing here computes a metric; it only reads files. Every file that is missing or unreadable becomes a note on
the run (shown in the report) instead of an error, except a given path that is not a run directory at all. The
per-query APs of an attack result (``per_query_ap.npy``) and of a robustness card (``per_query``) are read when a
paired comparison asks for them; a result written before they were kept has none (None).
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..runs import AttackDir, AttackRecord, RunDir, TrainRecord
from ..utils.io import load_npy

RUN_MARKERS = RunDir.MARKERS
DEFENSE_NAMES = {"saat": "SAAT", "atrdh": "ATRDH", "cgat": "CgAT", "comdefend": "ComDefend"}
ATTACK_NAMES = {"hag": "HAG", "sdha": "SDHA", "mainstay": "SAAT attack", "p2p": "P2P", "dhta": "DHTA", "tha": "THA",
                "prosgan": "ProS-GAN", "cgat": "CgAT attack"}
# eps values closer than this (in /255 units) are the same budget (32/255 written as 0.12549 or 0.1254902).
EPS_TOLERANCE_255 = 1e-3


def read_json(path: Path) -> tuple[Any, str | None]:
    """(content, None) or (None, why it could not be read)."""
    try:
        return json.loads(path.read_text()), None
    except FileNotFoundError:
        return None, f"{path.name} missing"
    except (OSError, ValueError) as exc:
        return None, f"{path.name} unreadable ({type(exc).__name__}: {exc})"


def read_yaml(path: Path) -> tuple[Any, str | None]:
    import yaml

    try:
        return yaml.safe_load(path.read_text()), None
    except FileNotFoundError:
        return None, f"{path.name} missing"
    except (OSError, yaml.YAMLError) as exc:
        return None, f"{path.name} unreadable ({type(exc).__name__})"


def read_jsonl(path: Path) -> list[dict]:
    records = []
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return []
    for line in lines:
        try:
            rec = json.loads(line)
        except ValueError:
            break  # a line cut by a crash ends the log
        if isinstance(rec, dict):
            records.append(rec)
    return records


def number(value: Any) -> float | None:
    """A finite float, or None for missing / null / non-numeric / NaN values."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


@dataclass
class AttackResult:
    """One attack result folder, ``RUN/attacks/<name>/``, and its :class:`~saat.runs.AttackRecord`."""

    directory: Path
    record: AttackRecord
    _arrays: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def _array(self, path: Path, check) -> np.ndarray | None:
        """``path`` as an array when it exists, reads and passes ``check``; else None (read once)."""
        if path.name not in self._arrays:
            try:
                value = load_npy(path)
            except (OSError, ValueError):
                value = None
            self._arrays[path.name] = value if value is not None and check(value) else None
        return self._arrays[path.name]

    def per_query_ap(self) -> np.ndarray | None:
        """(2, Q) float64: each query's benign and adversarial AP (t-AP when targeted), or None for a result written
        before they were kept (or a file that does not match the record's query count)."""
        q = self.queries

        def fits(v: np.ndarray) -> bool:
            return (v.ndim == 2 and v.shape[0] == 2 and (q is None or v.shape[1] == q)
                    and np.issubdtype(v.dtype, np.floating) and bool(np.isfinite(v).all()))

        return self._array(self.files.per_query_ap, fits)

    def query_indices(self) -> np.ndarray | None:
        """The attacked queries' indices in the query split (``query_indices.npy``), or None."""
        return self._array(self.files.query_indices, lambda v: v.ndim == 1 and np.issubdtype(v.dtype, np.integer))

    @property
    def adversarial_ci(self) -> list[float] | None:
        return self.record.adversarial_ci

    @property
    def benign_ci(self) -> list[float] | None:
        return self.record.benign_ci

    @property
    def files(self) -> AttackDir:
        return AttackDir(self.directory)

    @property
    def name(self) -> str:
        return self.record.name or self.directory.name

    @property
    def method(self) -> str:
        return self.record.attack

    @property
    def display(self) -> str:
        label = ATTACK_NAMES.get(self.method, self.method)
        return f"{label} (t)" if self.targeted else label

    @property
    def targeted(self) -> bool:
        return self.record.targeted

    @property
    def metric_key(self) -> str:
        return self.record.metric_key

    @property
    def adversarial(self) -> float | None:
        return self.record.adversarial

    @property
    def benign(self) -> float | None:
        """Benign MAP of the same queries (benign t-MAP for targeted attacks: the target labels as relevance)."""
        return self.record.benign

    @property
    def theory(self) -> float | None:
        return self.record.theory

    @property
    def settings(self) -> dict:
        return self.record.settings

    @property
    def bounded(self) -> bool:
        return self.settings.get("bounded", True) is not False

    @property
    def eps(self) -> float | None:
        """The L-inf budget in [0,1] pixel units; None when the attack has none (an unbounded generator)."""
        return number(self.settings.get("eps")) if self.bounded else None

    @property
    def eps_255(self) -> float | None:
        return None if self.eps is None else self.eps * 255

    @property
    def steps(self) -> int | None:
        v = number(self.settings.get("steps"))
        return None if v is None else int(v)

    @property
    def queries(self) -> int | None:
        return self.record.queries

    @property
    def purifier(self) -> str | None:
        """The input purifier in front of the model at evaluation ("comdefend", "comdefend-adaptive") or None."""
        d = self.settings.get("defense")
        if not d:
            return None
        return f"{d}-adaptive" if self.settings.get("adaptive") else str(d)

    @property
    def generator(self) -> str | None:
        g = self.settings.get("generator")
        return None if g is None else str(g)

    @property
    def parity(self) -> bool:
        return bool(self.settings.get("parity"))

    @property
    def perceptibility(self) -> dict:
        return self.record.perceptibility

    def curve(self, key: str, x: str) -> tuple[list[float], list[float]] | None:
        """A stored curve (``pr_curve`` recall/precision, ``precision_at_n`` n/precision) or None."""
        return curve_of({key: getattr(self.record, key)}, key, x)

    def preference(self) -> tuple:
        """Sort key among results of one attack at one eps: the paper's default generator and mode first, then the
        most queries, the most iterations, the newest."""
        try:
            mtime = self.files.metrics.stat().st_mtime
        except OSError:
            mtime = 0.0
        return (self.generator in (None, "pgd"), not self.parity, self.queries or 0, self.steps or 0, mtime)


def curve_of(metrics: dict | None, key: str, x: str) -> tuple[list[float], list[float]] | None:
    c = (metrics or {}).get(key)
    if not isinstance(c, dict):
        return None
    xs, ys = c.get(x), c.get("precision")
    if not isinstance(xs, list) or not isinstance(ys, list) or not xs or len(xs) != len(ys):
        return None
    pairs = [(number(a), number(b)) for a, b in zip(xs, ys, strict=True)]
    pairs = [(a, b) for a, b in pairs if a is not None and b is not None]
    if not pairs:
        return None
    return [a for a, _ in pairs], [b for _, b in pairs]


@dataclass
class Run:
    """A run directory (trained or defended) with everything the report reads from it."""

    path: Path
    metrics: dict | None = None
    metadata: dict | None = None
    config: dict | None = None
    defense_config: dict | None = None
    train_log: list[dict] = field(default_factory=list)
    attacks: list[AttackResult] = field(default_factory=list)
    cards: list[dict] = field(default_factory=list)  # robustness cards (RUN/robustness/*/card.json)
    transfers: list[dict] = field(default_factory=list)  # transfer matrices (RUN/transfer/*/metrics.json)
    checkpoint_hash: str | None = None
    notes: list[str] = field(default_factory=list)
    discovered: bool = False
    slug: str = ""

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def defense(self) -> dict | None:
        d = (self.metadata or {}).get("defense")
        if not isinstance(d, dict):
            d = (self.metrics or {}).get("defense")
        return d if isinstance(d, dict) else None

    @property
    def origin(self) -> dict | None:
        o = (self.metadata or {}).get("origin")
        if not isinstance(o, dict) and isinstance(self.defense_config, dict):
            dc = self.defense_config
            o = {"run": dc.get("source_run"), "checkpoint": dc.get("source_checkpoint")}
        return o if isinstance(o, dict) else None

    @property
    def defended(self) -> bool:
        return self.defense is not None or self.defense_config is not None

    @property
    def defense_method(self) -> str | None:
        if self.defense is not None:
            return str(self.defense.get("method"))
        if isinstance(self.defense_config, dict):
            return str((self.defense_config.get("config") or {}).get("method") or "?")
        return None

    @property
    def label(self) -> str:
        """"undefended", or the defense and its mode: "SAAT (default mode)", "ATRDH (parity mode)"."""
        if not self.defended:
            return "undefended"
        method = self.defense_method or "?"
        mode = (self.defense or {}).get("mode")
        name = DEFENSE_NAMES.get(method, method)
        return f"{name} ({mode} mode)" if mode else name

    def info(self, key: str) -> Any:
        """dataset / method / backbone / bits from metrics.json, else the model metadata, else config.yaml."""
        m = self.metrics or {}
        if m.get(key) is not None:
            return m[key]
        meta = self.metadata or {}
        if key in ("backbone", "bits"):
            arch = meta.get("architecture") or {}
            if arch.get(key) is not None:
                return arch[key]
        if meta.get(key) is not None:
            return meta[key]
        return (self.config or {}).get(key)

    @property
    def record(self) -> TrainRecord | None:
        """The run's clean metrics (a DefenseRecord for a defense run), or None when metrics.json is unreadable."""
        try:
            return TrainRecord.from_json(self.metrics) if self.metrics is not None else None
        except ValueError:
            return None

    @property
    def clean_map(self) -> float | None:
        return self.record.map if self.record else None

    @property
    def clean_map_ci(self) -> list[float] | None:
        """The 95 % interval of the clean mAP over the queries, or None (metrics written before intervals)."""
        return self.record.map_ci if self.record else None

    def epoch_seconds(self) -> list[float]:
        return [s for s in (number(r.get("seconds")) for r in self.train_log if r.get("kind") == "epoch")
                if s is not None]


def is_attack_dir(path: Path) -> bool:
    """``RUN/attacks/<name>/``: an attack result, not a run."""
    return AttackDir(path).is_result()


def is_run_dir(path: Path) -> bool:
    return RunDir(path).is_run()


def check_run_dir(path: str | Path) -> Path:
    """The path of a run directory, or a FileNotFoundError / ValueError that says what the path is instead."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"run directory not found: {p}")
    if not p.is_dir():
        raise ValueError(f"{p} is not a run directory (it is a file); give the folder that holds model.pt")
    if is_attack_dir(p):
        raise ValueError(f"{p} is an attack result, not a run directory; give the run it belongs to: {p.parent.parent}")
    if p.name == "attacks" and is_run_dir(p.parent):
        raise ValueError(f"{p} is the attack folder of a run; give the run directory itself: {p.parent}")
    if not is_run_dir(p):
        inside = sorted(c.name for c in p.iterdir() if is_run_dir(c))
        hint = (f"; it contains run directories ({', '.join(inside[:5])}{', ...' if len(inside) > 5 else ''}): "
                f"give those instead, e.g. {p}/*") if inside else ""
        raise ValueError(f"{p} is not a saat run directory (none of {', '.join(RUN_MARKERS)} found){hint}")
    return p


def load_run_info(path: Path, *, read_model: bool = True) -> Run:
    run = Run(path)
    files = RunDir(path)
    run.metrics, why = read_json(files.metrics)
    if why:
        run.notes.append(why + " (no clean metrics)")
    if files.config.is_file():
        run.config, why = read_yaml(files.config)
        if why:
            run.notes.append(why)
    if files.is_defense_run():
        run.defense_config, why = read_yaml(files.defense_config)
        if why:
            run.notes.append(why)
    for target, source in (("config", run.config), ("defense_config", run.defense_config)):
        if source is not None and not isinstance(source, dict):
            setattr(run, target, None)
            run.notes.append(f"{'config.yaml' if target == 'config' else 'defense.yaml'} is not a mapping")
    run.train_log = read_jsonl(files.train_log)
    model_path = files.model
    if read_model and model_path.is_file():
        from ..checkpoint import file_hash, load_model_file

        try:
            run.metadata = load_model_file(model_path).get("metadata")
            run.checkpoint_hash = file_hash(model_path)
        except (OSError, ValueError) as exc:
            run.notes.append(f"model.pt unreadable ({exc})")
    elif not model_path.is_file():
        run.notes.append("model.pt missing (defense/origin taken from metrics.json and defense.yaml)")
    if run.checkpoint_hash is None:
        run.checkpoint_hash = (run.metrics or {}).get("checkpoint")
    run.attacks = load_attacks(RunDir(path), run.notes)
    run.cards = _load_dicts([d.card for d in files.robustness_dirs()], ("robust_map", "per_attack", "flags"),
                            run.notes)
    run.transfers = _load_dicts(files.transfer_results(), ("models", "matrix", "clean"), run.notes)
    return run


def _load_dicts(paths: list[Path], required: tuple[str, ...], notes: list[str]) -> list[dict]:
    """The JSON objects of ``paths`` that hold every ``required`` field; a note for each file left out."""
    out = []
    for path in paths:
        data, why = read_json(path)
        if why:
            notes.append(why)
        elif not isinstance(data, dict) or any(k not in data for k in required):
            notes.append(f"{path} left out: not a result with {', '.join(required)}")
        else:
            out.append(data)
    return out


def load_attacks(run_dir: RunDir, notes: list[str]) -> list[AttackResult]:
    if not run_dir.attacks.is_dir():
        notes.append("no attacks/ folder (no attack results)")
        return []
    results = []
    for d in run_dir.attack_dirs():
        m, why = read_json(d.metrics)
        if why:
            notes.append(f"attacks/{d.name}: {why}")
            continue
        try:
            results.append(AttackResult(d.path, AttackRecord.from_json(m, f"attacks/{d.name}/metrics.json")))
        except ValueError as exc:
            notes.append(str(exc))
    if not results:
        notes.append("attacks/ holds no attack result")
    return results


def discover_defended(runs: list[Run]) -> list[Path]:
    """Defended run directories beside the given undefended runs (same parent folder) whose origin is one of them:
    matched by the origin checkpoint's content hash, or else by the origin path."""
    targets = {r.checkpoint_hash for r in runs if not r.defended and r.checkpoint_hash}
    paths = {r.path.resolve() for r in runs if not r.defended}
    known = {r.path.resolve() for r in runs}
    found = []
    for parent in sorted({r.path.resolve().parent for r in runs if not r.defended}):
        for cand in sorted(p for p in parent.iterdir() if p.is_dir() and p.resolve() not in known):
            if not RunDir(cand).is_defense_run():
                continue
            cfg, _ = read_yaml(RunDir(cand).defense_config)
            if not isinstance(cfg, dict):
                continue
            source = cfg.get("source_run")
            by_path = False
            if source:
                sp = Path(str(source))
                by_path = (sp if sp.is_absolute() else parent / sp.name).resolve() in paths
            if cfg.get("source_checkpoint") in targets or by_path:
                found.append(cand)
    return found


def collect_runs(run_dirs: list[str | Path], *, discover: bool = True) -> list[Run]:
    """Read the given run directories (and, with ``discover``, defended runs beside them whose origin they are)."""
    if not run_dirs:
        raise ValueError("give at least one run directory")
    paths: list[Path] = []
    for p in run_dirs:
        p = check_run_dir(p)
        if p.resolve() not in {q.resolve() for q in paths}:
            paths.append(p)
    runs = [load_run_info(p) for p in paths]
    if discover:
        for p in discover_defended(runs):
            run = load_run_info(p)
            run.discovered = True
            runs.append(run)
    assign_slugs(runs)
    return runs


def assign_slugs(runs: list[Run]) -> None:
    """File-name-safe, unique short names for figure files."""
    seen: Counter[str] = Counter()
    for run in runs:
        base = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in run.name).strip("._") or "run"
        seen[base] += 1
        run.slug = base if seen[base] == 1 else f"{base}-{seen[base]}"
