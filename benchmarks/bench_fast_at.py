"""The cost and the robustness of SAAT with each inner maximiser: a Pareto table
(docs/defenses.md#fast-adversarial-training).

    python benchmarks/bench_fast_at.py [--run RUN_DIR] [--variants pgd-7,pgd-3,fgsm-rs,n-fgsm,free-4]
                                       [--repeats 5] [--defense saat] [--out benchmarks/results/fast_at.json]

On the demo's settings (fashion-mosaic, small_cnn, CSQ 32 bits, eps 32/255, 3 defense epochs): for each variant of
the inner maximiser

1. **epoch time relative to a plain training epoch**: ``--repeats`` (>= 5) interleaved rounds (benchmarks/_timing.py),
   each round timing one plain hashing-training epoch and one defense epoch of every variant in the same order; the
   ratio is formed per round and reported as median (min, max). A free-training epoch replays every batch M times,
   so it is divided by M: the cost of one epoch's worth of weight updates, which is what a free run of E/M epochs
   pays E times;
2. a **full defense run** at the demo's settings (3 epochs; free: ceil(3 / M) epochs of M replays), then its clean
   mAP@1000 with its 95 % interval, its mAP under the SAAT attack of the demo (mainstay, 50 iterations, 100
   queries) and the worst case of the quick robustness card (100 queries, no sanity checks) with its interval.

``--run``: the trained undefended run to defend (default: the demo's model is trained first, about a minute).
The catastrophic-overfitting watch runs in every fast variant (its default), outside the timed epochs; its
collapse events are reported. On 2 cores a full benchmark takes about 25 minutes.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import saat
from _timing import Stat, add_repeats_arg, describe_protocol, interleaved_rounds, ratio
from saat.utils.io import atomic_write_json

VARIANTS = {
    "pgd-7": {"inner": "pgd", "steps": 7},
    "pgd-3": {"inner": "pgd", "steps": 3},
    "fgsm-rs": {"inner": "fgsm-rs"},
    "n-fgsm": {"inner": "n-fgsm"},
    "free-4": {"inner": "free", "replays": 4},
}


def _variant(name: str) -> dict:
    if name in VARIANTS:
        return dict(VARIANTS[name])
    if name.startswith("pgd-") and name[4:].isdigit():
        return {"inner": "pgd", "steps": int(name[4:])}
    if name.startswith("free-") and name[5:].isdigit():
        return {"inner": "free", "replays": int(name[5:])}
    raise ValueError(f"unknown variant {name!r}: pgd-N, fgsm-rs, n-fgsm or free-M")


def _defense_config(defense: str, spec: dict, epochs: int | None, seed: int, evaluate: bool):
    from saat.pipelines.defend import DefenseConfig

    settings = dict(spec)
    return DefenseConfig(method=defense, epochs=epochs, steps=settings.pop("steps", None),
                         inner=settings.pop("inner"), replays=settings.pop("replays", None), options=settings,
                         seed=seed, device="cpu", evaluate=evaluate)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", type=Path, help="the trained run to defend (default: train the demo's model)")
    ap.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated: pgd-N, fgsm-rs, n-fgsm, free-M")
    ap.add_argument("--defense", default="saat", choices=["saat", "atrdh", "cgat"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-timing", action="store_true", help="only the full runs and their mAPs")
    ap.add_argument("--skip-runs", action="store_true", help="only the epoch times")
    add_repeats_arg(ap)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/fast_at.json"))
    args = ap.parse_args(argv)
    try:
        variants = {name: _variant(name) for name in args.variants.split(",")}
    except ValueError as exc:
        ap.error(str(exc))

    from saat.pipelines.attack import AttackConfig, run_attack
    from saat.pipelines.robustness import RobustnessConfig, run_robustness

    result: dict = {"defense": args.defense, "variants": variants, "seed": args.seed}
    with tempfile.TemporaryDirectory() as tmp:
        run = args.run
        if run is None:
            run = Path(tmp) / "undefended"
            print("training the demo's model (fashion-mosaic, small_cnn, csq, 32 bits) ...", flush=True)
            saat.train(dataset="fashion-mosaic", backbone="small_cnn", method="csq", bits=32, seed=args.seed,
                       device="cpu", out=run, progress=False)
        counter = iter(range(1 << 30))

        if not args.skip_timing:
            print(f"epoch times: {describe_protocol(args.repeats, warmup=False)}", flush=True)

            def plain() -> float:
                out = Path(tmp) / f"plain-{next(counter)}"
                m = saat.train(dataset="fashion-mosaic", backbone="small_cnn", method="csq", bits=32, epochs=1,
                               seed=args.seed, device="cpu", out=out, progress=False)
                return m["training_seconds_this_session"]

            def one_epoch(spec: dict):
                replays = spec.get("replays", 1) if spec["inner"] == "free" else 1

                def go() -> float:
                    out = Path(tmp) / f"epoch-{next(counter)}"
                    cfg = _defense_config(args.defense, spec, replays, args.seed, evaluate=False)
                    m = saat.defend(run, cfg, out=out, progress=False)
                    return m["seconds_per_epoch"] / replays  # free: one epoch of M replays is M epochs of updates

                return go

            contenders = {"plain": plain, **{name: one_epoch(spec) for name, spec in variants.items()}}
            times = interleaved_rounds(contenders, args.repeats, warmup=False,
                                       on_round=lambda r, t: print(f"  round {r + 1}: " + ", ".join(
                                           f"{k} {v:.1f} s" for k, v in t.items()), flush=True))
            result["epoch_seconds"] = {k: v.as_dict() for k, v in times.items()}
            result["epoch_ratio"] = {k: ratio(times[k], times["plain"]).as_dict() for k in variants}

        if not args.skip_runs:
            result["runs"] = {}
            for name, spec in variants.items():
                out = Path(tmp) / f"run-{name}"
                t0 = time.perf_counter()
                print(f"{name}: defense run at the demo's settings ...", flush=True)
                cfg = _defense_config(args.defense, spec, None, args.seed, evaluate=True)
                m = saat.defend(run, cfg, out=out, progress=False)
                seconds = time.perf_counter() - t0
                attack = run_attack(out, AttackConfig(method="mainstay", num_queries=100, seed=args.seed, steps=50),
                                    device="cpu", progress=False, write=False)
                card = run_robustness(out, RobustnessConfig(preset="quick", num_queries=100, seed=args.seed,
                                                            checks=False), device="cpu", progress=False, write=False)
                log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
                result["runs"][name] = {
                    "clean_map": m["mAP"], "clean_map_ci": m.get("mAP_ci"),
                    "saat_attack_map": attack["adversarial_mAP"],
                    "saat_attack_map_ci": attack.get("adversarial_mAP_ci"),
                    "worst_case_map": card["robust_map"], "worst_case_map_ci": card.get("robust_map_ci"),
                    "defense_seconds": seconds, "epochs": m["epochs"],
                    "watch": [r for r in log if r.get("kind") == "watch"],
                    "collapses": [r for r in log if r.get("kind") == "collapse"],
                }
                r = result["runs"][name]
                print(f"  clean {r['clean_map']:.3f}, SAAT attack {r['saat_attack_map']:.3f}, worst case "
                      f"{r['worst_case_map']:.3f}, collapses {len(r['collapses'])}, {seconds:.0f} s", flush=True)

    _print_table(result)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out, result)
    print(f"wrote {args.out}")
    return 0


def _ci(value: float | None, ci) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")


def _print_table(result: dict) -> None:
    print(f"\n{result['defense']} by inner maximiser (epoch time / plain epoch: median (min, max) over interleaved "
          "rounds; mAP@1000 with 95 % intervals)")
    print(f"{'variant':<9} {'epoch / plain':<34} {'clean':<22} {'SAAT attack':<22} {'worst case (quick)':<22} "
          "collapses")
    for name in result["variants"]:
        rt = result.get("epoch_ratio", {}).get(name)
        time_text = Stat(rt["values"]).fmt(".2f", "x") if rt else "-"
        r = result.get("runs", {}).get(name, {})
        print(f"{name:<9} {time_text:<34} {_ci(r.get('clean_map'), r.get('clean_map_ci')):<22} "
              f"{_ci(r.get('saat_attack_map'), r.get('saat_attack_map_ci')):<22} "
              f"{_ci(r.get('worst_case_map'), r.get('worst_case_map_ci')):<22} {len(r.get('collapses', [])) or '-'}")


if __name__ == "__main__":
    sys.exit(main())
