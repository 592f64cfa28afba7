"""`saat demo --quick` end to end: every step's output, the report with every table and figure, resumability."""

import json
import re

import pytest

from saat.cli import main
from saat.reproduce.demo import TARGETED, UNTARGETED, final_table, format_table

slow = pytest.mark.slow  # the session's quick demo: minutes


@slow
def test_quick_demo_writes_every_result(quick_demo):
    out, result = quick_demo
    for run in ("csq", "csq-saat", "csq-atrdh"):
        assert (out / run / "model.pt").is_file() and (out / run / "metrics.json").is_file()
    names = {p.name for p in (out / "csq" / "attacks").iterdir() if p.is_dir()}
    assert {f"quick-{m}-u-eps32" for m in UNTARGETED} <= names
    assert {f"quick-{m}-t-eps32" for m in TARGETED} <= names
    table = result["table"]
    assert [r["model"] for r in table[:3]] == ["undefended", "SAAT-trained", "ATRDH-trained"]
    assert all(r[k] is not None for r in table[:3] for k in ("clean", "hag", "sdha", "mainstay"))
    assert all(table[3][m] is not None for m in TARGETED)
    for row, run in zip(table[:2], ("csq", "csq-saat"), strict=True):  # the quick robustness card's worst case
        card = json.loads((out / run / "robustness" / "quick-quick" / "card.json").read_text())
        assert row["worst"] == card["robust_map"] <= min(row["hag"], row["sdha"], row["mainstay"]) + 0.05
        # HAG and SDHA draw no random number and ran as attack cells with the card's settings: the card took them
        for attack in ("hag", "sdha"):
            member = card["per_attack"][attack]
            cell = json.loads((out / run / "attacks" / f"quick-{attack}-u-eps32" / "metrics.json").read_text())
            assert member["reused"] == f"attacks/quick-{attack}-u-eps32" and member["forwards_per_query"] == 0
            assert member["map"] == pytest.approx(cell["adversarial_mAP"], abs=1e-12)
    assert table[2]["worst"] is None
    meta = json.loads((out / "csq-saat" / "metrics.json").read_text())
    assert meta["defense"]["method"] == "saat" and meta["defense"]["eps"] == 32 / 255


@slow
def test_quick_demo_report_has_every_table_and_figure(quick_demo):
    out, result = quick_demo
    report = out / "report"
    md = (report / "report.md").read_text()
    html = (report / "report.html").read_text()
    for heading in ("Claims check", "Table I", "Table II", "Robustness card", "worst case", "Perceptibility",
                    "paper (Table I)", "paper (Table II)"):
        assert heading in md and heading in html, heading
    for figure in ("pr-csq.png", "pn-csq.png", "eps-csq.png", "examples-csq.png"):
        path = report / figure
        assert path.is_file() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", figure
        assert figure in md
    assert html.count("data:image/png;base64,") >= 4 and not re.search(r'<img[^>]+src="(?!data:)', html)
    assert result["report"] == str(report / "report.html")


@slow
def test_rerunning_the_demo_reuses_every_finished_step(quick_demo_copy, capsys):
    out, _ = quick_demo_copy  # the rerun rebuilds the report: on a private copy of the demo directory
    assert main(["demo", "--quick", "--out", str(out), "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert "done earlier, reused" in printed
    assert re.findall(r"\[demo\] (.*) \.\.\.", printed) == ["report"]  # only the report is rebuilt
    assert "SAAT-trained" in printed and "report.html" in printed


@slow
def test_final_table_formatting(quick_demo):
    out, _ = quick_demo
    rows = final_table(out / "csq", {"saat": out / "csq-saat", "atrdh": out / "csq-atrdh"}, preset="quick")
    text = format_table(rows)
    assert "undefended" in text and "ProS-GAN" in text and "eps 32/255" in text and "worst case" in text
    for row in rows:  # every figure of the quick demo was written with its interval
        assert all(ci is not None for key, ci in row["ci"].items() if row[key] is not None), row["model"]
    lo, hi = rows[0]["ci"]["mainstay"]
    assert f"{rows[0]['mainstay']:.3f} [{lo:.3f}, {hi:.3f}]" in text


def test_the_final_table_shows_each_figure_with_its_interval(tmp_path):
    """final_table and format_table on hand-written results: figures with intervals, an older result without."""
    from saat.config import DEMO_EPS
    from saat.reproduce.grid import PRESETS, attack_folder, card_folder
    from saat.runs import AttackRecord, RunDir

    p = PRESETS["quick"]
    runs = {name: RunDir(tmp_path / name) for name in ("csq", "csq-saat", "csq-atrdh")}
    for i, (name, run) in enumerate(runs.items()):
        run.path.mkdir()
        run.metrics.write_text(json.dumps({"mAP": 0.9 - i / 100, "mAP_ci": [0.85 - i / 100, 0.93 - i / 100]}))
        for j, m in enumerate(("hag", "sdha", "mainstay")):
            v = 0.1 * (j + 1) + i / 10
            record = AttackRecord(attack=m, targeted=False, benign_map=0.9, adversarial=v,
                                  adversarial_ci=None if (name, m) == ("csq-atrdh", "hag") else [v - 0.05, v + 0.05])
            run.attack(attack_folder(p, m, False, DEMO_EPS)).path.mkdir(parents=True)
            run.attack(attack_folder(p, m, False, DEMO_EPS)).metrics.write_text(json.dumps(record.to_json()))
    card = runs["csq"].robustness(card_folder(p))
    card.path.mkdir(parents=True)
    card.card.write_text(json.dumps({"robust_map": 0.08, "robust_map_ci": [0.05, 0.11]}))
    for m in TARGETED:
        record = AttackRecord(attack=m, targeted=True, benign_tmap=0.23, adversarial=0.95, benign_ci=[0.2, 0.26],
                              adversarial_ci=[0.93, 0.97])
        folder = runs["csq"].attack(attack_folder(p, m, True, DEMO_EPS))
        folder.path.mkdir(parents=True)
        folder.metrics.write_text(json.dumps(record.to_json()))
    rows = final_table(runs["csq"].path, {"saat": runs["csq-saat"].path, "atrdh": runs["csq-atrdh"].path},
                       preset="quick")
    assert rows[0]["clean"] == 0.9 and rows[0]["ci"]["clean"] == [0.85, 0.93]
    assert rows[0]["worst"] == 0.08 and rows[0]["ci"]["worst"] == [0.05, 0.11] and rows[1]["worst"] is None
    assert rows[2]["ci"]["hag"] is None and rows[3]["ci"]["benign"] == [0.2, 0.26]
    text = format_table(rows)
    lines = text.splitlines()
    assert lines[1].split()[:3] == ["undefended", "0.900", "[0.850,"]
    assert "0.080 [0.050, 0.110]" in lines[1] and "0.300 [0.250, 0.350]" in lines[1]  # worst case, SAAT attack
    # the ATRDH model's HAG result is older: the figure alone, then SDHA with its interval; no card: a dash
    assert lines[3].split() == ["ATRDH-trained", "0.880", "[0.830,", "0.910]", "0.300", "0.400", "[0.350,", "0.450]",
                                "0.500", "[0.450,", "0.550]", "—"]
    assert "0.230 [0.200, 0.260]" in lines[-2] and "0.950 [0.930, 0.970]" in lines[-2]
    assert "95 % bootstrap interval" in lines[-1]
