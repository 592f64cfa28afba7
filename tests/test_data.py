"""saat.data: on-disk formats and their error messages, the catalog, the shipped demo sets, loaders, CIFAR-10."""

from __future__ import annotations

import dataclasses
import json
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from saat.data import (
    DATASETS,
    list_datasets,
    load_dataset,
    load_fashion_subset,
    make_loader,
    resize_batch,
    resolve_name,
)
from saat.data import demo as demo_module
from saat.data.loader import set_loader_epoch
from saat.pipelines.common import random_baseline

LIST_NAME = {"train": "train", "query": "test", "database": "database"}
SIZES = {"train": 4, "query": 2, "database": 5}


# --- helpers: tiny real datasets on disk -------------------------------------------------------------------------

def color_of(k: int) -> tuple[int, int, int]:
    return ((37 * k) % 256, (91 * k + 50) % 256, (13 * k + 100) % 256)


def make_dataset(root, fmt, n_classes=3, sizes=SIZES, image_root=None, ext="png"):
    """Write solid-colour images (non-square, 20x12) and the list files; return split -> (paths, labels, colours)."""
    image_root = image_root or root
    rng = np.random.default_rng(0)
    spec, k = {}, 0
    for split, n in sizes.items():
        rels, colors = [], []
        for i in range(n):
            rel = f"images/{split}/{i}.{ext}"
            (image_root / rel).parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (20, 12), color_of(k)).save(image_root / rel)
            rels.append(rel)
            colors.append(color_of(k))
            k += 1
        labels = rng.integers(0, 2, (n, n_classes))
        labels[0] = 1  # at least one multi-label row
        spec[split] = (rels, labels, colors)
    write_lists(root, fmt, spec)
    return spec


def write_lists(root, fmt, spec):
    root.mkdir(parents=True, exist_ok=True)
    for split, (rels, labels, _) in spec.items():
        rows = [" ".join(map(str, row)) for row in labels]
        if fmt == "paired":
            (root / f"{LIST_NAME[split]}_img.txt").write_text("\n".join(map(str, rels)) + "\n")
            (root / f"{LIST_NAME[split]}_label.txt").write_text("\n".join(rows) + "\n")
        else:
            lines = [f"{rel} {row}" for rel, row in zip(rels, rows)]
            (root / f"{LIST_NAME[split]}.txt").write_text("\n".join(lines) + "\n")


def load_quiet(**kwargs):
    return load_dataset(verbose=False, **kwargs)


# --- on-disk formats -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["paired", "list"])
def test_dataset_folder_loads_paths_labels_and_pixels(tmp_path, fmt):
    root = tmp_path / "toy"
    spec = make_dataset(root, fmt)
    ds = load_quiet(dataset_dir=root, image_size=16)
    assert ds.name == "toy" and ds.info["format"] == fmt and ds.n_classes == 3 and ds.multi_label
    assert ds.image_size == 16 and ds.default_topk == 5000
    for split, (rels, labels, colors) in spec.items():
        s = ds.splits[split]
        assert len(s) == len(rels)
        assert s.paths == [str(root / r) for r in rels]
        assert torch.equal(s.labels, torch.tensor(labels, dtype=torch.float32))
        x, y, idx = s.__getitems__(list(range(len(s))))
        assert x.dtype == torch.uint8 and x.shape == (len(s), 3, 16, 16)
        assert idx.tolist() == list(range(len(s))) and torch.equal(y, s.labels)
        expected = torch.tensor(colors, dtype=torch.int16)[:, :, None, None]
        assert (x.to(torch.int16) - expected).abs().max() <= 1  # solid colours survive resize + crop
        item = s[len(s) - 1]
        assert torch.equal(item[0], x[-1]) and item[2] == len(s) - 1
    json.dumps(ds.info)


def test_list_format_with_separate_image_root_and_absolute_paths(tmp_path):
    root, images = tmp_path / "lists", tmp_path / "pictures"
    spec = make_dataset(root, "list", image_root=images, ext="jpg")
    rels, _, colors = spec["database"]
    expected_paths = [str(images / r) for r in rels]
    rels[0] = str(images / rels[0])  # absolute paths are allowed
    write_lists(root, "list", spec)
    ds = load_quiet(dataset_dir=root, image_root=images)
    assert ds.image_size == 224  # file datasets: Resize(256) + CenterCrop(224)
    assert ds.database.paths == expected_paths
    x, _, _ = ds.database[0]
    assert x.shape == (3, 224, 224)
    assert (x.to(torch.int16) - torch.tensor(colors[0])[:, None, None]).abs().max() <= 3  # JPEG is lossy


