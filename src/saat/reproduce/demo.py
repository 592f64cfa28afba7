"""``saat demo``: the reproduction grid of one model on the shipped fashion-mosaic images, on a CPU, in minutes.

``saat demo`` is ``saat reproduce --preset demo`` (``--quick``: ``--preset quick``) for CSQ, small_cnn, 32 bits on
fashion-mosaic, with the run folders of earlier versions (``csq``, ``csq-saat``, ``csq-atrdh``): train -> evaluate ->
attack (SAAT attack untargeted and targeted, every baseline of Table I) -> adversarial training (SAAT, ATRDH) ->
attack the robust models (HAG, SDHA, SAAT attack) -> mAP vs eps -> robustness cards -> report; then the demo's
table. Every step is skipped when its result exists, so a rerun continues where it stopped.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..attacks import TABLE1_ATTACKS, TABLE2_ATTACKS
from ..config import DEMO_EPS
from ..errors import StepsFailedError
from ..runs import AttackRecord, RunDir
from .grid import PRESETS, GridSpec, attack_folder, card_folder
from .run import reproduce

DATASET = "fashion-mosaic"
UNTARGETED = TABLE1_ATTACKS[False]
TARGETED = TABLE1_ATTACKS[True]
ROBUST_ATTACKS = TABLE2_ATTACKS


def demo_spec(quick: bool = False, seed: int = 0) -> GridSpec:
    """The demo's grid: one model (CSQ, small_cnn, 32 bits), Tables I and II, the demo or quick preset."""
    return GridSpec(DATASET, "small_cnn", "csq", bits=(32,), seeds=(seed,), preset="quick" if quick else "demo",
                    run_name="{method}")


def run_demo(out: str | Path = "runs/demo", *, quick: bool = False, device: str = "auto", seed: int = 0,
             progress: bool = True, plan_only: bool = False) -> dict:
    """Run (or continue) the demo; returns the final table, the report's path, the wall time and each step's
    (``plan_only``: print the plan, run nothing, return ``{"plan": ...}``)."""
    out = Path(out)
    spec = demo_spec(quick, seed)
    result = reproduce(spec, out, device=device, progress=progress, label="demo", plan_only=plan_only)
    if plan_only:
        return {"plan": result["plan"]}
    if result["failures"]:
        cid, error = result["failures"][0]
        raise StepsFailedError(f"the demo's step {cid} did not finish: {error} (rerun 'saat demo' to retry; "
                           f"{len(result['failures'])} step(s) in all, listed above)")
    base = out / "csq"
    table = final_table(base, {d: out / f"csq-{d}" for d in ("saat", "atrdh")}, preset=spec.preset)
    if progress:
        print(format_table(table))
        print(f"[demo] finished in {result['seconds'] / 60:.1f} min; report: {result['report']}")
    timings = {cid: r["seconds"] for cid, r in result["cells"].items() if r.get("seconds") is not None}
    return {"table": table, "report": result["report"], "seconds": result["seconds"], "timings": timings}


def _record(run: Path, name: str) -> AttackRecord | None:
    path = RunDir(run).attack(name).metrics
    return AttackRecord.from_json(json.loads(path.read_text()), str(path)) if path.is_file() else None


def _adversarial(run: Path, name: str) -> float | None:
    record = _record(run, name)
    return None if record is None else record.adversarial


def final_table(base: Path, robust: dict[str, Path], preset: str = "demo") -> list[dict]:
    """Clean mAP and mAP under HAG, SDHA and the SAAT attack per model, plus the targeted t-MAPs of the base."""
    p = PRESETS[preset]
    rows = []
    for label, run in (("undefended", base), *(("SAAT-trained" if k == "saat" else "ATRDH-trained", v)
                                               for k, v in robust.items())):
        metrics = RunDir(run).metrics
        clean = json.loads(metrics.read_text())["mAP"] if metrics.is_file() else None
        card = RunDir(run).robustness(card_folder(p)).card
        worst = json.loads(card.read_text())["robust_map"] if card.is_file() else None
        rows.append({"model": label, "clean": clean,
                     **{m: _adversarial(run, attack_folder(p, m, False, DEMO_EPS)) for m in ROBUST_ATTACKS},
                     "worst": worst})
    benign = _record(base, attack_folder(p, "mainstay", True, DEMO_EPS))
    targeted = {"model": "undefended (targeted: t-MAP)", "benign": None if benign is None else benign.benign,
                **{m: _adversarial(base, attack_folder(p, m, True, DEMO_EPS)) for m in TARGETED}}
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
