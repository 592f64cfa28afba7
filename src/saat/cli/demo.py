"""``saat demo``: the whole chain on the shipped images (train, attack, defend, attack again, report)."""

from __future__ import annotations

import argparse
from pathlib import Path

from .common import add_device_arg


def register(sub) -> None:
    p = sub.add_parser(
        "demo",
        help="run the whole chain on the shipped fashion-mosaic images (minutes on a laptop CPU)",
        description=(
            "Train a CSQ hashing model (small_cnn, 32 bits) on the shipped fashion-mosaic images, evaluate it, "
            "attack it with the SAAT attack (untargeted and targeted) and every baseline attack, adversarially "
            "train SAAT and ATRDH models, attack those, and write a report. Finished steps are reused when rerun. "
            "The demo uses a larger eps (32/255) than the paper's 8/255 (8/255 barely moves grayscale models), "
            "fewer epochs, iterations and queries; the report states every setting. It is 'saat reproduce --preset "
            "demo' (--quick: --preset quick) on the shipped data: a plan with each step's estimated time comes "
            "first."),
    )
    p.add_argument("--out", type=Path, default=Path("runs/demo"), help="where everything is written")
    p.add_argument("--quick", action="store_true", help="a 2-minute version (fewer epochs, iterations, queries)")
    p.add_argument("--plan", action="store_true",
                   help="print the steps with their estimated time and disk space, and stop (docs/reproduce.md)")
    add_device_arg(p)
    p.add_argument("--seed", type=int, default=0, help="one seed drives every random choice (default 0)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..reproduce import run_demo

    run_demo(args.out, quick=args.quick, device=args.device, seed=args.seed, plan_only=args.plan)
    return 0
