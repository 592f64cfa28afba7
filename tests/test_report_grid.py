"""The report's grid section (``saat.report.grid``): the Student-t quantile and the seed interval against independent
numbers, a synthetic (bits x seeds) grid laid out as the paper's Tables I and II, and a single-model report left
unchanged."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from saat.attacks import TABLE1_ATTACKS
from saat.checkpoint import file_hash, save_model
from saat.report import build as report_build
from saat.report import build_report
from saat.report.grid import SECTION, interval_text, mean_interval, t_cdf, t_quantile
from saat.report.paper import TABLE1_TARGETED, TABLE1_UNTARGETED, TABLE2
from test_report import add_attack, attack_metrics, family, write_json

DATASET, BACKBONE, METHOD = "FLICKR-25K", "alexnet", "dph"
BITS, SEEDS = (16, 32), (0, 1, 2)
UNTARGETED, TARGETED = TABLE1_ATTACKS[False], TABLE1_ATTACKS[True]


# --- an independent Student-t: Simpson's rule on the density ------------------------------------------------------

def t_pdf(x: np.ndarray, df: float) -> np.ndarray:
    log_c = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)
    return np.exp(log_c - (df + 1) / 2 * np.log1p(x * x / df))


def cdf_by_integration(t: float, df: float, intervals: int = 20_000) -> float:
    x = np.linspace(0.0, abs(t), intervals + 1)
    y = t_pdf(x, df)
    half = abs(t) / intervals / 3 * (y[0] + y[-1] + 4 * y[1:-1:2].sum() + 2 * y[2:-1:2].sum())
    return 0.5 + math.copysign(half, t)


def quantile_by_integration(p: float, df: float) -> float:
    lo, hi = 0.0, 1.0
    while cdf_by_integration(hi, df) < p:
        hi *= 2
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if cdf_by_integration(mid, df) < p else (lo, mid)
    return (lo + hi) / 2


@pytest.mark.parametrize("df", [1, 2, 3, 5, 10, 30])
@pytest.mark.parametrize("p", [0.6, 0.9, 0.975, 0.995])
def test_t_quantile_inverts_the_integrated_density(p, df):
    q = t_quantile(p, df)
    assert cdf_by_integration(q, df) == pytest.approx(p, abs=1e-9)
    assert t_cdf(q, df) == pytest.approx(p, abs=1e-12)
    assert t_quantile(1 - p, df) == pytest.approx(-q, rel=1e-12)


def test_t_quantile_known_values():
    for p in (0.6, 0.9, 0.975, 0.999):
        assert t_quantile(p, 1) == pytest.approx(math.tan(math.pi * (p - 0.5)), rel=1e-10)  # Cauchy
    # df = 2 has a closed form: t = (2p - 1) sqrt(2 / (1 - (2p - 1)^2)).
    a = 2 * 0.975 - 1
    assert t_quantile(0.975, 2) == pytest.approx(a * math.sqrt(2 / (1 - a * a)), rel=1e-10)
    assert t_quantile(0.975, 10**6) == pytest.approx(1.95996, abs=1e-5)
    assert t_quantile(0.5, 4) == 0.0
    for bad in (0.0, 1.0, -0.1):
        with pytest.raises(ValueError):
            t_quantile(bad, 3)


def test_mean_interval_on_hand_data():
    values = [0.21, 0.25, 0.2, 0.31]
    mean, half, n = mean_interval(values)
    s = np.std(values, ddof=1)
    assert n == 4 and mean == pytest.approx(np.mean(values))
    assert half == pytest.approx(quantile_by_integration(0.975, 3) * s / math.sqrt(4), rel=1e-8)
    assert mean_interval([0.4]) == (0.4, None, 1)
    with pytest.raises(ValueError):
        mean_interval([])
    assert interval_text([]) == interval_text([None, None]) == "—"
    assert interval_text([0.1234]) == "12.34"
    assert interval_text([0.1234, None], expected=2) == "12.34 (n=1)"
    assert interval_text([0.1, 0.2, None]).endswith("(n=2)")


# --- a synthetic grid ---------------------------------------------------------------------------------------------

def values_for(role: str, bits: int, seed: int) -> dict[tuple[str, bool], float]:
    """The planted MAP (fraction) of each (row, targeted) of one model: distinct per role, bits and seed."""
    rng = np.random.default_rng([("undefended", "saat", "atrdh").index(role), bits, seed])
    out = {("clean", False): float(rng.uniform(0.6, 0.85))}
    out.update({(m, False): float(rng.uniform(0.1, 0.5)) for m in UNTARGETED})
    out.update({(m, True): float(rng.uniform(0.5, 0.9)) for m in TARGETED})
    return out


def grid_run(root: Path, name: str, bits: int, seed: int, values: dict, *, defense: str | None = None,
             origin: Path | None = None, dataset: str = DATASET) -> Path:
    """A finished run directory (model.pt with metadata, metrics.json, config.yaml or defense.yaml) and its attack
    results. A defended run records its bits but not its training seed: that must come from its origin."""
    run = root / name
    run.mkdir(parents=True)
    meta = {"architecture": {"backbone": BACKBONE, "bits": bits}, "method": METHOD, "dataset": dataset,
            "origin": None, "defense": None}
    metrics = {"mAP": values[("clean", False)], "topk": 100, "counts": {"queries": 10, "database": 30},
               "dataset": dataset, "method": METHOD, "backbone": BACKBONE, "bits": bits, "defense": None}
    if defense:
        meta["origin"] = {"run": str(origin), "checkpoint": file_hash(origin / "model.pt")}
        meta["defense"] = metrics["defense"] = {"method": defense, "mode": "default", "eps": 8 / 255}
        (run / "defense.yaml").write_text(yaml.safe_dump({
            "source_run": str(origin), "source_checkpoint": meta["origin"]["checkpoint"],
            "config": {"method": defense, "seed": 7}, "settings": {"eps": 8 / 255}}))
    else:
        meta["training"] = {"dataset": dataset, "seed": seed, "bits": bits}
        (run / "config.yaml").write_text(yaml.safe_dump({"dataset": dataset, "method": METHOD, "bits": bits,
                                                         "seed": seed}))
    torch.manual_seed(bits * 100 + seed)
    save_model(run / "model.pt", torch.nn.Linear(2, 2), meta)
    write_json(run / "metrics.json", metrics)
    for m in UNTARGETED:
        add_attack(run, attack_metrics(m, values[(m, False)], curves=False))
    if not defense:
        for m in TARGETED:
            add_attack(run, attack_metrics(m, values[(m, True)], targeted=True, curves=False))
    return run


# The planted results missing: one seed's SDHA result on the undefended 32-bit models, one seed's SAAT-attack
# result on the SAAT-trained 16-bit models.
MISSING = {("undefended", 32, 2, "sdha"), ("saat", 16, 1, "mainstay")}


@pytest.fixture(scope="module")
def grid_report(tmp_path_factory):
    root = tmp_path_factory.mktemp("grid")
    planted: dict[tuple[str, int, int], dict] = {}
    dirs = []
    i = 0
    for bits in BITS:
        for seed in SEEDS:
            i += 1
            # Folder names say nothing about bits, seeds or defenses: the report must read what the runs recorded.
            vals = planted["undefended", bits, seed] = values_for("undefended", bits, seed)
            base = grid_run(root, f"m{i}", bits, seed, vals)
            dirs.append(base)
            for defense in ("saat", "atrdh"):
                vals = planted[defense, bits, seed] = values_for(defense, bits, seed)
                dirs.append(grid_run(root, f"m{i}-{defense[:2]}", bits, seed, vals, defense=defense, origin=base))
    for role, bits, seed, method in MISSING:
        run = dirs[[(b, s) for b in BITS for s in SEEDS].index((bits, seed)) * 3 + (
            0 if role == "undefended" else 1 if role == "saat" else 2)]
        for d in (run / "attacks").iterdir():
            if d.name.startswith(f"{method}-u-"):
                for f in d.iterdir():
                    f.unlink()
                d.rmdir()
                planted[role, bits, seed] = {**planted[role, bits, seed], (method, False): None}
    paths = build_report(dirs, root / "report", examples=False)
    return paths["markdown"].read_text(), paths["html"].read_text(), planted


def section_tables(md: str) -> dict[str, tuple[list[str], dict[str, list[str]]]]:
    """{caption: (header, {row label: cells})} of the grid section of report.md."""
    section = md.split(f"## {SECTION}\n")[1].split("\n## ")[0]
    tables: dict[str, tuple[list[str], dict[str, list[str]]]] = {}
    caption = None
    for line in section.splitlines():
        if line.startswith("**") and line.endswith("**"):
            caption = line.strip("*")
        elif line.startswith("| ") and caption is not None:
            cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
            if caption not in tables:
                tables[caption] = (cells, {})
            else:
                tables[caption][1][cells[0]] = cells[1:]
    return tables


def table(tables: dict, part: str) -> tuple[list[str], dict[str, list[str]]]:
    (found,) = [v for k, v in tables.items() if part in k]
    return found


def expected_cell(values: list[float | None]) -> str:
    """mean ± t(0.975, n-1) s / sqrt(n) in percent, computed here with numpy and the integrated t density."""
    xs = np.array([v for v in values if v is not None]) * 100
    n = len(xs)
    if n == 1:
        return f"{xs[0]:.2f}"
    half = quantile_by_integration(0.975, n - 1) * xs.std(ddof=1) / math.sqrt(n)
    return f"{xs.mean():.2f} ± {half:.2f} (n={n})"


def test_grid_section_has_the_papers_layout(grid_report):
    md, html, _ = grid_report
    assert f"## {SECTION}" in md and SECTION in html
    tables = section_tables(md)
    header, rows = table(tables, "Table I, untargeted")
    assert header == ["row", "16 bits: ours", "16 bits: paper", "32 bits: ours", "32 bits: paper"]
    assert list(rows) == ["clean MAP", "HAG", "SDHA", "SAAT attack"]
    assert list(table(tables, "Table I, targeted")[1]) == ["P2P", "DHTA", "THA", "ProS-GAN", "SAAT attack (t)"]
    assert list(table(tables, "Table II")[1]) == [f"{d}: {r}" for d in ("ATRDH", "SAAT")
                                                 for r in ("clean MAP", "HAG", "SDHA", "SAAT attack")]
    for caption in tables:
        assert all(s in caption for s in (DATASET, BACKBONE, METHOD, "ε = 8/255",
                                          "mean ± half-width of the 95 % t-interval over n seeds")), caption
    assert ("Models: undefended: 16 bits (seeds 0, 1, 2), 32 bits (seeds 0, 1, 2); ATRDH-trained: 16 bits (seeds 0, "
            "1, 2), 32 bits (seeds 0, 1, 2); SAAT-trained: 16 bits (seeds 0, 1, 2), 32 bits (seeds 0, 1, 2).") in md


@pytest.mark.parametrize(("part", "label", "role", "key"), [
    ("Table I, untargeted", "clean MAP", "undefended", ("clean", False)),
    ("Table I, untargeted", "HAG", "undefended", ("hag", False)),
    ("Table I, untargeted", "SDHA", "undefended", ("sdha", False)),
    ("Table I, targeted", "ProS-GAN", "undefended", ("prosgan", True)),
    ("Table I, targeted", "SAAT attack (t)", "undefended", ("mainstay", True)),
    ("Table II", "SAAT: SDHA", "saat", ("sdha", False)),
    ("Table II", "SAAT: SAAT attack", "saat", ("mainstay", False)),
    ("Table II", "ATRDH: clean MAP", "atrdh", ("clean", False)),
    ("Table II", "ATRDH: HAG", "atrdh", ("hag", False)),
])
def test_grid_cells_are_the_seed_intervals_beside_the_paper(grid_report, part, label, role, key):
    md, _, planted = grid_report
    _, rows = table(section_tables(md), part)
    paper_table = TABLE2[role] if role != "undefended" else TABLE1_TARGETED if key[1] else TABLE1_UNTARGETED
    for i, bits in enumerate(BITS):
        ours, theirs = rows[label][2 * i], rows[label][2 * i + 1]
        assert ours == expected_cell([planted[role, bits, seed][key] for seed in SEEDS]), (label, bits)
        assert theirs == f"{paper_table[key[0]][DATASET][i]:.2f}"
        missing = any((role, bits, s, key[0]) in MISSING for s in SEEDS) and not key[1]
        assert ours.endswith("(n=2)" if missing else "(n=3)")


def test_grid_results_are_marked_as_used(grid_report):
    md, _, _ = grid_report
    section = md.split("## All attack results")[1].split("\n## ")[0]
    rows = [line for line in section.splitlines() if line.startswith("| m")]
    assert rows and all(line.rstrip(" |").endswith("yes") for line in rows)


def test_no_paper_columns_for_another_dataset(tmp_path):
    dirs = [grid_run(tmp_path, f"r{s}", 16, s, values_for("undefended", 16, s), dataset="toy") for s in (3, 5)]
    md = build_report(dirs, tmp_path / "report", examples=False)["markdown"].read_text()
    header, rows = table(section_tables(md), "Table I, untargeted")
    assert header == ["row", "16 bits: ours"]
    assert rows["HAG"] == [expected_cell([values_for("undefended", 16, s)[("hag", False)] for s in (3, 5)])]
    assert "not a paper dataset" in md and "no ATRDH or SAAT-trained model" in md


def without_timestamp(md: str) -> str:
    return re.sub(r"^Generated by saat .*$", "", md, flags=re.MULTILINE)


def test_single_model_report_is_unchanged(tmp_path, monkeypatch):
    base, saat, atrdh = family(tmp_path, paper_way=True)
    with_grid = build_report([base, saat, atrdh], tmp_path / "a", examples=False)["markdown"].read_text()
    monkeypatch.setattr(report_build, "grid_section", lambda *args: [])
    without = build_report([base, saat, atrdh], tmp_path / "b", examples=False)["markdown"].read_text()
    assert SECTION not in with_grid
    assert without_timestamp(with_grid) == without_timestamp(without)


def test_one_model_at_two_seeds_of_one_bit_length_is_a_grid_but_one_seed_is_not(tmp_path):
    one = [grid_run(tmp_path, "only", 32, 0, values_for("undefended", 32, 0))]
    md = build_report(one, tmp_path / "one", examples=False)["markdown"].read_text()
    assert SECTION not in md
    two = one + [grid_run(tmp_path, "other", 32, 1, values_for("undefended", 32, 1))]
    md = build_report(two, tmp_path / "two", examples=False)["markdown"].read_text()
    header, rows = table(section_tables(md), "Table I, untargeted")
    assert header == ["row", "32 bits: ours", "32 bits: paper"] and rows["SAAT attack"][0].endswith("(n=2)")


def test_a_second_run_of_one_model_is_left_out_and_named(tmp_path):
    dirs = [grid_run(tmp_path, name, 16, seed, values_for("undefended", 16, seed))
            for name, seed in (("a", 0), ("b", 1), ("c", 1))]
    md = build_report(dirs, tmp_path / "report", examples=False)["markdown"].read_text()
    _, rows = table(section_tables(md), "Table I, untargeted")
    assert rows["HAG"][0] == expected_cell([values_for("undefended", 16, s)[("hag", False)] for s in (0, 1)])
    assert ("Left out of these tables (one run per model, bits and seed): c (same undefended model, bits and seed "
            "as b)") in md
