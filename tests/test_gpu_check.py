"""scripts/gpu_check.py (issue 24): the CPU dry run passes every step, and a failing step becomes a FAIL row."""

import importlib.util
import json
import os
import sys
from pathlib import Path

import pytest

from conftest import fresh_process, script_main

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "gpu_check.py"


def load_script():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def test_a_step_that_raises_becomes_a_fail_row_and_the_exit_code_is_1(tmp_path, capsys):
    g = load_script()

    def ok(ctx, amp):
        return {"value": 1.0 + (1e-3 if amp else 0.0)}

    def boom(ctx, amp):
        raise RuntimeError("the kernel\nexploded")

    steps = [g.Step("fine", ok, "|Δ|", lambda a, b: abs(a["value"] - b["value"]), 0.01),
             g.Step("broken", boom, "|Δ|", lambda a, b: 0.0, 0.01),
             g.Step("not finite", lambda ctx, amp: {"value": float("nan")}, precisions=(False,)),
             g.Step("too far", ok, "|Δ|", lambda a, b: 1.0, 0.01),
             g.Step("after", ok, "|Δ|", lambda a, b: abs(a["value"] - b["value"]), 0.01)]
    report = tmp_path / "check.json"
    code = g.main(["--device", "cpu", "--skip-ddp", "--out", str(tmp_path / "work"), "--json", str(report)],
                  steps=steps)
    assert code == 1
    rows = {(r["step"], r["precision"]): r for r in json.loads(report.read_text())["rows"]}
    assert rows["fine", "fp32"]["status"] == "PASS" and rows["fine", "amp"]["status"] == "PASS"
    assert rows["fine", "amp"]["diff"] == pytest.approx(1e-3)
    for precision in ("fp32", "amp"):
        broken = rows["broken", precision]
        assert broken["status"] == "FAIL" and broken["note"] == "RuntimeError: the kernel exploded"
    assert rows["not finite", "fp32"]["status"] == "FAIL" and "non-finite" in rows["not finite", "fp32"]["note"]
    assert rows["too far", "fp32"]["status"] == "PASS" and rows["too far", "amp"]["status"] == "FAIL"
    assert rows["after", "amp"]["status"] == "PASS"  # the check went on after the failures
    out = capsys.readouterr().out
    assert "overall: FAIL (5 passed, 4 failed, 0 skipped)" in out
    table = [line for line in out.splitlines() if line.startswith("broken ")]
    assert len(table) == 2 and all("FAIL" in line and "peak" not in line for line in table)


def test_all_passing_steps_exit_0_and_cpu_memory_is_a_dash(tmp_path, capsys):
    g = load_script()
    code = g.main(["--device", "cpu", "--skip-ddp", "--out", str(tmp_path)],
                  steps=[g.Step("fine", lambda ctx, amp: {"v": 0.0}, "|Δ|", lambda a, b: 0.0, 0.0)])
    out = capsys.readouterr().out
    assert code == 0 and "overall: PASS (2 passed, 0 failed, 0 skipped)" in out
    assert any(line.startswith("fine ") and "—" in line for line in out.splitlines())


@pytest.mark.slow
def test_the_cpu_dry_run_passes_every_step(tmp_path):
    g = load_script()
    expected = ["train", "determinism", "encode", "defend:saat", "defend:atrdh", "defend:cgat", "robustness"]
    from saat.attacks import list_attacks

    untargeted = set(list_attacks(targeted=False))
    expected += [f"attack:{n}" + ("" if n in untargeted else " (t)") for n in list_attacks()]
    report = tmp_path / "check.json"
    proc = fresh_process(script_main, SCRIPT, ["--device", "cpu", "--skip-ddp", "--out", str(tmp_path / "work"),
                                               "--json", str(report)], env={**os.environ, "PYTHONUNBUFFERED": "1"},
                         cwd=tmp_path, timeout=900)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout[-4000:]}\n{proc.stderr[-2000:]}"
    rows = json.loads(report.read_text())["rows"]
    for name in expected:
        mine = [r for r in rows if r["step"] == name]
        assert mine and all(r["status"] == "PASS" for r in mine), (name, mine)
        assert name == "determinism" or {r["precision"] for r in mine} == {"fp32", "amp"}
        assert any(line.startswith(name + " ") and "PASS" in line for line in proc.stdout.splitlines()), name
    assert {r["status"] for r in rows if r["step"] == "ddp"} == {"SKIP"}
    assert "overall: PASS" in proc.stdout
    assert g.TOL_REPEAT["cpu"] == 0.0  # the repeat on CPU is bit for bit


def test_host_copies_counts_the_bytes_sent_from_the_host():
    import torch

    g = load_script()
    host = torch.rand(10, 3)
    with g.HostCopies() as seen:
        host.to("meta")  # a copy to another device: 30 float32
        torch.empty(4, device="meta").copy_(torch.rand(4, dtype=torch.float64))  # 4 float64 into a device tensor
        host * 2  # no copy
        host.to(torch.float64)  # a copy, but on the host
    assert seen.bytes == 30 * 4 + 4 * 8
