#!/usr/bin/env python
"""Build the Fashion-MNIST demo subset shipped inside ``saat`` (SPEC 2.3).

Reads Debian's ``dataset-fashion-mnist`` files (``/usr/share/datasets/fashion-mnist/*-ubyte.gz``), pools the
60,000 training and 10,000 test images (pool index 0..59,999 = train, 60,000..69,999 = t10k), selects 1,000
images per class (10,000 in total) and writes

* ``src/saat/data/assets/fashion_mnist_subset.npz``: ``images`` uint8 (10000, 28, 28), ``labels`` int64
  (10000,), ``source_index`` int64 (10000,) = the pool index of every image, in ascending pool order;
* ``src/saat/data/assets/PROVENANCE.json``: the source files with their sha256, the selection rule and seed,
  the counts, the licence and the sha256 of the npz (checked by ``saat.data`` at every load).

Selection rule (independent of numpy's random streams, so any numpy version picks the same images): within
each class, rank the pool images by the hex digest ``sha256(f"{SEED}:{pool_index}")`` and keep the first
1,000.

The npz is an ordinary ``np.savez_compressed``-style archive (``np.load`` reads it), written member by member
with deflate level 9 and a fixed member timestamp (1980-01-01). ``np.savez_compressed`` itself leaves the
timestamp, the compression level and the zip64 layout to numpy and ``zipfile`` defaults, which have changed
across versions; spelling them out keeps the bytes identical from run to run (running the script twice gives
the same sha256) and ``--check`` rebuilds in memory and fails if the committed files differ.

Usage::

    python scripts/build_demo_data.py              # (re)write the assets
    python scripts/build_demo_data.py --check      # verify the committed assets are reproducible
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import sys
import zipfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SOURCE_DIR = Path("/usr/share/datasets/fashion-mnist")
ASSET_DIR = REPO / "src" / "saat" / "data" / "assets"
NPZ_NAME = "fashion_mnist_subset.npz"
PROVENANCE_NAME = "PROVENANCE.json"

SEED = 2017
PER_CLASS = 1000
N_CLASSES = 10
MAX_NPZ_BYTES = 5 * 1024 * 1024
ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)  # the earliest timestamp a zip entry can hold
SOURCES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "t10k": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
CLASS_NAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
               "Ankle boot"]
LICENCE = "MIT, Copyright (c) 2017 Zalando SE"


def read_idx(path: Path, expected_magic: int) -> np.ndarray:
    """Read a gzipped IDX file (big-endian header: magic, dimensions; then uint8 data)."""
    raw = gzip.decompress(path.read_bytes())
    magic = int.from_bytes(raw[:4], "big")
    if magic != expected_magic:
        raise ValueError(f"{path}: expected IDX magic {expected_magic}, got {magic}")
    ndim = magic & 0xFF
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise ValueError(f"{path}: header says {dims} but holds {data.size} bytes of data")
    return data.reshape(dims)


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def load_pool(source_dir: Path) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    images, labels, files = [], [], []
    for part, (image_file, label_file) in SOURCES.items():
        img = read_idx(source_dir / image_file, 2051)
        lab = read_idx(source_dir / label_file, 2049)
        if len(img) != len(lab):
            raise ValueError(f"{part}: {len(img)} images but {len(lab)} labels")
        images.append(img)
        labels.append(lab)
        for name, n in ((image_file, len(img)), (label_file, len(lab))):
            path = source_dir / name
            files.append({"file": name, "path": str(path), "bytes": path.stat().st_size,
                          "sha256": sha256_file(path), "items": n, "part": part})
    return np.concatenate(images), np.concatenate(labels).astype(np.int64), files


def select(labels: np.ndarray, seed: int, per_class: int) -> np.ndarray:
    """Pool indices of the subset: per class, the ``per_class`` images with the smallest seeded sha256 key."""
    chosen = []
    for c in range(N_CLASSES):
        members = np.flatnonzero(labels == c)
        if len(members) < per_class:
            raise ValueError(f"class {c} has only {len(members)} images, need {per_class}")
        keys = [hashlib.sha256(f"{seed}:{i}".encode()).hexdigest() for i in members.tolist()]
        order = sorted(range(len(members)), key=keys.__getitem__)
        chosen.append(members[order[:per_class]])
    return np.sort(np.concatenate(chosen))


def npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    """A deterministic npz (same layout as ``np.savez_compressed``, fixed member timestamps)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        for name, array in arrays.items():
            member = io.BytesIO()
            np.lib.format.write_array(member, np.ascontiguousarray(array), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=ZIP_EPOCH)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, member.getvalue(), compresslevel=9)
    return buffer.getvalue()


