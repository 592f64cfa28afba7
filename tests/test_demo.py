"""`saat demo --quick` end to end: every step's output, the report with every table and figure, resumability."""

import json
import re

import pytest

from saat.cli import main
from saat.reproduce.demo import TARGETED, UNTARGETED, final_table, format_table

pytestmark = pytest.mark.slow  # the session's quick demo: minutes


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
    assert table[2]["worst"] is None
    meta = json.loads((out / "csq-saat" / "metrics.json").read_text())
    assert meta["defense"]["method"] == "saat" and meta["defense"]["eps"] == 32 / 255


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


def test_rerunning_the_demo_reuses_every_finished_step(quick_demo_copy, capsys):
    out, _ = quick_demo_copy  # the rerun rebuilds the report: on a private copy of the demo directory
    assert main(["demo", "--quick", "--out", str(out), "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert "done earlier, reused" in printed
    assert re.findall(r"\[demo\] (.*) \.\.\.", printed) == ["report"]  # only the report is rebuilt
    assert "SAAT-trained" in printed and "report.html" in printed


def test_final_table_formatting(quick_demo):
    out, _ = quick_demo
    rows = final_table(out / "csq", {"saat": out / "csq-saat", "atrdh": out / "csq-atrdh"}, preset="quick")
    text = format_table(rows)
    assert "undefended" in text and "ProS-GAN" in text and "eps 32/255" in text and "worst case" in text
