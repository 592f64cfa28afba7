"""Fault injection: `saat train`, `saat defend` and `saat attack` killed with SIGKILL at several points — inside a
checkpoint, model or result write (SAAT_FAULT_INJECT, saat/utils/io.py) and between epochs — then rerun: the result
is bit-identical to an uninterrupted run and no temporary file is left behind. Each run is a process of its own
(conftest.fresh_process: forked from a server that has imported saat, so a start costs no import time)."""

import json
import os
import signal

import numpy as np
import pytest
import torch

import saat
from conftest import cli_main, fresh_process, write_prototype_dataset

pytestmark = pytest.mark.slow

ENV = {**os.environ, "OMP_NUM_THREADS": "2", "PYTHONUNBUFFERED": "1"}


def env_with(fault=None):
    """The runs' environment, with ``fault`` as SAAT_FAULT_INJECT."""
    return {**ENV, **({"SAAT_FAULT_INJECT": fault} if fault else {})}


def run(args, fault=None, check=True):
    """``saat ARGS`` in a process of its own."""
    proc = fresh_process(cli_main, list(args), env=env_with(fault))
    assert not check or proc.returncode == 0, (proc.returncode, proc.stderr[-2000:])
    return proc


def killed(args, fault):
    """Run with a fault: the process must die by SIGKILL, leaving its temporary file behind."""
    proc = run(args, fault, check=False)
    assert proc.returncode == -signal.SIGKILL, (proc.returncode, proc.stderr[-2000:])


def temps(root):
    return sorted(p.name for p in root.rglob(".*.tmp"))


def same_model(a, b):
    x, y = torch.load(a, weights_only=True), torch.load(b, weights_only=True)
    for part in ("state_dict", "method_state"):
        assert x[part].keys() == y[part].keys()
        for key, value in x[part].items():
            assert torch.equal(value, y[part][key]), (part, key)


def train_args(data, out):
    return ["train", "--dataset-dir", str(data), "--backbone", "small_cnn", "--image-size", "28", "--method", "dpsh",
            "--bits", "16", "--epochs", "2", "--batch-size", "32", "--device", "cpu", "--seed", "3", "--no-evaluate",
            "--out", str(out)]


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    """A small dataset folder (4 classes, 28 px; 96 training images: 3 steps per epoch): what is killed is a file
    write, whatever the data, so the train kill points need no more than that."""
    root = tmp_path_factory.mktemp("faults-data") / "data"
    write_prototype_dataset(root, {"train": 96, "test": 8, "database": 32}, side=28, classes=4)
    return root


@pytest.fixture(scope="module")
def uninterrupted(tiny_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("faults") / "full"
    run(train_args(tiny_data, out))
    return out


@pytest.mark.parametrize("fault", ["checkpoint.pt:1", "checkpoint.pt:2", "model.pt:1", "train_log.jsonl:1"])
def test_train_killed_inside_a_write_resumes_bit_identical(tiny_data, uninterrupted, tmp_path, fault):
    out = tmp_path / "run"
    killed(train_args(tiny_data, out), fault)
    assert temps(out), "the kill should have left the interrupted write's temporary file"
    assert not (out / "model.pt").exists()
    run(["train", "--resume", str(out)])
    same_model(uninterrupted / "model.pt", out / "model.pt")
    assert temps(out) == []
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log if r["kind"] == "epoch"] == [1, 2]


def defend_in_process(run_dir, out, fault=None):
    """``saat.defend`` (the Python API: a short SAAT defense) in a process of its own."""
    return fresh_process(saat.defend, str(run_dir), method="saat", epochs=2, train_limit=64, evaluate=False,
                         out=str(out), progress=False, env=env_with(fault))


@pytest.fixture(scope="module")
def defended(mosaic_run_module_copy, tmp_path_factory):
    """The demo's model (a private copy: defending caches its training codes in it) and its uninterrupted defense,
    shared by the kill points."""
    full = tmp_path_factory.mktemp("defend") / "full"
    proc = defend_in_process(mosaic_run_module_copy, full)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return mosaic_run_module_copy, full


@pytest.mark.parametrize("fault", ["checkpoint.pt:1", "model.pt:1"])
def test_defend_killed_inside_a_write_resumes_bit_identical(defended, tmp_path, fault):
    source, full = defended
    out = tmp_path / "killed"
    proc = defend_in_process(source, out, fault)
    assert proc.returncode == -signal.SIGKILL and temps(out)
    run(["defend", "--resume", str(out)])
    same_model(full / "model.pt", out / "model.pt")
    assert temps(out) == []


@pytest.mark.parametrize("fault", ["adv_codes.npy:1", "metrics.json:1"])
def test_attack_killed_inside_a_write_reruns_to_the_same_result(mosaic_run_copy, fault):
    args = ["attack", str(mosaic_run_copy), "--num-queries", "6", "--steps", "2", "--batch-size", "6", "--device",
            "cpu"]
    run([*args, "--name", "full"])
    killed([*args, "--name", "again"], fault)
    assert temps(mosaic_run_copy / "attacks")
    run([*args, "--name", "again"])
    folder = mosaic_run_copy / "attacks"
    np.testing.assert_array_equal(np.load(folder / "full" / "adv_codes.npy"),
                                  np.load(folder / "again" / "adv_codes.npy"))
    a, b = (json.loads((folder / n / "metrics.json").read_text()) for n in ("full", "again"))
    assert a["adversarial_mAP"] == b["adversarial_mAP"] and a["benign_mAP"] == b["benign_mAP"]
    assert temps(mosaic_run_copy) == []
