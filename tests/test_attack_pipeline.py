"""`saat attack` end to end on a model trained on the shipped demo data (SPEC 7.1, demo preset eps).

Every test here writes attack results into the run directory it attacks, so each works on its own copy of the
demo's CSQ run (``mosaic_run_copy``), never on the session's shared one."""

import json

import numpy as np
import pytest

from saat.cli import main
from saat.pipelines.attack import AttackConfig, run_attack
from saat.retrieval import format_ci

pytestmark = pytest.mark.slow  # the attacked model is trained by the session's quick demo

DEMO = {"eps": 32 / 255, "step": 2 / 255, "steps": 20, "num_queries": 96, "batch_size": 48, "seed": 0}


def test_untargeted_mainstay_attack_drops_map_below_random(mosaic_run_copy):
    m = run_attack(mosaic_run_copy, AttackConfig(method="mainstay", **DEMO), progress=False)
    assert m["benign_mAP"] > m["random_ranking_mAP"] + 0.2
    assert m["adversarial_mAP"] < m["random_ranking_mAP"], m
    assert m["theory_mAP"] <= m["adversarial_mAP"] + 0.05
    p = m["perceptibility"]
    assert p["linf_max"] <= 32 / 255 + 1e-6 and p["images"] == 96 and np.isfinite(p["psnr_mean"])
    out = mosaic_run_copy / "attacks" / m["name"]
    assert json.loads((out / "metrics.json").read_text())["adversarial_mAP"] == m["adversarial_mAP"]
    assert np.load(out / "adv_codes.npy").shape == (96, 32)
    ap = np.load(out / "per_query_ap.npy")  # each query's benign and adversarial AP, with the means' intervals
    assert ap.shape == (2, 96) and ap[1].mean() == pytest.approx(m["adversarial_mAP"])
    lo, hi = m["adversarial_mAP_ci"]
    assert lo < m["adversarial_mAP"] < hi and m["benign_mAP_ci"][0] < m["benign_mAP"] < m["benign_mAP_ci"][1]
    assert (out / "examples.png").stat().st_size > 0
    assert m["settings"]["generator"] == "pgd" and m["settings"]["eps"] == pytest.approx(32 / 255)


def test_targeted_mainstay_attack_raises_t_map_and_reuses_targets(mosaic_run_copy):
    m = run_attack(mosaic_run_copy, AttackConfig(method="mainstay", targeted=True, **DEMO), progress=False)
    assert m["adversarial_t-MAP"] >= m["benign_t-MAP"] + 0.15, m
    targets_file = mosaic_run_copy / "attacks" / "targets-seed0.npz"
    stamp = targets_file.stat().st_mtime_ns
    again = run_attack(mosaic_run_copy, AttackConfig(method="cgat", targeted=True, **DEMO), progress=False, write=False)
    assert targets_file.stat().st_mtime_ns == stamp  # the same, saved targets
    assert again["benign_t-MAP"] == m["benign_t-MAP"]


def test_eps_zero_changes_nothing(mosaic_run_copy):
    cfg = AttackConfig(method="mainstay", **{**DEMO, "eps": 0.0, "steps": 3, "num_queries": 40})
    m = run_attack(mosaic_run_copy, cfg, progress=False)
    assert m["adversarial_mAP"] == m["benign_mAP"]
    assert m["perceptibility"]["linf_max"] == 0.0


def test_attack_cli_and_errors(mosaic_run_copy, capsys):
    args = ["attack", str(mosaic_run_copy), "--generator", "bim", "--eps", "16/255", "--step", "0.0078", "--steps", "2",
            "--num-queries", "8", "--name", "cli-check"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "benign mAP" in out and "adversarial mAP" in out
    saved = json.loads((mosaic_run_copy / "attacks" / "cli-check" / "metrics.json").read_text())
    # each figure printed with its 95 % interval over the queries, as metrics.json holds them
    benign = format_ci(saved["benign_mAP"], saved["benign_mAP_ci"], digits=4)
    assert f"benign mAP {benign} -> adversarial mAP " \
           f"{format_ci(saved['adversarial_mAP'], saved['adversarial_mAP_ci'], digits=4)}" in out
    assert saved["settings"]["eps"] == pytest.approx(16 / 255) and saved["settings"]["generator"] == "bim"
    with pytest.raises(SystemExit):
        main(["attack", str(mosaic_run_copy), "--eps", "8/0"])
    assert "expected a number like 8/255" in capsys.readouterr().err
    assert main(["attack", str(mosaic_run_copy.parent / "missing")]) == 2
    assert "run directory not found" in capsys.readouterr().err


def test_attack_folders_never_mix_settings(mosaic_run_copy, capsys):
    base = ["attack", str(mosaic_run_copy), "--steps", "1", "--num-queries", "4", "--batch-size", "4"]
    assert main([*base, "--seed", "0"]) == 0
    assert main([*base, "--seed", "5", "--topk", "10"]) == 0  # once overwrote the first (same default name)
    folders = sorted(p.name for p in (mosaic_run_copy / "attacks").iterdir()
                     if p.is_dir() and p.name.startswith("mainstay-untargeted-pgd-eps32-steps1-q4-"))
    assert len(folders) == 2 and folders[0][:-7] == folders[1][:-7]  # same readable part, different settings key
    first = mosaic_run_copy / "attacks" / folders[0] / "metrics.json"
    stamp = first.stat().st_mtime_ns
    capsys.readouterr()
    assert main([*base, "--seed", "0"]) == 0
    assert main([*base, "--seed", "5", "--topk", "10"]) == 0
    assert capsys.readouterr().out.count("reused") == 2
    assert first.stat().st_mtime_ns == stamp
    named = [*base, "--name", "mine"]
    assert main(named) == 0
    assert main([*named, "--seed", "3"]) == 2  # other settings under the same --name: refused ...
    assert "holds a result of other settings" in capsys.readouterr().err
    assert main([*named, "--seed", "3", "--overwrite"]) == 0  # ... unless asked
    saved = json.loads((mosaic_run_copy / "attacks" / "mine" / "metrics.json").read_text())
    assert saved["settings"]["seed"] == 3
    for bad in ("..", "../../../x", "/tmp/abs", "a/b"):
        assert main([*base, "--name", bad]) == 2
        assert "one folder name" in capsys.readouterr().err
    assert (mosaic_run_copy / "metrics.json").is_file() and "adversarial_mAP" not in (
        mosaic_run_copy / "metrics.json").read_text()
