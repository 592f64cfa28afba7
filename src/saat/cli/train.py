"""``saat train``: train a deep hashing model and write a run directory."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from .common import add_device_args, config_values, parse_topk


def _preset_defaults(key: str) -> str:
    """'default: paper preset X, demo preset Y', read from the presets themselves so --help cannot drift."""
    from ..config import PRESETS, TrainConfig

    paper = PRESETS["paper"].get(key, next(f.default for f in dataclasses.fields(TrainConfig) if f.name == key))
    demo = PRESETS["demo"].get(key, paper)
    paper_text, demo_text = (f"{v:g}" if isinstance(v, float) else str(v) for v in (paper, demo))
    return f"default {paper_text}" if paper == demo else f"default: paper preset {paper_text}, demo preset {demo_text}"


def register(sub) -> None:
    p = sub.add_parser(
        "train",
        help="train a deep hashing model (DPH, DPSH, HashNet, HSWD, CSQ, DPN, OrthoHash) on a dataset",
        description=(
            "Train a hashing model and write a run directory: config.yaml, model.pt, metrics.json (clean mAP, "
            "P@N, PR curve, random-ranking baseline) and train_log.jsonl. Defaults are the paper's preset (DPH, "
            "AlexNet, 32 bits, SGD lr 0.01, 100 epochs, batch 32) for the real datasets and a small fast preset "
            "for the shipped demo datasets (fashion-mnist, fashion-mosaic). Precedence: preset < --config YAML < "
            "flags. A run killed mid-training continues with 'saat train --resume RUN_DIR'. Data parallel: "
            "'torchrun --nproc_per_node=N -m saat train ...' with the same flags; --batch-size stays the global "
            "batch, shared by the N processes (docs/scaling.md)."
        ),
    )
    p.add_argument("--dataset", help="catalog name (fashion-mosaic, fashion-mnist, FLICKR-25K[-24], NUS-WIDE[-81], "
                                     "MS-COCO, ImageNet-100, CIFAR-10); see 'saat list datasets'")
    p.add_argument("--data-root", help="folder holding the real dataset's list files and images")
    p.add_argument("--dataset-dir", help="a custom dataset folder in either list-file format (instead of --dataset)")
    p.add_argument("--image-root", help="image root for single-list-file datasets (default: the dataset folder)")
    p.add_argument("--path-map", action="append", metavar="OLD=NEW",
                   help="rewrite the prefix OLD of listed image paths to NEW (lists with their authors' absolute "
                        "paths, e.g. /home/someone/coco=/data/coco); repeatable, the longest matching OLD wins")
    p.add_argument("--download", action="store_true", default=None, help="CIFAR-10: download if missing")
    p.add_argument("--method", help="hashing method (default: dph); see 'saat list methods'")
    p.add_argument("--backbone", help="alexnet, vgg11..19(_bn), resnet18..101, small_cnn")
    p.add_argument("--bits", type=int, help="code length K (default 32)")
    p.add_argument("--pretrained", action="store_true", default=None,
                   help="start from torchvision's ImageNet weights (needs network or a warm torch hub cache)")
    p.add_argument("--backbone-weights", metavar="FILE", help="a local ImageNet state_dict for the backbone")
    p.add_argument("--image-size", type=int, help="input side in pixels (default: 224 for torchvision backbones, "
                                                   "the dataset's native size for small_cnn)")
    p.add_argument("--epochs", type=int, help=f"training epochs ({_preset_defaults('epochs')})")
    p.add_argument("--batch-size", type=int, help=f"images per step ({_preset_defaults('batch_size')})")
    p.add_argument("--optimizer", choices=("sgd", "adam"), help=_preset_defaults("optimizer"))
    p.add_argument("--lr", type=float, help=f"learning rate ({_preset_defaults('lr')}); x0.1 at epochs E/3 and 2E/3")
    p.add_argument("--momentum", type=float, help=f"SGD momentum ({_preset_defaults('momentum')})")
    p.add_argument("--weight-decay", type=float, help=_preset_defaults("weight_decay"))
    p.add_argument("--seed", type=int, help="one seed drives every random choice (default 0)")
    p.add_argument("--topk", type=parse_topk, help="mAP@k of the final evaluation (default: the dataset's topK)")
    p.add_argument("--no-evaluate", dest="evaluate", action="store_false", default=None,
                   help="skip the clean evaluation at the end (run 'saat evaluate' later)")
    p.add_argument("--preset", choices=("paper", "demo"), help="start from this preset (default: demo for the "
                                                               "demo datasets, paper otherwise)")
    p.add_argument("--config", type=Path, metavar="FILE.yaml", help="settings in YAML (keys as in config.yaml)")
    p.add_argument("--out", type=Path, metavar="RUN_DIR", help="run directory (default runs/<dataset>-<method>-...)")
    p.add_argument("--resume", type=Path, metavar="RUN_DIR", help="continue an interrupted run (other options are "
                                                                   "taken from its config.yaml)")
    add_device_args(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..pipelines.train import train

    if args.resume is not None:
        train(resume=args.resume)
        return 0
    from ..config import TrainConfig

    train(out=args.out, config_file=args.config, **config_values(args, TrainConfig))
    return 0
