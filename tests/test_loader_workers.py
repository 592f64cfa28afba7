"""The input pipeline (docs/data.md#the-input-pipeline): worker processes decode image files, by default min(8,
usable CPUs) divided by the processes torchrun runs per machine for file splits and none for in-memory splits;
batches bound for CUDA are pinned; workers are seeded from (seed, epoch, worker id); results (codes, trained
weights, ProS-GAN's batches) are the same for every worker count."""

from __future__ import annotations

import argparse
import dataclasses
import functools
import os
import random

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset, Subset

import saat
import saat.attacks.prosgan as prosgan
from saat.attacks import AttackContext
from saat.attacks._prosgan_nets import ProSDiscriminator, ProSGenerator, PrototypeNet
from saat.checkpoint import load_model_file
from saat.cli import build_parser
from saat.config import TrainConfig
from saat.data import EpochShuffleSampler, FileSplit, FirstItems, FloatTensorSplit, TensorSplit, load_dataset
from saat.data import loader as loader_module
from saat.data.loader import (
    SeedWorker,
    make_loader,
    pin_memory_for,
    resolve_num_workers,
    set_loader_epoch,
    usable_cpus,
)
from saat.models import HashModel
from saat.pipelines.attack import AttackConfig
from saat.pipelines.common import encode_split
from saat.pipelines.defend import DefenseConfig
from saat.pipelines.loop import training_loader
from saat.pipelines.robustness import RobustnessConfig
from saat.utils.dist import batch_shard_range
from saat.utils.rng import derive_seed
from test_data import make_dataset

SIZES = {"train": 24, "query": 6, "database": 30}


@pytest.fixture
def file_folder(tmp_path):
    """A dataset folder in the paired format: solid-colour PNG files and their lists (tests/test_data.py's helper)."""
    root = tmp_path / "toy"
    make_dataset(root, "paired", n_classes=3, sizes=SIZES)
    return root


@pytest.fixture
def file_ds(file_folder):
    return load_dataset(dataset_dir=file_folder, image_size=16, verbose=False)


@pytest.fixture
def decoding_pids(tmp_path, monkeypatch):
    """The ids of the processes that decode images: FileSplit.load_image appends its pid to a file (forked workers
    inherit the patch), so a test can tell decoding in workers from decoding in this process."""
    path = tmp_path / "decoding-pids.txt"
    real = FileSplit.load_image

    def load_image(self, i):
        with open(path, "a") as f:
            f.write(f"{os.getpid()}\n")
        return real(self, i)

    monkeypatch.setattr(FileSplit, "load_image", load_image)

    def read():
        pids = set(map(int, path.read_text().split())) if path.is_file() else set()
        path.unlink(missing_ok=True)
        return pids

    return read


