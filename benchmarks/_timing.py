"""Repeat, interleave, summarise: the one timing discipline of every benchmark in this folder.

On a shared machine one measurement of a ratio says little: three runs of the same PGD-step/floor comparison gave
1.16, 0.77 and 1.19. Every benchmark here therefore

1. runs each contender once as a warm-up (JIT compiles, allocator caches, lazy imports), untimed;
2. then runs ``repeats`` (at least 5) **rounds**, each round timing every contender once in the same order
   (A, B, A, B, ... or A, B, C, A, B, C, ...), so that a burst of load from another process hits both sides of a
   ratio alike;
3. forms each ratio **per round** (A_i / B_i from the same round) and reports its median and its min-max over the
   rounds; times are reported the same way (median, min-max).

``interleaved`` runs in-process callables; ``interleaved_rounds`` is the same loop for contenders that return
their own measurement (a subprocess that reports its time, a run that reports only its training seconds).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

MIN_REPEATS = 5


def repeats_type(text: str) -> int:
    """argparse type of ``--repeats``: an integer >= MIN_REPEATS (one-line error otherwise)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < MIN_REPEATS:
        raise argparse.ArgumentTypeError(f"needs at least {MIN_REPEATS} interleaved repeats to report a median and a "
                                         f"min-max, got {value}")
    return value


def add_repeats_arg(parser: argparse.ArgumentParser, default: int = MIN_REPEATS) -> None:
    parser.add_argument("--repeats", type=repeats_type, default=default, metavar="N",
                        help=f"interleaved rounds per measurement (>= {MIN_REPEATS}); each ratio is reported as the "
                             "median and min-max of its per-round values")


@dataclass
class Stat:
    """Median and range of repeated values (seconds, or a ratio)."""

    values: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    @property
    def min(self) -> float:
        return min(self.values)

    @property
    def max(self) -> float:
        return max(self.values)

    def as_dict(self) -> dict[str, Any]:
        return {"median": self.median, "min": self.min, "max": self.max, "n": len(self.values),
                "values": list(self.values)}

    def fmt(self, spec: str = ".3f", unit: str = "") -> str:
        """``1.160 (min 0.770, max 1.190, n=5)``."""
        return (f"{format(self.median, spec)}{unit} (min {format(self.min, spec)}, max {format(self.max, spec)}, "
                f"n={len(self.values)})")


def interleaved_rounds(contenders: dict[str, Callable[[], float]], repeats: int, warmup: bool = True,
                       on_round: Callable[[int, dict[str, float]], None] | None = None) -> dict[str, Stat]:
    """Call every contender once per round, in order, ``repeats`` rounds; each call returns its own measurement
    (seconds). With ``warmup`` every contender is first called once and the result dropped."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    if warmup:
        for fn in contenders.values():
            fn()
    out = {name: Stat() for name in contenders}
    for r in range(repeats):
        this_round = {}
        for name, fn in contenders.items():
            this_round[name] = float(fn())
            out[name].values.append(this_round[name])
        if on_round is not None:
            on_round(r, this_round)
    return out


def timed(fn: Callable[[], Any], sync: Callable[[], None] | None = None) -> Callable[[], float]:
    """A contender for :func:`interleaved_rounds` that times ``fn`` with perf_counter (``sync`` e.g. waits for the
    GPU before the clock is read)."""

    def run() -> float:
        t0 = time.perf_counter()
        fn()
        if sync is not None:
            sync()
        return time.perf_counter() - t0

    return run


def interleaved(fns: dict[str, Callable[[], Any]], repeats: int, warmup: bool = True,
                sync: Callable[[], None] | None = None) -> dict[str, Stat]:
    """Seconds per call of each callable over ``repeats`` interleaved rounds (after one untimed warm-up each)."""
    return interleaved_rounds({k: timed(fn, sync) for k, fn in fns.items()}, repeats, warmup=warmup)


def ratio(numerator: Stat, denominator: Stat) -> Stat:
    """Per-round ratios ``numerator_i / denominator_i`` (both from the same interleaved round)."""
    if len(numerator.values) != len(denominator.values):
        raise ValueError("a ratio needs the same number of rounds on both sides")
    return Stat([a / b for a, b in zip(numerator.values, denominator.values, strict=True)])


def scaled(stat: Stat, factor: float) -> Stat:
    """Every value multiplied by ``factor`` (e.g. seconds per call -> per iteration, or images/s)."""
    return Stat([v * factor for v in stat.values])


def inverse(stat: Stat, numerator: float = 1.0) -> Stat:
    """``numerator / value`` per round (seconds -> a rate)."""
    return Stat([numerator / v for v in stat.values])


def describe_protocol(repeats: int, warmup: bool = True) -> str:
    return (f"{'one untimed warm-up each, then ' if warmup else ''}{repeats} interleaved rounds; "
            "ratios per round, reported as median (min, max)")


def summarise(stats: dict[str, Stat]) -> dict[str, dict]:
    return {k: v.as_dict() for k, v in stats.items()}


# ------------------------------------------------------------------- measurements in a fresh process (peak memory)

RESULT_TAG = "RESULT "  # the line a worker process prints its JSON result on


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS counter of this process to its current RSS (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def peak_rss_bytes() -> int:
    """This process's own peak resident set size (VmHWM; ru_maxrss, the fallback, would inherit the parent's through
    exec and is never reset)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kB on Linux


def print_result(result: Any) -> None:
    """The worker side: print ``result`` as the tagged JSON line :func:`run_worker` reads."""
    import json

    print(RESULT_TAG + json.dumps(result), flush=True)


def run_worker(script: str, spec: dict, what: str) -> dict:
    """Run ``script --worker SPEC`` in a fresh interpreter and return the JSON result it printed last; RuntimeError
    naming ``what`` if it failed."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    cmd = [sys.executable, str(Path(script).resolve()), "--worker", json.dumps(spec)]
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith(RESULT_TAG)]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{what} exited with status {proc.returncode}")
    return json.loads(lines[-1][len(RESULT_TAG):])
