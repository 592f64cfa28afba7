"""Peak memory of one SDHA attack iteration: the surrogate on the (B, N, K) grid of every pair and bit (the formula
as the package computed it before issue 24) next to the package's ``sdha_surrogate`` (one (B, 2K) @ (2K, N)
product, no (B, N, K) tensor).

    python benchmarks/bench_sdha_memory.py [--batch 64] [--train 20000] [--bits 64] [--classes 10]
                                           [--modes untargeted,targeted] [--repeats 5]
                                           [--out benchmarks/results/sdha_memory.json]

The problem: a linear hashing model ``h = tanh(alpha (W vec(x) + c))`` on B random 3 x 32 x 32 images, N random
+-1 training codes of K bits with one-hot labels of ``--classes`` classes (each query's positives: about N/C
codes). One iteration is the SDHA attack itself with ``steps=1``: its positives, then one Adam step on x̂ (the
model's forward, the objective ``MSE(x̂, x) -/+ (25/K) S``, the backward to x̂, the step and the projection).
``bnk`` runs the same attack with ``saat.attacks.sdha.sdha_surrogate`` replaced by the (B, N, K) formula below.

Memory: each measurement runs in a fresh process (``_timing.run_worker``). The worker builds the model, the data
and the attack, runs one untimed warm-up iteration on the first 1/100 of the codes (lazy initialisation), reads its
resident set (VmRSS), resets its peak (``clear_refs``), runs the measured iteration and reads its peak (VmHWM).
"iteration peak" is VmHWM minus the resident set before the iteration: what one iteration adds on top of the
interpreter, torch and the inputs (the process's whole peak is reported too). Target: the package's surrogate
under 300 MB at B = 64, N = 20,000, K = 64.

Exactness: the adversarial images of the two surrogates after the iteration are compared (max abs difference).
Timing (benchmarks/_timing.py): ``--repeats`` (>= 5) interleaved rounds bnk, package, bnk, package, ... (each
process warms itself up); seconds of the measured iteration and the ratio per round, reported as median (min, max).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

from _timing import (
    Stat,
    add_repeats_arg,
    interleaved_rounds,
    peak_rss_bytes,
    print_result,
    ratio,
    reset_peak_rss,
    run_worker,
)

IMPLS = ("bnk", "package")
TARGET_MB = 300.0


def bnk_surrogate(q, codes, positive, targeted):
    """The surrogate as the package computed it before issue 24: every pair and bit on a (B, N, K) grid."""
    import torch

    from saat.attacks.sdha import weighted_mean

    qr = q[:, None, :] * codes[None, :, :]  # (B, N, K)
    diff = (q[:, None, :] - codes[None, :, :]).abs()
    if targeted:
        dist = 0.5 * (diff * torch.sigmoid(-10 * qr)).sum(-1)
    else:
        dist = 0.5 * (diff * torch.sigmoid(5 * qr)).sum(-1) + (1 - torch.sigmoid(5 * qr)).sum(-1)
    return weighted_mean(dist, q, codes, positive, targeted)  # the weighting part is unchanged


def rss_bytes() -> int:
    """This process's current resident set (VmRSS)."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


# ------------------------------------------------------------------------------------------------------ worker

