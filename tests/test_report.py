"""``saat report`` on small hand-written run directories: tables, figures, escaping, claims check, partial inputs."""

from __future__ import annotations

import argparse
import base64
import json
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import yaml

from saat.checkpoint import file_hash, save_model
from saat.report import build_report, collect_runs
from saat.report import examples as report_examples
from saat.report.claims import FAILS, HOLDS, NOT_MEASURED
from saat.report.paper import TABLE1_UNTARGETED, paper_dataset, paper_value
from saat.report.select import main_eps, pick, pick_matched
from saat.runs import AttackRecord

PNG = b"\x89PNG\r\n\x1a\n"
XSS = "<script>alert(1)</script>"
CKPT = "feedbeef00000001"
K, M, Q, C, SIDE = 16, 30, 12, 3, 8


# --- building synthetic runs --------------------------------------------------------------------------------------

def write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


def run_metrics(clean: float, **extra) -> dict:
    return {"mAP": clean, "topk": 100, "counts": {"queries": Q, "database": M}, "dataset": "toy", "method": "dph",
            "backbone": "tiny", "bits": K, "checkpoint": CKPT, "defense": None,
            "pr_curve": {"recall": [0.1, 0.5, 1.0], "precision": [clean, clean - 0.1, 0.2]},
            "precision_at_n": {"n": [5, 10], "precision": [clean, clean - 0.05]}, **extra}


def attack_metrics(method: str, adv: float, *, targeted: bool = False, eps: float = 8, queries: int = 10,
                   steps: int = 20, benign: float = 0.7, curves: bool = True, **settings) -> dict:
    """An attack result's metrics.json, built through the record the pipeline writes."""
    name = f"{method}-{'t' if targeted else 'u'}-eps{eps:g}-s{steps}-q{queries}"
    record = AttackRecord(
        attack=method, targeted=targeted, name=name, dataset="toy", checkpoint=CKPT, topk=100, queries=queries,
        benign_map=benign, adversarial=adv, benign_tmap=0.0456 if targeted else None, random_ranking_map=0.1,
        perceptibility={"linf_mean": eps / 255, "linf_max": eps / 255, "linf_mean_255": eps, "l2_mean": 1.234,
                        "mse_mean": 0.00321, "psnr_mean": 33.3, "images": queries},
        seconds=2.5, images_per_s=queries / 2.5, device="cpu",
        settings={"method": method, "targeted": targeted, "num_queries": queries, "seed": 0, "eps": eps / 255,
                  "step": 1 / 255, "steps": steps, **settings})
    if curves:
        record.pr_curve = {"recall": [0.1, 0.5, 1.0], "precision": [adv + 0.05, adv, max(adv - 0.05, 0)]}
        record.precision_at_n = {"n": [5, 10], "precision": [adv, adv]}
    return record.to_json()


def add_attack(run: Path, metrics: dict) -> Path:
    d = run / "attacks" / metrics["name"]
    write_json(d / "metrics.json", metrics)
    return d


def make_run(root: Path, name: str, clean: float, *, defense: str | None = None, origin: Path | None = None,
             config_extra: dict | None = None) -> Path:
    run = root / name
    run.mkdir(parents=True)
    meta = {"architecture": {"backbone": "tiny", "bits": K}, "method": "dph", "dataset": "toy", "input_size": SIDE,
            "training": {"dataset": "toy", "seed": 0}, "origin": None, "defense": None}
    extra = {}
    if defense:
        meta["origin"] = {"run": str(origin), "checkpoint": file_hash(origin / "model.pt")}
        meta["defense"] = {"method": defense, "mode": "default", "eps": 8 / 255}
        (run / "defense.yaml").write_text(yaml.safe_dump({
            "source_run": str(origin), "source_checkpoint": meta["origin"]["checkpoint"],
            "config": {"method": defense}, "settings": {"eps": 8 / 255, "steps": 7, **(config_extra or {})}}))
        extra = {"defense": meta["defense"], "seconds_per_epoch": 12.0, "epoch_time_ratio_to_plain_training": 6.0}
    else:
        (run / "config.yaml").write_text(yaml.safe_dump({"dataset": "toy", "method": "dph", "bits": K, "epochs": 2,
                                                         **(config_extra or {})}))
        (run / "train_log.jsonl").write_text(
            "".join(json.dumps({"kind": "epoch", "epoch": e, "seconds": 2.0}) + "\n" for e in (1, 2)))
    save_model(run / "model.pt", torch.nn.Linear(2, 2), meta)
    write_json(run / "metrics.json", run_metrics(clean, **extra))
    return run


