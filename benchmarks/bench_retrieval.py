"""Benchmark the retrieval metrics on every backend: speed, agreement, and (``--million``) peak memory at scale.

Default problem: 5,000 queries x 100,000 database items x 64 bits x 24 classes, mAP@5000, in this process, every
backend next to a naive per-query loop with a stable sort (the issue's target: <= 1.5 s for the default CPU backend
on 2 cores, >= 15x faster than the naive loop):

    python benchmarks/bench_retrieval.py [--queries 5000] [--db 100000] [--bits 64] [--classes 24] [--topk 5000]
                                         [--repeats 5] [--naive-queries 500] [--backends cpu,torch,faiss]
                                         [--out benchmarks/results/retrieval.json]

``--million``: 1,000 queries x 1,000,000 items x 64 bits (``--queries``/``--db`` change it). The inputs are written
once as .npy files; every measurement runs in its own subprocess, so that its peak RSS (VmHWM: the process's own
high-water mark, including the Python interpreter and torch, about 0.55 GB before any data) belongs to one backend:

- ``map``: ``saat.retrieval.mean_average_precision(..., topk=5000, backend=B)`` on the loaded arrays;
- ``cli``: ``saat evaluate-codes --backend B`` on the .npy files (``saat.cli.main`` in the subprocess): mAP@5000,
  the full-ranking PR curve, P@N, the Hamming-radius curves and the random-ranking baseline.

Each worker first runs the same call on a small slice (JIT caches, imports), untimed. Exactness: in the first round
each ``map`` worker also saves ``hamming_ranking(..., 5000)``; every backend's ranking is compared with the cpu
backend's (identical, or the recall of the cpu top-5000 in the backend's top-5000), and the ``cli`` metrics are
compared value by value.

Timing (benchmarks/_timing.py): one warm-up of each contender, then ``--repeats`` (>= 5) interleaved rounds
(cpu, torch, faiss, [naive], cpu, ...); every ratio (a backend's time over the cpu backend's, the naive loop's over
the cpu backend's) is formed per round and printed as median (min, max); times likewise. Writes JSON (``--out``).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from _timing import (
    Stat,
    add_repeats_arg,
    describe_protocol,
    interleaved,
    interleaved_rounds,
    peak_rss_bytes,
    print_result,
    ratio,
    run_worker,
)


def naive_stable_map(q, db, ql, dl, topk):
    """The usual deep-hashing evaluation loop: per query, distances, a full stable sort, then AP."""
    n_bits = q.shape[1]
    qf, dbf = q.astype(np.float32), db.astype(np.float32)
    aps = []
    for i in range(len(q)):
        dist = 0.5 * (n_bits - dbf @ qf[i])
        order = np.argsort(dist, kind="stable")[:topk]
        rel = (dl[order] @ ql[i]) > 0
        hits = np.cumsum(rel)
        n = hits[-1] if len(hits) else 0
        aps.append(0.0 if n == 0 else float(np.sum(hits[rel] / (np.flatnonzero(rel) + 1)) / n))
    return float(np.mean(aps))


def make_data(n_query: int, n_db: int, n_bits: int, n_classes: int, seed: int):
    """Random +-1 codes (int8) and 0/1 labels (uint8, density 0.1), generated in blocks (no large float temporaries)."""
    rng = np.random.default_rng(seed)

    def block_fill(n, width, fill):
        out = np.empty((n, width), np.int8 if fill == "codes" else np.uint8)
        for s in range(0, n, 1 << 16):
            r = rng.random((min(n, s + (1 << 16)) - s, width), dtype=np.float32)
            out[s:s + len(r)] = np.where(r < 0.5, 1, -1) if fill == "codes" else (r < 0.1)
        return out

    return (block_fill(n_query, n_bits, "codes"), block_fill(n_db, n_bits, "codes"),
            block_fill(n_query, n_classes, "labels"), block_fill(n_db, n_classes, "labels"))


# ------------------------------------------------------------------------------------------------ worker

def worker(spec: dict) -> dict:
    """One measurement in a fresh process: ``map`` (the Python metric) or ``cli`` (saat evaluate-codes)."""
    d = Path(spec["dir"])
    backend, topk = spec["backend"], spec["topk"]
    out: dict = {"backend": backend, "mode": spec["mode"]}
    if spec["mode"] == "map":
        from saat.retrieval import hamming_ranking, mean_average_precision

        q, db, ql, dl = (np.load(d / f"{n}.npy") for n in ("q", "db", "ql", "dl"))
        mean_average_precision(q[:10], db[:20_000], ql[:10], dl[:20_000], topk=topk, backend=backend)  # warm-up
        t0 = time.perf_counter()
        out["mAP"] = mean_average_precision(q, db, ql, dl, topk=topk, backend=backend)
        out["seconds"] = time.perf_counter() - t0
        out["peak_rss_bytes"] = peak_rss_bytes()
        if spec.get("ranking"):
            from saat.utils.io import atomic_save_npy

            atomic_save_npy(d / f"rank-{backend}.npy", hamming_ranking(q, db, topk, backend=backend))
        return out
    from saat.cli import main as saat_main
    from saat.utils.io import atomic_save_npy

    names = {"--query-codes": "q", "--db-codes": "db", "--query-labels": "ql", "--db-labels": "dl"}
    warm = d / "warm"
    warm.mkdir(exist_ok=True)
    for n in names.values():  # the same call on a slice of the inputs, untimed
        arr = np.load(d / f"{n}.npy", mmap_mode="r")
        atomic_save_npy(warm / f"{n}.npy", np.ascontiguousarray(arr[:10] if n in ("q", "ql") else arr[:20_000]))

    def argv(folder: Path, result: Path) -> list[str]:
        args = ["evaluate-codes", "--backend", backend, "--topk", str(topk), "--out", str(result), "--overwrite"]
        for flag, n in names.items():
            args += [flag, str(folder / f"{n}.npy")]
        return args

    with open(os.devnull, "w") as sink:  # the CLI's summary and progress bar are not the benchmark's output
        saved = sys.stdout, sys.stderr
        sys.stdout = sys.stderr = sink
        try:
            rc = saat_main(argv(warm, warm / "metrics.json"))
            t0 = time.perf_counter()
            rc = rc or saat_main(argv(d, d / f"metrics-{backend}-{spec['round']}.json"))
            out["seconds"] = time.perf_counter() - t0
        finally:
            sys.stdout, sys.stderr = saved
    if rc:
        raise RuntimeError(f"saat evaluate-codes exited with status {rc}")
    out["peak_rss_bytes"] = peak_rss_bytes()
    out["metrics_file"] = str(d / f"metrics-{backend}-{spec['round']}.json")
    return out


def run_measurement(spec: dict) -> dict:
    return run_worker(__file__, spec, f"{spec['mode']} worker for backend {spec['backend']}")


# ------------------------------------------------------------------------------------------------ modes

def million(args, backends: list[str]) -> dict:
    from saat.utils.io import atomic_save_npy

    modes = args.modes.split(",")
    q, db, ql, dl = make_data(args.queries, args.db, args.bits, args.classes, args.seed)
    print(f"{args.queries:,} queries x {args.db:,} items x {args.bits} bits x {args.classes} classes, topk "
          f"{args.topk}; each measurement in its own process; {describe_protocol(args.repeats)}", flush=True)
    results: dict = {}
    with tempfile.TemporaryDirectory(prefix="saat-bench-") as tmp:
        for name, arr in (("q", q), ("db", db), ("ql", ql), ("dl", dl)):
            atomic_save_npy(Path(tmp) / f"{name}.npy", arr)
        del q, db, ql, dl
        for mode in modes:
            runs: dict[str, list[dict]] = {b: [] for b in backends}
            rnd = [0]

            def contender(backend, mode=mode, runs=runs, rnd=rnd):
                def go() -> float:
                    spec = {"dir": tmp, "backend": backend, "mode": mode, "topk": args.topk, "round": rnd[0],
                            "ranking": mode == "map" and rnd[0] == 0}
                    r = run_measurement(spec)
                    runs[backend].append(r)
                    return r["seconds"]
                return go

            def progress(r, this_round, mode=mode, runs=runs, rnd=rnd):
                rnd[0] = r + 1
                print(f"  {mode} round {r + 1}/{args.repeats}: " + ", ".join(
                    f"{b} {s:.2f} s / {runs[b][-1]['peak_rss_bytes'] / 2**20:.0f} MB" for b, s in this_round.items()),
                    flush=True)

            times = interleaved_rounds({b: contender(b) for b in backends}, args.repeats, warmup=False,
                                       on_round=progress)
            res = {}
            for b in backends:
                rss = Stat([r["peak_rss_bytes"] / 2**20 for r in runs[b]])
                res[b] = {"seconds": times[b].as_dict(), "peak_rss_mb": rss.as_dict()}
                if mode == "map":
                    res[b]["mAP"] = Stat([r["mAP"] for r in runs[b]]).as_dict()
            base = backends[0]
            for b in backends[1:]:
                res[f"ratio_{b}_over_{base}"] = ratio(times[b], times[base]).as_dict()
            # exactness against the first backend (cpu by default)
            if mode == "map":
                ref = np.load(Path(tmp) / f"rank-{base}.npy")
                for b in backends[1:]:
                    got = np.load(Path(tmp) / f"rank-{b}.npy")
                    identical = bool(np.array_equal(got, ref))
                    recall = float(np.mean([len(np.intersect1d(g, r, assume_unique=True)) / ref.shape[1]
                                            for g, r in zip(got, ref)]))
                    res[b]["ranking_identical_to_" + base] = identical
                    res[b]["recall_at_topk_vs_" + base] = recall
                    res[b]["mAP_equal_to_" + base] = res[b]["mAP"]["values"] == res[base]["mAP"]["values"]
            else:
                ref_metrics = json.loads(Path(runs[base][0]["metrics_file"]).read_text())
                for b in backends[1:]:
                    m = json.loads(Path(runs[b][0]["metrics_file"]).read_text())
                    keys = [k for k in ref_metrics if k not in ("seconds", "backend", "inputs")]
                    res[b]["metrics_identical_to_" + base] = all(m.get(k) == ref_metrics[k] for k in keys)
                res[base]["mAP"] = ref_metrics["mAP"]
            results[mode] = res
            label = "mean_average_precision(topk)" if mode == "map" else "saat evaluate-codes (all metrics)"
            print(f"\n{label}: seconds and peak RSS per backend, median (min, max) of {args.repeats}")
            for b in backends:
                s, r = times[b], Stat(res[b]["peak_rss_mb"]["values"])
                extra = ""
                if b != base:
                    key = "ranking_identical_to_" if mode == "map" else "metrics_identical_to_"
                    extra = f"  identical to {base}: {res[b][key + base]}"
                    if mode == "map":
                        extra += f" (recall@{args.topk} {res[b]['recall_at_topk_vs_' + base]:.6f})"
                print(f"  {b:<6} {s.fmt('.2f', ' s'):<40} peak RSS {r.fmt('.0f', ' MB')}{extra}")
            for b in backends[1:]:
                print(f"  ratio {b}/{base} (time): {Stat(res[f'ratio_{b}_over_{base}']['values']).fmt('.2f')}")
    return results


def in_process(args, backends: list[str]) -> dict:
    from saat.retrieval import mean_average_precision

    q, db, ql, dl = make_data(args.queries, args.db, args.bits, args.classes, args.seed)
    n_naive = min(args.naive_queries or args.queries, args.queries)
    scale = args.queries / n_naive
    print(f"mAP@{args.topk}: {args.queries:,} queries x {args.db:,} items x {args.bits} bits x {args.classes} "
          f"classes; {describe_protocol(args.repeats)}"
          + (f"; the naive loop runs {n_naive:,} queries, its time scaled x{scale:g}" if scale != 1 else ""),
          flush=True)
    values = {}

    def metric(b):
        def go():
            values[b] = mean_average_precision(q, db, ql, dl, topk=args.topk, backend=b)
        return go

    fns = {b: metric(b) for b in backends}
    fns["naive"] = lambda: values.__setitem__("naive", naive_stable_map(q[:n_naive], db, ql[:n_naive], dl,
                                                                           args.topk))
    t0 = time.perf_counter()
    times = interleaved(fns, args.repeats)
    times["naive"] = Stat([v * scale for v in times["naive"].values])
    results = {b: {"seconds": times[b].as_dict(), "mAP": values[b]} for b in backends}
    results["naive_stable_loop"] = {"seconds": times["naive"].as_dict(), "queries_run": n_naive,
                                    "mAP_on_queries_run": values["naive"]}
    for b in backends:
        print(f"  {b:<8} {times[b].fmt('.3f', ' s'):<44} mAP {values[b]:.6f}")
    print(f"  {'naive':<8} {times['naive'].fmt('.3f', ' s'):<44} mAP {values['naive']:.6f}"
          + (f" (on {n_naive:,} queries)" if scale != 1 else ""))
    base = backends[0]
    for b in [*backends[1:], "naive"]:
        r = ratio(times[b], times[base])
        results[f"ratio_{b}_over_{base}"] = r.as_dict()
        print(f"  ratio {b}/{base} (time): {r.fmt('.2f')}")
    agree = {b: abs(mean_average_precision(q[:n_naive], db, ql[:n_naive], dl, topk=args.topk, backend=b)
                    - values["naive"]) < 1e-12 for b in backends}
    print(f"  every backend agrees with the naive loop on its {n_naive:,} queries to 1e-12: {all(agree.values())}")
    results["agree_with_naive"] = agree
    results["wall_seconds"] = time.perf_counter() - t0
    return results


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--million", action="store_true",
                    help="1,000 queries x 1,000,000 items, each backend in its own subprocess (time and peak RSS)")
    ap.add_argument("--queries", type=int, default=None, help="default 5,000 (--million: 1,000)")
    ap.add_argument("--db", type=int, default=None, help="database items; default 100,000 (--million: 1,000,000)")
    ap.add_argument("--bits", type=int, default=64)
    ap.add_argument("--classes", type=int, default=24)
    ap.add_argument("--topk", type=int, default=5000)
    add_repeats_arg(ap)
    ap.add_argument("--naive-queries", type=int, default=500,
                    help="run the naive loop on this many queries and scale its time (0: all)")
    ap.add_argument("--backends", default="cpu,torch,faiss", help="comma-separated; ratios are over the first")
    ap.add_argument("--modes", default="map,cli", help="--million: 'map' (Python metric), 'cli' (evaluate-codes)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None,
                    help="JSON results (default benchmarks/results/retrieval.json; --million: retrieval_million.json)")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker is not None:
        print_result(worker(json.loads(args.worker)))
        return 0
    args.queries = args.queries or (1000 if args.million else 5000)
    args.db = args.db or (1_000_000 if args.million else 100_000)
    for name in ("queries", "db", "bits", "classes", "topk"):
        if getattr(args, name) < 1:
            ap.error(f"--{name} must be a positive integer")
    if any(m not in ("map", "cli") for m in args.modes.split(",")):
        ap.error("--modes: choose from map, cli")
    backends = []
    for b in args.backends.split(","):
        if b not in ("cpu", "torch", "faiss"):
            ap.error(f"unknown backend {b!r}; choose from cpu, torch, faiss")
        if b == "faiss" and importlib.util.find_spec("faiss") is None:
            print("  faiss skipped (not installed: pip install 'saat[faiss]')")
            continue
        backends.append(b)
    out = args.out or Path("benchmarks/results") / ("retrieval_million.json" if args.million else "retrieval.json")
    results = million(args, backends) if args.million else in_process(args, backends)

    import numba

    from saat import __version__
    from saat.utils.io import atomic_write_json

    payload = {
        "problem": {k: getattr(args, k) for k in ("million", "queries", "db", "bits", "classes", "topk", "repeats",
                                                  "seed")},
        "protocol": describe_protocol(args.repeats),
        "results": results,
        "machine": {"cpus": os.cpu_count(), "numba_threads": numba.get_num_threads(),
                    "python": sys.version.split()[0], "platform": platform.platform(),
                    "numpy": np.__version__, "numba": numba.__version__, "saat": __version__},
    }
    atomic_write_json(out, payload)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
