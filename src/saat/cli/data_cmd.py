"""``saat data prepare`` (a dataset folder from the official downloads) and ``saat data check`` (every problem of a
dataset folder, one line each); docs/data.md#preparing-a-dataset-from-the-official-downloads and
docs/data.md#checking-a-dataset-folder."""

from __future__ import annotations

import argparse

from .common import DefaultsHelpFormatter

PREPARED = ("FLICKR-25K", "FLICKR-25K-24", "NUS-WIDE", "NUS-WIDE-81", "MS-COCO", "CIFAR-10")


def register(sub) -> None:
    p = sub.add_parser("data", help="dataset folders: build one from the official downloads, check one",
                       description="Tools for dataset folders in either list format.",
                       formatter_class=DefaultsHelpFormatter)
    tools = p.add_subparsers(dest="data_command", metavar="TOOL", required=True)
    prepare = tools.add_parser(
        "prepare", help="build a dataset folder from the official downloads (lists in both formats + manifest.json)",
        description=("Read the official downloads of a catalog dataset from --raw, split them with the literature's "
                     "protocol (seeded) and write, in --out, the lists in both formats (train/test/database.txt and "
                     "the paired *_img.txt/*_label.txt) and manifest.json: the protocol, counts per split and class, "
                     "what was dropped and why, and the sha256 of every list. Images inside a zip are extracted to "
                     "OUT/images; images already unpacked in --raw are listed where they are. Then train with "
                     "--dataset NAME --dataset-dir OUT. Raw layouts: FLICKR-25K(-24): mirflickr25k.zip (or mirflickr/) "
                     "and mirflickr25k_annotations_v080.zip (or its files); NUS-WIDE(-81): ImageList/Imagelist.txt, "
                     "Groundtruth/AllLabels/Labels_*.txt, ConceptsList/Concepts81.txt (or ImageList.zip, "
                     "Groundtruth.zip, ConceptsList.zip, or the re-released NUS-WIDE.zip beside the image list) and "
                     "the images in Flickr/; "
                     "MS-COCO: annotations/instances_{train,val}2014.json (or annotations_trainval2014.zip) and "
                     "train2014/, val2014/ (or their zips); CIFAR-10: cifar-10-batches-py/ (or "
                     "cifar-10-python.tar.gz)."),
        formatter_class=DefaultsHelpFormatter)
    prepare.add_argument("name", metavar="NAME", help=f"catalog dataset: {', '.join(PREPARED)} (aliases work)")
    prepare.add_argument("--raw", required=True, metavar="DIR", help="the folder holding the official downloads")
    prepare.add_argument("--out", required=True, metavar="DIR", help="the dataset folder to write")
    prepare.add_argument("--seed", type=int, default=0, help="seed of the split")
    prepare.add_argument("--query-size", type=int, default=None, metavar="N",
                         help="queries (per class for NUS-WIDE and CIFAR-10) instead of the protocol's; the numbers "
                              "are then not comparable with published ones (recorded in the manifest)")
    prepare.add_argument("--train-size", type=int, default=None, metavar="N",
                         help="training images (per class for NUS-WIDE and CIFAR-10) instead of the protocol's")
    prepare.add_argument("--overwrite", action="store_true",
                         help="replace the lists and manifest of an --out folder that already has them")
    prepare.set_defaults(run=run_prepare)

    check = tools.add_parser(
        "check", help="report every problem of a dataset folder (exit status 1 if any)",
        description=("Read a dataset folder (paired *_img.txt/*_label.txt files or train/test/database.txt lists) "
                     "and print one line per finding with its file and line: missing or unreadable images, label "
                     "rows of the wrong width or with values other than 0/1, duplicate paths within a split, query "
                     "images that also sit in the database, classes with no training or query item, and, for a "
                     "folder written by saat data prepare, lists whose sha256 no longer matches manifest.json. Exit "
                     "status 0 when nothing is found, 1 otherwise."),
        formatter_class=DefaultsHelpFormatter)
    check.add_argument("folder", metavar="DIR")
    check.add_argument("--image-root", help="base of relative image paths (default: DIR)")
    check.add_argument("--no-verify", dest="verify", action="store_false",
                       help="only check that image files exist (do not open them)")
    check.set_defaults(run=run_check)


def run_prepare(args: argparse.Namespace) -> int:
    from ..pipelines.common import prepare_dataset

    m = prepare_dataset(args.name, args.raw, args.out, seed=args.seed, query_size=args.query_size,
                        train_size=args.train_size, overwrite=args.overwrite)
    counts = m["counts"]
    dropped = ", ".join(f"{n:,} {why}" for why, n in counts["dropped"].items()) or "none"
    print(f"{m['dataset']}: {len(m['classes'])} classes, kept {counts['kept']:,} images (dropped: {dropped}); "
          f"train {counts['train']:,} / query {counts['query']:,} / database {counts['database']:,}"
          + ("" if m["protocol"]["standard"] else " (non-standard sizes)"))
    print(f"wrote {args.out}: train/test/database.txt, *_img.txt/*_label.txt, manifest.json; train with "
          f"--dataset {m['dataset']} --dataset-dir {args.out}")
    return 0


def run_check(args: argparse.Namespace) -> int:
    from ..pipelines.common import check_dataset_folder

    findings = check_dataset_folder(args.folder, args.image_root, verify_images=args.verify)
    for finding in findings:
        print(finding)
    print(f"{args.folder}: {len(findings)} finding{'s' if len(findings) != 1 else ''}")
    return 1 if findings else 0