def add_examples(run: Path, attack_dir: Path) -> None:
    """examples.npz, adversarial codes and the cached benign codes the retrieval figure reads."""
    rng = np.random.default_rng(0)
    db = np.where(rng.random((M, K)) < 0.5, -1, 1).astype(np.int8)
    queries = np.where(rng.random((Q, K)) < 0.5, -1, 1).astype(np.int8)
    (run / "cache").mkdir(exist_ok=True)
    np.save(run / "cache" / f"codes-database-{CKPT}.npy", db)
    np.save(run / "cache" / f"codes-query-{CKPT}.npy", queries)
    picked = np.arange(0, 10)
    np.save(attack_dir / "query_indices.npy", picked)
    np.save(attack_dir / "adv_codes.npy", -queries[picked])
    grey = rng.integers(0, 256, (2, 1, SIDE, SIDE), dtype=np.uint8).repeat(3, axis=1)
    np.savez_compressed(attack_dir / "examples.npz", query_indices=picked[:2], benign=grey, adversarial=255 - grey)


class FakeSplit:
    def __init__(self, labels: np.ndarray):
        self.labels = torch.as_tensor(labels, dtype=torch.float32)

    def __getitems__(self, indices):
        idx = torch.as_tensor(indices)
        x = (idx.view(-1, 1, 1, 1) * 7 % 256).to(torch.uint8).expand(-1, 3, SIDE, SIDE)
        return x, self.labels[idx], idx


def toy_dataset() -> SimpleNamespace:
    """What the retrieval figure reads of a dataset: labels of the query split, labels and images of the database."""
    labels = np.eye(C, dtype=np.float32)
    return SimpleNamespace(query=FakeSplit(labels[np.arange(Q) % C]), database=FakeSplit(labels[np.arange(M) % C]),
                           class_names=["cat", "dog", "owl"])


@pytest.fixture
def fake_dataset(monkeypatch):
    ds = toy_dataset()
    monkeypatch.setattr(report_examples, "open_run_dataset", lambda run_dir: ds)
    return ds


def family(root: Path, *, paper_way: bool, settings_extra: dict | None = None) -> tuple[Path, Path, Path]:
    """An undefended run, a SAAT- and an ATRDH-trained run. ``paper_way``: numbers planted so that every claim holds;
    otherwise so that every claim fails."""
    base = make_run(root, "base", 0.7123, config_extra={"note": "plain"})
    if paper_way:
        untargeted = {"hag": 0.2345, "sdha": 0.2222, "mainstay": 0.1111}
        targeted = {"p2p": 0.40, "dhta": 0.41, "tha": 0.42, "mainstay": 0.5555}
        saat_map = {"hag": 0.51, "sdha": 0.52, "mainstay": 0.50}
    else:
        untargeted = {"hag": 0.0999, "sdha": 0.2222, "mainstay": 0.3333}
        targeted = {"p2p": 0.60, "dhta": 0.41, "tha": 0.42, "mainstay": 0.4444}
        saat_map = {"hag": 0.15, "sdha": 0.16, "mainstay": 0.14}
    atrdh_map = {"hag": 0.31, "sdha": 0.32, "mainstay": 0.3}
    for method, v in untargeted.items():
        add_attack(base, attack_metrics(method, v, **(settings_extra or {})))
    for method, v in targeted.items():
        add_attack(base, attack_metrics(method, v, targeted=True))
    # Other budgets of the SAAT attack (for the MAP-vs-eps figure); 8/255 stays the most common budget.
    for eps, v in ((4, 0.45), (16, 0.05)):
        add_attack(base, attack_metrics("mainstay", v, eps=eps))
    saat = make_run(root, "base-saat", 0.6012, defense="saat", origin=base)
    atrdh = make_run(root, "base-atrdh", 0.5901, defense="atrdh", origin=base)
    for run, values in ((saat, saat_map), (atrdh, atrdh_map)):
        for method, v in values.items():
            add_attack(run, attack_metrics(method, v, benign=0.6))
    add_attack(saat, attack_metrics("mainstay", 0.55, eps=4, benign=0.6))
    return base, saat, atrdh


