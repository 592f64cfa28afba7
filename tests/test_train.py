"""End-to-end training on the shipped demo data: run directory, resume after SIGKILL, evaluate, every method."""

import json
import os
import signal
import time

import pytest
import torch

import saat
from conftest import FreshProcess, cli_main, fresh_process
from saat.checkpoint import load_model_file
from saat.cli import main
from saat.hashing import list_methods

FAST = {"dataset": "fashion-mnist", "backbone": "small_cnn", "bits": 16, "batch_size": 64,
        "optimizer": "adam", "lr": 1e-3, "weight_decay": 1e-5, "device": "cpu", "topk": 1000}


@pytest.mark.slow
def test_train_writes_a_complete_run_directory(tmp_path):
    run = tmp_path / "run"
    metrics = saat.train(out=run, progress=False, method="dph", epochs=1, **FAST)
    assert {p.name for p in run.iterdir()} >= {"config.yaml", "checkpoint.pt", "model.pt", "metrics.json",
                                               "train_log.jsonl", "cache"}
    ckpt = load_model_file(run / "model.pt")  # weights_only=True inside
    meta = ckpt["metadata"]
    assert meta["architecture"] == {"backbone": "small_cnn", "bits": 16, "head_norm": None}
    assert meta["method"] == "dph" and meta["dataset"] == "fashion-mnist" and meta["n_classes"] == 10
    assert meta["training"]["seed"] == 0 and meta["training"]["epochs"] == 1
    assert set(ckpt["method_state"]) == {"U", "Y"} and ckpt["method_state"]["U"].shape == (3000, 16)
    on_disk = json.loads((run / "metrics.json").read_text())
    assert on_disk["mAP"] == metrics["mAP"] and on_disk["topk"] == 1000
    assert {"pr_curve", "precision_at_n", "precision_within_radius_2", "random_ranking_mAP"} <= set(on_disk)
    log = [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]
    assert log[-1]["kind"] == "epoch" and log[-1]["epoch"] == 1 and log[-1]["loss"] > 0
    with pytest.raises(FileExistsError, match="already holds a run; continue it with --resume"):
        saat.train(out=run, progress=False, epochs=1, **FAST)


@pytest.mark.slow
def test_evaluate_caches_database_codes_by_checkpoint_content(tmp_path, monkeypatch):
    import saat.pipelines.common as common

    run = tmp_path / "run"
    saat.train(out=run, progress=False, method="csq", epochs=1, **FAST)
    first = saat.evaluate(run, topk=500, progress=False)
    cached = sorted(p.name for p in (run / "cache").iterdir())
    assert any(name.startswith("codes-database-") for name in cached)
    encode = common.encode_split
    calls = []
    monkeypatch.setattr(common, "encode_split", lambda *a, **k: calls.append(1) or encode(*a, **k))
    again = saat.evaluate(run, topk=500, progress=False)
    assert calls == []  # nothing re-encoded
    assert again["mAP"] == first["mAP"] and first["topk"] == 500
    assert sorted(p.name for p in (run / "cache").iterdir()) == cached
    # Same bytes -> same key even if the file time changes; different weights -> a new cache entry.
    os.utime(run / "model.pt", (time.time() + 100, time.time() + 100))
    saat.evaluate(run, topk=500, progress=False)
    assert calls == [] and sorted(p.name for p in (run / "cache").iterdir()) == cached
    ckpt = torch.load(run / "model.pt", weights_only=True)
    ckpt["state_dict"]["hash_layer.bias"] += 0.5
    torch.save(ckpt, run / "model.pt")
    changed = saat.evaluate(run, topk=500, progress=False)
    assert len(calls) == 2 and len(list((run / "cache").iterdir())) == len(cached) + 2  # new query and db codes
    assert changed["checkpoint"] != first["checkpoint"]


def _train_args(out, epochs):
    return ["train", "--dataset", "fashion-mnist", "--method", "dpsh", "--bits", "16", "--epochs", str(epochs),
            "--batch-size", "32", "--device", "cpu", "--seed", "3", "--no-evaluate", "--out", str(out)]


@pytest.mark.slow
def test_resume_after_sigkill_ends_like_an_uninterrupted_run(tmp_path):
    # Each run a process of its own (conftest.FreshProcess), with the same thread count: float reductions then
    # happen in the same order.
    env = {**os.environ, "OMP_NUM_THREADS": "2", "PYTHONUNBUFFERED": "1"}
    full = tmp_path / "full"
    assert fresh_process(cli_main, _train_args(full, 2), env=env).returncode == 0

    killed = tmp_path / "killed"
    proc = FreshProcess(cli_main, _train_args(killed, 2), env=env)
    deadline = time.time() + 120
    while not (killed / "checkpoint.pt").exists() and time.time() < deadline:
        time.sleep(0.02)
    proc.kill()
    assert proc.wait().returncode == -signal.SIGKILL
    assert (killed / "checkpoint.pt").exists() and not (killed / "model.pt").exists(), "killed too late"
    assert fresh_process(cli_main, ["train", "--resume", str(killed)], env=env).returncode == 0

    a = torch.load(full / "model.pt", weights_only=True)
    b = torch.load(killed / "model.pt", weights_only=True)
    for key, value in a["state_dict"].items():
        assert torch.equal(value, b["state_dict"][key]), key
    for key, value in a["method_state"].items():
        assert torch.equal(value, b["method_state"][key]), key
    assert not (killed / "metrics.json").exists()  # --no-evaluate
    log = [json.loads(line) for line in (killed / "train_log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log if r["kind"] == "epoch"] == [1, 2]


def test_resume_errors(tmp_path, capsys):
    assert main(["train", "--resume", str(tmp_path / "nope")]) == 2
    assert "has no config.yaml" in capsys.readouterr().err
    assert main(["evaluate", str(tmp_path)]) == 2
    assert "has no model.pt" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("method", list_methods())
def test_every_method_learns_codes_well_above_random_ranking(tmp_path, method):
    metrics = saat.train(out=tmp_path / method, progress=False, method=method, epochs=2, **FAST)
    assert metrics["mAP"] > metrics["random_ranking_mAP"] + 0.15, metrics["mAP"]