def in_memory_split(n=10):
    images = torch.randint(0, 256, (n, 3, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    return TensorSplit("train", images, torch.eye(2)[torch.arange(n) % 2])


# ---------------------------------------------------------------------------------------------- the default rule

def test_auto_workers_for_files_divided_by_local_processes_none_in_memory_and_explicit_wins(file_ds, monkeypatch):
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    files, memory = file_ds.database, in_memory_split()
    monkeypatch.setattr(loader_module, "usable_cpus", lambda: 16)
    assert resolve_num_workers(files) == 8  # capped at 8
    for wrapped in (FirstItems(files, 5), Subset(files, [0, 1, 2])):  # what the pipelines wrap splits in
        assert resolve_num_workers(wrapped) == 8
    assert resolve_num_workers(memory) == 0
    assert resolve_num_workers(FirstItems(memory, 4)) == 0
    monkeypatch.setattr(loader_module, "usable_cpus", lambda: 3)
    assert resolve_num_workers(files) == 3
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")  # torchrun with 2 processes on this machine
    monkeypatch.setenv("WORLD_SIZE", "4")
    assert resolve_num_workers(files) == 1  # 3 // 2
    monkeypatch.setattr(loader_module, "usable_cpus", lambda: 16)
    assert resolve_num_workers(files) == 4  # 8 // 2
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "16")
    assert resolve_num_workers(files) == 1  # at least one for files
    assert resolve_num_workers(memory) == 0
    monkeypatch.delenv("LOCAL_WORLD_SIZE")
    assert resolve_num_workers(files) == 2  # no LOCAL_WORLD_SIZE: the world size, 8 // 4
    # An explicit count wins, 0 included, for either kind of split.
    assert resolve_num_workers(files, 0) == 0 and resolve_num_workers(files, 11) == 11
    assert resolve_num_workers(memory, 3) == 3
    # The default never starts more workers than the loader has batches; an explicit count is taken as given.
    assert resolve_num_workers(files, batches=2) == 2 and resolve_num_workers(files, 5, batches=2) == 5
    for bad in (-1, 1.5, True, "2"):
        with pytest.raises(ValueError, match=r"^num_workers must be a non-negative integer .*got") as err:
            resolve_num_workers(files, bad)
        assert "\n" not in str(err.value)


def test_usable_cpus_is_the_affinity_mask_where_there_is_one():
    if hasattr(os, "sched_getaffinity"):
        assert usable_cpus() == len(os.sched_getaffinity(0))
    else:
        assert usable_cpus() == (os.cpu_count() or 1)


def test_every_loader_of_the_pipelines_takes_the_rule(file_ds, monkeypatch):
    """make_loader applies resolve_num_workers, so the training loop's loader (and every other caller's) gets
    workers for a file split by default and none in memory; an explicit count, 0 included, is kept."""
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.setattr(loader_module, "usable_cpus", lambda: 2)
    assert training_loader(file_ds.train, 4, seed=0, epoch=0).num_workers == 2
    assert training_loader(file_ds.train, 4, seed=0, epoch=0, num_workers=0).num_workers == 0
    assert training_loader(in_memory_split(), 4, seed=0, epoch=0).num_workers == 0
    assert make_loader(file_ds.query, 6).num_workers == 1  # 6 items: one batch, one worker
    assert make_loader(file_ds.query, 6, num_workers=2).num_workers == 2
    with pytest.raises(ValueError, match="^num_workers must be a non-negative integer"):
        make_loader(file_ds.query, 4, num_workers=-2)


def test_settings_default_to_auto_and_the_worker_count_is_no_setting_of_a_result():
    assert TrainConfig().num_workers is None and DefenseConfig().num_workers is None
    # A result's identity (attack settings key, robustness card settings) is built from these dataclasses: the
    # worker count is passed beside them, as the device is.
    for cls in (AttackConfig, RobustnessConfig):
        assert "num_workers" not in {f.name for f in dataclasses.fields(cls)}
    parser = build_parser()
    commands = next(a for a in parser._actions if a.dest == "command").choices
    for name in ("train", "defend", "attack", "evaluate", "robustness", "transfer"):
        action = next((a for a in commands[name]._actions if a.dest == "num_workers"), None)
        assert action is not None, f"saat {name} has no --num-workers"
        assert action.default is None and "min(8, usable CPUs)" in action.help and "0 for" in action.help
    args = parser.parse_args(["attack", "RUN", "--num-workers", "0"])
    assert isinstance(args, argparse.Namespace) and args.num_workers == 0


# ------------------------------------------------------------------------------------------------- pinned memory

def test_pin_memory_only_for_cuda():
    assert pin_memory_for("cuda") and pin_memory_for(torch.device("cuda", 1)) and pin_memory_for("cuda:0")
    for device in (None, "cpu", torch.device("cpu"), "mps", "meta"):
        assert not pin_memory_for(device)
    split = in_memory_split()
    assert make_loader(split, 4, device="cuda").pin_memory  # not iterated: no GPU here
    assert not make_loader(split, 4, device="cpu").pin_memory and not make_loader(split, 4).pin_memory
    # Images already on an accelerator (a user's tensors) are not pinned (meta stands in for a GPU here).
    on_device = FloatTensorSplit("train", torch.empty(4, 3, 8, 8, device="meta"), torch.eye(2)[[0, 1, 0, 1]])
    assert not make_loader(on_device, 2, device="cuda").pin_memory
    assert not make_loader(FirstItems(on_device, 2), 2, device="cuda").pin_memory


# ------------------------------------------------------------------------------------------- seeded worker init

def draws():
    return torch.rand(3).tolist(), np.random.rand(3).tolist(), [random.random() for _ in range(3)]


def test_seed_worker_seeds_torch_numpy_and_random_per_seed_epoch_and_worker():
    def seeded(seed, epoch, worker):
        with torch.random.fork_rng(devices=[]):
            np_state, py_state = np.random.get_state(), random.getstate()
            try:
                SeedWorker(seed, epoch)(worker)
                assert torch.initial_seed() == derive_seed(seed, "loader-worker", epoch, worker)
                return draws()
            finally:
                np.random.set_state(np_state)
                random.setstate(py_state)

    base = seeded(5, 2, 1)
    assert seeded(5, 2, 1) == base
    for other in (seeded(5, 2, 0), seeded(5, 3, 1), seeded(6, 2, 1)):
        for a, b in zip(other, base):  # torch, NumPy and random each change
            assert a != b


class RandomDraws(Dataset):
    """Each batch: the worker's id and draws from its torch, NumPy and random generators."""

    def __len__(self):
        return 8

    def __getitems__(self, indices):
        from torch.utils.data import get_worker_info

        info = get_worker_info()
        return (info.id if info is not None else -1, *draws())


def worker_draws(loader):
    return [tuple(batch) for batch in loader]


def test_workers_draw_from_their_seeded_generators_and_the_main_process_generator_is_untouched():
    state = torch.get_rng_state()
    first = worker_draws(make_loader(RandomDraws(), 2, num_workers=2, seed=7, epoch=1))
    assert torch.equal(torch.get_rng_state(), state)
    assert [b[0] for b in first] == [0, 1, 0, 1]  # in order, round robin
    assert worker_draws(make_loader(RandomDraws(), 2, num_workers=2, seed=7, epoch=1)) == first
    worker0 = torch.Generator().manual_seed(derive_seed(7, "loader-worker", 1, 0))
    assert first[0][1] == torch.rand(3, generator=worker0).tolist()
    assert first[0][2] == np.random.RandomState(derive_seed(7, "loader-worker", 1, 0) % 2**32).rand(3).tolist()
    other_epoch = worker_draws(make_loader(RandomDraws(), 2, num_workers=2, seed=7, epoch=2))
    assert all(a[1] != b[1] and a[2] != b[2] and a[3] != b[3] for a, b in zip(first, other_epoch))
    moved = make_loader(RandomDraws(), 2, num_workers=2, seed=7, epoch=1)
    set_loader_epoch(moved, 2)  # the worker seeds follow the epoch, as the order does
    assert worker_draws(moved) == other_epoch


# ---------------------------------------------------------------------------- the same results for every count

def test_encode_split_gives_identical_codes_with_0_and_2_workers(file_ds, decoding_pids):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = HashModel("small_cnn", 8).eval()
    split = file_ds.database
    codes = encode_split(model, split, batch_size=4, device=torch.device("cpu"), progress=False, num_workers=0)
    assert decoding_pids() == {os.getpid()}
    with_workers = encode_split(model, split, batch_size=4, device=torch.device("cpu"), progress=False,
                                num_workers=2)
    pids = decoding_pids()
    assert len(pids) == 2 and os.getpid() not in pids  # decoded by the two workers only
    assert codes.shape == (len(split), 8) and torch.equal(codes, with_workers)
    assert len(set(map(tuple, codes.tolist()))) > 1  # not a constant model
    cont = [encode_split(model, split, batch_size=4, device=torch.device("cpu"), progress=False, num_workers=n,
                         continuous=True) for n in (0, 2)]
    assert torch.equal(*cont)
    # A torchrun shard (rank 1 of 2: whole batches from the middle of the split) reads the same with workers.
    shard = batch_shard_range(len(split), 4, rank_=1, world=2)
    shards = [torch.cat([idx for _, _, idx in make_loader(split, 4, sampler=shard, num_workers=n)]) for n in (0, 2)]
    assert shards[0].tolist() == list(shard) and torch.equal(*shards)


def test_training_ends_with_identical_weights_with_0_and_2_workers(file_folder, tmp_path, decoding_pids):
    settings = {"dataset_dir": str(file_folder), "backbone": "small_cnn", "bits": 8, "image_size": 16,
                "epochs": 2, "batch_size": 8, "optimizer": "adam", "lr": 1e-2, "weight_decay": 0.0,
                "method": "dpsh", "device": "cpu", "evaluate": False, "progress": False}
    saat.train(out=tmp_path / "w0", num_workers=0, **settings)
    assert decoding_pids() == {os.getpid()}
    saat.train(out=tmp_path / "w2", num_workers=2, **settings)
    pids = decoding_pids()
    assert len(pids) >= 2 and os.getpid() not in pids  # every batch decoded by the workers (fresh ones per epoch)
    a, b = (load_model_file(tmp_path / name / "model.pt") for name in ("w0", "w2"))
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for key in a["state_dict"]:
        assert torch.equal(a["state_dict"][key], b["state_dict"][key]), key
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)  # the run seed: the initial weights of both runs
        initial = HashModel("small_cnn", 8).state_dict()
    moved = [k for k in initial if k in a["state_dict"] and not torch.equal(initial[k], a["state_dict"][k])]
    assert moved  # training changed the weights, so equal weights mean equal batches
    assert a["metadata"]["training"]["num_workers"] == 0 and b["metadata"]["training"]["num_workers"] == 2


