"""The ``saat`` command line. Each command lives in its own module with ``register(subparsers)``."""

from __future__ import annotations

import argparse
import os
import sys

from .._version import __version__
from ..errors import SaatError
from . import attack, defend, demo, evaluate, evaluate_codes, list_cmd, report, robustness, train, transfer

COMMANDS = (demo, train, evaluate, attack, robustness, transfer, defend, report, evaluate_codes, list_cmd)


class CommandError(SaatError):
    """An error caused by the user's input: printed as one clear line, without a traceback."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="saat",
        description=(
            "Semantic-Aware Adversarial Training (SAAT) for reliable deep hashing retrieval: train hashing "
            "models, evaluate retrieval, attack them with mainstay codes and baselines, and defend them."
        ),
        epilog="Run 'saat COMMAND --help' for the options of a command. Set SAAT_DEBUG=1 for tracebacks.",
    )
    parser.add_argument("--version", action="version", version=f"saat {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in COMMANDS:
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 0
    try:
        return int(args.run(args) or 0)
    except (SaatError, ValueError, FileNotFoundError, FileExistsError, ImportError) as exc:
        if os.environ.get("SAAT_DEBUG"):
            raise
        print(f"saat {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"saat {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