def test_counts_line_is_printed(tmp_path, capsys):
    make_dataset(tmp_path / "toy", "paired")
    load_dataset(dataset_dir=tmp_path / "toy")
    assert "toy: train 4 · query 2 · database 5 · 3 classes" in capsys.readouterr().err


def test_both_formats_are_detected_and_give_the_same_data(tmp_path):
    make_dataset(tmp_path / "a", "paired")
    make_dataset(tmp_path / "b", "list")
    a, b = load_quiet(dataset_dir=tmp_path / "a"), load_quiet(dataset_dir=tmp_path / "b")
    assert (a.info["format"], b.info["format"]) == ("paired", "list")
    for split in ("train", "query", "database"):
        assert torch.equal(a.splits[split].labels, b.splits[split].labels)


# --- bad input: each message names the file and the line ------------------------------------------------------

def test_missing_list_file_names_it_and_the_needed_files(tmp_path):
    root = tmp_path / "toy"
    make_dataset(root, "paired")
    (root / "database_label.txt").unlink()
    with pytest.raises(FileNotFoundError, match=r"missing database_label\.txt.*train_img\.txt.*train\.txt"):
        load_quiet(dataset_dir=root)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match=r"no dataset list files in .*empty.*test_label\.txt.*database\.txt"):
        load_quiet(dataset_dir=empty)


def test_label_row_width_mismatch(tmp_path):
    root = tmp_path / "toy"
    make_dataset(root, "paired")
    (root / "database_label.txt").write_text("1 0 1\n0 0 1\n\n1 1\n0 0 0\n1 0 0\n")  # blank line 3 still counts
    with pytest.raises(ValueError, match=r"database_label\.txt, line 4: expected 3 label values .*train_label\.txt "
                                         r"line 1.*got 2"):
        load_quiet(dataset_dir=root)


def test_first_row_fixes_the_class_count(tmp_path):
    root = tmp_path / "toy"
    make_dataset(root, "list", n_classes=4)
    lines = (root / "test.txt").read_text().splitlines()
    lines[1] = lines[1] + " 0"  # 5 values where the first train row had 4
    (root / "test.txt").write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"test\.txt, line 2: expected 4 label values.*got 5"):
        load_quiet(dataset_dir=root)


@pytest.mark.parametrize("token, message", [("2", "expected a label value 0 or 1, got '2'"),
                                            ("-1", "expected a label value 0 or 1, got '-1'"),
                                            ("x", "expected an integer 0 or 1, got 'x'"),
                                            ("0.5", "expected an integer 0 or 1, got '0.5'")])
def test_bad_label_values(tmp_path, token, message):
    root = tmp_path / "toy"
    make_dataset(root, "paired")
    (root / "train_label.txt").write_text(f"1 0 1\n0 {token} 1\n1 1 0\n0 0 1\n")
    with pytest.raises(ValueError, match=rf"train_label\.txt, line 2, column 2: {message}"):
        load_quiet(dataset_dir=root)


def test_bad_label_value_in_list_format_counts_the_path_column(tmp_path):
    root = tmp_path / "toy"
    make_dataset(root, "list")
    lines = (root / "database.txt").read_text().splitlines()
    lines[2] = lines[2].rsplit(" ", 1)[0] + " 7"
    (root / "database.txt").write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"database\.txt, line 3, column 4: expected a label value 0 or 1, got '7'"):
        load_quiet(dataset_dir=root)


def test_empty_split(tmp_path):
    root = tmp_path / "toy"
    make_dataset(root, "paired")
    (root / "test_img.txt").write_text("\n  \n")
    (root / "test_label.txt").write_text("")
    with pytest.raises(ValueError, match=r"test_img\.txt: no entries; the query split needs at least one image"):
        load_quiet(dataset_dir=root)


def test_image_and_label_line_counts_differ(tmp_path):
    root = tmp_path / "toy"
    make_dataset(root, "paired")
    (root / "train_label.txt").write_text("1 0 1\n0 0 1\n1 1 0\n")  # 3 rows for 4 images
    with pytest.raises(ValueError, match=r"train_img\.txt has 4 image lines but .*train_label\.txt has 3 label rows"):
        load_quiet(dataset_dir=root)