CLAIM_KEYS = (("lowers MAP", "attack"), ("t-MAP", "targeted"), ("ATRDH", "vs ATRDH"), ("undefended", "vs undefended"))


def claim_rows(md: str) -> dict[str, list[str]]:
    """Verdicts per claim ("attack", "targeted", "vs ATRDH", "vs undefended"), from the Markdown claims table."""
    rows: dict[str, list[str]] = {}
    section = md.split("## Claims check")[1].split("\n## ")[0]
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
        if len(cells) == 4 and cells[0] != "claim (paper)":
            key = next(k for text, k in CLAIM_KEYS if text in cells[0])
            rows.setdefault(key, []).append(cells[2])
    return rows


# --- the report ---------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def full_report(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    base, saat, atrdh = family(root, paper_way=True)
    mainstay_dir = base / "attacks" / attack_metrics("mainstay", 0.1)["name"]
    add_examples(base, mainstay_dir)
    ds = toy_dataset()
    mp = pytest.MonkeyPatch()
    mp.setattr(report_examples, "open_run_dataset", lambda run_dir: ds)
    try:
        paths = build_report([base, saat, atrdh], root / "report")
    finally:
        mp.undo()
    return paths, paths["markdown"].read_text(), paths["html"].read_text()


def test_report_has_every_table_with_our_numbers(full_report):
    _, md, html = full_report
    for text in (md, html):
        for header in ("Table I: attacks on undefended models", "Table II: adversarially trained models",
                       "Claims check", "Perceptibility and attack time", "Training time", "All attack results",
                       "Configuration", "The paper&#x27;s numbers" if text is html else "The paper's numbers"):
            assert header in text, header
        assert "71.23" in text  # clean mAP of the undefended run, in percent
        assert "23.45 (ε 8/255, 10 q, 20 it)" in text  # HAG with its budget, queries and iterations
        assert "55.55" in text and "4.56" in text  # targeted SAAT attack t-MAP and the benign t-MAP
        assert "60.12" in text and "59.01" in text  # clean MAP of the SAAT- and ATRDH-trained models
        assert "SAAT (default mode)" in text and "ATRDH (default mode)" in text
        assert "33.3" in text and "1.234" in text  # PSNR, L2
        assert "6.0x" in text  # the defense's epoch-time ratio to plain training
        assert "epochs=2" in text  # config.yaml, compactly
    # The ProS-GAN column exists but has no result.
    targeted_row = next(line for line in md.splitlines() if line.startswith("| base | 16 | 4.56"))
    assert "| 40.00 (ε 8/255, 10 q, 20 it) |" in targeted_row and "| — |" in targeted_row


def test_paper_numbers_are_labelled_as_the_papers(full_report):
    _, md, html = full_report
    assert "| paper (Table I): FLICKR-25K, 32 bits | 32 | 82.28 | 21.68 | 19.37 | 14.53 |" in md
    assert "paper (Table II): SAAT, NUS-WIDE, 32 bits" in md
    assert "88.62 / 88.90 / 89.07 / 89.00" in md  # full Table I row of the targeted SAAT attack
    assert 'class="paper"' in html and "not measured here" in html


def test_every_figure_is_a_png_and_embedded(full_report):
    paths, md, html = full_report
    figures = paths["figures"]
    assert {"pr-base", "pn-base", "pr-base-saat", "eps-base", "examples-base"} <= set(figures)
    for name, path in figures.items():
        data = Path(path).read_bytes()
        assert data.startswith(PNG), name
        assert base64.b64encode(data).decode() in html, name
        assert f"({Path(path).name})" in md, name
    assert "<img" in html and 'src="data:image/png;base64,' in html
    assert not re.search(r'src="(?!data:)', html)  # self-contained


