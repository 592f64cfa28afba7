"""``saat attack``: the mainstay (SAAT) attack and the baselines against a trained run."""

from __future__ import annotations

import argparse
from fractions import Fraction

from .common import (
    DefaultsHelpFormatter,
    add_device_arg,
    add_num_workers_arg,
    add_precision_args,
    add_query_args,
    config_values,
)


def parse_budget(text: str) -> float:
    """'8/255' or '0.0314' -> float in [0, 1] pixel units."""
    try:
        value = float(Fraction(text)) if "/" in text else float(text)
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(f"expected a number like 8/255 or 0.0314, got {text!r}") from None
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must lie in [0, 1] (pixel units), got {text!r}")
    return value


OPTION_VALUES = ("a value may be a number (fractions like 8/255 too), true or false, a text, or a YAML list or "
                 "mapping such as [0.5, 0.75] or {a: 1}")


def parse_option(text: str, flag: str = "--option") -> tuple[str, object]:
    """KEY=VALUE with VALUE read as YAML (numbers, booleans, fractions like 8/255 as numbers); a malformed one is a
    one-line error naming the option and what a value may be (YAML tags such as !!python/... never construct
    anything: they are refused too)."""
    import yaml

    from . import CommandError

    if "=" not in text or not text.split("=", 1)[0].strip():
        raise CommandError(f"{flag} expects KEY=VALUE, got {text!r}")
    key, raw = text.split("=", 1)
    key = key.strip()
    if "/" in raw:
        try:
            return key, float(Fraction(raw))
        except (ValueError, ZeroDivisionError):
            pass
    try:
        return key, yaml.safe_load(raw)
    except yaml.constructor.ConstructorError:
        problem = "YAML tags such as !!python/... are not allowed"
    except yaml.YAMLError as exc:
        problem = f"not valid YAML: {' '.join(str(getattr(exc, 'problem', None) or 'unreadable').split())}"
    raise CommandError(f"{flag} {key}: cannot read the value {raw[:80]!r} ({problem}); {OPTION_VALUES}")


def register(sub) -> None:
    from ..attacks import list_attacks, list_generators

    p = sub.add_parser(
        "attack",
        help="attack a trained run (mainstay/SAAT attack, untargeted or targeted) and measure retrieval",
        description=(
            "Craft adversarial versions of the run's query images and measure retrieval with them: benign mAP vs "
            "adversarial mAP (untargeted) or benign vs adversarial t-MAP (targeted, with seeded target labels "
            "saved in RUN_DIR/attacks and shared by every targeted method), the theory MAP of the attack's ideal "
            "codes, perceptibility (L-inf, L2, MSE, PSNR) and speed. Results go to RUN_DIR/attacks/<name>/. "
            "Defaults are each method's paper settings for real datasets (SAAT: eps 8/255, step 1/255, 100 "
            "iterations) and the demo preset (a shared larger eps, fewer iterations) for the demo datasets."),
        formatter_class=DefaultsHelpFormatter,
    )
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--method", default="mainstay", choices=[*list_attacks(), "all"],
                   help="attack method; 'all' runs the paper's Table I family (untargeted: hag, sdha, mainstay; "
                        "targeted: p2p, dhta, tha, prosgan, mainstay) on the same queries and writes a summary table")
    p.add_argument("--targeted", action="store_true", help="targeted attack (t-MAP)")
    p.add_argument("--generator", choices=list_generators(),
                   help="perturbation generator of the code-guided attacks (mainstay, cgat; default pgd)")
    p.add_argument("--eps", type=parse_budget, help="L-inf budget, e.g. 8/255 (default: preset)")
    p.add_argument("--step", type=parse_budget, help="step size, e.g. 1/255 (default: preset)")
    p.add_argument("--steps", type=int, help="iterations (default: preset)")
    add_query_args(p, seeds="the query subset, targets and random starts", name_under="RUN_DIR/attacks")
    p.add_argument("--parity", action="store_true", default=None,
                   help="normalise the loss over the whole batch like the authors' code (default: per sample)")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="any other setting of the method (see the method's defaults in metrics.json), repeatable")
    p.add_argument("--defense", choices=("comdefend",),
                   help="evaluate with an input purifier in front of the model (train it first with 'saat defend "
                        "RUN_DIR --method comdefend'); the attacker sees the model only unless --adaptive")
    p.add_argument("--adaptive", action="store_true",
                   help="with --defense: the attacker differentiates through the purifier (straight-through)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a result of other settings that sits under the same --name (without it, such a "
                        "result is never overwritten; a result of the same settings is reused)")
    add_device_arg(p)
    add_precision_args(p, amp="the attack's passes through the model")
    add_num_workers_arg(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..pipelines.attack import AttackConfig, run_attack
    from . import CommandError

    cfg = AttackConfig(**config_values(args, AttackConfig, options=dict(parse_option(o) for o in args.option)))
    if args.method == "all":
        from ..pipelines.attack import format_family_table, run_attack_family

        if args.name:
            raise CommandError("--name names one attack's folder; it cannot be used with --method all")
        summary = run_attack_family(args.run_dir, cfg, device=args.device, num_workers=args.num_workers)
        print(format_family_table(summary), end="")
        return 0
    m = run_attack(args.run_dir, cfg, device=args.device, num_workers=args.num_workers)
    print(format_attack_summary(m))
    return 0


def format_attack_summary(m: dict) -> str:
    """An attack result's ``metrics.json`` as the lines ``saat attack`` prints: the benign and adversarial mAP (t-MAP
    when targeted), each with its 95 % bootstrap interval over the queries where the result has one
    (``0.3433 [0.290, 0.395]``, as the ``--method all`` table prints it), theory, perceptibility and time."""
    from ..retrieval import format_ci

    key = "t-MAP" if m["targeted"] else "mAP"
    p = m["perceptibility"]
    theory = m.get(f"theory_{key}")
    benign = format_ci(m[f"benign_{key}"], m.get(f"benign_{key}_ci"), digits=4)
    adversarial = format_ci(m[f"adversarial_{key}"], m.get(f"adversarial_{key}_ci"), digits=4)
    lines = [f"{m['name']} on {m['dataset']} ({m['queries']} queries, mAP@{m['topk']}):"]
    if m["targeted"]:
        lines.append(f"  benign t-MAP {benign} -> adversarial t-MAP {adversarial}")
    else:
        lines.append(f"  benign mAP {benign} -> adversarial mAP {adversarial}  "
                     f"(random ranking {m['random_ranking_mAP']:.4f})")
    if theory is not None:
        lines.append(f"  theory {key} {theory:.4f}")
    lines.append(f"  perceptibility: L-inf {p['linf_mean_255']:.2f}/255, L2 {p['l2_mean']:.3f}, PSNR "
                 f"{p['psnr_mean']:.1f} dB;  {m['seconds']:.1f} s, {m['images_per_s']:.1f} img/s")
    return "\n".join(lines)
