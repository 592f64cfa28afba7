"""``saat transfer``: the transfer matrix of several runs of one dataset (docs/robustness.md#the-transfer-matrix)."""

from __future__ import annotations

import argparse

from .attack import parse_budget
from .common import DefaultsHelpFormatter, add_device_arg, add_num_workers_arg, add_precision_args, add_query_args


def register(sub) -> None:
    p = sub.add_parser(
        "transfer",
        help="transfer matrix: the mainstay attack crafted on each run, evaluated on every run",
        description=(
            "Craft the mainstay (SAAT) attack on each run's model for the same queries and evaluate the adversarial "
            "queries on every run (different hashing methods, bit lengths, defenses of one dataset): row i, column "
            "j is the mAP on run j of queries attacked on run i; the diagonal is the white-box attack. Writes "
            "FIRST_RUN/transfer/<name>/metrics.json; the report shows it as a heat map."),
        formatter_class=DefaultsHelpFormatter,
    )
    p.add_argument("run_dirs", metavar="RUN_DIR", nargs="+", help="two or more runs of one dataset")
    p.add_argument("--eps", type=parse_budget, help="L-inf budget (default: the attack preset's)")
    p.add_argument("--steps", type=int, help="attack iterations (default: the attack preset's)")
    add_query_args(p, seeds="the query subset and the random starts", name_under="FIRST_RUN/transfer")
    add_device_arg(p)
    add_precision_args(p, amp="the crafting passes through each model")
    add_num_workers_arg(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..pipelines.robustness import format_matrix, run_transfer

    result = run_transfer(args.run_dirs, eps=args.eps, num_queries=args.num_queries, seed=args.seed,
                          topk=args.topk, steps=args.steps, batch_size=args.batch_size, name=args.name,
                          device=args.device, num_workers=args.num_workers, amp=bool(args.amp), tf32=args.tf32)
    print(format_matrix(result))
    print(f"matrix: {args.run_dirs[0]}/transfer/{result['name']}/metrics.json")
    return 0