def worker(spec: dict) -> dict:
    """One iteration of one surrogate in a fresh process: its peak memory, its seconds, its adversarial images."""
    import numpy as np
    import torch
    from torch import nn

    import saat.attacks.sdha as sdha
    from saat.attacks import ATTACKS, AttackContext

    if spec["impl"] == "bnk":
        sdha.sdha_surrogate = bnk_surrogate  # SDHAAttack.attack looks the name up at call time

    class LinearHash(nn.Module):
        def __init__(self, dim: int, bits: int):
            super().__init__()
            self.linear = nn.Linear(dim, bits)

        def forward(self, x, alpha=1.0):
            return torch.tanh(alpha * self.linear(x.flatten(1)))

    b, n, k, c = spec["batch"], spec["train"], spec["bits"], spec["classes"]
    torch.manual_seed(spec["seed"])
    model = LinearHash(3 * 32 * 32, k).eval()
    x = torch.rand(b, 3, 32, 32)
    codes = torch.where(torch.rand(n, k) < 0.5, 1.0, -1.0)
    eye = torch.eye(c)
    cls = torch.randint(0, c, (n,))
    y_cls = torch.randint(0, c, (b,))
    train_labels, y, target = eye[cls], eye[y_cls], eye[(y_cls + torch.randint(1, c, (b,))) % c]
    targeted = spec["mode"] == "targeted"

    def attack_on(n_codes: int):
        ctx = AttackContext(model, torch.device("cpu"), codes[:n_codes], train_labels[:n_codes],
                            torch.zeros(0, k), torch.zeros(0, c), seed=spec["seed"])
        return ATTACKS.get("sdha")(ctx, targeted=targeted, steps=1)

    attack_on(max(1, n // 100)).attack(x, y, target if targeted else None)  # warm-up, untimed and unmeasured
    attack = attack_on(n)
    gc.collect()
    before = rss_bytes()
    resettable = reset_peak_rss()
    t0 = time.perf_counter()
    adv = attack.attack(x, y, target if targeted else None)
    seconds = time.perf_counter() - t0
    peak = peak_rss_bytes()
    np.save(Path(spec["dir"]) / f"adv-{spec['mode']}-{spec['impl']}.npy", adv.numpy())
    return {"impl": spec["impl"], "mode": spec["mode"], "seconds": seconds, "rss_before_bytes": before,
            "peak_rss_bytes": peak, "iteration_peak_bytes": peak - before, "peak_rss_resettable": resettable,
            "threads": torch.get_num_threads()}


# ------------------------------------------------------------------------------------------------------ main

def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=64, help="query images B")
    ap.add_argument("--train", type=int, default=20_000, help="training codes N")
    ap.add_argument("--bits", type=int, default=64, help="code length K")
    ap.add_argument("--classes", type=int, default=10, help="one-hot classes of the training codes and queries")
    ap.add_argument("--modes", default="untargeted,targeted", help="comma-separated: untargeted, targeted")
    ap.add_argument("--seed", type=int, default=0)
    add_repeats_arg(ap)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/sdha_memory.json"))
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker is not None:
        print_result(worker(json.loads(args.worker)))
        return 0
    for name in ("batch", "train", "bits"):
        if getattr(args, name) < 1:
            ap.error(f"--{name} must be a positive integer")
    if args.classes < 2:
        ap.error("--classes must be at least 2 (targets are another class)")
    modes = args.modes.split(",")
    if any(m not in ("untargeted", "targeted") for m in modes):
        ap.error("--modes: choose from untargeted, targeted")

    import numpy as np
    import torch

    from saat import __version__
    from saat.utils.io import atomic_write_json

    mb = 2 ** 20
    problem = {"batch": args.batch, "train": args.train, "bits": args.bits, "classes": args.classes,
               "seed": args.seed}
    print(f"SDHA, one attack iteration (forward + backward + Adam step), B = {args.batch}, N = {args.train:,}, "
          f"K = {args.bits}, cpu; each measurement in its own process; {args.repeats} interleaved rounds "
          f"{', '.join(IMPLS)}; median (min, max)", flush=True)
    results: dict = {}
    with tempfile.TemporaryDirectory(prefix="saat-bench-sdha-") as tmp:
        for mode in modes:
            runs: dict[str, list[dict]] = {impl: [] for impl in IMPLS}

            def contender(impl, mode=mode, runs=runs):
                def go() -> float:
                    r = run_worker(__file__, {**problem, "mode": mode, "impl": impl, "dir": tmp},
                                   f"{mode} {impl} worker")
                    runs[impl].append(r)
                    return r["seconds"]
                return go

            def progress(r, this_round, mode=mode, runs=runs):
                print(f"  {mode} round {r + 1}/{args.repeats}: " + ", ".join(
                    f"{i} {runs[i][-1]['iteration_peak_bytes'] / mb:.0f} MB {s:.2f} s" for i, s in this_round.items()),
                    flush=True)

            times = interleaved_rounds({i: contender(i) for i in IMPLS}, args.repeats, warmup=False,
                                       on_round=progress)
            adv = {i: np.load(Path(tmp) / f"adv-{mode}-{i}.npy") for i in IMPLS}
            res: dict = {}
            for i in IMPLS:
                res[i] = {"seconds": times[i].as_dict(),
                          "iteration_peak_mb": Stat([r["iteration_peak_bytes"] / mb for r in runs[i]]).as_dict(),
                          "process_peak_mb": Stat([r["peak_rss_bytes"] / mb for r in runs[i]]).as_dict(),
                          "rss_before_mb": Stat([r["rss_before_bytes"] / mb for r in runs[i]]).as_dict(),
                          "peak_rss_resettable": all(r["peak_rss_resettable"] for r in runs[i])}
            res["ratio_seconds_bnk_over_package"] = ratio(times["bnk"], times["package"]).as_dict()
            res["max_abs_adv_difference"] = float(np.abs(adv["bnk"] - adv["package"]).max())
            res["package_under_target"] = res["package"]["iteration_peak_mb"]["max"] < TARGET_MB
            results[mode] = res
        threads = runs["package"][-1]["threads"]

    print(f"\n{'mode':<11} {'surrogate':<9} {'iteration peak':<32} {'process peak':<32} seconds")
    for mode, res in results.items():
        for i in IMPLS:
            print(f"{mode:<11} {i:<9} {Stat(res[i]['iteration_peak_mb']['values']).fmt('.0f', ' MB'):<32} "
                  f"{Stat(res[i]['process_peak_mb']['values']).fmt('.0f', ' MB'):<32} "
                  f"{Stat(res[i]['seconds']['values']).fmt('.3f', ' s')}")
        print(f"{mode:<11} time bnk / package: {Stat(res['ratio_seconds_bnk_over_package']['values']).fmt('.1f')}; "
              f"adversarial images differ by at most {res['max_abs_adv_difference']:.2e}; package iteration peak "
              f"under {TARGET_MB:.0f} MB: {res['package_under_target']}")
    atomic_write_json(args.out, {
        "problem": problem, "target_iteration_peak_mb": TARGET_MB,
        "protocol": f"each measurement in a fresh process after a warm-up iteration on N/100 codes; {args.repeats} "
                    "interleaved rounds; iteration peak = VmHWM - VmRSS before the iteration",
        "results": results,
        "machine": {"cpus": os.cpu_count(), "torch_threads": threads, "python": sys.version.split()[0],
                    "platform": platform.platform(), "torch": torch.__version__, "saat": __version__},
    })
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