def test_claims_hold_for_planted_numbers(full_report):
    verdicts = claim_rows(full_report[1])
    assert verdicts == {"attack": [HOLDS], "targeted": [HOLDS], "vs ATRDH": [HOLDS], "vs undefended": [HOLDS]}
    assert "11.11 < HAG 23.45" in full_report[1].replace("&lt;", "<")


def test_claims_do_not_hold_for_opposite_numbers(tmp_path, fake_dataset):
    base, saat, atrdh = family(tmp_path, paper_way=False)
    md = build_report([base, saat, atrdh], tmp_path / "out")["markdown"].read_text()
    assert claim_rows(md) == {"attack": [FAILS], "targeted": [FAILS], "vs ATRDH": [FAILS], "vs undefended": [FAILS]}


def test_claims_say_not_measured_without_inputs(tmp_path):
    base = make_run(tmp_path, "base", 0.7)
    add_attack(base, attack_metrics("hag", 0.2))
    md = build_report([base], tmp_path / "out", examples=False)["markdown"].read_text()
    verdicts = claim_rows(md)
    assert verdicts == {"attack": [NOT_MEASURED], "targeted": [NOT_MEASURED], "vs ATRDH": [NOT_MEASURED],
                        "vs undefended": [NOT_MEASURED]}


def test_attacks_with_different_settings_are_not_compared_across_models(tmp_path):
    base, saat, atrdh = family(tmp_path, paper_way=True, settings_extra={"steps": 100})
    md = build_report([base, saat, atrdh], tmp_path / "out", examples=False)["markdown"].read_text()
    verdicts = claim_rows(md)
    assert verdicts["vs undefended"] == [NOT_MEASURED] and verdicts["vs ATRDH"] == [HOLDS]
    assert "not comparable" in md and "compare these columns with care" in md


def test_data_is_escaped_in_html_and_markdown(tmp_path, fake_dataset):
    base = make_run(tmp_path, "base", 0.7, config_extra={"comment": XSS})
    m = attack_metrics("mainstay", 0.1, comment=XSS)
    m["name"] = "evil" + XSS
    add_attack(base, m)
    paths = build_report([base], tmp_path / "out")
    html, md = paths["html"].read_text(), paths["markdown"].read_text()
    assert XSS not in html and "<script" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert XSS not in md


def test_markdown_output_never_turns_file_text_into_links_or_markup(tmp_path, fake_dataset):
    base = make_run(tmp_path, "base", 0.7)
    m = attack_metrics("mainstay", 0.1)
    m["name"] = "[click](javascript:alert(1)) ![img](x.png) **bold** `code`"
    add_attack(base, m)
    md = build_report([base], tmp_path / "out")["markdown"].read_text()
    assert "[click](javascript" not in md and "![img](" not in md and "**bold**" not in md
    assert r"\[click\](javascript:alert(1))" in md and r"\*\*bold\*\*" in md
    from saat.report.document import md_cell

    assert md_cell("a|b\nc <i>") == r"a\|b c &lt;i&gt;"


def test_partial_inputs_do_not_crash(tmp_path, fake_dataset):
    bare = make_run(tmp_path, "bare", 0.5)  # no attacks at all
    (bare / "train_log.jsonl").unlink()
    sparse = make_run(tmp_path, "sparse", 0.6)
    add_attack(sparse, attack_metrics("mainstay", 0.2, curves=False))  # no PR / P@N curves, no examples.npz
    (sparse / "attacks" / "broken").mkdir()
    (sparse / "attacks" / "broken" / "metrics.json").write_text("{not json")
    (sparse / "metrics.json").unlink()  # no clean metrics either
    lonely = make_run(tmp_path, "lonely-saat", 0.4, defense="saat", origin=bare)
    (lonely / "model.pt").unlink()
    paths = build_report([bare, sparse, lonely], tmp_path / "out", discover=False)
    md = paths["markdown"].read_text()
    assert "no attacks/ folder" in md
    assert "attacks/broken: metrics.json unreadable" in md
    assert "metrics.json missing" in md and "model.pt missing" in md
    assert "no stored precision-recall curve" in md or "no precision-recall curve" in md
    assert "no retrieval example" in md and "examples.npz missing" in md
    assert "MAP-vs-ε figure skipped" in md
    for path in paths["figures"].values():
        assert Path(path).read_bytes().startswith(PNG)


