"""``saat data check DIR``: every problem of a dataset folder, one line each
(docs/data.md#checking-a-dataset-folder)."""

from __future__ import annotations

import argparse

from .common import DefaultsHelpFormatter


def register(sub) -> None:
    p = sub.add_parser("data", help="dataset folders: check one for every problem at once",
                       description="Tools for dataset folders in either list format.",
                       formatter_class=DefaultsHelpFormatter)
    tools = p.add_subparsers(dest="data_command", metavar="TOOL", required=True)
    check = tools.add_parser(
        "check", help="report every problem of a dataset folder (exit status 1 if any)",
        description=("Read a dataset folder (paired *_img.txt/*_label.txt files or train/test/database.txt lists) "
                     "and print one line per finding with its file and line: missing or unreadable images, label "
                     "rows of the wrong width or with values other than 0/1, duplicate paths within a split, query "
                     "images that also sit in the database, classes with no training or query item. Exit status 0 "
                     "when nothing is found, 1 otherwise."),
        formatter_class=DefaultsHelpFormatter)
    check.add_argument("folder", metavar="DIR")
    check.add_argument("--image-root", help="base of relative image paths (default: DIR)")
    check.add_argument("--no-verify", dest="verify", action="store_false",
                       help="only check that image files exist (do not open them)")
    check.set_defaults(run=run_check)


def run_check(args: argparse.Namespace) -> int:
    from ..pipelines.common import check_dataset_folder

    findings = check_dataset_folder(args.folder, args.image_root, verify_images=args.verify)
    for finding in findings:
        print(finding)
    print(f"{args.folder}: {len(findings)} finding{'s' if len(findings) != 1 else ''}")
    return 1 if findings else 0
