"""``saat reproduce``: the paper's Table I and Table II protocol for one dataset as one planned, resumable grid."""

from __future__ import annotations

import argparse
from pathlib import Path

from .common import DefaultsHelpFormatter, add_device_arg, add_num_workers_arg


def _ints(what: str):
    def parse(text: str) -> tuple[int, ...]:
        try:
            values = tuple(int(v) for v in text.split(",") if v.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"{what}: expected integers separated by commas, got {text!r}") from None
        if not values:
            raise argparse.ArgumentTypeError(f"{what}: expected at least one integer, got {text!r}")
        return values
    return parse


def register(sub) -> None:
    from ..reproduce.grid import PRESETS, RUN_NAME

    presets = "; ".join(f"{name}: {p.help}" for name, p in PRESETS.items())
    p = sub.add_parser(
        "reproduce",
        help="the paper's Table I and II protocol for a dataset in one command: planned, resumable, multi-GPU",
        formatter_class=DefaultsHelpFormatter,
        description=(
            "Run the protocol of the paper's Table I and Table II as a grid of cells: per bit length and seed, train "
            "the hashing model, attack it with every Table I attack (HAG, SDHA, SAAT attack; P2P, DHTA, THA, "
            "ProS-GAN, targeted SAAT attack), adversarially train SAAT and ATRDH models from it, attack those with "
            "the Table II attacks, compute each model's robustness card; then write the report (Tables I and II "
            "in the paper's layout with the paper's numbers beside ours, mean ± 95%% interval over seeds). Each "
            "cell is an ordinary run or attack folder under --out, made as the single commands make it. A plan "
            "with each cell's estimated time (from a probe of under a minute on this device) and the disk space is "
            "printed first (--plan: only the plan). Rerunning the same command skips finished cells, resumes "
            "killed ones and retries failed ones. Several GPUs: 'torchrun --nproc_per_node=N -m saat reproduce "
            "...' (training data-parallel, attacks sharded across the processes). docs/reproduce.md"),
        epilog="presets: " + presets,
    )
    p.add_argument("--dataset", required=True,
                   help="catalog name (FLICKR-25K, NUS-WIDE, MS-COCO, ... , fashion-mnist); 'saat list datasets'")
    p.add_argument("--dataset-dir", help="the prepared dataset folder ('saat data prepare')")
    p.add_argument("--data-root", help="folder holding the dataset's list files and images (instead of --dataset-dir)")
    p.add_argument("--backbone", default="alexnet", help="network (the paper: alexnet; 'saat list backbones')")
    p.add_argument("--method", default="dph", help="hashing method (the paper's tables: dph; 'saat list methods')")
    p.add_argument("--bits", type=_ints("--bits"), default=(16, 32, 48, 64), metavar="B[,B...]",
                   help="code lengths (default: the paper's 16,32,48,64)")
    p.add_argument("--seeds", type=_ints("--seeds"), default=(0,), metavar="S[,S...]",
                   help="seeds; with several, the report gives mean ± 95%% interval per cell (default: 0)")
    p.add_argument("--tables", type=_ints("--tables"), default=(1, 2), metavar="1,2",
                   help="which tables: 1 (attacks on undefended models), 2 (defended models) (default: 1,2)")
    p.add_argument("--preset", choices=list(PRESETS), default="paper",
                   help="how much work each cell does (below); paper = every method's own settings")
    p.add_argument("--out", type=Path, required=True, help="the grid's folder (rerun with it to continue)")
    p.add_argument("--plan", action="store_true", help="print the plan (cells, estimated time, disk) and stop")
    p.add_argument("--run-name", default=RUN_NAME,
                   help="run folder names, from {method}, {bits}, {seed}, {backbone}")
    p.add_argument("--pretrained", action="store_true",
                   help="start the backbone from ImageNet weights (torchvision downloads them; the paper does)")
    p.add_argument("--backbone-weights", help="a local file of backbone weights (instead of downloading)")
    add_device_arg(p)
    add_num_workers_arg(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..reproduce import GridSpec, reproduce

    spec = GridSpec(dataset=args.dataset, backbone=args.backbone, method=args.method, bits=args.bits,
                    seeds=args.seeds, tables=args.tables, preset=args.preset, run_name=args.run_name,
                    dataset_dir=args.dataset_dir, data_root=args.data_root, pretrained=args.pretrained,
                    backbone_weights=args.backbone_weights)
    result = reproduce(spec, args.out, device=args.device, num_workers=args.num_workers, plan_only=args.plan)
    if args.plan:
        return 0
    if result["report"]:
        print(f"[reproduce] report: {result['report']}")
    return 1 if result["failures"] else 0
