"""The shipped demo data: a class-balanced Fashion-MNIST subset and the two demo datasets built from it.

The subset (``assets/fashion_mnist_subset.npz``, 1,000 images per class, built by ``scripts/build_demo_data.py``
from Debian's ``dataset-fashion-mnist``; MIT, Copyright (c) 2017 Zalando SE) is checked against the sha256 in
``assets/PROVENANCE.json`` on every first load in a process.

Both demo datasets are derived deterministically from a fixed split seed (``DEMO_SPLIT_SEED``), independent of
the run seed, so every run of every method sees the same query, database and training items:

* ``fashion-mnist``: single-label (one-hot), 28 px. Query 100 per class (1,000), database the other 9,000,
  train 300 per class (3,000) drawn from the database.
* ``fashion-mosaic``: multi-label, 56 px = a 2×2 grid of 28-px cells. Each mosaic holds 1–3 items (count
  uniform) of distinct classes, placed in distinct random cells; empty cells are black; the label is the
  union of the items' classes (so k items give exactly k labels, 2 on average, as in
  docs/data.md#demo-calibration-and-presets). Query mosaics (500) take their items only from the 1,000 fashion-mnist
  query images, database mosaics (8,000) only from the other 9,000, so no source image appears on both sides. Train =
  3,000 of the database mosaics. Its random-ranking mAP is about 0.37 (docs/data.md#demo-calibration-and-presets
  measured 0.38 on a prototype).

``default_topk`` is 1,000 for both: about one class's worth of relevant items (900 per class in the
fashion-mnist database), mirroring CIFAR-10's top 5,000 of 59,000 (5,900 per class).
"""

from __future__ import annotations

import copy
import functools
import hashlib
import io
import json
from importlib import resources
from typing import Any

import numpy as np
import torch

from .dataset import RetrievalDataset
from .splits import TensorSplit

SUBSET_FILE = "fashion_mnist_subset.npz"
PROVENANCE_FILE = "PROVENANCE.json"
DEMO_SPLIT_SEED = 2023  # fixed; any value would do, what matters is that it never follows the run seed
DEMO_TOPK = 1000
N_CLASSES = 10
CELL = 28
FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                   "Ankle boot"]

# Protocol sizes (docs/data.md#shipped-demo-data, docs/data.md#demo-calibration-and-presets).
QUERY_PER_CLASS = 100
TRAIN_PER_CLASS = 300
MOSAIC_QUERY, MOSAIC_DATABASE, MOSAIC_TRAIN = 500, 8000, 3000
MOSAIC_MAX_ITEMS = 3


def asset_bytes(name: str) -> bytes:
    return resources.files(__package__).joinpath("assets", name).read_bytes()


@functools.lru_cache(maxsize=1)
def _subset() -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    provenance = json.loads(asset_bytes(PROVENANCE_FILE))
    data = asset_bytes(SUBSET_FILE)
    digest = hashlib.sha256(data).hexdigest()
    expected = provenance["npz"]["sha256"]
    if digest != expected:
        raise ValueError(f"the shipped demo data {SUBSET_FILE} is corrupt or out of date: its sha256 is {digest}, "
                         f"{PROVENANCE_FILE} records {expected}; reinstall saat or rebuild both files with "
                         f"'python scripts/build_demo_data.py'")
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        images, labels = npz["images"], npz["labels"].astype(np.int64)
    if images.dtype != np.uint8 or images.shape[1:] != (CELL, CELL) or labels.shape != (len(images),):
        raise ValueError(f"{SUBSET_FILE}: unexpected arrays images {images.dtype} {images.shape}, "
                         f"labels {labels.shape}")
    images.flags.writeable = False
    labels.flags.writeable = False
    return images, labels, provenance


def load_fashion_subset() -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """The shipped subset: images uint8 (10000, 28, 28) and labels int64 (10000,) (read-only), provenance."""
    images, labels, provenance = _subset()
    return images, labels, copy.deepcopy(provenance)


