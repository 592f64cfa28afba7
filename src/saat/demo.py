"""``saat demo``: the whole product chain on the shipped fashion-mosaic images, on a CPU, in minutes.

train (CSQ, small_cnn, 32 bits) -> evaluate -> attack (SAAT attack untargeted and targeted, every baseline of
Table I) -> adversarial training (SAAT, ATRDH) -> attack the robust models (HAG, SDHA, SAAT attack) -> mAP vs eps
-> report. Every step writes its result under ``--out`` and is skipped when its result already exists, so a rerun
(or a run after an interruption) continues where it stopped.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from .attacks import ATTACKS, TABLE1_ATTACKS, TABLE2_ATTACKS
from .config import DEMO_EPS
from .pipelines.attack import AttackConfig, run_attack
from .runs import AttackRecord, RunDir

DATASET = "fashion-mosaic"


@dataclass(frozen=True)
class DemoPlan:
    """How much work each step of the demo does (everything else: the demo presets of each method)."""

    epochs: int
    queries: int
    attack_steps: dict = field(default_factory=dict)
    attack_options: dict = field(default_factory=dict)
    defense_epochs: int = 3
    defense_limit: int | None = None
    eps_sweep: tuple = (8 / 255, 16 / 255)
    # The models whose quick robustness card runs the sanity checks too (about twice the ensemble's time;
    # docs/robustness.md#the-sanity-checks): the defended model, where gradient masking would hide.
    robustness_checks: tuple = ("saat",)


FULL = DemoPlan(
    epochs=12, queries=100,
    attack_steps={"mainstay": 50, "hag": 100, "sdha": 100, "dhta": 100, "p2p": 100, "tha": 50},
    defense_epochs=3, eps_sweep=(8 / 255, 16 / 255),
)
QUICK = DemoPlan(
    epochs=3, queries=24,
    attack_steps={"mainstay": 10, "hag": 15, "sdha": 15, "dhta": 15, "p2p": 15, "tha": 10},
    attack_options={"tha": {"proto_steps": 100}, "prosgan": {"proto_steps": 50, "gan_epochs": 1,
                                                              "gan_steps_per_epoch": 5}},
    defense_epochs=1, defense_limit=256, eps_sweep=(8 / 255,), robustness_checks=(),
)
ROBUSTNESS_NAME = "demo-quick"

UNTARGETED = TABLE1_ATTACKS[False]
TARGETED = TABLE1_ATTACKS[True]
ROBUST_ATTACKS = TABLE2_ATTACKS


def run_demo(out: str | Path = "runs/demo", *, quick: bool = False, device: str = "auto", seed: int = 0,
             progress: bool = True) -> dict:
    """Run (or continue) the demo; returns the final table and the report's path."""
    from .pipelines.defend import DefenseConfig, defend
    from .pipelines.train import train

    plan = QUICK if quick else FULL
    out = Path(out)
    t_start = time.perf_counter()
    timings: dict[str, float] = {}

    def step(name: str, done: bool, fn):
        if done:
            if progress:
                print(f"[demo] {name}: done earlier, reused")
            return
        if progress:
            print(f"[demo] {name} ...", flush=True)
        t0 = time.perf_counter()
        fn()
        timings[name] = time.perf_counter() - t0
        if progress:
            print(f"[demo] {name}: {timings[name]:.1f} s", flush=True)

    base = out / "csq"
    step("train CSQ small_cnn 32 bits", RunDir(base).model.is_file(),
         lambda: train(resume=base) if RunDir(base).config.is_file() else train(
             dataset=DATASET, method="csq", backbone="small_cnn", bits=32, epochs=plan.epochs, seed=seed,
             device=device, out=base, progress=progress))

    def attack(run: Path, method: str, targeted: bool, eps: float = DEMO_EPS):
        if method not in ATTACKS:
            return
        kind = "t" if targeted else "u"
        name = f"demo-{method}-{kind}-eps{round(eps * 255)}"
        cfg = AttackConfig(method=method, targeted=targeted, num_queries=plan.queries, seed=seed, name=name,
                           steps=plan.attack_steps.get(method), options=dict(plan.attack_options.get(method, {})))
        if "eps" in ATTACKS.get(method).defaults:
            cfg.eps = eps
        step(f"attack {run.name} with {method} ({'targeted' if targeted else 'untargeted'}, eps {eps * 255:g}/255)",
             RunDir(run).attack(name).metrics.is_file(),
             lambda: run_attack(run, cfg, device=device, progress=progress))

    for method in UNTARGETED:
        attack(base, method, False)
    for method in TARGETED:
        attack(base, method, True)

    robust = {}
    for name in ("saat", "atrdh"):
        run = out / f"csq-{name}"
        robust[name] = run
        cfg = DefenseConfig(method=name, epochs=plan.defense_epochs, seed=seed, device=device,
                            train_limit=plan.defense_limit)
        step(f"adversarial training: {name.upper()}", RunDir(run).model.is_file(),
             lambda run=run, cfg=cfg: defend(resume=run, progress=progress) if RunDir(run).is_defense_run()
             else defend(base, cfg, out=run, progress=progress))
        for method in ROBUST_ATTACKS:
            attack(run, method, False)
    for eps in plan.eps_sweep:
        for run in (base, *robust.values()):
            attack(run, "mainstay", False, eps)

    from .pipelines.robustness import RobustnessConfig, run_robustness

    for key, run in (("undefended", base), ("saat", robust["saat"])):
        cfg = RobustnessConfig(preset="quick", num_queries=plan.queries, seed=seed, name=ROBUSTNESS_NAME,
                               checks=key in plan.robustness_checks)
        step(f"robustness card of {run.name} (quick preset)", RunDir(run).robustness(ROBUSTNESS_NAME).card.is_file(),
             lambda run=run, cfg=cfg: run_robustness(run, cfg, device=device, progress=progress))

    report_dir = out / "report"
    from .report import build_report

    step("report", False, lambda: build_report([base, *robust.values()], report_dir))
    table = final_table(base, robust)
    total = time.perf_counter() - t_start
    if progress:
        print(format_table(table))
        print(f"[demo] finished in {total / 60:.1f} min; report: {report_dir / 'report.html'}")
    return {"table": table, "report": str(report_dir / "report.html"), "seconds": total, "timings": timings}


