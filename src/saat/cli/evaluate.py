"""``saat evaluate``: clean retrieval metrics of a trained run."""

from __future__ import annotations

import argparse
from pathlib import Path

from .common import add_device_arg, add_num_workers_arg, add_precision_args, parse_topk


def register(sub) -> None:
    p = sub.add_parser(
        "evaluate",
        help="clean retrieval metrics (mAP@k, PR, P@N, P@r<=2) of a trained run",
        description=("Encode the query split and the database with a run's model (database codes are cached in "
                     "RUN_DIR/cache, keyed by the checkpoint's content hash) and write RUN_DIR/metrics.json."),
    )
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    p.add_argument("--topk", type=parse_topk, help="mAP@k depth (default: the dataset's topK); 'all' for all")
    p.add_argument("--split", default="test", choices=("test", "train"),
                   help="queries: the test (query) split, or the training images")
    p.add_argument("--data-root", help="where the dataset lives now, if it moved since training")
    p.add_argument("--batch-size", type=int, help="encoding batch size")
    add_device_arg(p)
    add_precision_args(p, amp=None)
    add_num_workers_arg(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..pipelines.evaluate import evaluate
    from ..retrieval import format_ci

    m = evaluate(args.run_dir, topk=args.topk, split=args.split, device=args.device, batch_size=args.batch_size,
                 data_root=args.data_root, num_workers=args.num_workers, tf32=args.tf32)
    k = "all" if m["topk"] is None else m["topk"]
    mean_ap = format_ci(m["mAP"], m.get("mAP_ci"), digits=4)  # with its 95 % interval over the queries, if any
    print(f"{m['dataset']} {args.split}: mAP@{k} {mean_ap} (random ranking {m['random_ranking_mAP']:.4f}), "
          f"P@r<=2 {m['precision_within_radius_2']:.4f}, P@{m['precision_at_n']['n'][-1]} "
          f"{m['precision_at_n']['precision'][-1]:.4f}")
    return 0