@pytest.mark.parametrize("fmt, list_file", [("paired", "database_img.txt"), ("list", "database.txt")])
def test_listed_image_missing(tmp_path, fmt, list_file):
    root = tmp_path / "toy"
    make_dataset(root, fmt)
    (root / "images" / "database" / "3.png").unlink()
    with pytest.raises(FileNotFoundError, match=rf"{list_file}, line 4: image not found: .*images/database/3\.png"):
        load_quiet(dataset_dir=root)


def test_undecodable_image_fails_with_its_path_when_read(tmp_path):
    root = tmp_path / "toy"
    make_dataset(root, "paired")
    (root / "images" / "query" / "1.png").write_bytes(b"this is not a png")
    ds = load_quiet(dataset_dir=root)  # decoding is lazy
    ds.query[0]
    with pytest.raises(ValueError, match=r"cannot decode image .*images/query/1\.png \(listed in .*test_img\.txt, "
                                         r"line 2\)") as err:
        ds.query[1]
    assert err.value.__cause__ is None and err.value.__suppress_context__  # no PIL traceback chained


# --- the catalog ---------------------------------------------------------------------------------------------------

def test_catalog_lists_every_dataset_and_resolves_aliases():
    names = list_datasets()
    assert set(names) == {"fashion-mosaic", "fashion-mnist", "FLICKR-25K", "FLICKR-25K-24", "NUS-WIDE",
                          "NUS-WIDE-81", "ImageNet-100", "MS-COCO", "CIFAR-10"}
    assert set(DATASETS) == set(names)
    assert DATASETS["NUS-WIDE"].n_classes == 21 and DATASETS["MS-COCO"].expected_sizes["database"] == 117218
    assert load_quiet(name="Fashion_MNIST").name == "fashion-mnist"
    assert DATASETS["ImageNet-100"].default_topk == 1000 and DATASETS["ImageNet-100"].n_classes == 100
    assert resolve_name("nuswide_81") == "NUS-WIDE-81"
    with pytest.raises(ValueError, match="unknown dataset 'imagenet-1k'.*FLICKR-25K.*--dataset-dir FOLDER without"):
        load_quiet(name="imagenet-1k")


def test_catalog_dataset_found_under_data_root_in_either_format_warns_on_sizes(tmp_path):
    make_dataset(tmp_path / "flickr25k", "list", n_classes=38)
    with pytest.warns(UserWarning, match=r"FLICKR-25K .*split sizes differ from the standard protocol: "
                                          r"train 4 \(standard 5,000\), query 2 \(standard 1,700\), database 5"):
        ds = load_quiet(name="flickr-25k", data_root=tmp_path)
    assert ds.name == "FLICKR-25K" and ds.n_classes == 38 and ds.default_topk == 5000 and ds.multi_label


def test_catalog_dataset_with_wrong_class_count_fails(tmp_path):
    make_dataset(tmp_path / "coco", "paired", n_classes=3)
    with pytest.raises(ValueError, match=r"coco/train_label\.txt, line 1: expected 80 label values \(MS-COCO has 80 "
                                         r"classes\), got 3"):
        load_quiet(name="MS-COCO", dataset_dir=tmp_path / "coco")


def test_catalog_dataset_not_found_says_where_it_looked(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"NUS-WIDE: no dataset list files found \(looked in .*nus-wide"):
        load_quiet(name="NUS-WIDE", data_root=tmp_path)


@pytest.mark.parametrize("kwargs, message", [({"image_size": 0}, "image_size"), ({"seed": -1}, "seed"),
                                             ({"split_seed": 1.5}, "split_seed"), ({}, "dataset_dir")])
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        load_quiet(name=None if not kwargs else "fashion-mnist", **kwargs)


# --- the shipped demo data -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def fashion():
    return load_quiet(name="fashion-mnist")


@pytest.fixture(scope="module")
def mosaic():
    return load_quiet(name="fashion-mosaic")


def test_shipped_subset_matches_its_provenance():
    images, labels, provenance = load_fashion_subset()
    assert images.shape == (10000, 28, 28) and images.dtype == np.uint8
    assert np.bincount(labels).tolist() == [1000] * 10
    assert provenance["licence"] == "MIT, Copyright (c) 2017 Zalando SE"
    assert provenance["counts"]["per_class"] == [1000] * 10
    assert demo_module.asset_bytes(demo_module.SUBSET_FILE).__len__() <= 5 * 1024 * 1024


