"""Small synthetic trees laid out like the official downloads that ``saat data prepare`` reads (built from the formats'
public documentation; the images are tiny placeholders). Each builder returns the ground truth it wrote, so tests
can compare what ``prepare`` read with what is on disk.

Used by tests/test_prepare.py; ``python tests/official_layouts.py ROOT [--full]`` builds all four under ROOT (with
``--full``, at the official sizes: 25,000 FLICKR images, 269,648 NUS-WIDE images, 123,287 COCO images, 60,000
CIFAR-10 images, placeholders of 0 bytes except CIFAR-10's pixel data).
"""

from __future__ import annotations

import io
import json
import pickle
import zipfile
from pathlib import Path

import numpy as np

FLICKR_POTENTIAL = ("animals", "baby", "bird", "car", "clouds", "dog", "female", "flower", "food", "indoor", "lake",
                    "male", "night", "people", "plant_life", "portrait", "river", "sea", "sky", "structures",
                    "sunset", "transport", "tree", "water")
FLICKR_RELEVANT = ("baby", "bird", "car", "clouds", "dog", "female", "flower", "male", "night", "people",
                   "portrait", "river", "sea", "tree")


def _jpeg(seed: int = 0) -> bytes:
    from PIL import Image

    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(buf, format="JPEG")
    return buf.getvalue()


