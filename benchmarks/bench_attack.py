"""Speed of one PGD attack step next to its floor: one forward + backward with respect to the input.

    python benchmarks/bench_attack.py [--repeats 5] [--device cpu] [--out benchmarks/results/attack.json]

For small_cnn at 32 px and alexnet at 224 px (batch 64 and 16 by default) it times (a) the floor — the model in
eval mode with frozen parameters, ``torch.autograd.grad`` of ``h.sum()`` with respect to the input — and (b)
PGD iterations of the mainstay attack on the same batch (loss, gradient, sign step, projection, alpha
schedule), and prints images/s of both and their ratio (target: attack step <= 1.1x the floor).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from saat.attacks import PGD, frozen_eval, mainstay_loss
from saat.models import HashModel
from saat.utils.device import resolve_device
from saat.utils.io import atomic_write_json


def best_time(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


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

    t_floor = best_time(floor, repeats) / steps
    t_step = best_time(pgd, repeats) / steps
    return {"backbone": backbone, "size": size, "batch": batch, "steps_timed": steps,
            "floor_images_per_s": batch / t_floor, "attack_images_per_s": batch / t_step,
            "ratio_step_over_floor": t_step / t_floor}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/attack.json"))
    args = ap.parse_args(argv)
    device = resolve_device(args.device)
    rows = []
    for backbone, size, batch, steps in (("small_cnn", 32, 64, 10), ("alexnet", 224, 16, 3)):
        r = measure(backbone, size, batch, steps, args.repeats, device)
        rows.append(r)
        print(f"{backbone:<10} {size:>3}px batch {batch:>3}: floor {r['floor_images_per_s']:8.1f} img/s, "
              f"PGD step {r['attack_images_per_s']:8.1f} img/s, ratio {r['ratio_step_over_floor']:.3f}", flush=True)
    atomic_write_json(args.out, {"device": str(device), "threads": torch.get_num_threads(), "rows": rows})
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