def fashion_split(labels: np.ndarray, seed: int, query_per_class: int = QUERY_PER_CLASS,
                  train_per_class: int = TRAIN_PER_CLASS) -> dict[str, np.ndarray]:
    """Subset rows of the single-label protocol: query/train per class, database = everything but the query."""
    rng = np.random.default_rng(seed)
    query, train = [], []
    for c in range(N_CLASSES):
        members = rng.permutation(np.flatnonzero(labels == c))
        query.append(members[:query_per_class])
        train.append(members[query_per_class:query_per_class + train_per_class])
    query_rows = np.sort(np.concatenate(query))
    return {"train": np.sort(np.concatenate(train)), "query": query_rows,
            "database": np.setdiff1d(np.arange(len(labels)), query_rows)}


def _info(name: str, seed: int, protocol: str, provenance: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "format": "shipped-npz",
        "root": f"saat/data/assets/{SUBSET_FILE}",
        "split_seed": seed,
        "split_seed_note": "fixed (DEMO_SPLIT_SEED), independent of the run seed, unless split_seed is given",
        "protocol": protocol,
        "channels": "grayscale stored as 1 channel, repeated to 3 channels per batch",
        "native_size": extra.pop("native_size"),
        "default_topk_rule": f"{DEMO_TOPK}: about one class's worth of relevant items, like CIFAR-10's 5000 of 59000",
        "class_names": FASHION_CLASSES,
        "provenance": provenance,
        **extra,
    }


def build_fashion_mnist(image_size: int | None = None, split_seed: int | None = None) -> RetrievalDataset:
    """The single-label demo dataset (see the module docstring)."""
    seed = DEMO_SPLIT_SEED if split_seed is None else split_seed
    images, labels, provenance = load_fashion_subset()
    store = torch.from_numpy(images.copy()).unsqueeze(1)
    onehot = torch.nn.functional.one_hot(torch.tensor(labels), N_CLASSES).to(torch.float32)
    rows = fashion_split(labels, seed)

    def split(name: str) -> TensorSplit:
        r = torch.from_numpy(rows[name])
        return TensorSplit(name, store, onehot, rows=r, image_size=image_size, sources=r.unsqueeze(1))

    protocol = (f"query {QUERY_PER_CLASS}/class, database = the other subset images, "
                f"train {TRAIN_PER_CLASS}/class drawn from the database")
    return RetrievalDataset("fashion-mnist", train=split("train"), query=split("query"), database=split("database"),
                            default_topk=DEMO_TOPK, multi_label=False, class_names=list(FASHION_CLASSES),
                            info=_info("fashion-mnist", seed, protocol, provenance, native_size=CELL))


def _distinct_triples(rng: np.random.Generator, n: int, size: int) -> np.ndarray:
    """(n, 3) draws from ``range(size)``, distinct within each row (uniform over ordered distinct triples)."""
    a = rng.integers(0, size, n)
    b = rng.integers(0, size - 1, n)
    b += b >= a
    c = rng.integers(0, size - 2, n)
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    c += c >= lo
    c += c >= hi
    return np.stack([a, b, c], axis=1)


