"""``saat report``: Markdown + self-contained HTML report (tables, figures, claims check) of runs."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub) -> None:
    p = sub.add_parser(
        "report",
        help="tables, figures and a claims check from trained, attacked and defended runs",
        description=(
            "Collect the results of one or more run directories (RUN/metrics.json, every RUN/attacks/*/metrics.json, "
            "defended runs from 'saat defend', read with their model.pt metadata) and write OUT/report.md, a "
            "self-contained OUT/report.html (figures embedded) and the figures as PNG files. The report holds: "
            "Table I (clean MAP and MAP under HAG / SDHA / SAAT attack; benign t-MAP and t-MAP under P2P / DHTA / "
            "THA / ProS-GAN / targeted SAAT attack) per undefended run; Table II (clean MAP and MAP under attack of "
            "the undefended, SAAT-, ATRDH-, CgAT-trained models and ComDefend-purified evaluations); each number "
            "with its eps, queries and iterations, at each dataset's main eps (the budget most results share; other "
            "budgets are in the table of all attack results); perceptibility (L-inf, L2, MSE, PSNR) and attack "
            "times; training times and the defense's epoch-time ratio to plain training; every run's configuration; "
            "the paper's published Tables I-II beside ours, labelled as the paper's; an automatic check of the "
            "paper's claims (holds / does not hold / not measured, with the numbers); figures: precision-recall and "
            "P@N curves (benign vs each attack), MAP vs eps of the SAAT attack for undefended vs defended models, "
            "and top-10 retrieval examples of benign vs adversarial queries (relevant framed green, irrelevant "
            "red). Missing inputs are skipped and listed in the report."),
        epilog="Example: saat report runs/demo runs/demo-saat runs/demo-atrdh --out report/",
    )
    p.add_argument("run_dirs", type=Path, nargs="+", metavar="RUN_DIR",
                   help="run directories written by 'saat train' or 'saat defend'")
    p.add_argument("--out", type=Path, default=Path("report"), help="output folder (default: report/)")
    p.add_argument("--no-discover", dest="discover", action="store_false",
                   help="do not add defended runs found beside a given run whose origin it is (default: add them)")
    p.add_argument("--overwrite", action="store_true",
                   help="write into an --out folder that holds a report of other runs or other files")
    p.add_argument("--no-examples", dest="examples", action="store_false",
                   help="skip the retrieval-example figure (it opens each run's dataset to show database images)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..report import build_report

    paths = build_report(args.run_dirs, args.out, discover=args.discover, examples=args.examples,
                         overwrite=args.overwrite)
    print(f"wrote {paths['markdown']}")
    print(f"wrote {paths['html']}")
    for path in paths["figures"].values():
        print(f"wrote {path}")
    return 0
