"""Data parallelism under torchrun (docs/scaling.md): two CPU processes (gloo) against one process.

The same file is the worker: ``python tests/test_ddp.py one DIR`` runs the one-process reference and
``torchrun --standalone --nproc_per_node=2 tests/test_ddp.py two DIR`` the two-process run, each with one thread
(the float reductions of a batch then happen in the same order in every process). The model is BatchNorm-free (a
registered test backbone: flatten, linear, tanh) for the exact equivalence; a BatchNorm variant checks
``--sync-bn``. The batch order is the seeded one of the pipelines, the same in both runs. The slow test runs
``saat train`` + ``saat defend`` on the shipped fashion-mosaic data (``mosaic-one`` / ``mosaic-two``) and compares
the mAPs.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import fresh_process, script_main, write_prototype_dataset

SIDE, CLASSES, BITS, BATCH = 16, 4, 16, 8
SPLIT_SIZES = {"train": 80, "test": 24, "database": 100}  # 80 / 8 = 10 steps per epoch; 2 epochs = 20 steps
TOLERANCE = 1e-5


# ------------------------------------------------------------------------------------------------------- worker


def _register_backbones():
    from torch import nn

    from saat.models.backbones import BACKBONES, Backbone

    def linear(batch_norm):
        def build(pretrained=False, weights_path=None):
            layers = [nn.Flatten(), nn.Linear(3 * SIDE * SIDE, 32)]
            layers += [nn.BatchNorm1d(32)] if batch_norm else []
            return Backbone(nn.Sequential(*layers, nn.Tanh()), 32, None)

        return build

    if "ddp_linear" not in BACKBONES.names():
        BACKBONES.register("ddp_linear")(linear(False))
        BACKBONES.register("ddp_linear_bn")(linear(True))


def _worker(role: str, root: Path) -> None:
    """Train, defend and encode on the tiny dataset in ``root/data``; results under ``root/<role>``."""
    import saat
    from saat.data import load_dataset
    from saat.pipelines.common import encode_split, load_run
    from saat.pipelines.defend import DefenseConfig, defend
    from saat.utils.dist import is_main_process

    torch.set_num_threads(1)
    _register_backbones()
    out = root / role
    common = {"dataset_dir": str(root / "data"), "image_size": SIDE, "bits": BITS, "batch_size": BATCH, "seed": 0,
              "device": "cpu", "optimizer": "sgd", "lr": 0.05, "progress": False}
    results = {}
    if role == "one":  # the initial weights (0 epochs), to show that training moved them
        for backbone in ("ddp_linear", "ddp_linear_bn"):
            saat.train(out=out / f"init-{backbone}", method="dph", backbone=backbone, epochs=0, evaluate=False,
                       **common)
    # `train`: DPH (a training-set memory), 2 epochs of 10 steps, then the clean evaluation (a sharded encoding
    # through the codes cache).
    metrics = saat.train(out=out / "train", method="dph", backbone="ddp_linear", epochs=2, topk=50, **common)
    results["train"] = {"mAP": metrics["mAP"], "topk": metrics["topk"]}
    # Resume: a run stopped after epoch 1 (one process, or two), continued by two processes.
    resumable = {**common, "method": "dph", "backbone": "ddp_linear", "epochs": 2, "topk": 50, "evaluate": False}
    if role == "one":
        _interrupted(lambda: saat.train(out=out / "stopped", **resumable))
    else:
        saat.train(resume=root / "one" / "stopped", progress=False)
        _interrupted(lambda: saat.train(out=out / "stopped", **resumable))
        saat.train(resume=out / "stopped", progress=False)
    # HSWD: HashNet's pair weights count the global batch's pairs; its Wasserstein term sorts the global batch.
    saat.train(out=out / "train-hswd", method="hswd", backbone="ddp_linear", epochs=1, evaluate=False, **common)
    # BatchNorm with --sync-bn: the statistics of the global batch.
    saat.train(out=out / "train-bn", method="dph", backbone="ddp_linear_bn", epochs=1, evaluate=False,
               sync_bn=True, **common)
    # `defend`, all from the one-process model so that only the defense step differs: SAAT for 20 steps; ATRDH and
    # CgAT (their own memories and random draws) for 10.
    source = root / "one" / "train"
    for name, epochs, lr in (("saat", 2, None), ("atrdh", 1, 1e-2), ("cgat", 1, None)):
        defend(source, DefenseConfig(method=name, epochs=epochs, batch_size=BATCH, steps=3, lr=lr, train_limit=80,
                                     evaluate=False, device="cpu"), out=out / name, progress=False)
    # Encoding: 100 database items in batches of 16 (7 batches: 4 on rank 0, 3 on rank 1).
    run = load_run(source, torch.device("cpu"))
    ds = load_dataset(dataset_dir=str(root / "data"), image_size=SIDE, verbose=False)
    encoded = {"codes": encode_split(run.model, ds.database, batch_size=16, device=torch.device("cpu"),
                                     progress=False),
               "outputs": encode_split(run.model, ds.database, batch_size=16, device=torch.device("cpu"),
                                       progress=False, continuous=True)}
    if is_main_process():
        torch.save(encoded, out / "encoded.pt")
        (out / "results.json").write_text(json.dumps(results))


def _interrupted(run) -> None:
    """``run()`` stopped at the start of its second epoch (as by Ctrl-C), with the checkpoint of the first."""
    import saat.pipelines.train as train_module

    real, calls = train_module.run_epoch, []

    def stop_in_epoch_two(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    train_module.run_epoch = stop_in_epoch_two
    try:
        run()
    except KeyboardInterrupt:
        pass
    finally:
        train_module.run_epoch = real


def _mosaic(role: str, root: Path) -> None:
    """The shipped fashion-mosaic data, short settings: `saat train` (its command line, demo preset, 1 epoch; BatchNorm
    per process) and a SAAT defense of the result (1 epoch over the first 128 training images, --sync-bn)."""
    from saat.cli import main
    from saat.pipelines.defend import DefenseConfig, defend
    from saat.utils.dist import is_main_process

    torch.set_num_threads(1 if role == "mosaic-two" else 2)
    out = root / role
    if main(["train", "--dataset", "fashion-mosaic", "--epochs", "1", "--device", "cpu", "--out", str(out / "train")]):
        sys.exit(2)
    defended = defend(out / "train", DefenseConfig(method="saat", epochs=1, steps=1, train_limit=128, device="cpu",
                                                   sync_bn=True), out=out / "saat", progress=False)
    if is_main_process():
        trained = json.loads((out / "train" / "metrics.json").read_text())
        (out / "results.json").write_text(json.dumps({"train": trained["mAP"], "saat": defended["mAP"]}))


# -------------------------------------------------------------------------------------------------------- tests


def _env():
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def _torchrun(*args: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", *args]


def _check(proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp")
    write_prototype_dataset(root / "data", SPLIT_SIZES, side=SIDE, classes=CLASSES)
    _check(fresh_process(script_main, __file__, ["one", str(root)], env=_env(), timeout=300))
    _check(subprocess.run(_torchrun(__file__, "two", str(root)), env=_env(), capture_output=True, text=True,
                          timeout=300))
    return root


def _max_difference(a: Path, b: Path) -> float:
    x, y = (torch.load(p / "model.pt", weights_only=True) for p in (a, b))
    assert x["state_dict"].keys() == y["state_dict"].keys()
    tensors = [(x["state_dict"][k], y["state_dict"][k]) for k in x["state_dict"]]
    tensors += [(x["method_state"][k], y["method_state"][k]) for k in x["method_state"]]
    return max(float((u.double() - v.double()).abs().max()) if u.numel() else 0.0 for u, v in tensors)


def _moved(a: Path, b: Path) -> float:
    """How far training moved the weights (so that a difference below the tolerance means something)."""
    x, y = (torch.load(p / "model.pt", weights_only=True)["state_dict"] for p in (a, b))
    return max(float((x[k].double() - y[k].double()).abs().max()) for k in x if x[k].is_floating_point())


def _steps(run: Path) -> int:
    log = [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]
    return log[-1]["step"]


@pytest.mark.parametrize("run", ["train", "train-hswd", "train-bn", "saat", "atrdh", "cgat"])
def test_two_processes_end_where_one_process_ends(runs, run):
    """Parameters (and the hashing method's memories) after `train` / `defend` on 2 processes equal the one-process
    run with the same global batch; BatchNorm models with --sync-bn included."""
    one, two = runs / "one" / run, runs / "two" / run
    assert _steps(one) == _steps(two) == (20 if run in ("train", "saat") else 10)
    difference = _max_difference(one, two)
    print(f"{run}: max |parameter difference| {difference:.2e}")
    assert difference < TOLERANCE
    # The comparison is not vacuous: training moved the weights by far more than the tolerance.
    start = {"train": "init-ddp_linear", "train-hswd": "init-ddp_linear", "train-bn": "init-ddp_linear_bn"}.get(
        run, "train")
    assert _moved(runs / "one" / start, one) > 100 * TOLERANCE
    log = [json.loads(line) for line in (two / "train_log.jsonl").read_text().splitlines()]
    assert log[-1]["world_size"] == 2


def test_resume_under_two_processes_and_across_a_change_of_world_size(runs):
    """Stopped after epoch 1 and resumed by two processes: from a 2-process checkpoint it ends exactly where the
    uninterrupted 2-process run ends; from a 1-process checkpoint (world size 1 -> 2) it ends within the tolerance
    of the one-process run."""
    for stopped in (runs / "one" / "stopped", runs / "two" / "stopped"):
        log = [json.loads(line) for line in (stopped / "train_log.jsonl").read_text().splitlines()]
        assert [(r["epoch"], r.get("world_size")) for r in log if r["kind"] == "epoch"][-1] == (2, 2)
    assert _max_difference(runs / "two" / "stopped", runs / "two" / "train") == 0.0
    difference = _max_difference(runs / "one" / "stopped", runs / "one" / "train")
    print(f"resumed 1 -> 2 processes: max |parameter difference| {difference:.2e}")
    assert difference < TOLERANCE


def test_sharded_encoding_equals_one_process_encoding(runs):
    one, two = (torch.load(runs / role / "encoded.pt", weights_only=True) for role in ("one", "two"))
    assert one["codes"].shape == (SPLIT_SIZES["database"], BITS) and one["codes"].dtype == torch.int8
    assert torch.equal(one["codes"], two["codes"])
    assert torch.equal(one["outputs"], two["outputs"])  # bit for bit, continuous outputs included
    assert len(set(map(tuple, one["codes"].tolist()))) > CLASSES  # rows differ: a shuffled gather would show
    # The clean evaluation after training went through the sharded, cached encoding: same mAP, one cache entry.
    a, b = (json.loads((runs / role / "results.json").read_text())["train"] for role in ("one", "two"))
    assert a["mAP"] == b["mAP"] and a["topk"] == 50
    assert len(list((runs / "two" / "train" / "cache").glob("codes-database-*.npy"))) == 1


def test_uneven_global_batches_are_refused():
    from saat.utils.dist import GlobalBatchShards

    shards = [list(GlobalBatchShards(range(20), 8, drop_last=True, rank_=r, world=2)) for r in (0, 1)]
    assert shards == [[0, 1, 2, 3, 8, 9, 10, 11], [4, 5, 6, 7, 12, 13, 14, 15]]
    with pytest.raises(ValueError, match="a global batch of 6 images does not split evenly over 4 processes"):
        GlobalBatchShards(range(20), 6, drop_last=True, rank_=0, world=4)


@pytest.mark.slow
def test_two_process_train_and_defend_on_fashion_mosaic(tmp_path):
    """`torchrun -m saat train` and `saat defend` on the shipped data, short settings: the 2-process mAPs are within
    0.02 of one process's."""
    # One after the other: two processes in lockstep slow down badly when a third one competes for two cores.
    _check(fresh_process(script_main, __file__, ["mosaic-one", str(tmp_path)], env={**_env(), "OMP_NUM_THREADS": "2"},
                         timeout=300))
    _check(subprocess.run(_torchrun(__file__, "mosaic-two", str(tmp_path)), env=_env(), capture_output=True,
                          text=True, timeout=300))
    one, two = (json.loads((tmp_path / role / "results.json").read_text()) for role in ("mosaic-one", "mosaic-two"))
    print(f"fashion-mosaic mAP, 1 process vs 2: train {one['train']:.4f} vs {two['train']:.4f}, "
          f"saat {one['saat']:.4f} vs {two['saat']:.4f}")
    assert abs(one["train"] - two["train"]) <= 0.02 and abs(one["saat"] - two["saat"]) <= 0.02
    assert one["train"] > 0.5  # a trained model, far above the random ranking (0.37)


if __name__ == "__main__":
    (_mosaic if sys.argv[1].startswith("mosaic") else _worker)(sys.argv[1], Path(sys.argv[2]))
