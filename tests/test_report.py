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
             config_extra: dict | None = None, seed: int = 0) -> Path:
    run = root / name
    run.mkdir(parents=True)
    meta = {"architecture": {"backbone": "tiny", "bits": K}, "method": "dph", "dataset": "toy", "input_size": SIDE,
            "training": {"dataset": "toy", "seed": seed}, "origin": None, "defense": None}
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
    build_report([a], out, examples=False)
    # the same runs: rebuilt in place (what the refused build below must leave; the report's time stamp is to the
    # minute, so it is compared with this rebuild, not the first build)
    first = build_report([a], out, examples=False)["markdown"].read_text()
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


# --- decided claims: paired intervals over the same queries -----------------------------------------------------

NQ = 40  # queries of the results that keep their per-query APs


def add_attack_with_queries(run: Path, method: str, adv: np.ndarray, *, benign: float = 0.7,
                            targeted: bool = False) -> Path:
    """An attack result that kept its per-query APs (per_query_ap.npy, query_indices.npy) and its intervals."""
    from saat.retrieval import mean_ci

    rows = np.stack([np.full(len(adv), benign), np.asarray(adv, dtype=np.float64)])
    metrics = attack_metrics(method, float(rows[1].mean()), targeted=targeted, queries=len(adv), benign=benign)
    metrics[f"adversarial_{'t-MAP' if targeted else 'mAP'}_ci"] = list(mean_ci(rows[1]))
    d = add_attack(run, metrics)
    np.save(d / "per_query_ap.npy", rows)
    np.save(d / "query_indices.npy", np.arange(len(adv)))
    return d


def queries_around(mean: float, spread: float, seed: int) -> np.ndarray:
    """Per-query APs with the given mean and spread (clipped to [0, 1] before centring)."""
    v = np.clip(mean + spread * np.random.default_rng(seed).standard_normal(NQ), 0, 1)
    return np.clip(v - v.mean() + mean, 0, 1)


def defended_family(root: Path, saat_margin: dict, *, spread: float = 0.05, suffix: str = "", seed: int = 0,
                    noise_seed: int = 0, over_base: dict | None = None) -> tuple[Path, Path, Path]:
    """An undefended run and SAAT- and ATRDH-trained runs from it whose results keep per-query APs: the SAAT model's
    AP under each attack is the ATRDH model's plus ``saat_margin[attack]`` on every query, plus noise of
    ``spread``; the undefended model is far below both, or with ``over_base`` the SAAT model's AP minus
    ``over_base[attack] = (margin, spread)`` on every query, plus centred noise of that spread."""
    base = make_run(root, f"base{suffix}", 0.71, seed=seed)
    saat = make_run(root, f"base{suffix}-saat", 0.6, defense="saat", origin=base)
    atrdh = make_run(root, f"base{suffix}-atrdh", 0.6, defense="atrdh", origin=base)
    for i, method in enumerate(("hag", "sdha", "mainstay")):
        theirs = queries_around(0.5, 0.15, 100 * noise_seed + i)
        noise = spread * np.random.default_rng(1000 + 100 * noise_seed + i).standard_normal(NQ)
        add_attack_with_queries(atrdh, method, theirs)
        mine = theirs + saat_margin[method] + noise
        add_attack_with_queries(saat, method, mine)
        if over_base is None:
            add_attack_with_queries(base, method, queries_around(0.05, 0.03, 10 * noise_seed + i))
        else:
            margin, base_spread = over_base[method]
            base_noise = base_spread * np.random.default_rng(2000 + i).standard_normal(NQ)
            add_attack_with_queries(base, method, mine - margin + base_noise - base_noise.mean())
    return base, saat, atrdh


def evidence(md: str, key: str) -> list[str]:
    """The 'our numbers' cells of one claim ("vs ATRDH", ...), as they read."""
    section = md.split("## Claims check")[1].split("\n## ")[0]
    out = []
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
        if len(cells) == 4 and cells[0] != "claim (paper)" and next(k for t, k in CLAIM_KEYS if t in cells[0]) == key:
            # Markdown escapes brackets and angle brackets: "\[" is "[", "&lt;" is "<"
            out.append(re.sub(r"\\([\[\]])", r"\1", cells[3]).replace("&lt;", "<"))
    return out


