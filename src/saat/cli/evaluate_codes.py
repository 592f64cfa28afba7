"""``saat evaluate-codes``: retrieval metrics of hash codes stored in .npy files."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from ..retrieval import ci_or_none, format_ci
from .common import DefaultsHelpFormatter, parse_topk


def register(sub) -> None:
    p = sub.add_parser(
        "evaluate-codes",
        help="mAP, PR curve, P@N and P@r<=2 of +-1 codes stored in .npy files",
        description=(
            "Evaluate Hamming-ranking retrieval of precomputed hash codes. Codes are (n, K) arrays of +1/-1; "
            "labels are (n, C) multi-hot 0/1 arrays or (n,) integer class vectors. Ties in Hamming distance "
            "are broken by ascending database index; mAP averages over all queries (see --drop-empty)."
        ),
        formatter_class=DefaultsHelpFormatter,
    )
    p.add_argument("--query-codes", required=True, type=Path, metavar="Q.npy", help="query codes (Q, K)")
    p.add_argument("--db-codes", required=True, type=Path, metavar="D.npy", help="database codes (M, K)")
    p.add_argument("--query-labels", required=True, type=Path, metavar="QL.npy", help="query labels")
    p.add_argument("--db-labels", required=True, type=Path, metavar="DL.npy", help="database labels")
    p.add_argument("--topk", default="5000", type=parse_topk, metavar="K",
                   help="depth of mAP@k; 'all' for the whole database")
    p.add_argument("--target-labels", type=Path, metavar="TL.npy",
                   help="target labels of a targeted attack: also report t-MAP (mAP with these labels)")
    p.add_argument("--drop-empty", action="store_true",
                   help="average AP only over queries with a relevant item in the top k (HashNet convention)")
    p.add_argument("--backend", default="auto", choices=("auto", "cpu", "torch", "faiss"),
                   help="ranking backend (all give identical results)")
    p.add_argument("--out", type=Path, metavar="metrics.json", help="write the metrics as JSON here")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    p.set_defaults(run=run)


def load_npy(path: Path, option: str) -> np.ndarray:
    """Load a .npy file given on the command line (:func:`saat.utils.io.load_npy`, the one .npy reader); errors
    name the option and the file."""
    from ..utils.io import load_npy as read_npy

    return read_npy(path, option)


def run(args: argparse.Namespace) -> int:
    from ..retrieval import evaluate_retrieval, targeted_mean_average_precision
    from ..utils.io import atomic_write_json, check_writable
    from . import CommandError

    if args.out is not None:  # checked before the work
        if args.out.is_dir():
            raise CommandError(f"--out {args.out} is a directory: give a file path such as {args.out}/metrics.json")
        if args.out.exists() and not args.overwrite:
            raise CommandError(f"--out {args.out} exists; pass --overwrite to replace it")
        check_writable(args.out.parent)
    arrays = {}
    for attr, option in (("query_codes", "--query-codes"), ("db_codes", "--db-codes"),
                         ("query_labels", "--query-labels"), ("db_labels", "--db-labels")):
        arrays[attr] = load_npy(getattr(args, attr), option)
    names = {"query_codes": "--query-codes", "db_codes": "--db-codes", "query_labels": "--query-labels",
             "db_labels": "--db-labels", "target_labels": "--target-labels"}
    t0 = time.perf_counter()
    try:
        res = evaluate_retrieval(**arrays, topk=args.topk, drop_empty=args.drop_empty, backend=args.backend,
                                 progress=True)
        tmap = None
        if args.target_labels is not None:
            target = load_npy(args.target_labels, "--target-labels")
            tmap = targeted_mean_average_precision(arrays["query_codes"], arrays["db_codes"], target,
                                                   arrays["db_labels"], topk=args.topk,
                                                   drop_empty=args.drop_empty, backend=args.backend)
    except ValueError as exc:
        msg = str(exc)
        for attr, option in names.items():
            msg = msg.replace(attr, option)
        raise CommandError(msg) from None
    seconds = time.perf_counter() - t0
    out = res.to_dict()
    out["seconds"] = seconds
    if tmap is not None:
        out["t-MAP"] = tmap
    out["inputs"] = {attr: str(getattr(args, attr)) for attr in names if getattr(args, attr, None) is not None}
    print(format_summary(res, tmap, seconds))
    if args.out is not None:
        atomic_write_json(args.out, out)
        print(f"wrote {args.out}")
    return 0


def format_summary(res, tmap: float | None, seconds: float) -> str:
    k = "all" if res.topk is None else str(res.topk)
    lines = [
        f"Retrieval: {res.n_queries:,} queries x {res.n_database:,} database items, {res.n_bits} bits, "
        f"{res.n_classes} classes (backend {res.backend}, {seconds:.2f} s)",
        f"  mAP@{k:<8} {format_ci(res.map, ci_or_none(res.ap[~np.isnan(res.ap)]), digits=4)}   "
        f"(random ranking: {res.extra['random_ranking_mAP']:.4f}; "
        f"{'drop-empty' if res.drop_empty else 'all-queries'} mean)",
    ]
    if tmap is not None:
        lines.append(f"  t-MAP@{k:<6} {tmap:.4f}   (relevance by target labels)")
    lines.append(f"  P@r<=2      {res.precision_radius2:.4f}")
    pairs = zip(res.pn_ns[:3].tolist(), res.pn_precisions[:3].tolist(), strict=True)
    pn = ", ".join(f"P@{n}={p:.3f}" for n, p in pairs)
    lines.append(f"  {pn}, ... P@{res.pn_ns[-1]}={res.pn_precisions[-1]:.3f}")
    levels = [0.1, 0.5, 0.9]
    pr = []
    for r in levels:
        hit = np.flatnonzero(np.isclose(res.pr_recalls, r))
        if hit.size:
            pr.append(f"P(R={r:.1f})={res.pr_precisions[hit[0]]:.3f}")
    if pr:
        lines.append("  PR curve: " + ", ".join(pr))
    lines.append(f"  queries with no relevant item in the top {k}: {res.n_empty}")
    return "\n".join(lines)