def make_flickr(root: Path, n_images: int = 300, zipped: bool = True, unlabelled: float = 0.2, seed: int = 0,
                image_bytes: bytes | None = None) -> dict:
    """mirflickr25k.zip (mirflickr/im1.jpg ... plus meta and doc files) and mirflickr25k_annotations_v080.zip (one file
    per concept listing 1-based image numbers, README.txt), or the same as extracted folders."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    jpeg = _jpeg(seed) if image_bytes is None else image_bytes
    potential = rng.random((n_images, 24)) < 0.15
    potential[rng.random(n_images) < unlabelled] = False
    relevant = potential[:, [FLICKR_POTENTIAL.index(c) for c in FLICKR_RELEVANT]] & (rng.random((n_images, 14)) < 0.5)
    files = {f"{c}.txt": potential[:, i] for i, c in enumerate(FLICKR_POTENTIAL)}
    files.update({f"{c}_r1.txt": relevant[:, i] for i, c in enumerate(FLICKR_RELEVANT)})
    texts = {name: "".join(f"{n + 1}\r\n" for n in np.flatnonzero(col)) for name, col in files.items()}
    texts["README.txt"] = "MIRFLICKR-25000 annotations (synthetic test copy)\n"
    if zipped:
        with zipfile.ZipFile(root / "mirflickr25k.zip", "w") as zf:
            for n in range(1, n_images + 1):
                zf.writestr(f"mirflickr/im{n}.jpg", jpeg)
            zf.writestr("mirflickr/doc/license.txt", "license\n")
            zf.writestr("mirflickr/meta/tags/tags1.txt", "tag\n")
        with zipfile.ZipFile(root / "mirflickr25k_annotations_v080.zip", "w") as zf:
            for name, text in texts.items():
                zf.writestr(name, text)
    else:
        (root / "mirflickr").mkdir(exist_ok=True)
        for n in range(1, n_images + 1):
            (root / "mirflickr" / f"im{n}.jpg").write_bytes(jpeg)
        ann = root / "mirflickr25k_annotations_v080"
        ann.mkdir(exist_ok=True)
        for name, text in texts.items():
            (ann / name).write_text(text)
    names38 = sorted(n[:-4] for n in files)
    labels38 = np.stack([files[f"{n}.txt"] for n in names38], axis=1).astype(np.uint8)
    return {"classes38": names38, "labels38": labels38, "labels24": potential.astype(np.uint8),
            "classes24": sorted(FLICKR_POTENTIAL)}


NUS_CONCEPTS = tuple(f"concept{i:02d}" for i in range(81))


def make_nuswide(root: Path, n_images: int = 2000, missing: int = 5, windows_prefix: bool = True, seed: int = 0,
                 image_bytes: bytes | None = None, layout: str = "folders", zip_prefix: str | None = None,
                 image_list: bool | str = True, train_test: bool = True) -> dict:
    """ImageList/Imagelist.txt (Windows separators), Groundtruth/AllLabels/Labels_<concept>.txt (one 0/1 per line),
    ConceptsList/Concepts81.txt and Flickr/<dir>/<file>.jpg; the concept frequencies fall with the concept's index,
    so the 21 most frequent are concept00..concept20; ``missing`` listed images are left off the disk.

    As in the official release, Groundtruth/ also holds TrainTestLabels/Labels_<concept>_{Train,Test}.txt (unless
    not ``train_test``): the labels of the images of ImageList/TrainImagelist.txt and TestImagelist.txt (about 60 %
    and 40 % of the list, so their row counts differ from the image list's). ``layout``:

    * ``"folders"``: everything unpacked;
    * ``"groundtruth-zip"``: Groundtruth/ as ``Groundtruth.zip``, members ``{zip_prefix}AllLabels/…`` and
      ``{zip_prefix}TrainTestLabels/…`` (``zip_prefix`` default ``"Groundtruth/"``; ``""`` puts them at the top);
    * ``"nus-wide-zip"``: the current public re-release, one ``NUS-WIDE.zip`` holding ``{zip_prefix}Groundtruth/…``
      and ``{zip_prefix}ConceptsList/{Concepts81.txt,Concepts81.mat}`` (``zip_prefix`` default ``"NUS-WIDE/"``)
      and no image list, which comes from the original release.

    ``image_list``: ImageList/ unpacked (True), as the original ``ImageList.zip`` (``"zip"``), or left out (False)."""
    if layout not in ("folders", "groundtruth-zip", "nus-wide-zip"):
        raise ValueError(f"unknown NUS-WIDE layout {layout!r}")
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    jpeg = _jpeg(seed) if image_bytes is None else image_bytes
    freq = np.linspace(0.30, 0.01, 81)
    labels = (rng.random((n_images, 81)) < freq).astype(np.uint8)
    entries, rel = [], []
    for i in range(n_images):
        folder = NUS_CONCEPTS[i % 81]
        name = f"{i:04d}_{1000000 + i}.jpg"
        rel.append(f"{folder}/{name}")
        entries.append(("C:\\ImageData\\Flickr\\" if windows_prefix else "") + f"{folder}\\{name}")
    is_train = np.random.default_rng([seed, 1]).random(n_images) < 0.6  # its own stream: `absent` as before

    def lines(values) -> bytes:
        return "".join(f"{v}\r\n" for v in values).encode()

    files = {f"ImageList/{name}": lines(e for e, keep in zip(entries, mask) if keep) for name, mask in (
        ("Imagelist.txt", np.ones(n_images, dtype=bool)), ("TrainImagelist.txt", is_train),
        ("TestImagelist.txt", ~is_train))}
    for c, concept in enumerate(NUS_CONCEPTS):
        files[f"Groundtruth/AllLabels/Labels_{concept}.txt"] = lines(labels[:, c])
        if train_test:
            files[f"Groundtruth/TrainTestLabels/Labels_{concept}_Train.txt"] = lines(labels[is_train, c])
            files[f"Groundtruth/TrainTestLabels/Labels_{concept}_Test.txt"] = lines(labels[~is_train, c])
    files["ConceptsList/Concepts81.txt"] = "".join(c + "\n" for c in NUS_CONCEPTS).encode()
    zipped = {"folders": (), "groundtruth-zip": ("Groundtruth/",),
              "nus-wide-zip": ("Groundtruth/", "ConceptsList/")}[layout]  # the folders that go into the zip
    if image_list == "zip":
        with zipfile.ZipFile(root / "ImageList.zip", "w") as zf:
            for name, data in files.items():
                if name.startswith("ImageList/"):
                    zf.writestr(name, data)
    if layout == "groundtruth-zip":
        prefix = "Groundtruth/" if zip_prefix is None else zip_prefix
        with zipfile.ZipFile(root / "Groundtruth.zip", "w") as zf:
            for name, data in files.items():
                if name.startswith(zipped):
                    zf.writestr(prefix + name[len("Groundtruth/"):], data)
    elif layout == "nus-wide-zip":
        prefix = "NUS-WIDE/" if zip_prefix is None else zip_prefix
        with zipfile.ZipFile(root / "NUS-WIDE.zip", "w") as zf:
            for name, data in files.items():
                if name.startswith(zipped):
                    zf.writestr(prefix + name, data)
            zf.writestr(prefix + "ConceptsList/Concepts81.mat", b"MATLAB 5.0 MAT-file (placeholder)")
    for name, data in files.items():
        if not name.startswith(zipped) and (image_list is True or not name.startswith("ImageList/")):
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_bytes(data)
    absent = set(rng.choice(n_images, size=missing, replace=False).tolist()) if missing else set()
    for folder in set(NUS_CONCEPTS[: min(81, n_images)]):
        (root / "Flickr" / folder).mkdir(parents=True, exist_ok=True)
    for i, path in enumerate(rel):
        if i not in absent:
            (root / "Flickr" / path).write_bytes(jpeg)
    return {"labels": labels, "paths": rel, "absent": sorted(absent), "train": is_train}


def make_coco(root: Path, n_train: int = 300, n_val: int = 200, unlabelled: tuple[int, int] = (20, 20),
              zipped: bool = True, seed: int = 0, image_bytes: bytes | None = None) -> dict:
    """annotations_trainval2014.zip (annotations/instances_{train,val}2014.json) and train2014.zip / val2014.zip (or
    the folders); 80 categories with the official non-contiguous ids 1..90; ``unlabelled`` images per part have no
    instance (train, val)."""
    rng = np.random.default_rng(seed)
    jpeg = _jpeg(seed) if image_bytes is None else image_bytes
    root.mkdir(parents=True, exist_ok=True)
    skipped = {12, 26, 29, 30, 45, 66, 68, 69, 71, 83}  # the ten ids COCO leaves unused
    cat_ids = [i for i in range(1, 91) if i not in skipped]
    categories = [{"id": i, "name": f"category{i}", "supercategory": "thing"} for i in cat_ids]
    truth = {}
    docs, next_id, ann_id = {}, 1, 1
    for part, n, bare in (("train2014", n_train, unlabelled[0]), ("val2014", n_val, unlabelled[1])):
        images, annotations = [], []
        for k in range(n):
            image_id = next_id * 7  # ids need not be contiguous
            next_id += 1
            name = f"COCO_{part}_{image_id:012d}.jpg"
            images.append({"id": image_id, "file_name": name, "width": 8, "height": 8})
            cats = set() if k < bare else set(rng.choice(cat_ids, size=rng.integers(1, 4), replace=False).tolist())
            for cat in sorted(cats):
                for _ in range(int(rng.integers(1, 3))):  # several instances of a category: one label
                    annotations.append({"id": ann_id, "image_id": image_id, "category_id": cat, "iscrowd": 0,
                                        "bbox": [0, 0, 1, 1], "area": 1.0})
                    ann_id += 1
            truth[f"{part}/{name}"] = cats
        docs[part] = {"info": {}, "licenses": [], "images": images, "annotations": annotations,
                      "categories": categories}
    if zipped:
        with zipfile.ZipFile(root / "annotations_trainval2014.zip", "w") as zf:
            for part, doc in docs.items():
                zf.writestr(f"annotations/instances_{part}.json", json.dumps(doc))
            zf.writestr("annotations/captions_train2014.json", "{}")
        for part, doc in docs.items():
            with zipfile.ZipFile(root / f"{part}.zip", "w") as zf:
                for im in doc["images"]:
                    zf.writestr(f"{part}/{im['file_name']}", jpeg)
    else:
        (root / "annotations").mkdir(parents=True, exist_ok=True)
        for part, doc in docs.items():
            (root / "annotations" / f"instances_{part}.json").write_text(json.dumps(doc))
            (root / part).mkdir(exist_ok=True)
            for im in doc["images"]:
                (root / part / im["file_name"]).write_bytes(jpeg)
    return {"truth": truth, "cat_ids": cat_ids}


def make_cifar10(root: Path, per_class: int = 12, seed: int = 0) -> dict:
    """cifar-10-batches-py/ with data_batch_1..5, test_batch and batches.meta, pickled like the official files (bytes
    keys, uint8 (n, 3072) rows, label lists); ``per_class`` images of each class spread over the six batches."""
    rng = np.random.default_rng(seed)
    n = 10 * per_class
    labels = rng.permutation(np.repeat(np.arange(10), per_class))
    images = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    bounds = np.linspace(0, n, 7).astype(int)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name, lo, hi in zip(names, bounds[:-1], bounds[1:]):
        batch = {b"batch_label": name.encode(), b"labels": labels[lo:hi].tolist(), b"data": images[lo:hi],
                 b"filenames": [f"{i}.png".encode() for i in range(lo, hi)]}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
    meta = {b"num_cases_per_batch": 10000, b"label_names": [c.encode() for c in (
        "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")], b"num_vis": 3072}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    return {"labels": labels, "images": images.reshape(n, 3, 32, 32)}


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("root", type=Path)
    ap.add_argument("--full", action="store_true", help="the official sizes (slow; 0-byte placeholder images)")
    a = ap.parse_args()
    empty = b"" if a.full else None
    make_flickr(a.root / "flickr25k", n_images=25_000 if a.full else 300, image_bytes=empty,
                unlabelled=0.2 if not a.full else 4_985 / 25_000)
    make_nuswide(a.root / "nus-wide", n_images=269_648 if a.full else 2_000, missing=0 if a.full else 5,
                 image_bytes=empty)
    make_coco(a.root / "coco", n_train=82_783 if a.full else 300, n_val=40_504 if a.full else 200,
              unlabelled=(700, 369) if a.full else (20, 20), zipped=not a.full, image_bytes=empty)
    make_cifar10(a.root / "cifar10", per_class=6_000 if a.full else 12)
    print(f"built {a.root}/flickr25k, nus-wide, coco, cifar10")