def test_a_clear_win_holds_a_clear_loss_does_not_and_an_overlap_is_undecided(tmp_path):
    from saat.report.claims import UNDECIDED

    cases = {"win": ({"hag": 0.1, "sdha": 0.12, "mainstay": 0.09}, HOLDS),
             "loss": ({"hag": -0.1, "sdha": 0.12, "mainstay": 0.09}, FAILS),
             "overlap": ({"hag": 0.005, "sdha": 0.12, "mainstay": 0.09}, UNDECIDED)}
    for name, (margins, expected) in cases.items():
        root = tmp_path / name
        runs = defended_family(root, margins, spread=0.05 if name != "overlap" else 0.2)
        md = build_report(list(runs), root / "out", examples=False)["markdown"].read_text()
        assert claim_rows(md)["vs ATRDH"] == [expected], name
        text = evidence(md, "vs ATRDH")[0]
        hag = text.split(";")[0]
        assert re.search(r"HAG: \d+\.\d\d vs base-atrdh \d+\.\d\d \([+-]\d+\.\d\d \[[+-]\d+\.\d, [+-]\d+\.\d\] "
                         r"points\)", hag), hag
        lo, hi = (float(v) for v in re.search(r"\[([+-][\d.]+), ([+-][\d.]+)\]", hag).groups())
        assert {"win": lo > 0, "loss": hi <= 0, "overlap": lo <= 0 < hi}[name], (name, hag)
        assert "older result" not in text
    # the undefended model is ~35 points below: far more, decided
    assert claim_rows(md)["vs undefended"] == [HOLDS]


def test_far_more_needs_the_whole_interval_at_or_above_ten_points(tmp_path):
    from saat.report.claims import UNDECIDED

    margins = {"hag": 0.1, "sdha": 0.1, "mainstay": 0.1}
    far = {"sdha": (0.3, 0.02), "mainstay": (0.3, 0.02)}
    cases = {"noisy 11 points": ({"hag": (0.11, 0.15), **far}, UNDECIDED),  # the point clears 10, the interval not
             "tight 5 points": ({"hag": (0.05, 0.01), **far}, FAILS),  # more, but surely less than 10 points more
             "tight 15 points": ({"hag": (0.15, 0.01), **far}, HOLDS)}
    for name, (over_base, expected) in cases.items():
        root = tmp_path / name.replace(" ", "-")
        runs = defended_family(root, margins, over_base=over_base)
        md = build_report(list(runs), root / "out", examples=False)["markdown"].read_text()
        assert claim_rows(md)["vs undefended"] == [expected], (name, evidence(md, "vs undefended"))
        assert ("below the 10-point reading of 'far'" in md) == (name == "tight 5 points"), name


def test_older_results_fall_back_to_the_point_comparison_and_say_so(full_report):
    md = full_report[1]
    assert claim_rows(md)["vs ATRDH"] == [HOLDS]
    assert "no interval (older result)" in evidence(md, "vs ATRDH")[0]
    assert "no interval (older result)" in evidence(md, "attack")[0]


def test_the_attack_claims_pair_two_attacks_on_the_same_queries(tmp_path):
    base = make_run(tmp_path, "base", 0.7)
    hag = queries_around(0.3, 0.2, 1)
    add_attack_with_queries(base, "hag", hag)
    add_attack_with_queries(base, "sdha", hag + 0.004 * np.random.default_rng(2).standard_normal(NQ))
    add_attack_with_queries(base, "mainstay", np.clip(hag - 0.1, 0, 1))  # 10 points lower on (almost) every query
    md = build_report([base], tmp_path / "out", examples=False)["markdown"].read_text()
    from saat.report.claims import UNDECIDED

    text = evidence(md, "attack")[0]
    # HAG: the SAAT attack is lower on every query; SDHA: it is lower by 10 points too (SDHA ~ HAG)
    assert claim_rows(md)["attack"] == [HOLDS], text
    assert re.search(r"< HAG \d+\.\d\d: margin \+\d+\.\d\d \[\+\d+\.\d, \+\d+\.\d\] points, holds", text), text
    # the same numbers on other queries of the SAAT attack: no pairing, no interval
    np.save(next((base / "attacks").glob("mainstay-*")) / "query_indices.npy", np.arange(NQ) + 1)
    md = build_report([base], tmp_path / "out2", examples=False)["markdown"].read_text()
    assert "no interval (not the same queries)" in evidence(md, "attack")[0]
    assert UNDECIDED not in claim_rows(md)["attack"]