def _record(run: Path, name: str) -> AttackRecord | None:
    path = RunDir(run).attack(name).metrics
    return AttackRecord.from_json(json.loads(path.read_text()), str(path)) if path.is_file() else None


def _adversarial(run: Path, name: str) -> float | None:
    record = _record(run, name)
    return None if record is None else record.adversarial


def final_table(base: Path, robust: dict[str, Path]) -> list[dict]:
    """Clean mAP and mAP under HAG, SDHA and the SAAT attack per model, plus the targeted t-MAPs of the base."""
    eps = round(DEMO_EPS * 255)
    rows = []
    for label, run in (("undefended", base), *(("SAAT-trained" if k == "saat" else "ATRDH-trained", v)
                                               for k, v in robust.items())):
        metrics = RunDir(run).metrics
        clean = json.loads(metrics.read_text())["mAP"] if metrics.is_file() else None
        card = RunDir(run).robustness(ROBUSTNESS_NAME).card
        worst = json.loads(card.read_text())["robust_map"] if card.is_file() else None
        rows.append({"model": label, "clean": clean,
                     **{m: _adversarial(run, f"demo-{m}-u-eps{eps}") for m in ROBUST_ATTACKS}, "worst": worst})
    benign = _record(base, f"demo-mainstay-t-eps{eps}")
    targeted = {"model": "undefended (targeted: t-MAP)", "benign": None if benign is None else benign.benign,
                **{m: _adversarial(base, f"demo-{m}-t-eps{eps}") for m in TARGETED}}
    rows.append(targeted)
    return rows


def format_table(rows: list[dict]) -> str:
    def f(v):
        return "   —  " if v is None else f"{v:.3f}"

    lines = [f"{'model':<24} {'clean':>7} {'HAG':>7} {'SDHA':>7} {'SAAT atk':>8} {'worst case':>10}"]
    for r in rows[:-1]:
        lines.append(f"{r['model']:<24} {f(r['clean']):>7} {f(r['hag']):>7} {f(r['sdha']):>7} "
                     f"{f(r['mainstay']):>8} {f(r.get('worst')):>10}")
    t = rows[-1]
    lines.append("")
    lines.append(f"{'targeted (t-MAP)':<24} {'benign':>7} {'P2P':>7} {'DHTA':>7} {'THA':>7} {'ProS-GAN':>8} "
                 f"{'SAAT atk':>8}")
    lines.append(f"{'undefended':<24} {f(t['benign']):>7} {f(t['p2p']):>7} {f(t['dhta']):>7} {f(t['tha']):>7} "
                 f"{f(t['prosgan']):>8} {f(t['mainstay']):>8}")
    lines.append(f"(fashion-mosaic, small_cnn, CSQ 32 bits, eps {DEMO_EPS * 255:g}/255; mAP@1000; worst case: per "
                 "query the lowest AP over the quick robustness ensemble, docs/robustness.md)")
    return "\n".join(lines)
