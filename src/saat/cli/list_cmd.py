"""``saat list``: what the registries hold (datasets, hashing methods, backbones, ...)."""

from __future__ import annotations

import argparse


def _registries() -> dict:
    from ..attacks import list_attacks, list_generators
    from ..data import list_datasets
    from ..defenses import list_defenses
    from ..hashing import list_methods
    from ..models import list_backbones

    return {"datasets": list_datasets, "methods": list_methods, "backbones": list_backbones,
            "attacks": list_attacks, "generators": list_generators,
            "defenses": lambda: [*list_defenses(), "comdefend"]}


def register(sub) -> None:
    p = sub.add_parser("list", help="list datasets, hashing methods, backbones, attacks, generators, defenses",
                       description="List what can be named on the command line.")
    p.add_argument("what", nargs="?", choices=("datasets", "methods", "backbones", "attacks", "generators",
                                                "defenses"), help="one registry (default: all)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    for name, lister in _registries().items():
        if args.what == "datasets" and name == "datasets":
            from ..data import list_dataset_specs
            from ..data.prepare import list_prepared

            print("datasets (--dataset NAME; or --dataset-dir FOLDER alone for your own lists):")
            for spec in list_dataset_specs():
                built = "; built from the official downloads by: saat data prepare " + spec.name \
                    if spec.name in list_prepared() else ""
                print(f"  {spec.describe()}{built}")
        elif args.what in (None, name):
            print(f"{name}: {', '.join(lister())}")
    return 0