def card_with_queries(worst: np.ndarray, preset: str = "quick", sha: str = "q40") -> dict:
    from saat.retrieval import mean_ci

    return {"version": 1, "preset": preset, "metric": "mAP", "targeted": False, "eps": 8 / 255, "queries": len(worst),
            "seed": 0, "topk": 100, "profile": {"name": preset, "version": 1, "fingerprint": "f"},
            "dataset": {"name": "toy", "query_indices_sha256": sha}, "clean_map": 0.7,
            "robust_map": float(np.mean(worst)), "robust_map_ci": list(mean_ci(worst)),
            "best_single": {"attack": "mainstay-apgd", "map": float(np.mean(worst)) + 0.01},
            "per_attack": {"mainstay-apgd": {"map": float(np.mean(worst)) + 0.01, "wins": len(worst)}},
            "flags": {}, "flags_raised": [], "per_query": {"clean": [0.7] * len(worst), "worst": list(worst)}}


def test_the_defense_claims_are_also_judged_under_the_worst_case(tmp_path):
    base, saat, atrdh = defended_family(tmp_path, {"hag": 0.1, "sdha": 0.12, "mainstay": 0.09})
    theirs = queries_around(0.2, 0.1, 5)
    write_json(saat / "robustness" / "quick" / "card.json", card_with_queries(np.clip(theirs - 0.08, 0, 1)))
    write_json(atrdh / "robustness" / "quick" / "card.json", card_with_queries(theirs))
    md = build_report([base, saat, atrdh], tmp_path / "out", examples=False)["markdown"].read_text()
    text = evidence(md, "vs ATRDH")[0]
    # every single attack says SAAT keeps more; the worst case says it keeps less: the claim does not hold
    assert claim_rows(md)["vs ATRDH"] == [FAILS], text
    assert re.search(r"worst case \(quick robustness card\): \d+\.\d\d vs base-atrdh \d+\.\d\d \(-\d+\.\d\d "
                     r"\[-\d+\.\d, -\d+\.\d\] points\) ✗", text), text
    assert text.count("✓") == 3
    # a card of another preset or on other queries is not compared
    write_json(atrdh / "robustness" / "quick" / "card.json", card_with_queries(theirs, sha="other"))
    md = build_report([base, saat, atrdh], tmp_path / "out2", examples=False)["markdown"].read_text()
    assert claim_rows(md)["vs ATRDH"] == [HOLDS]
    assert "no robustness card of one preset on the same queries" in evidence(md, "vs ATRDH")[0]
    # nor a card whose member settings were changed (saat robustness --option) against one of the profile's
    changed = {**card_with_queries(theirs), "settings": {"options": {"square": {"steps": 100}}}}
    write_json(atrdh / "robustness" / "quick" / "card.json", changed)
    md = build_report([base, saat, atrdh], tmp_path / "out3", examples=False)["markdown"].read_text()
    assert "no robustness card of one preset on the same queries" in evidence(md, "vs ATRDH")[0]
    write_json(saat / "robustness" / "quick" / "card.json",  # the same options on both: compared again
               {**card_with_queries(np.clip(theirs - 0.08, 0, 1)), "settings": {"options": {"square": {"steps": 100}}}})
    md = build_report([base, saat, atrdh], tmp_path / "out4", examples=False)["markdown"].read_text()
    assert claim_rows(md)["vs ATRDH"] == [FAILS]


def test_several_seeds_of_one_model_are_judged_together_over_seeds_and_queries(tmp_path):
    from saat.report.claims import UNDECIDED

    # each seed alone is decided (+30, +25 and -20 points, tight over the queries) but the seeds disagree: over
    # seeds and queries the SAAT-vs-ATRDH margin is undecided
    runs = []
    for seed, m in zip((0, 1, 2), (0.3, 0.25, -0.2), strict=True):
        runs += defended_family(tmp_path, {"hag": m, "sdha": m, "mainstay": m}, spread=0.02, suffix=f"-s{seed}",
                                seed=seed, noise_seed=seed)
    md = build_report(runs, tmp_path / "out", examples=False)["markdown"].read_text()
    verdicts = claim_rows(md)
    assert verdicts["vs ATRDH"] == [UNDECIDED], verdicts  # one check, not one per seed
    assert verdicts["vs undefended"] == [HOLDS] and len(verdicts["attack"]) == 1
    text = evidence(md, "vs ATRDH")[0]
    assert "over 3 seeds" in text and "seeds 0, 1, 2" in md.split("## Claims check")[1].split("\n## ")[0]
    # one seed of them alone: decided
    alone = build_report(runs[:3], tmp_path / "alone", examples=False)["markdown"].read_text()
    assert claim_rows(alone)["vs ATRDH"] == [HOLDS]
