"""CIFAR-10 from torchvision's files (``cifar-10-batches-py``), pooled and split by seed (docs/data.md#dataset-catalog).

The five training batches and the test batch are pooled in that order (pool index 0..49,999 = train,
50,000..59,999 = test). Per class, a seeded permutation gives ``query_per_class`` queries (100) and the next
``train_per_class`` items (500) as the training set; the database is everything but the queries, so
train ⊂ database and the standard sizes are query 1,000, train 5,000, database 59,000.

The pickles are read here with an unpickler that only admits numpy arrays (no code from a data folder runs),
and without torchvision's md5 check, so any folder holding the files in torchvision's format loads.
``download=True`` fetches them with ``torchvision.datasets.CIFAR10`` (which verifies the archive) first.
"""

from __future__ import annotations

import importlib
import os
import pickle
from pathlib import Path

import numpy as np

FOLDER = "cifar-10-batches-py"
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCH = "test_batch"
META = "batches.meta"
CLASS_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
QUERY_PER_CLASS = 100
TRAIN_PER_CLASS = 500
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"), ("codecs", "encode"),
}


class _ArrayUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(f"unexpected object {module}.{name} in a CIFAR-10 batch file")
        if module.startswith("numpy.core"):
            try:  # numpy >= 2 moved numpy.core to numpy._core; import the new home to avoid a deprecation warning
                return getattr(importlib.import_module("numpy._core" + module[len("numpy.core"):]), name)
            except ImportError:
                pass
        return getattr(importlib.import_module(module), name)


def _unpickle(path: Path) -> dict[str, object]:
    try:
        with open(path, "rb") as fh:
            obj = _ArrayUnpickler(fh, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as exc:
        raise ValueError(f"{path}: not a CIFAR-10 batch file in torchvision's pickle format ({exc})") from None
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: expected a pickled dict, got {type(obj).__name__}")
    return {k.decode("latin1") if isinstance(k, bytes) else str(k): v for k, v in obj.items()}


def find_cifar10(root: str | os.PathLike) -> Path | None:
    """The folder holding the batch files: ``root/cifar-10-batches-py`` or ``root`` itself; None if neither."""
    root = Path(root)
    for folder in (root / FOLDER, root):
        if all((folder / f).is_file() for f in (*TRAIN_BATCHES, TEST_BATCH)):
            return folder
    return None


def missing_message(root: str | os.PathLike) -> str:
    root = Path(root)
    return (f"CIFAR-10 files not found: expected {', '.join(TRAIN_BATCHES)} and {TEST_BATCH} in {root / FOLDER} "
            f"(or directly in {root}). Put torchvision's CIFAR10 files there (the extracted cifar-10-python.tar.gz) "
            f"or pass download=True (--download on the command line) to fetch them.")


def download_cifar10(root: str | os.PathLike) -> Path:
    """Fetch and extract CIFAR-10 into ``root`` with torchvision (verifies the archive's md5)."""
    from torchvision.datasets import CIFAR10

    Path(root).mkdir(parents=True, exist_ok=True)
    CIFAR10(str(root), train=True, download=True)
    folder = find_cifar10(root)
    if folder is None:
        raise FileNotFoundError(missing_message(root))
    return folder


def read_cifar10(folder: str | os.PathLike) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Pooled images uint8 (N, 3, 32, 32), labels int64 (N,), class names from ``batches.meta`` if present."""
    folder = Path(folder)
    images, labels = [], []
    for name in (*TRAIN_BATCHES, TEST_BATCH):
        path = folder / name
        if not path.is_file():
            raise FileNotFoundError(missing_message(folder))
        batch = _unpickle(path)
        if "data" not in batch or not ("labels" in batch or "fine_labels" in batch):
            raise ValueError(f"{path}: expected keys 'data' and 'labels', found {sorted(batch)}")
        data = np.asarray(batch["data"])
        lab = np.asarray(batch.get("labels", batch.get("fine_labels")), dtype=np.int64).reshape(-1)
        if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
            raise ValueError(f"{path}: expected 'data' uint8 (n, 3072), got {data.dtype} {data.shape}")
        if len(lab) != len(data):
            raise ValueError(f"{path}: {len(data)} images but {len(lab)} labels")
        if len(lab) and (lab.min() < 0 or lab.max() >= len(CLASS_NAMES)):
            raise ValueError(f"{path}: labels must lie in 0..9, found {lab.min()}..{lab.max()}")
        images.append(data.reshape(-1, 3, 32, 32))
        labels.append(lab)
    names = list(CLASS_NAMES)
    if (folder / META).is_file():
        meta = _unpickle(folder / META)
        found = meta.get("label_names")
        if isinstance(found, list) and len(found) == len(CLASS_NAMES):
            names = [n.decode() if isinstance(n, bytes) else str(n) for n in found]
    return np.concatenate(images), np.concatenate(labels), names


def cifar10_split(labels: np.ndarray, seed: int, query_per_class: int = QUERY_PER_CLASS,
                  train_per_class: int = TRAIN_PER_CLASS) -> dict[str, np.ndarray]:
    """Pool rows of each split (sorted): per class ``query_per_class`` queries, ``train_per_class`` training
    items from the rest; database = all rows but the queries."""
    rng = np.random.default_rng(seed)
    query, train = [], []
    for c in range(len(CLASS_NAMES)):
        members = np.flatnonzero(labels == c)
        if len(members) < query_per_class + train_per_class:
            raise ValueError(f"CIFAR-10 class {c} has {len(members)} images, fewer than the {query_per_class} "
                             f"queries + {train_per_class} training items the protocol needs")
        members = rng.permutation(members)
        query.append(members[:query_per_class])
        train.append(members[query_per_class:query_per_class + train_per_class])
    query_rows = np.sort(np.concatenate(query))
    return {"train": np.sort(np.concatenate(train)), "query": query_rows,
            "database": np.setdiff1d(np.arange(len(labels)), query_rows)}
