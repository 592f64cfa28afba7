"""``saat defend``: adversarial training (SAAT, ATRDH, CgAT) of a trained run, or a ComDefend purifier."""

from __future__ import annotations

import argparse
from pathlib import Path

from .attack import parse_budget, parse_option
from .common import add_device_args, config_values


def _defaults(key: str, names: list[str] | None = None) -> str:
    """Each defense's default for ``key`` (paper value, then the demo datasets' one where it differs), read from
    the defense classes so --help cannot drift from them."""
    from ..defenses import DEFENSES, list_defenses

    values = {name: (DEFENSES.get(name).defaults[key], DEFENSES.get(name).demo_defaults.get(key))
              for name in names or list_defenses()}

    def text(paper, demo) -> str:
        return f"{paper:g}" + ("" if demo is None or demo == paper else f", demo datasets {demo:g}")

    if len(set(values.values())) == 1:
        return "default " + text(*next(iter(values.values())))
    return "default: " + "; ".join(f"{name} {text(*v)}" for name, v in values.items())


def register(sub) -> None:
    from ..defenses import list_defenses

    p = sub.add_parser(
        "defend",
        help="adversarially train a run's model (SAAT, ATRDH, CgAT) or train a ComDefend purifier",
        description=(
            "SAAT (the paper's defense): minimax adversarial training guided by mainstay codes; the run's own "
            "hashing loss is the benign term. ATRDH and CgAT share the same loop. Writes a new run directory "
            "(default RUN_DIR-<method>) on which 'saat evaluate' and 'saat attack' work unchanged. Settings left "
            "out take the defense's paper values (SAAT: eps 8/255, step 2/255, 7 steps, lambda 1, mu 1e-4, SGD lr "
            "0.05, 20 epochs, batch 32) or, on the demo datasets, the demo preset (eps 32/255, 3 epochs). Data "
            "parallel (saat, atrdh, cgat): 'torchrun --nproc_per_node=N -m saat defend ...' with the same flags "
            "(docs/scaling.md)."),
    )
    p.add_argument("run_dir", nargs="?", metavar="RUN_DIR", help="the trained run to defend")
    p.add_argument("--method", default="saat", choices=[*list_defenses(), "comdefend"],
                   help="defense; 'comdefend' trains an input purifier stored in RUN_DIR/purifiers (use it with "
                        "'saat attack RUN_DIR --defense comdefend')")
    p.add_argument("--lambda", dest="lambda_", type=float, metavar="LAMBDA",
                   help=f"SAAT: weight of the adversarial term ({_defaults('lambda_', ['saat'])})")
    p.add_argument("--mu", type=float, help=f"SAAT: weight of the quantisation term ({_defaults('mu', ['saat'])})")
    p.add_argument("--epochs", type=int, help=f"defense epochs ({_defaults('epochs')})")
    p.add_argument("--steps", type=int, help=f"inner PGD iterations ({_defaults('steps')})")
    p.add_argument("--step", type=parse_budget, help="inner PGD step, e.g. 2/255")
    p.add_argument("--eps", type=parse_budget, help="inner PGD budget, e.g. 8/255")
    p.add_argument("--batch-size", type=int, help=f"images per step ({_defaults('batch_size')})")
    p.add_argument("--lr", type=float, help=f"learning rate ({_defaults('lr')})")
    p.add_argument("--parity", action="store_true", default=None,
                   help="SAAT: reproduce the authors' code (train-mode crafting, code memory shared with the hashing "
                        "loss); the default crafts in eval mode with a separate +-1 memory")
    p.add_argument("--inner", choices=["pgd", "fgsm-rs", "n-fgsm", "free"],
                   help="inner maximiser: pgd (the paper's: --steps iterations of --step), fgsm-rs (one step of "
                        "1.25 eps from a random start), n-fgsm (noise of 2 eps, one step of eps, no projection to the "
                        "eps-ball), free (each batch replayed --replays times, the perturbation carried, epochs / M) "
                        "(default pgd; docs/defenses.md#fast-adversarial-training)")
    p.add_argument("--replays", type=int, metavar="M", help="free training: replays per batch (default 4)")
    p.add_argument("--on-collapse", choices=["warn", "stop", "fallback"],
                   help="when the catastrophic-overfitting watch (on for the fast inner maximisers; "
                        "--option watch=on|off) sees PGD-10 robustness collapse: warn, stop keeping the best PGD-10 "
                        "weights, or fall back to --inner pgd for the rest of the run (default warn)")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="any other setting (e.g. watch_every=50, watch_size=64, collapse_threshold=0.1)")
    p.add_argument("--seed", type=int, default=0, help="one seed drives every random choice (default 0)")
    add_device_args(p)
    p.add_argument("--no-evaluate", dest="evaluate", action="store_false", help="skip the clean evaluation")
    p.add_argument("--out", type=Path, metavar="OUT_DIR", help="output run directory (default RUN_DIR-<method>)")
    p.add_argument("--resume", type=Path, metavar="OUT_DIR", help="continue an interrupted defense run")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..pipelines.defend import DefenseConfig, defend

    if args.resume is not None:
        defend(resume=args.resume)
        return 0
    if args.method == "comdefend":
        from ..pipelines.comdefend import train_comdefend

        if args.run_dir is None:
            raise ValueError("give the run directory whose model the purifier will protect")
        out = train_comdefend(args.run_dir, epochs=args.epochs, lr=args.lr, batch_size=args.batch_size,
                              seed=args.seed, device=args.device or "auto", num_workers=args.num_workers,
                              **dict(parse_option(o) for o in args.option))
        print(f"wrote {out['purifier']}")
        return 0
    cfg = DefenseConfig(**config_values(args, DefenseConfig, options=dict(parse_option(o) for o in args.option),
                                        device=args.device or "auto", amp=bool(args.amp),
                                        num_workers=args.num_workers, sync_bn=bool(args.sync_bn)))
    defend(args.run_dir, cfg, out=args.out)
    return 0
