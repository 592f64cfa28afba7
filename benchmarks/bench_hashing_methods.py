"""Clean mAP and training time of every hashing method on the shipped demo datasets (the demo preset).

    python benchmarks/bench_hashing_methods.py [--datasets fashion-mosaic,fashion-mnist] [--methods all]
                                               [--bits 32] [--epochs N] [--repeats 5]
                                               [--out benchmarks/results/hashing_methods.json]

Each run is a real ``saat.train`` (small_cnn from scratch, CPU by default) into a temporary directory. Timing
(benchmarks/_timing.py): ``--repeats`` (>= 5) interleaved rounds, each round training every method once in the
same order (A, B, C, A, B, C, ...; no separate warm-up: the first round is a full measurement, since every run is a
whole training). Prints a table (dataset x method: clean mAP@k, the random-ranking baseline, training seconds as
median (min, max), and the ratio of each method's training time to the first method's in the same round, as
median (min, max)) and writes JSON. The mAP of one seed is deterministic on one machine; its min-max is printed so
that a difference would show. At the demo preset (12 epochs) a full run of 7 methods x 2 datasets x 5 rounds takes
hours on 2 cores; ``--epochs 1 --methods dph,csq`` gives a quick look.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import saat
from _timing import Stat, add_repeats_arg, describe_protocol, interleaved_rounds, ratio
from saat.hashing import list_methods
from saat.utils.io import atomic_write_json


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", default="fashion-mosaic,fashion-mnist", help="comma-separated dataset names")
    ap.add_argument("--methods", default="all", help="comma-separated hashing methods, or 'all'")
    ap.add_argument("--bits", type=int, default=32)
    ap.add_argument("--epochs", type=int, default=None, help="default: the demo preset's")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--seed", type=int, default=0)
    add_repeats_arg(ap)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/hashing_methods.json"))
    args = ap.parse_args(argv)
    methods = list_methods() if args.methods == "all" else args.methods.split(",")
    unknown = sorted(set(methods) - set(list_methods()))
    if unknown:
        ap.error(f"unknown method(s) {', '.join(unknown)}; choose from {', '.join(list_methods())}")
    datasets = args.datasets.split(",")
    print(f"hashing methods on {', '.join(datasets)}: {describe_protocol(args.repeats, warmup=False)}", flush=True)

    runs: dict[tuple[str, str], list[dict]] = {(d, m): [] for d in datasets for m in methods}
    with tempfile.TemporaryDirectory() as tmp:
        counter = iter(range(1 << 30))

        def contender(dataset: str, method: str):
            def run() -> float:
                t0 = time.perf_counter()
                out = Path(tmp) / f"{dataset}-{method}-{next(counter)}"
                m = saat.train(dataset=dataset, method=method, bits=args.bits, epochs=args.epochs,
                               device=args.device, seed=args.seed, out=out, progress=False)
                runs[(dataset, method)].append({**m, "total_seconds": time.perf_counter() - t0})
                return m["training_seconds_this_session"]
            return run

        contenders = {f"{d}/{m}": contender(d, m) for d in datasets for m in methods}

        def progress(r, this_round):
            print(f"  round {r + 1}/{args.repeats}: " + ", ".join(f"{k} {v:.1f} s" for k, v in this_round.items()),
                  flush=True)

        times = interleaved_rounds(contenders, args.repeats, warmup=False, on_round=progress)

    rows = []
    print(f"\n{'dataset':<15} {'method':<10} {'mAP (median, min-max)':<28} {'random':>7} "
          f"{'train s: median (min, max)':<34} ratio to {methods[0]}: median (min, max)")
    for dataset in datasets:
        ref = times[f"{dataset}/{methods[0]}"]
        for method in methods:
            rs = runs[(dataset, method)]
            t = times[f"{dataset}/{method}"]
            maps = Stat([r["mAP"] for r in rs])
            rel = ratio(t, ref)
            row = {"dataset": dataset, "method": method, "bits": args.bits, "epochs": rs[0]["epochs"],
                   "topk": rs[0]["topk"], "mAP": maps.median, "random_ranking_mAP": rs[0]["random_ranking_mAP"],
                   "mAP_stats": maps.as_dict(), "train_seconds": t.as_dict(),
                   f"train_time_ratio_to_{methods[0]}": rel.as_dict(),
                   "total_seconds": Stat([r["total_seconds"] for r in rs]).as_dict()}
            rows.append(row)
            print(f"{dataset:<15} {method:<10} {maps.median:.4f} ({maps.min:.4f}-{maps.max:.4f})        "
                  f"{row['random_ranking_mAP']:7.4f} {t.fmt('.1f'):<34} {rel.fmt('.3f')}", flush=True)
    atomic_write_json(args.out, {"rows": rows, "repeats": args.repeats,
                                 "protocol": describe_protocol(args.repeats, warmup=False), "argv": sys.argv[1:]})
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