def build(source_dir: Path) -> tuple[bytes, dict]:
    images, labels, files = load_pool(source_dir)
    index = select(labels, SEED, PER_CLASS)
    subset = {"images": images[index], "labels": labels[index], "source_index": index.astype(np.int64)}
    data = npz_bytes(subset)
    if len(data) > MAX_NPZ_BYTES:
        raise ValueError(f"the npz is {len(data):,} bytes, above the {MAX_NPZ_BYTES:,}-byte budget")
    counts = np.bincount(subset["labels"], minlength=N_CLASSES)
    n_train = next(f["items"] for f in files if f["part"] == "train")
    provenance = {
        "dataset": "Fashion-MNIST (class-balanced subset)",
        "homepage": "https://github.com/zalandoresearch/fashion-mnist",
        "licence": LICENCE,
        "licence_file": "/usr/share/doc/dataset-fashion-mnist/copyright",
        "debian_package": "dataset-fashion-mnist",
        "sources": files,
        "pool": (f"train images (pool index 0..{n_train - 1}) followed by t10k images "
                 f"(pool index {n_train}..{len(labels) - 1})"),
        "seed": SEED,
        "selection_rule": (f"for each class c = 0..9, rank the pool images of class c by the hex digest "
                           f"sha256(f'{{seed}}:{{pool_index}}') and keep the first {PER_CLASS}; the subset is "
                           f"stored in ascending pool index order"),
        "counts": {"total": int(len(index)), "per_class": counts.tolist(),
                   "from_train": int((index < n_train).sum()), "from_t10k": int((index >= n_train).sum())},
        "class_names": CLASS_NAMES,
        "arrays": {name: {"dtype": str(a.dtype), "shape": list(a.shape)} for name, a in subset.items()},
        "npz": {"file": NPZ_NAME, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest(),
                "writer": "scripts/build_demo_data.py (zip deflate level 9, fixed member timestamps)"},
    }
    return data, provenance


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source-dir", type=Path, default=SOURCE_DIR, help="folder of the *-ubyte.gz files")
    parser.add_argument("--out-dir", type=Path, default=ASSET_DIR, help="where to write the npz and provenance")
    parser.add_argument("--check", action="store_true",
                        help="rebuild in memory and compare with the files in --out-dir instead of writing")
    args = parser.parse_args(argv)

    data, provenance = build(args.source_dir)
    text = json.dumps(provenance, indent=2) + "\n"
    npz_path, provenance_path = args.out_dir / NPZ_NAME, args.out_dir / PROVENANCE_NAME
    if args.check:
        same_npz = npz_path.exists() and npz_path.read_bytes() == data
        same_prov = provenance_path.exists() and json.loads(provenance_path.read_text()) == provenance
        print(f"{npz_path}: {'identical' if same_npz else 'DIFFERS'}")
        print(f"{provenance_path}: {'identical' if same_prov else 'DIFFERS'}")
        return 0 if same_npz and same_prov else 1

    sys.path.insert(0, str(REPO / "src"))
    from saat.utils.io import atomic_write_bytes, atomic_write_text

    # The npz first: if we stop in between, the stale provenance makes every load fail loudly.
    atomic_write_bytes(npz_path, data)
    atomic_write_text(provenance_path, text)
    for path in (npz_path, provenance_path):
        path.chmod(0o644)  # package data: world-readable like the rest of the checkout
    print(f"wrote {npz_path} ({len(data):,} bytes, sha256 {provenance['npz']['sha256']})")
    print(f"wrote {provenance_path}")

    from saat.data import load_dataset
    from saat.pipelines.common import random_baseline

    for name in ("fashion-mnist", "fashion-mosaic"):
        ds = load_dataset(name)
        print(f"  {name}: random-ranking mAP@{ds.default_topk} = {random_baseline(ds, ds.default_topk):.4f}, "
              f"mAP@all = {random_baseline(ds, None):.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
