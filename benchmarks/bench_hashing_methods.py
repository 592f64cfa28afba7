"""Clean mAP and training time of every hashing method on the shipped demo datasets (the demo preset).

    python benchmarks/bench_hashing_methods.py [--datasets fashion-mosaic,fashion-mnist] [--methods all]
                                               [--bits 32] [--epochs N] [--out benchmarks/results/hashing.json]

Each run is a real ``saat.train`` (small_cnn from scratch, CPU by default) into a temporary directory. Prints a
table (dataset x method: clean mAP@k, the random-ranking baseline, training and total seconds) and writes JSON.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import saat
from saat.hashing import list_methods
from saat.utils.io import atomic_write_json


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", default="fashion-mosaic,fashion-mnist")
    ap.add_argument("--methods", default="all")
    ap.add_argument("--bits", type=int, default=32)
    ap.add_argument("--epochs", type=int, default=None, help="default: the demo preset's")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/hashing_methods.json"))
    args = ap.parse_args(argv)
    methods = list_methods() if args.methods == "all" else args.methods.split(",")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for dataset in args.datasets.split(","):
            for method in methods:
                t0 = time.perf_counter()
                m = saat.train(dataset=dataset, method=method, bits=args.bits, epochs=args.epochs,
                               device=args.device, seed=args.seed, out=Path(tmp) / f"{dataset}-{method}",
                               progress=False)
                total = time.perf_counter() - t0
                row = {"dataset": dataset, "method": method, "bits": args.bits, "epochs": m["epochs"],
                       "topk": m["topk"], "mAP": m["mAP"], "random_ranking_mAP": m["random_ranking_mAP"],
                       "train_seconds": m["training_seconds_this_session"], "total_seconds": total}
                rows.append(row)
                print(f"{dataset:<15} {method:<10} mAP@{m['topk']} {m['mAP']:.4f}  random "
                      f"{m['random_ranking_mAP']:.4f}  margin {m['mAP'] - m['random_ranking_mAP']:+.3f}  "
                      f"train {row['train_seconds']:6.1f} s  total {total:6.1f} s", flush=True)
                atomic_write_json(args.out, {"rows": rows, "argv": sys.argv[1:]})
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
