"""Argument helpers shared by several commands."""

from __future__ import annotations

import argparse


class DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Appends "(default: X)" to an option's help only when X says something: not for None, False or [], and
    not when the help text already states its default."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if "default" in text.lower() or default is None or default is False or default == [] \
                or default is argparse.SUPPRESS:
            return text
        return super()._get_help_string(action)


def parse_topk(text: str) -> int | None:
    """A positive integer, or 'all' (whole database)."""
    if text.lower() in ("all", "none"):
        return None
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer or 'all', got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer or 'all', got {text!r}")
    return value


def config_values(args: argparse.Namespace, config_cls, **renamed) -> dict:
    """The values of ``config_cls``'s fields that the command line has flags for (``renamed``: field -> value for
    fields whose flag carries another shape, e.g. ``options`` from repeated --option). A new setting is one
    dataclass field plus one flag; tests/test_cli.py checks that every field has a flag or is config-only."""
    import dataclasses

    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(config_cls) if hasattr(args, f.name)}
    values.update(renamed)
    return values


def add_device_arg(p: argparse.ArgumentParser, default: str | None = "auto") -> None:
    """--device; None as default lets a config file's device stand (resolved as auto when none is given)."""
    p.add_argument("--device", default=default,
                   help="cpu, cuda, cuda:1, mps, or auto (default): CUDA if available, else MPS, else CPU")


def add_num_workers_arg(p: argparse.ArgumentParser) -> None:
    """--num-workers (None: saat.data.loader.resolve_num_workers decides), for every command that reads images."""
    p.add_argument("--num-workers", type=int, metavar="N",
                   help="processes that decode image files, 0 = in this process (default: min(8, usable CPUs) "
                        "divided by the processes torchrun starts per machine for datasets of image files, 0 for "
                        "in-memory datasets such as the demo data); results do not depend on it "
                        "(docs/data.md#the-input-pipeline)")


def add_precision_args(p: argparse.ArgumentParser, *, amp: str | None) -> None:
    """--amp (``amp``: what it covers; None: no --amp) and --tf32 / --no-tf32."""
    if amp is not None:
        p.add_argument("--amp", action="store_true", default=None,
                       help=f"mixed precision for {amp}: bfloat16 autocast (float16 with a gradient scaler on GPUs "
                            "without bfloat16); losses, objectives and perturbations stay float32 "
                            "(docs/scaling.md#precision)")
    p.add_argument("--tf32", action=argparse.BooleanOptionalAction, default=None,
                   help="TF32 matmuls and cuDNN autotuning on CUDA (default: on for CUDA, off in parity mode; no "
                        "effect on the CPU)")


def add_device_args(p: argparse.ArgumentParser) -> None:
    """--device, --amp, --tf32, --num-workers and --sync-bn, for the commands that train."""
    add_device_arg(p, default=None)
    add_precision_args(p, amp="every pass through the model (training, encoding, the defenses' inner attack)")
    add_num_workers_arg(p)
    p.add_argument("--sync-bn", action="store_true", default=None,
                   help="under torchrun: BatchNorm normalises with the statistics of the whole global batch (all "
                        "processes' shares) instead of each process's share (docs/scaling.md)")


def add_query_args(p: argparse.ArgumentParser, *, seeds: str, name_under: str) -> None:
    """--num-queries, --batch-size, --seed, --topk and --name: the options of every command that attacks a run's
    queries. ``seeds``: what the seed draws; ``name_under``: where --name puts the result folder."""
    p.add_argument("--num-queries", type=int, help="attack this many queries, drawn with --seed (default: all)")
    p.add_argument("--batch-size", type=int, default=32, help="queries attacked per forward/backward")
    p.add_argument("--seed", type=int, default=0, help=f"seeds {seeds}")
    p.add_argument("--topk", type=int, help="mAP@k depth (default: the dataset's)")
    p.add_argument("--name", help=f"result folder under {name_under} (default: from the settings)")