def test_tampered_subset_fails_its_checksum(monkeypatch):
    real = demo_module.asset_bytes
    tampered = bytearray(real(demo_module.SUBSET_FILE))
    tampered[-100] ^= 0xFF
    monkeypatch.setattr(demo_module, "asset_bytes",
                        lambda name: bytes(tampered) if name == demo_module.SUBSET_FILE else real(name))
    demo_module._subset.cache_clear()
    try:
        with pytest.raises(ValueError, match=r"fashion_mnist_subset\.npz is corrupt or out of date: its sha256"):
            load_quiet(name="fashion-mnist")
    finally:
        demo_module._subset.cache_clear()


def test_fashion_mnist_protocol(fashion):
    images, labels, _ = load_fashion_subset()
    assert fashion.sizes() == {"train": 3000, "query": 1000, "database": 9000}
    assert not fashion.multi_label and fashion.image_size == 28 and fashion.default_topk == 1000
    for split in fashion.splits.values():
        assert torch.equal(split.labels.sum(1), torch.ones(len(split)))  # one-hot
    assert fashion.query.labels.sum(0).tolist() == [100.0] * 10
    assert fashion.train.labels.sum(0).tolist() == [300.0] * 10
    q, d, t = (set(s.item_ids.tolist()) for s in (fashion.query, fashion.database, fashion.train))
    assert not q & d and len(q | d) == 10000 and t <= d
    x, y, idx = fashion.database.__getitems__([0, 5, 8999])
    assert x.shape == (3, 3, 28, 28) and x.dtype == torch.uint8
    rows = fashion.database.item_ids[idx].numpy()
    assert torch.equal(x, torch.from_numpy(images[rows])[:, None].expand(-1, 3, -1, -1))  # grey -> 3 channels
    assert y.argmax(1).tolist() == labels[rows].tolist()
    assert 0.09 < random_baseline(fashion) < 0.12 and 0.09 < random_baseline(fashion, None) < 0.12


