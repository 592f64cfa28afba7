"""`saat robustness` and `saat transfer` end to end on the demo's models, and the gradient-masking demonstrator on
the demo's CSQ model (docs/robustness.md#gradient-masking)."""

import json

import pytest
import torch

from saat.attacks import ATTACKS
from saat.cli import main
from saat.pipelines.common import codes_for, load_run, open_dataset, query_images
from saat.robustness import HardSign, evaluate

pytestmark = pytest.mark.slow  # the evaluated models are trained by the session's quick demo

def test_masked_demo_model_looks_robust_is_flagged_and_broken(mosaic_run_copy):
    run = load_run(mosaic_run_copy, torch.device("cpu"))
    ds = open_dataset(run.config, run.image_size, verbose=False)
    picked = torch.arange(0, 500, 25).numpy()  # 20 queries
    x, y = query_images(ds.query, picked, torch.device("cpu")), ds.query.labels[torch.as_tensor(picked)].float()
    train_codes, _ = codes_for(run, "train", ds.train, device=torch.device("cpu"), batch_size=256, progress=False)
    db_codes, _ = codes_for(run, "database", ds.database, device=torch.device("cpu"), batch_size=256, progress=False)
    knowledge = {"db_codes": db_codes, "db_labels": ds.database.labels,
                 "train_codes": torch.as_tensor(train_codes).float(), "train_labels": ds.train.labels,
                 "eps": 32 / 255, "topk": 1000, "preset": "quick", "overrides": {"hag": {"steps": 50},
                                                                                  "sdha": {"steps": 50}}}
    # The black-box member at the profile's 300 evaluations where the test needs it (the masked model); 30 elsewhere,
    # where the gradient members set the figure (5 s less each). On the masked model every gradient is 0: its
    # gradient members stay where they start whatever their iterations (10 instead of 50).
    short_square = {**knowledge, "overrides": {**knowledge["overrides"], "square": {"steps": 30}}}
    plain = evaluate(run.model, x, y, **short_square)
    masked_model = HardSign(run.model)
    short_gradients = {**knowledge, "overrides": {a: {"steps": 10} for a in ("mainstay", "cgat", "hag", "sdha")}}
    masked = evaluate(masked_model, x, y, surrogate=(run.model, knowledge["train_codes"]), **short_gradients)
    adaptive = evaluate(masked_model, x, y, adaptive=True, checks=False, **short_square)
    print("plain", plain["clean_map"], plain["robust_map"], plain["flags_raised"], "masked", masked["clean_map"],
          masked["robust_map"], masked["flags_raised"], "transfer", masked["transfer"]["map"], "adaptive",
          adaptive["robust_map"])
    assert plain["flags_raised"] == []
    gradient_based = min(row["map"] for row in masked["per_attack"].values()
                         if ATTACKS.get(row["attack"]).uses_gradients)
    assert gradient_based > plain["robust_map"] + 0.3  # looks robust to every gradient attack ...
    assert masked["robust_map"] < gradient_based - 0.1  # ... less so to the black-box member's worst case ...
    assert {"collapse", "zero-gradient", "transfer", "black-box"} <= set(masked["flags_raised"])  # ... is flagged ...
    assert masked["transfer"]["map"] < plain["robust_map"] + 0.1  # ... broken by transfer ...
    assert adaptive["robust_map"] < plain["robust_map"] + 0.1  # ... and by BPDA


def test_robustness_cli_writes_resumes_and_never_overwrites(quick_demo_copy, capsys):
    out, _ = quick_demo_copy
    run = out / "csq-saat"
    args = ["robustness", str(run), "--preset", "quick", "--num-queries", "8", "--no-checks", "--option",
            "square.steps=20", "--option", "hag.steps=30", "--name", "cli"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "worst case" in printed and "mainstay-apgd" in printed
    folder = run / "robustness" / "cli"
    card = json.loads((folder / "card.json").read_text())
    assert card["queries"] == 8 and card["eps"] == pytest.approx(32 / 255) and card["model"]["defense"] == "saat"
    # --option over the profile's settings (and over the demo's presets): run, recorded in the card
    assert card["settings"]["options"] == {"square": {"steps": 20}, "hag": {"steps": 30}}
    assert card["overrides"]["square"] == {"steps": 20} and card["overrides"]["hag"]["steps"] == 30
    assert card["per_attack"]["square"]["forwards_per_query"] == pytest.approx(20, abs=1)
    for bad, said in ((["--option", "steps=20"], "--option expects ATTACK.KEY=VALUE"),
                      (["--option", "sqaure.steps=20"], "'sqaure' is not an attack of the quick preset's ensembles")):
        assert main(["robustness", str(run), "--preset", "quick", *bad, "--name", "bad"]) == 2
        assert said in capsys.readouterr().err
    assert card["robust_map"] <= card["best_single"]["map"] and (folder / "adv_codes.npy").is_file()
    stamps = {p.name: p.stat().st_mtime_ns for p in (folder / "work").glob("*.npy")}
    assert main(args) == 0  # the same settings: every attack reused
    assert {p.name: p.stat().st_mtime_ns for p in (folder / "work").glob("*.npy")} == stamps
    assert main([*args[:-2], "--seed", "3", "--name", "cli"]) == 2  # other settings, same folder: refused
    assert "holds a card with other settings" in capsys.readouterr().err
    assert main([*args[:7], "--option", "square.steps=21", "--name", "cli"]) == 2  # other options: refused too
    assert "holds a card with other settings" in capsys.readouterr().err
    assert main([*args[:-2], "--name", "../escape"]) == 2
    assert "one folder name" in capsys.readouterr().err


def test_transfer_cli_matrix_on_three_demo_runs(quick_demo_copy, capsys):
    out, _ = quick_demo_copy
    runs = [str(out / r) for r in ("csq", "csq-saat", "csq-atrdh")]
    assert main(["transfer", *runs, "--num-queries", "12", "--steps", "5", "--name", "t"]) == 0
    assert "crafted on" in capsys.readouterr().out
    result = json.loads((out / "csq" / "transfer" / "t" / "metrics.json").read_text())
    assert result["models"] == ["csq", "csq-saat", "csq-atrdh"] and len(result["matrix"]) == 3
    assert all(len(row) == 3 for row in result["matrix"])
    assert result["matrix"][0][0] < result["clean"][0] - 0.1  # the white-box attack on the undefended model
    from saat.report import build_report

    paths = build_report(runs, out / "report-t", examples=False)
    assert "transfer-0" in paths["figures"] and "Transfer matrix" in paths["markdown"].read_text()

