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
from ..retrieval import format_ci
from ..runs import AttackRecord, RunDir, TrainRecord
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


def _adversarial(run: Path, name: str) -> tuple[float | None, list[float] | None]:
    """An attack result's adversarial figure and its 95 % interval (None, None when the result is missing)."""
    record = _record(run, name)
    return (None, None) if record is None else (record.adversarial, record.adversarial_ci)


def final_table(base: Path, robust: dict[str, Path], preset: str = "demo") -> list[dict]:
    """Clean mAP and mAP under HAG, SDHA and the SAAT attack per model, plus the targeted t-MAPs of the base. Each
    row maps a column to its figure, and ``row["ci"]`` the column to the figure's 95 % bootstrap interval over the
    queries (``[lo, hi]``, or None for a result written before intervals existed)."""
    p = PRESETS[preset]
    rows = []
    for label, run in (("undefended", base), *(("SAAT-trained" if k == "saat" else "ATRDH-trained", v)
                                               for k, v in robust.items())):
        metrics = RunDir(run).metrics
        record = TrainRecord.from_json(json.loads(metrics.read_text())) if metrics.is_file() else None
        card_file = RunDir(run).robustness(card_folder(p)).card
        card = json.loads(card_file.read_text()) if card_file.is_file() else None
        attacks = {m: _adversarial(run, attack_folder(p, m, False, DEMO_EPS)) for m in ROBUST_ATTACKS}
        rows.append({"model": label, "clean": None if record is None else record.map,
                     **{m: v for m, (v, _) in attacks.items()},
                     "worst": None if card is None else card["robust_map"],
                     "ci": {"clean": None if record is None else record.map_ci,
                            **{m: ci for m, (_, ci) in attacks.items()},
                            "worst": None if card is None else card.get("robust_map_ci")}})
    benign = _record(base, attack_folder(p, "mainstay", True, DEMO_EPS))
    attacks = {m: _adversarial(base, attack_folder(p, m, True, DEMO_EPS)) for m in TARGETED}
    targeted = {"model": "undefended (targeted: t-MAP)", "benign": None if benign is None else benign.benign,
                **{m: v for m, (v, _) in attacks.items()},
                "ci": {"benign": None if benign is None else benign.benign_ci,
                       **{m: ci for m, (_, ci) in attacks.items()}}}
    rows.append(targeted)
    return rows


def format_table(rows: list[dict]) -> str:
    """The demo's table: each figure with its 95 % bootstrap interval over the queries in brackets,
    ``0.343 [0.290, 0.395]`` (a result written before intervals existed: the figure alone)."""
    def f(row: dict, key: str) -> str:
        v = row.get(key)
        return "—" if v is None else format_ci(v, (row.get("ci") or {}).get(key))

    w = max(8, *(len(f(r, k)) for r in rows for k in r if k not in ("model", "ci")))
    lines = [f"{'model':<24} " + " ".join(f"{h:>{w}}" for h in ("clean", "HAG", "SDHA", "SAAT atk", "worst case"))]
    for r in rows[:-1]:
        lines.append(f"{r['model']:<24} " + " ".join(f"{f(r, k):>{w}}"
                                                     for k in ("clean", "hag", "sdha", "mainstay", "worst")))
    t = rows[-1]
    lines.append("")
    lines.append(f"{'targeted (t-MAP)':<24} " + " ".join(f"{h:>{w}}" for h in ("benign", "P2P", "DHTA", "THA",
                                                                              "ProS-GAN", "SAAT atk")))
    lines.append(f"{'undefended':<24} " + " ".join(f"{f(t, k):>{w}}"
                                                  for k in ("benign", "p2p", "dhta", "tha", "prosgan", "mainstay")))
    lines.append(f"(fashion-mosaic, small_cnn, CSQ 32 bits, eps {DEMO_EPS * 255:g}/255; mAP@1000; [95 % bootstrap "
                 "interval over the queries]; worst case: per query the lowest AP over the quick robustness ensemble, "
                 "docs/robustness.md)")
    return "\n".join(lines)