def make_mosaics(images: np.ndarray, labels: np.ndarray, pool: np.ndarray, n: int,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``n`` 2×2 mosaics from the subset rows in ``pool``.

    Each mosaic shows k ~ U{1, 2, 3} items of k distinct classes (so it has exactly k labels; the mean is 2,
    as in docs/data.md#demo-calibration-and-presets), each item drawn uniformly from the pool's images of its class, in
    k distinct random cells.
    Returns images uint8 (n, 1, 56, 56), multi-hot labels float32 (n, C) and sources int64 (n, 4): the subset
    row shown in each cell (row-major: top-left, top-right, bottom-left, bottom-right), -1 for an empty cell.
    """
    counts = rng.integers(1, MOSAIC_MAX_ITEMS + 1, n)
    cells = np.argsort(rng.random((n, 4)), axis=1)  # a random order of the 4 cells per mosaic
    classes = _distinct_triples(rng, n, N_CLASSES)  # MOSAIC_MAX_ITEMS = 3 slots, one class each
    by_class = pool[np.argsort(labels[pool], kind="stable")]
    class_counts = np.bincount(labels[pool], minlength=N_CLASSES)
    if (class_counts == 0).any():
        raise ValueError("every class needs at least one image in a mosaic pool")
    starts = np.concatenate([[0], np.cumsum(class_counts)[:-1]])
    offsets = (rng.random(classes.shape) * class_counts[classes]).astype(np.int64)
    items = by_class[starts[classes] + offsets]
    sources = np.full((n, 4), -1, dtype=np.int64)
    rows = np.arange(n)
    for slot in range(MOSAIC_MAX_ITEMS):
        used = counts > slot
        sources[rows[used], cells[used, slot]] = items[used, slot]
    mosaics = np.zeros((n, 1, 2 * CELL, 2 * CELL), dtype=np.uint8)
    multi_hot = np.zeros((n, N_CLASSES), dtype=np.float32)
    for cell in range(4):
        used = sources[:, cell] >= 0
        top, left = (cell // 2) * CELL, (cell % 2) * CELL
        mosaics[used, 0, top:top + CELL, left:left + CELL] = images[sources[used, cell]]
        multi_hot[rows[used], labels[sources[used, cell]]] = 1.0
    return mosaics, multi_hot, sources


def build_fashion_mosaic(image_size: int | None = None, split_seed: int | None = None) -> RetrievalDataset:
    """The multi-label mosaic demo dataset (see the module docstring)."""
    seed = DEMO_SPLIT_SEED if split_seed is None else split_seed
    images, labels, provenance = load_fashion_subset()
    pools = fashion_split(labels, seed)
    rng = np.random.default_rng([seed, 1])  # a stream separate from fashion_split's
    db_img, db_lab, db_src = make_mosaics(images, labels, pools["database"], MOSAIC_DATABASE, rng)
    q_img, q_lab, q_src = make_mosaics(images, labels, pools["query"], MOSAIC_QUERY, rng)
    train_rows = torch.from_numpy(np.sort(rng.choice(MOSAIC_DATABASE, MOSAIC_TRAIN, replace=False)))
    db_store, db_labels, db_sources = torch.from_numpy(db_img), torch.from_numpy(db_lab), torch.from_numpy(db_src)
    database = TensorSplit("database", db_store, db_labels, image_size=image_size, sources=db_sources)
    train = TensorSplit("train", db_store, db_labels, rows=train_rows, image_size=image_size,
                        sources=db_sources[train_rows])
    query = TensorSplit("query", torch.from_numpy(q_img), torch.from_numpy(q_lab), image_size=image_size,
                        item_ids=torch.arange(MOSAIC_DATABASE, MOSAIC_DATABASE + MOSAIC_QUERY),
                        sources=torch.from_numpy(q_src))
    protocol = (f"2x2 mosaics of {CELL}-px cells, 1-{MOSAIC_MAX_ITEMS} items (uniform count) of distinct classes "
                f"in distinct random cells, empty cells black, label = union of the items' classes; query "
                f"{MOSAIC_QUERY} mosaics from the fashion-mnist query images, database {MOSAIC_DATABASE} from the "
                f"other images, train {MOSAIC_TRAIN} drawn from the database")
    info = _info("fashion-mosaic", seed, protocol, provenance, native_size=2 * CELL,
                 item_ids="database mosaics 0..7999, query mosaics 8000..8499",
                 mean_labels_per_item=round(float(db_lab.sum(1).mean()), 4))
    return RetrievalDataset("fashion-mosaic", train=train, query=query, database=database, default_topk=DEMO_TOPK,
                            multi_label=True, class_names=list(FASHION_CLASSES), info=info)