def test_fashion_mosaic_protocol(mosaic):
    images, labels, _ = load_fashion_subset()
    assert mosaic.sizes() == {"train": 3000, "query": 500, "database": 8000}
    assert mosaic.multi_label and mosaic.image_size == 56 and mosaic.n_classes == 10
    for split in mosaic.splits.values():
        src = split.sources.numpy()
        n_items = (src >= 0).sum(1)
        assert set(n_items.tolist()) == {1, 2, 3}
        expected = np.zeros((len(split), 10), np.float32)  # the label is the union of the cells' classes
        for cell in range(4):
            used = src[:, cell] >= 0
            expected[np.flatnonzero(used), labels[src[used, cell]]] = 1
        assert np.array_equal(split.labels.numpy(), expected)
        assert np.array_equal(expected.sum(1), n_items)  # distinct classes: k items, k labels
    counts = (mosaic.database.sources >= 0).sum(1)
    assert all(abs(float((counts == k).float().mean()) - 1 / 3) < 0.03 for k in (1, 2, 3))
    x, _, _ = mosaic.query.__getitems__(list(range(20)))  # pixels: each cell is its source image or black
    src = mosaic.query.sources[:20]
    for cell in range(4):
        top, left = (cell // 2) * 28, (cell % 2) * 28
        for i in range(20):
            patch = x[i, :, top:top + 28, left:left + 28]
            want = torch.zeros(28, 28, dtype=torch.uint8) if src[i, cell] < 0 else torch.tensor(
                images[src[i, cell]])
            assert torch.equal(patch, want.expand(3, -1, -1))
    q_src = set(mosaic.query.sources.flatten().tolist()) - {-1}
    d_src = set(mosaic.database.sources.flatten().tolist()) - {-1}
    assert q_src and d_src and not q_src & d_src  # no source image on both sides
    assert set(mosaic.train.item_ids.tolist()) <= set(mosaic.database.item_ids.tolist())
    assert not set(mosaic.query.item_ids.tolist()) & set(mosaic.database.item_ids.tolist())
    assert 0.33 < random_baseline(mosaic) < 0.43 and 0.33 < random_baseline(mosaic, None) < 0.43
    json.dumps(mosaic.info)
    assert mosaic.info["split_seed"] == demo_module.DEMO_SPLIT_SEED


def test_demo_sets_are_deterministic_and_ignore_the_run_seed(mosaic):
    again = load_quiet(name="fashion-mosaic", seed=7)
    for split in ("train", "query", "database"):
        a, b = mosaic.splits[split], again.splits[split]
        assert torch.equal(a.labels, b.labels) and torch.equal(a.sources, b.sources)
        assert torch.equal(a.__getitems__(range(len(a)))[0], b.__getitems__(range(len(b)))[0])
    other = load_quiet(name="fashion-mosaic", split_seed=1)
    assert not torch.equal(other.query.sources, mosaic.query.sources)


def test_resize_to_64(mosaic, fashion, tmp_path):
    big = load_quiet(name="fashion-mosaic", image_size=64)
    x, y, idx = big.query[3]
    assert x.shape == (3, 64, 64) and x.dtype == torch.uint8 and big.image_size == 64
    assert big.train.__getitems__([0, 1])[0].shape == (2, 3, 64, 64)
    small = load_quiet(name="fashion-mnist", image_size=64)
    assert small.database[0][0].shape == (3, 64, 64)
    make_dataset(tmp_path / "toy", "paired")
    assert load_quiet(dataset_dir=tmp_path / "toy", image_size=64).train[0][0].shape == (3, 64, 64)


def test_batch_resize_matches_torchvision_reference_recipe():
    from torchvision.transforms import functional as TF

    x = torch.randint(0, 256, (4, 1, 28, 28), dtype=torch.uint8)
    want = TF.center_crop(TF.resize(x.float(), [73], antialias=True), [64]).round().clamp(0, 255).to(torch.uint8)
    assert torch.equal(resize_batch(x, 64), want)  # 73 = round(64 * 256 / 224)
    assert torch.equal(resize_batch(torch.full((1, 3, 32, 32), 77, dtype=torch.uint8), 20),
                       torch.full((1, 3, 20, 20), 77, dtype=torch.uint8))


# --- loaders ---------------------------------------------------------------------------------------------------------

def order(loader):
    return torch.cat([idx for _, _, idx in loader]).tolist()


def test_loader_batches_and_shuffling_are_reproducible_per_seed_and_epoch(fashion):
    split = fashion.train
    rng_state = torch.get_rng_state()
    a = make_loader(split, 256, shuffle=True, seed=3, epoch=0)
    first = order(a)
    assert torch.equal(torch.get_rng_state(), rng_state)  # the global RNG is untouched
    assert sorted(first) == list(range(len(split))) and first != list(range(len(split)))
    assert first == order(a) == order(make_loader(split, 256, shuffle=True, seed=3, epoch=0))
    second = order(make_loader(split, 256, shuffle=True, seed=3, epoch=1))
    assert second != first and sorted(second) == sorted(first)
    assert order(make_loader(split, 256, shuffle=True, seed=4, epoch=0)) != first
    set_loader_epoch(a, 1)
    assert order(a) == second
    assert order(make_loader(split, 256)) == list(range(len(split)))


def test_loader_yields_uint8_batches_from_getitems(fashion):
    loader = make_loader(fashion.query, 300, drop_last=True)
    batches = list(loader)
    assert len(batches) == 3
    x, y, idx = batches[1]
    assert x.dtype == torch.uint8 and x.shape == (300, 3, 28, 28)
    assert y.dtype == torch.float32 and y.shape == (300, 10) and idx.dtype == torch.int64
    want = fashion.query.__getitems__(list(range(300, 600)))
    assert all(torch.equal(a, b) for a, b in zip((x, y, idx), want))


def test_loader_with_a_worker_and_with_a_distributed_sampler(fashion):
    from torch.utils.data import DistributedSampler

    split = fashion.query
    assert order(make_loader(split, 128, shuffle=True, seed=1, num_workers=1)) == order(
        make_loader(split, 128, shuffle=True, seed=1))
    sampler = DistributedSampler(split, num_replicas=2, rank=0, shuffle=True, seed=0)
    part = order(make_loader(split, 100, sampler=sampler, epoch=2))
    assert len(part) == 500 and sampler.epoch == 2
    assert part == order(make_loader(split, 100, sampler=sampler, epoch=2))


# --- CIFAR-10 from a fake torchvision folder -------------------------------------------------------------------------

def write_fake_cifar(root, per_class_per_batch=1):
    """torchvision's layout: cifar-10-batches-py/data_batch_1..5, test_batch, batches.meta (pickled dicts)."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    data, labels = [], []
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        lab = np.repeat(np.arange(10), per_class_per_batch)
        rng.shuffle(lab)
        img = rng.integers(0, 256, (len(lab), 3072), dtype=np.uint8)
        with open(folder / name, "wb") as fh:
            pickle.dump({b"batch_label": name.encode(), b"labels": lab.tolist(), b"data": img}, fh)
        data.append(img)
        labels.append(lab)
    names = [b"plane", b"car", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship", b"truck"]
    with open(folder / "batches.meta", "wb") as fh:
        pickle.dump({b"label_names": names, b"num_cases_per_batch": 10}, fh)
    return np.concatenate(data).reshape(-1, 3, 32, 32), np.concatenate(labels)


@pytest.fixture
def tiny_cifar_protocol(monkeypatch):
    spec = dataclasses.replace(DATASETS["CIFAR-10"], options={**DATASETS["CIFAR-10"].options,
                                                              "query_per_class": 2, "train_per_class": 3})
    monkeypatch.setitem(DATASETS, "CIFAR-10", spec)


def test_cifar10_from_torchvision_files(tmp_path, tiny_cifar_protocol):
    images, labels = write_fake_cifar(tmp_path)
    with pytest.warns(UserWarning, match=r"train 30 \(standard 5,000\), query 20 \(standard 1,000\)"):
        ds = load_quiet(name="cifar10", data_root=tmp_path, seed=5)
    assert ds.sizes() == {"train": 30, "query": 20, "database": 40}
    assert ds.image_size == 32 and not ds.multi_label and ds.default_topk == 5000
    assert ds.class_names[:2] == ["plane", "car"] and ds.info["split_seed"] == 5
    for split in ds.splits.values():
        x, y, idx = split.__getitems__(range(len(split)))
        rows = split.item_ids.numpy()
        assert torch.equal(x, torch.from_numpy(images[rows]))
        assert y.argmax(1).tolist() == labels[rows].tolist()
    assert ds.query.labels.sum(0).tolist() == [2.0] * 10 and ds.train.labels.sum(0).tolist() == [3.0] * 10
    q, d, t = (set(s.item_ids.tolist()) for s in (ds.query, ds.database, ds.train))
    assert not q & d and len(q | d) == 60 and t <= d
    with pytest.warns(UserWarning):
        same = load_quiet(name="CIFAR-10", data_root=tmp_path, seed=0, split_seed=5)
        other = load_quiet(name="CIFAR-10", data_root=tmp_path, seed=6)
    assert torch.equal(same.query.item_ids, ds.query.item_ids)
    assert not torch.equal(other.query.item_ids, ds.query.item_ids)
    with pytest.warns(UserWarning):
        assert load_quiet(name="CIFAR-10", data_root=tmp_path, image_size=64).query[0][0].shape == (3, 64, 64)


def test_cifar10_missing_files_say_where_and_how(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"CIFAR-10 files not found: .*data_batch_1.*cifar-10-batches-py.*"
                                                r"download=True \(--download"):
        load_quiet(name="CIFAR-10", data_root=tmp_path)


def test_cifar10_refuses_pickles_that_are_not_plain_arrays(tmp_path, tiny_cifar_protocol):
    write_fake_cifar(tmp_path)

    class Evil:
        def __reduce__(self):
            return (print, ("this must never run",))

    with open(tmp_path / "cifar-10-batches-py" / "test_batch", "wb") as fh:
        pickle.dump({b"data": Evil(), b"labels": []}, fh)
    with pytest.raises(ValueError, match=r"test_batch: not a CIFAR-10 batch file .*unexpected object builtins\.print"):
        load_quiet(name="CIFAR-10", data_root=tmp_path)


def test_queries_without_relevant_items_are_counted_warned_and_all_refused(tmp_path, capsys):
    from saat.config import TrainConfig
    from saat.pipelines.common import open_dataset, queries_without_relevant_items

    q = np.array([[1, 0, 0], [0, 0, 0], [0, 0, 1]])
    db = np.array([[1, 1, 0], [0, 1, 0]])
    assert queries_without_relevant_items(q, db) == 2  # all-zero row, and a class no database item has
    spec = make_dataset(tmp_path / "toy", "paired")
    spec["query"][1][1] = 0  # one all-zero query
    write_lists(tmp_path / "toy", "paired", spec)
    open_dataset(TrainConfig(dataset="", dataset_dir=str(tmp_path / "toy")), 16)
    assert "1 of 2 queries share no label with any database item" in capsys.readouterr().err
    spec["query"][1][:] = 0
    write_lists(tmp_path / "toy", "paired", spec)
    with pytest.raises(ValueError, match="none of the 2 queries shares a label with any database item"):
        open_dataset(TrainConfig(dataset="", dataset_dir=str(tmp_path / "toy")), 16)


def test_dataset_dir_alone_is_a_custom_dataset_and_conflicts_are_refused(tmp_path):
    from saat.config import TrainConfig, resolve_config
    from saat.pipelines.common import open_dataset

    make_dataset(tmp_path / "toy", "paired", n_classes=4)
    cfg = resolve_config(TrainConfig, {"dataset_dir": str(tmp_path / "toy")})
    assert cfg.dataset == "" and cfg.preset == "paper"  # not the default FLICKR-25K
    ds = open_dataset(cfg, 16, verbose=False)
    assert ds.n_classes == 4
    with pytest.raises(ValueError, match="do not apply to it"):
        load_quiet(name="fashion-mosaic", dataset_dir=tmp_path / "toy")


def test_list_format_paths_with_spaces(tmp_path):
    root = tmp_path / "toy"
    spec = make_dataset(root, "list")
    for split, (rels, _labels, _colors) in spec.items():  # move every image to a folder with spaces in its name
        for k, rel in enumerate(rels):
            new = f"my images/{split} {k}.png"
            (root / new).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).rename(root / new)
            rels[k] = new
    write_lists(root, "list", spec)
    ds = load_quiet(dataset_dir=root, image_size=16)
    assert ds.n_classes == 3 and len(ds.train) == SIZES["train"]
    np.testing.assert_array_equal(ds.query.labels.numpy(), spec["query"][1])


def test_an_unreadable_database_image_stops_training_before_it_starts(tmp_path, capsys):
    import saat

    root = tmp_path / "toy"
    make_dataset(root, "paired")
    (root / "images" / "database" / "3.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    (root / "images" / "database" / "4.png").write_bytes(b"not an image")
    ds = load_quiet(dataset_dir=root, image_size=16)
    ds.train.check_readable()
    with pytest.raises(ValueError, match=r"cannot read image .*database/3\.png \(listed in .*database_img\.txt, "
                                         r"line 4\).*1 more images of the database split are unreadable"):
        ds.database.check_readable()
    with pytest.raises(ValueError, match="cannot read image"):
        saat.train(dataset_dir=str(root), backbone="small_cnn", bits=8, epochs=1, out=tmp_path / "run",
                   progress=False, device="cpu")
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


def test_class_index_label_files_are_read_as_one_hot(tmp_path, capsys):
    root = tmp_path / "cifar-lists"
    spec = make_dataset(root, "paired", n_classes=3)
    rng = np.random.default_rng(1)
    indices = {}
    for split, (rels, _labels, _colors) in spec.items():
        indices[split] = rng.integers(0, 10, len(rels))
        indices[split][0] = 9 if split == "database" else indices[split][0]  # class 9 only in the database
        (root / f"{LIST_NAME[split]}_label.txt").write_text("\n".join(map(str, indices[split])) + "\n")
    ds = load_dataset(dataset_dir=root, image_size=16)
    assert "one class index per line; read as one-hot rows of 10 classes" in capsys.readouterr().err
    assert ds.n_classes == 10
    np.testing.assert_array_equal(ds.query.labels.numpy(), np.eye(10)[indices["query"]])
    with pytest.raises(ValueError, match="class indices up to 9, but the dataset has 3 classes"):
        from saat.data.formats import read_folder

        read_folder(root, expected_width=3, what="toy")


def test_catalog_width_is_checked_before_the_values(tmp_path):
    root = tmp_path / "flickr"
    make_dataset(root, "list", n_classes=38)
    with open(root / "train.txt", "a") as fh:
        fh.write("images/train/0.png 2 0 0\n")  # a bad value on a row of the wrong width
    with pytest.raises(ValueError, match=r"train\.txt, line 1: expected 24 label values \(FLICKR-25K-24 has 24 "
                                         r"classes\), got 38"):
        load_quiet(name="FLICKR-25K-24", dataset_dir=root)


def test_list_datasets_shows_classes_sizes_topk_folders_and_formats(capsys):
    from saat.cli import main

    assert main(["list", "datasets"]) == 0
    out = capsys.readouterr().out
    for spec in DATASETS.values():
        line = next(line for line in out.splitlines() if line.strip().startswith(spec.name + ":"))
        assert f"{spec.n_classes} classes" in line and f"mAP@{spec.default_topk}" in line
    assert "train 3,000 / query 500 / database 8,000" in out  # fashion-mosaic, as built
    assert "ImageNet-100: 100 classes, single-label, train 13,000 / query 5,000 / database 128,503, mAP@1000" in out
    assert "folders: NUS-WIDE, nus-wide, nuswide, nus_wide, nuswide_21" in out and "paired *_img.txt" in out


def test_path_map_points_the_authors_absolute_paths_at_local_images(tmp_path):
    from saat.config import TrainConfig, resolve_config
    from saat.pipelines.common import open_dataset

    root = tmp_path / "coco-lists"
    spec = make_dataset(root, "list")
    local = root / "images"
    for split, (rels, _labels, _colors) in spec.items():
        spec[split][0][:] = [rel.replace("images/", "/home/someone/dataset/coco/train2014/") for rel in rels]
    write_lists(root, "list", spec)
    with pytest.raises(FileNotFoundError, match="/home/someone/dataset/coco/train2014/train/0.png"):
        load_quiet(dataset_dir=root)
    rules = ["/home/someone=/nowhere", f"/home/someone/dataset/coco/train2014/={local}/"]  # the longest OLD wins
    ds = load_quiet(dataset_dir=root, path_map=rules)
    assert ds.train.paths[0] == f"{local}/train/0.png"
    cfg = resolve_config(TrainConfig, {"dataset_dir": str(root), "path_map": rules})
    assert len(open_dataset(cfg, 16, verbose=False).database) == SIZES["database"]
    with pytest.raises(ValueError, match="--path-map expects OLD=NEW"):
        load_quiet(dataset_dir=root, path_map=["no-equals-sign"])
    with pytest.raises(ValueError, match="--path-map"):
        TrainConfig(path_map="a=b")


def test_data_check_reports_one_planted_problem_of_each_kind(tmp_path, capsys):
    from saat.cli import main

    root = tmp_path / "toy"
    spec = make_dataset(root, "list", n_classes=4, sizes={"train": 4, "query": 3, "database": 6})
    labels = {"train": [[1, 0, 0, 0], [0, 1, 0, 0], [1, 1, 0, 0], [1, 0, 0, 0]],  # class 2, 3: no training item
              "query": [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0]],
              "database": [[1, 0, 0, 0]] * 6}
    for split in spec:
        spec[split][1][:] = labels[split]
    spec["query"][0][2] = spec["database"][0][4]  # a query image that is also in the database
    spec["database"][0][5] = spec["database"][0][1]  # a duplicate path
    write_lists(root, "list", spec)
    (root / spec["database"][0][3]).unlink()  # a missing image
    (root / spec["database"][0][2]).write_bytes(b"not an image")  # an unreadable image
    lines = (root / "train.txt").read_text().splitlines()
    lines[1] = lines[1] + " 1"  # a label row of the wrong width
    lines[2] = lines[2].rsplit(" ", 1)[0] + " 2"  # a label value that is not 0/1
    (root / "train.txt").write_text("\n".join(lines) + "\n")
    assert main(["data", "check", str(root)]) == 1
    out = capsys.readouterr().out
    expected = ["train.txt:2: label-width: 5 label values, expected 4", "train.txt:3: label-value: '2' is not 0 or 1",
                "database.txt:6: duplicate:", "database.txt:4: missing-image:", "database.txt:3: unreadable-image:",
                "test.txt:3: overlap: 1 query images also sit in the database",
                "train: empty-class: classes [1, 2, 3] have no train item",  # rows 2 and 3 are invalid
                "query: empty-class: classes [3] have no query item", ": 8 findings"]
    for text in expected:
        assert text in out, (text, out)
    clean = tmp_path / "clean"
    make_dataset(clean, "paired", n_classes=2, sizes={"train": 2, "query": 2, "database": 2})
    for name in LIST_NAME.values():
        (clean / f"{name}_label.txt").write_text("1 0\n0 1\n")
    assert main(["data", "check", str(clean)]) == 0
    assert "0 findings" in capsys.readouterr().out


def test_duplicates_and_query_database_overlap_are_warned_at_load(tmp_path, capsys):
    from saat.config import TrainConfig
    from saat.pipelines.common import open_dataset

    root = tmp_path / "toy"
    spec = make_dataset(root, "paired", sizes={"train": 4, "query": 2, "database": 5})
    spec["train"][0][1] = spec["train"][0][0]
    spec["query"][0][0] = spec["database"][0][0]
    write_lists(root, "paired", spec)
    open_dataset(TrainConfig(dataset="", dataset_dir=str(root)), 16)
    err = capsys.readouterr().err
    assert "1 duplicate image paths in the train split" in err
    assert "1 query images also sit in the database" in err
