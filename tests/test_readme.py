"""Every command in README.md is checked: cheap ones run for real, the rest are parsed by the real CLI parser.

Blocks preceded by ``<!-- README-TEST: parse-only ... -->`` (real datasets, GPUs) are only parsed; the chain on
the demo data runs end to end in test_demo.py.
"""

import ast
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import fresh_process, script_main
from saat.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
RUN_FOR_REAL = {"list", "--help", "--version", "evaluate-codes"}


def code_blocks(lang):
    return re.findall(rf"(<!-- README-TEST: [^>]*-->\n)?```{lang}\n(.*?)```", README, flags=re.S)


def commands(block):
    text = block.replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        line = line.split("  #")[0].split(" # ")[0].strip()
        if line and not line.startswith("#"):
            out.append(shlex.split(line))
    return out


ALL = [cmd for _, block in code_blocks("bash") for cmd in commands(block)]


def test_readme_has_the_quick_start():
    assert ["make", "demo"] in ALL and ["make", "test"] in ALL
    assert "DEMO_TABLE" not in README  # the placeholder was replaced by the measured table


@pytest.mark.parametrize("cmd", [c for c in ALL if c[0] == "saat"], ids=lambda c: " ".join(c[:3]))
def test_every_saat_command_parses(cmd):
    args = build_parser().parse_args(cmd[1:]) if cmd[1:] and cmd[1] not in ("--help", "--version") else None
    if args is not None:
        assert args.command == cmd[1]


def test_cheap_commands_run(tmp_path, capsys):
    ran = set()
    for cmd in ALL:
        if cmd[0] != "saat" or not (set(cmd[1:2]) & RUN_FOR_REAL):
            continue
        if cmd[1] == "evaluate-codes":
            rng = np.random.default_rng(0)
            files = {"Q.npy": np.where(rng.random((5, 16)) < 0.5, 1, -1),
                     "D.npy": np.where(rng.random((40, 16)) < 0.5, 1, -1),
                     "QL.npy": rng.integers(0, 2, (5, 3)), "DL.npy": rng.integers(0, 2, (40, 3))}
            for name, arr in files.items():
                np.save(tmp_path / name, arr)
            cmd = [str(tmp_path / c) if c in files or c == "metrics.json" else c for c in cmd]
        if cmd[1] in ("--help", "--version"):
            res = subprocess.run([sys.executable, "-m", "saat", cmd[1]], capture_output=True, text=True)
            assert res.returncode == 0
        else:
            assert main(cmd[1:]) == 0, cmd
        ran.add(cmd[1])
    assert {"list", "evaluate-codes"} <= ran
    assert (tmp_path / "metrics.json").is_file()


@pytest.mark.slow  # three subprocesses, each importing torch
def test_benchmark_commands_exist_and_explain_themselves():
    scripts = sorted({c[1] for c in ALL if c[0] == "python" and c[1].startswith("benchmarks/")})
    assert scripts == sorted(f"benchmarks/{p.name}" for p in (ROOT / "benchmarks").glob("bench_*.py"))
    for script in scripts:
        res = fresh_process(script_main, ROOT / script, ["--help"], env=dict(os.environ))
        assert res.returncode == 0 and "usage" in res.stdout, (script, res.stderr[-1000:])


def test_python_api_block_is_valid_and_names_exist():
    import saat
    import saat.attacks
    import saat.retrieval

    (block,) = [b for m, b in code_blocks("python") if not m]
    tree = ast.parse(block)
    called = {n.func.attr for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)}
    assert {"train", "evaluate", "attack", "defend"} <= called
    assert all(callable(getattr(saat, name)) for name in ("train", "evaluate", "attack", "defend"))
    assert callable(saat.attacks.mainstay_codes) and callable(saat.retrieval.mean_average_precision)


@pytest.mark.slow  # trains a ResNet-18 adversarially for a few steps (about half a minute on 2 cores)
def test_your_own_model_blocks_run_as_written(capsys):
    blocks = [b for m, b in code_blocks("python") if m and "README-TEST: run" in m]
    assert len(blocks) == 2
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, "README.md", "exec"), namespace)  # noqa: S102 - the README's own snippets
    out = capsys.readouterr().out
    benign, adversarial = (float(v) for v in re.search(r"mAP@20 ([0-9.]+) -> ([0-9.]+)", out).groups())
    assert 0 <= adversarial <= 1 and 0 <= benign <= 1
    assert namespace["adv"].shape == (8, 3, 64, 64) and float((namespace["adv"] - namespace["images"]).abs().max()) \
        <= 8 / 255 + 1e-6
    assert torch.isfinite(namespace["loss"]) and namespace["it"] == 4  # five SAAT steps ran
    print(out)


def test_parse_only_blocks_are_marked():
    marked = [m for m, _ in code_blocks("bash") if m]
    assert all("README-TEST: run" in m for m, _ in code_blocks("python") if m)
    assert all("parse-only" in m for m in marked)


def _subparsers():
    import argparse

    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices


@pytest.mark.parametrize("name", sorted(_subparsers()))
def test_help_explains_every_option(name):
    sub = _subparsers()[name]
    text = sub.format_help()
    assert "(default: None)" not in text and "(default: False)" not in text
    undocumented = [a.option_strings[0] for a in sub._actions if a.option_strings and not a.help]
    assert undocumented == [], f"saat {name}: options without help: {undocumented}"