def test_an_undecodable_image_read_by_a_worker_fails_with_its_one_line_message(file_folder):
    (file_folder / "images" / "database" / "5.png").write_bytes(b"this is not a png")
    ds = load_dataset(dataset_dir=file_folder, image_size=16, verbose=False)
    with pytest.raises(ValueError) as err:
        list(make_loader(ds.database, 4, num_workers=2))
    message = str(err.value)
    assert message.startswith("cannot decode image ") and "images/database/5.png" in message
    assert "(listed in " in message and "line 6)" in message and "\n" not in message and "Caught" not in message


# --------------------------------------------------------------------------------------------------- ProS-GAN

@pytest.fixture
def narrow_prosgan(monkeypatch):
    """ProS-GAN's networks at a fraction of the paper's widths (as tests/test_prosgan.py does)."""
    monkeypatch.setattr(prosgan, "PrototypeNet", functools.partial(PrototypeNet, hidden=64))
    monkeypatch.setattr(prosgan, "ProSGenerator", functools.partial(ProSGenerator, width=8, label_channels=16))
    monkeypatch.setattr(prosgan, "ProSDiscriminator", functools.partial(ProSDiscriminator, width=4))


def test_prosgan_reads_the_same_batches_in_the_same_order_through_workers_and_after_a_resume(
        file_ds, narrow_prosgan, monkeypatch, decoding_pids, tmp_path):
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.setattr(loader_module, "usable_cpus", lambda: 2)  # the default: two workers for the file split
    split, seed = file_ds.train, 3
    n, batch, per_epoch = len(split), 5, 2  # gan_steps_per_epoch 2: less than a full pass (5 batches)
    settings = {"proto_steps": 1, "proto_batch": 8, "gan_epochs": 2, "gan_batch": batch,
                "gan_steps_per_epoch": per_epoch, "proto_checkpoint_every": 1, "gan_checkpoint_every": 1}
    seen = []

    def recording(nets, opts, x, y, target, step):  # the batch a step gets; no GAN step (tests/test_prosgan.py)
        seen.append((step, x.clone(), y.clone()))
        return {k: torch.zeros(()) for k in ("g_loss", "hash_loss", "reconstruction", "adv_loss")}

    monkeypatch.setattr(prosgan, "gan_step", recording)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = HashModel("small_cnn", 8).eval()
    codes = torch.where(torch.rand(n, 8, generator=torch.Generator().manual_seed(1)) < 0.5, 1.0, -1.0)

    def context(cache_dir=None):
        return AttackContext(model, torch.device("cpu"), codes, split.labels, codes, split.labels, seed=seed,
                             train_split=split, cache_dir=cache_dir, checkpoint_hash="tiny")

    # What train_gan fetched before it had a loader: order[b * batch:(b + 1) * batch] of each epoch's order.
    order = EpochShuffleSampler(n, derive_seed(seed, 5))  # stream 5 = prosgan._DATA_ORDER
    expected = []
    for step in range(2 * per_epoch):
        epoch, b = divmod(step, per_epoch)
        order.set_epoch(epoch)
        x, y, _ = split.__getitems__(list(order)[b * batch:(b + 1) * batch])
        expected.append((x.float() / 255, y))
    decoding_pids()

    whole = prosgan.ProSGANAttack(context(), targeted=True, **settings)
    assert len(decoding_pids() - {os.getpid()}) >= 2  # the generator's batches were decoded by workers
    assert [s for s, _, _ in seen] == list(range(2 * per_epoch))
    for (_, x, y), (want_x, want_y) in zip(seen, expected):
        assert torch.equal(x, want_x) and torch.equal(y, want_y)
    assert len(whole.training_log["generator"]) == 2  # both epochs ran

    # Interrupted in step 1 (a partial checkpoint after step 0, in the middle of epoch 0), then resumed: the loader
    # starts at batch 1 of epoch 0, and the steps see the batches an uninterrupted run sees.
    def interrupting(nets, opts, x, y, target, step):
        if step == 1:
            raise KeyboardInterrupt("simulated interruption")
        return recording(nets, opts, x, y, target, step)

    with monkeypatch.context() as mp, pytest.raises(KeyboardInterrupt):
        mp.setattr(prosgan, "gan_step", interrupting)
        prosgan.ProSGANAttack(context(tmp_path / "cache"), targeted=True, **settings)
    seen.clear()
    prosgan.ProSGANAttack(context(tmp_path / "cache"), targeted=True, **settings)
    assert [s for s, _, _ in seen] == list(range(1, 2 * per_epoch))
    for (_, x, y), (want_x, want_y) in zip(seen, expected[1:]):
        assert torch.equal(x, want_x) and torch.equal(y, want_y)
