"""Speed of one PGD attack step next to its floor: one forward + backward with respect to the input.

    python benchmarks/bench_attack.py [--repeats 5] [--device cpu] [--out benchmarks/results/attack.json]

For small_cnn at 32 px and alexnet at 224 px (batch 64 and 16 by default) it times (a) the floor — the model in
eval mode with frozen parameters, ``torch.autograd.grad`` of ``h.sum()`` with respect to the input — and (b)
PGD iterations of the mainstay attack on the same batch (loss, gradient, sign step, projection, alpha
schedule), and prints images/s of both and their ratio (target: attack step <= 1.1x the floor).

Timing (benchmarks/_timing.py): one untimed warm-up of each, then ``--repeats`` (>= 5) interleaved rounds floor,
PGD, floor, PGD, ...; the ratio is formed per round and reported as its median and min-max, the rates as the
median (min-max) of the rounds.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from _timing import add_repeats_arg, describe_protocol, interleaved, inverse, ratio, scaled
from saat.attacks import PGD, frozen_eval, mainstay_loss
from saat.models import HashModel
from saat.utils.device import resolve_device
from saat.utils.io import atomic_write_json


def measure(backbone: str, size: int, batch: int, steps: int, repeats: int, device) -> dict:
    torch.manual_seed(0)
    model = HashModel(backbone, 32).to(device).eval()
    if model.channels_last:
        model.to(memory_format=torch.channels_last)
    x = torch.rand(batch, 3, size, size, device=device)
    if model.channels_last:  # as `saat attack` feeds it: the same memory format for the floor and the attack
        x = x.contiguous(memory_format=torch.channels_last)
    m = torch.where(torch.rand(batch, 32, device=device) < 0.5, 1.0, -1.0)

    def floor():
        with frozen_eval(model):
            for _ in range(steps):
                xv = x.detach().requires_grad_(True)
                (g,) = torch.autograd.grad(model(xv).sum(), xv)
        if device.type == "cuda":
            torch.cuda.synchronize()

    attack = PGD(model, eps=8 / 255, step=1 / 255, steps=steps)

    def pgd():
        attack(x, lambda h, _x: mainstay_loss(h, m))
        if device.type == "cuda":
            torch.cuda.synchronize()

    t = interleaved({"floor": floor, "pgd": pgd}, repeats)  # floor, pgd, floor, pgd, ...
    t_floor, t_step = scaled(t["floor"], 1 / steps), scaled(t["pgd"], 1 / steps)
    floor_rate, step_rate, r = inverse(t_floor, batch), inverse(t_step, batch), ratio(t_step, t_floor)
    return {"backbone": backbone, "size": size, "batch": batch, "steps_timed": steps, "repeats": repeats,
            "floor_images_per_s": floor_rate.median, "attack_images_per_s": step_rate.median,
            "ratio_step_over_floor": r.median,
            "stats": {"floor_seconds_per_step": t_floor.as_dict(), "pgd_seconds_per_step": t_step.as_dict(),
                      "floor_images_per_s": floor_rate.as_dict(), "attack_images_per_s": step_rate.as_dict(),
                      "ratio_step_over_floor": r.as_dict()},
            "_display": (floor_rate, step_rate, r)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_repeats_arg(ap)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/attack.json"))
    args = ap.parse_args(argv)
    device = resolve_device(args.device)
    rows = []
    print(f"PGD step vs its floor on {device}: {describe_protocol(args.repeats)}")
    for backbone, size, batch, steps in (("small_cnn", 32, 64, 10), ("alexnet", 224, 16, 3)):
        r = measure(backbone, size, batch, steps, args.repeats, device)
        floor_rate, step_rate, ratio_stat = r.pop("_display")
        rows.append(r)
        print(f"{backbone:<10} {size:>3}px batch {batch:>3}: floor {floor_rate.fmt('.1f', ' img/s')}, "
              f"PGD step {step_rate.fmt('.1f', ' img/s')}", flush=True)
        print(f"{'':<10} ratio PGD step / floor (time): {ratio_stat.fmt('.3f')}", flush=True)
    atomic_write_json(args.out, {"device": str(device), "threads": torch.get_num_threads(), "repeats": args.repeats,
                                 "protocol": describe_protocol(args.repeats), "rows": rows})
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
