"""Time the bootstrap intervals of saat.retrieval.bootstrap (the target: under 1 s for 2,000 queries, 10,000
resamples, on one CPU core).

    python benchmarks/bench_bootstrap.py [--queries 2000] [--resamples 10000] [--seeds 3] [--repeats 5]

Contenders, on uniform random per-query APs: ``mean_ci`` (one model), ``paired_ci`` (two models on the same
queries) and ``grouped_paired_ci`` (``--seeds`` training seeds of ``--queries`` queries each: the hierarchical
bootstrap over seeds and queries). Timing (benchmarks/_timing.py): one warm-up each, then ``--repeats`` (>= 5)
interleaved rounds; each time is printed as median (min, max). Measured on 2 cores of the development
machine: mean_ci 0.17 s, paired_ci 0.17 s, grouped_paired_ci over 3 seeds of 2,000 queries 0.51 s.
"""

from __future__ import annotations

import argparse

from _timing import add_repeats_arg, describe_protocol, interleaved
from saat.retrieval import grouped_paired_ci, mean_ci, paired_ci
from saat.utils.rng import numpy_generator


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=2000)
    parser.add_argument("--resamples", type=int, default=10_000)
    parser.add_argument("--seeds", type=int, default=3, help="training seeds of the grouped interval")
    add_repeats_arg(parser)
    args = parser.parse_args(argv)
    rng = numpy_generator(0, "bench-bootstrap")
    a, b = rng.random(args.queries), rng.random(args.queries)
    ga = [rng.random(args.queries) for _ in range(args.seeds)]
    gb = [rng.random(args.queries) for _ in range(args.seeds)]
    r = args.resamples
    stats = interleaved({
        "mean_ci": lambda: mean_ci(a, resamples=r),
        "paired_ci": lambda: paired_ci(a, b, resamples=r),
        f"grouped_paired_ci ({args.seeds} seeds)": lambda: grouped_paired_ci(ga, gb, resamples=r),
    }, args.repeats)
    print(f"bootstrap intervals: {args.queries} queries, {r} resamples ({describe_protocol(args.repeats)})")
    for name, stat in stats.items():
        print(f"  {name:<28} {stat.fmt('.3f', ' s')}")
    return {name: stat.as_dict() for name, stat in stats.items()}


if __name__ == "__main__":
    main()
