"""The ``saat`` command line. Each command lives in its own module with ``register(subparsers)``."""

from __future__ import annotations

import argparse
import contextlib
import errno
import os
import sys

from .._version import __version__
from ..errors import SaatError
from ..utils.dist import is_main_process
from . import (
    attack,
    data_cmd,
    defend,
    demo,
    evaluate,
    evaluate_codes,
    list_cmd,
    report,
    reproduce,
    robustness,
    train,
    transfer,
)

COMMANDS = (demo, reproduce, train, evaluate, attack, robustness, transfer, defend, report, evaluate_codes, data_cmd,
            list_cmd)


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


_OS_HINTS = {
    errno.EACCES: "permission denied: fix its permissions, or write elsewhere (another --out, or a copy of the run)",
    errno.EPERM: "operation not permitted: fix its permissions, or write elsewhere (another --out, or a copy of the "
                 "run)",
    errno.EROFS: "read-only file system: write elsewhere (another --out, or a copy of the run directory)",
    errno.ENOSPC: "no space left on the device: free some space and rerun (finished steps are kept)",
    errno.EDQUOT: "disk quota exceeded: free some space and rerun (finished steps are kept)",
    errno.EISDIR: "is a directory: give a file path",
    errno.ENOTDIR: "a part of the path is a file, not a directory",
    errno.EEXIST: "already exists: choose another path or remove it",
}


def describe_error(exc: BaseException) -> str:
    """One line for an expected failure: the message of saat's own errors; for an operating-system error, the file
    and what to do (never Python's "[Errno 13]" form)."""
    if isinstance(exc, OSError) and exc.errno in _OS_HINTS and not isinstance(exc, (FileNotFoundError,)):
        where = exc.filename if exc.filename is not None else "(file not named by the system)"
        return f"{where}: {_OS_HINTS[exc.errno]}"
    if isinstance(exc, OSError) and exc.strerror and exc.filename is not None:
        return f"{exc.filename}: {exc.strerror}"
    return str(exc) or type(exc).__name__


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 0
    try:
        # Under torchrun the other ranks compute the same results silently: rank 0 prints them (errors: every rank).
        with contextlib.ExitStack() as stack:
            if not is_main_process():
                stack.enter_context(contextlib.redirect_stdout(stack.enter_context(open(os.devnull, "w"))))
            return int(args.run(args) or 0)
    except (SaatError, ValueError, FileNotFoundError, FileExistsError, ImportError, OSError) as exc:
        if os.environ.get("SAAT_DEBUG"):
            raise
        print(f"saat {args.command}: error: {describe_error(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"saat {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