def test_retrieval_example_ranking_and_relevance():
    q = np.ones((1, 4), np.int8)
    db = np.array([[1, 1, -1, -1], [-1, -1, -1, -1], [1, 1, 1, 1], [1, 1, 1, -1]], np.int8)
    inputs = report_examples.ExampleInputs(np.array([0]), None, None, q, -q, db)
    db_labels = np.array([[1, 0], [0, 1], [1, 0], [1, 0]], np.float32)
    ranked, relevant = report_examples.rank_examples(inputs, np.array([[1, 0]], np.float32), db_labels, top=3)
    # Benign: exact match first, then distance 1, then the tie at distance 2 broken by index.
    assert ranked.tolist() == [[2, 3, 0], [1, 0, 3]]
    assert relevant.tolist() == [[True, True, True], [False, True, True]]


def test_not_a_run_directory_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        build_report([tmp_path / "missing"], tmp_path / "out")
    make_run(tmp_path / "runs", "a", 0.5)
    with pytest.raises(ValueError, match=r"not a saat run directory.*contains run directories \(a\)"):
        build_report([tmp_path / "runs"], tmp_path / "out")
    attack = add_attack(tmp_path / "runs" / "a", attack_metrics("hag", 0.2))
    with pytest.raises(ValueError, match="is an attack result"):
        build_report([attack], tmp_path / "out")


def test_defended_runs_beside_a_run_are_discovered(tmp_path):
    base = make_run(tmp_path, "base", 0.7)
    make_run(tmp_path, "base-saat", 0.6, defense="saat", origin=base)
    runs = collect_runs([base])
    assert [(r.name, r.label, r.discovered) for r in runs] == [("base", "undefended", False),
                                                             ("base-saat", "SAAT (default mode)", True)]
    assert [r.name for r in collect_runs([base], discover=False)] == ["base"]


def test_main_eps_and_result_choice(tmp_path):
    base = make_run(tmp_path, "base", 0.7)
    add_attack(base, attack_metrics("mainstay", 0.3, eps=16))
    for q in (10, 50):
        add_attack(base, attack_metrics("mainstay", 0.2 + q / 1000, eps=8, queries=q))
    add_attack(base, attack_metrics("hag", 0.4, eps=8))
    (run,) = collect_runs([base])
    assert main_eps([run]) == pytest.approx(8)
    assert pick(run, "mainstay", False, 8).queries == 50  # the most queries
    assert pick(run, "mainstay", False, 16).adversarial == pytest.approx(0.3)
    assert pick(run, "sdha", False, 8) is None
    other = make_run(tmp_path, "other", 0.7)
    add_attack(other, attack_metrics("mainstay", 0.6, eps=8, queries=10))
    runs = collect_runs([base, other], discover=False)
    assert [a.queries for a in pick_matched(runs, "mainstay", False, 8)] == [10, 10]  # the shared setting


def test_paper_numbers_lookup():
    assert paper_value(TABLE1_UNTARGETED, "mainstay", "NUS-WIDE", 48) == pytest.approx(11.85)
    assert paper_value(TABLE1_UNTARGETED, "mainstay", "NUS-WIDE", 24) is None
    assert paper_dataset("flickr25k") == "FLICKR-25K" and paper_dataset("fashion-mnist") is None


