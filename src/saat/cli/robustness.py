"""``saat robustness``: the robustness card of a trained run — the per-query worst case over an attack ensemble,
sanity flags for gradient masking, and a transfer check (docs/robustness.md)."""

from __future__ import annotations

import argparse

from .attack import parse_budget, parse_option
from .common import (
    DefaultsHelpFormatter,
    add_device_arg,
    add_num_workers_arg,
    add_precision_args,
    add_query_args,
    config_values,
)


def register(sub) -> None:
    p = sub.add_parser(
        "robustness",
        help="robustness card of a run: worst case over an attack ensemble, gradient-masking flags, transfer",
        description=(
            "Evaluate a run's robustness the way a reviewer can trust: every query is attacked by an ensemble "
            "(untargeted: mainstay APGD with restarts, the CgAT centre-code attack, HAG, SDHA; targeted: mainstay "
            "APGD, DHTA, P2P, THA; both: the black-box Square attack, which reads only the model's outputs) and keeps "
            "its worst case (lowest AP, or highest t-AP); the robust mAP is the mean of these per-query worst cases, "
            "each figure with its 95% bootstrap interval over the queries. Sanity checks flag signs of gradient "
            "masking (monotone eps curve, collapse at eps = 1, convergence, uniform noise, zero gradients, "
            "stochastic codes, transfer, a black-box attack beating the gradient ones). Writes "
            "RUN_DIR/robustness/<name>/card.json and the worst-case adversarial codes; an interrupted evaluation "
            "resumes from the attacks already done, and a HAG or SDHA result of the run (saat attack) with the "
            "member's settings on the card's queries is taken instead of attacking again (they draw no random "
            "number: the same card). See docs/robustness.md."),
        formatter_class=DefaultsHelpFormatter,
    )
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--eps", type=parse_budget, help="L-inf budget, e.g. 8/255 (default: 8/255; the demo eps on the "
                                                   "demo datasets)")
    p.add_argument("--preset", choices=("standard", "quick"), default="standard",
                   help="standard: 100 APGD iterations, 3 restarts, each baseline at its defaults; quick: 50 "
                        "iterations, 1 restart, baselines capped at 100 iterations")
    p.add_argument("--targeted", action="store_true", help="targeted ensemble (t-MAP; worst case = highest t-AP)")
    p.add_argument("--surrogate", metavar="RUN",
                   help="a run of the same dataset to craft a transfer attack on (default for a defense run: the "
                        "run it was trained from)")
    p.add_argument("--defense", choices=("comdefend",),
                   help="evaluate the system with the run's ComDefend purifier in front of the model")
    p.add_argument("--adaptive", action="store_true",
                   help="craft through straight-through (BPDA) versions of non-differentiable parts (with "
                        "--defense comdefend: its binarisation)")
    p.add_argument("--no-checks", dest="checks", action="store_false",
                   help="the ensemble only, without the sanity checks (about half the time)")
    p.add_argument("--option", action="append", default=[], metavar="ATTACK.KEY=VALUE",
                   help="change a setting of one of the preset's attacks, e.g. square.steps=100 or hag.steps=20 for a "
                        "quicker smoke-test card (repeatable; recorded in the card and its folder name: such a card is "
                        "not the profile's)")
    add_query_args(p, seeds="the query subset, targets, random starts and noise", name_under="RUN_DIR/robustness")
    add_device_arg(p)
    add_precision_args(p, amp="the attacks' passes through the model")
    add_num_workers_arg(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..pipelines.robustness import RobustnessConfig, format_card, run_robustness
    from . import CommandError

    options: dict = {}
    for text in args.option:
        key, value = parse_option(text)
        attack, _, setting = key.partition(".")
        if not attack or not setting:
            raise CommandError(f"--option expects ATTACK.KEY=VALUE (e.g. square.steps=100), got {text!r}")
        options.setdefault(attack, {})[setting] = value
    cfg = RobustnessConfig(**config_values(args, RobustnessConfig, options=options or None))
    card = run_robustness(args.run_dir, cfg, device=args.device, num_workers=args.num_workers)
    print(format_card(card))
    print(f"card: {args.run_dir}/robustness/{card['name']}/card.json")
    return 0
