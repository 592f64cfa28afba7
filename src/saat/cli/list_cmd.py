"""``saat list``: what the registries hold (datasets, hashing methods, backbones, ...)."""

from __future__ import annotations

import argparse


def _registries() -> dict:
    from ..data import list_datasets
    from ..hashing import list_methods
    from ..models import list_backbones

    return {"datasets": list_datasets, "methods": list_methods, "backbones": list_backbones}


def register(sub) -> None:
    p = sub.add_parser("list", help="list datasets, hashing methods and backbones",
                       description="List what can be named on the command line.")
    p.add_argument("what", nargs="?", choices=("datasets", "methods", "backbones"),
                   help="one registry (default: all)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    for name, lister in _registries().items():
        if args.what in (None, name):
            print(f"{name}: {', '.join(lister())}")
    return 0