def test_cli_help_and_run(tmp_path, capsys):
    from saat.cli import report as report_cli

    parser = argparse.ArgumentParser(prog="saat")
    report_cli.register(parser.add_subparsers(dest="command"))
    with pytest.raises(SystemExit):
        parser.parse_args(["report", "--help"])
    text = capsys.readouterr().out
    assert "Table I" in text and "--out" in text and "claims" in text
    base = make_run(tmp_path, "base", 0.7)
    args = parser.parse_args(["report", str(base), "--out", str(tmp_path / "rep"), "--no-examples"])
    assert args.run(args) == 0
    out = capsys.readouterr().out
    assert str(tmp_path / "rep" / "report.html") in out and str(tmp_path / "rep" / "report.md") in out


def test_example_labels_wrap_to_a_thumbnail_width():
    from saat.report.examples import _label_text

    names = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
    text = _label_text(np.array([0, 0, 1, 0, 0, 1, 0, 1, 0, 0]), names)
    assert text.replace("\n", " ") == "Pullover, Sandal, Sneaker"
    assert max(len(line) for line in text.splitlines()) <= 20
    assert _label_text(np.zeros(10), names) == "no label"


def test_robustness_cards_and_transfer_matrices_are_reported(tmp_path, fake_dataset):
    base = make_run(tmp_path, "base", 0.8)
    card = {"version": 1, "preset": "quick", "metric": "mAP", "eps": 8 / 255, "queries": 12, "clean_map": 0.8,
            "robust_map": 0.05, "best_single": {"attack": "mainstay-apgd", "map": 0.07},
            "per_attack": {"mainstay-apgd": {"map": 0.07, "wins": 9}, "hag" + XSS: {"map": 0.2, "wins": 3}},
            "flags": {"monotone": {"raised": False, "detail": "fine"},
                      "collapse": {"raised": True, "detail": "masked gradients " + XSS}},
            "flags_raised": ["collapse"],
            "eps_curve": [{"eps_255": 0, "map": 0.8}, {"eps_255": 4, "map": 0.3}, {"eps_255": 8, "map": 0.07}]}
    write_json(base / "robustness" / "quick" / "card.json", card)
    write_json(base / "robustness" / "broken" / "card.json", {"robust_map": 0.1})  # no per_attack, no flags
    write_json(base / "transfer" / "t" / "metrics.json",
               {"models": ["base", "other"], "clean": [0.8, 0.7], "matrix": [[0.05, 0.4], [0.5, 0.1]],
                "eps": 8 / 255, "queries": 12, "dataset": "toy"})
    paths = build_report([base], tmp_path / "out")
    md, html = paths["markdown"].read_text(), paths["html"].read_text()
    section = md[md.index("## Robustness card"):md.index("## Figures")]
    assert "| base | quick | mAP | 8/255 | 12 | 0.8 | 0.05 |" in section
    assert "(9 wins)" in section and "collapse RAISED — masked gradients" in section and "monotone — ok" in section
    assert "card.json left out" in md  # the broken card is named, not shown
    assert {"robustness-eps", "transfer-0"} <= set(paths["figures"])
    assert Path(paths["figures"]["transfer-0"]).read_bytes().startswith(PNG)
    assert XSS not in md and XSS not in html


def test_no_robustness_results_is_said(tmp_path, fake_dataset):
    md = build_report([make_run(tmp_path, "base", 0.8)], tmp_path / "out")["markdown"].read_text()
    assert "No robustness card (saat robustness)" in md


def test_report_folder_of_other_runs_or_other_files_is_never_overwritten(tmp_path, fake_dataset):
    a, b = make_run(tmp_path, "a", 0.7), make_run(tmp_path, "b", 0.6)
    out = tmp_path / "out"
    first = build_report([a], out, examples=False)["markdown"].read_text()
    build_report([a], out, examples=False)  # the same runs: rebuilt in place
    with pytest.raises(FileExistsError, match="holds a report of other runs"):
        build_report([b], out, examples=False)
    assert (out / "report.md").read_text() == first
    build_report([b], out, examples=False, overwrite=True)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("years of work")
    with pytest.raises(FileExistsError, match="files that are not this report's"):
        build_report([a], mine, examples=False)
    assert (mine / "thesis.tex").read_text() == "years of work" and not (mine / "report.md").exists()
