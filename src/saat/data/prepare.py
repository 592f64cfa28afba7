"""``saat data prepare NAME --raw DIR --out DIR``: a dataset folder built from the official downloads
(docs/data.md#preparing-a-dataset-from-the-official-downloads).

Each catalog entry below is read from the files its publishers distribute, split with the protocol of the
literature (seeded), and written in both list formats (docs/data.md#on-disk-formats) with a ``manifest.json``: the
protocol, the counts per split and class, what was dropped and why, and the sha256 of every list, so that
``saat data check`` can tell when a list was changed afterwards.

Raw layouts read (a zip may stand in for each folder; images inside a zip are extracted to ``OUT/images``):

* ``FLICKR-25K`` / ``FLICKR-25K-24``: ``mirflickr25k.zip`` (or its folder ``mirflickr/`` with ``im1.jpg`` …
  ``im25000.jpg``) and ``mirflickr25k_annotations_v080.zip`` (or its files): one file per concept, each listing the
  1-based numbers of the images that show it; the 24 "potential labels" (``animals.txt`` …) and 14 "relevant"
  variants (``baby_r1.txt`` …). The 38-label entry uses all 38 files, the 24-label entry the 24.
* ``NUS-WIDE`` / ``NUS-WIDE-81``: ``ImageList/Imagelist.txt`` (one image per line, Windows separators, e.g.
  ``C:\\ImageData\\Flickr\\actor\\0001_2124494179.jpg``), ``Groundtruth/AllLabels/Labels_<concept>.txt`` (one 0/1 per
  line, in image-list order), optionally ``ConceptsList/Concepts81.txt``, and the images under ``Flickr/``; the
  metadata also from ``ImageList.zip``, ``Groundtruth.zip``, ``ConceptsList.zip`` or the re-released ``NUS-WIDE.zip``
  (``Groundtruth/`` and ``ConceptsList/``, no image list). Only ``AllLabels/`` is read, never ``TrainTestLabels/``.
  ``NUS-WIDE`` keeps the 21 most frequent concepts.
* ``MS-COCO``: ``annotations/instances_train2014.json`` and ``instances_val2014.json`` (or
  ``annotations_trainval2014.zip``) and the images in ``train2014/`` and ``val2014/`` (or their zips); a label row
  is the set of categories of an image's instances, in category-id order; images without any are dropped.
* ``CIFAR-10``: torchvision's ``cifar-10-batches-py`` (or ``cifar-10-python.tar.gz``); the images are written as
  PNG files and split exactly as ``saat`` splits the pickles with the same seed.

Images the lists name but that are not on disk are dropped, counted in the manifest and reported.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import re
import shutil
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath

import numpy as np

from .._version import __version__
from ..utils.io import atomic_write_json, atomic_write_text
from ..utils.progress import progress_bar
from ..utils.rng import derive_seed
from . import cifar
from .catalog import resolve_name
from .formats import LIST_FILES, PAIRED_FILES, SPLITS

MANIFEST = "manifest.json"
MANIFEST_VERSION = 1
IMAGES = "images"  # sub-folder of OUT for images extracted from zips or written from pickles

FLICKR_POTENTIAL = ("animals", "baby", "bird", "car", "clouds", "dog", "female", "flower", "food", "indoor", "lake",
                    "male", "night", "people", "plant_life", "portrait", "river", "sea", "sky", "structures",
                    "sunset", "transport", "tree", "water")
FLICKR_RELEVANT = ("baby", "bird", "car", "clouds", "dog", "female", "flower", "male", "night", "people",
                   "portrait", "river", "sea", "tree")  # the concepts with a "_r1" file


@dataclass(frozen=True)
class Protocol:
    """How a catalog entry is split: ``query`` and ``train`` images (per class when ``per_class``); the training
    set is drawn from the database, and the database is every kept image but the queries."""

    dataset: str
    reader: str
    query: int
    train: int
    per_class: bool
    keep: str  # which images are kept, in words: "{n}" is the number kept, "{official}" the official one's note
    reference: str  # where the protocol comes from
    options: dict = field(default_factory=dict)
    official: int | None = None  # the number kept from the complete official download, where one is known

    def describe(self, kept: int, query: int | None = None, train: int | None = None) -> dict:
        """The protocol in words for a run that kept ``kept`` images (a partial download keeps fewer than the
        official number, which is then given too) with ``query``/``train`` in place of the protocol's sizes."""
        unit = " per class" if self.per_class else ""
        q, t = query or self.query, train or self.train
        note = f" ({self.official:,} in the official download)" if self.official not in (None, kept) else ""
        return {"kept": self.keep.format(n=f"{kept:,}", official=note),
                "query": f"{q:,}{unit}, drawn at random from the kept images",
                "train": f"{t:,}{unit}, drawn at random from the database",
                "database": "every kept image but the queries (the training images are part of it)",
                "reference": self.reference,
                "standard": q == self.query and t == self.train}


PROTOCOLS: dict[str, Protocol] = {p.dataset: p for p in (
    Protocol("FLICKR-25K", "flickr25k", 1_700, 5_000, False,
             "all {n} images{official}, with the 24 potential and 14 relevant labels (38); rows without any label "
             "are kept",
             "the FLICKR-25K lists of the SAAT family (DHTA, ProS-GAN, SAAT): 1,700 queries, 5,000 training images, "
             "23,300 database images", {"labels": 38}, official=25_000),
    Protocol("FLICKR-25K-24", "flickr25k", 2_000, 10_000, False,
             "the {n} images{official} with at least one of the 24 potential labels",
             "DCMH (Jiang & Li, CVPR 2017): 2,000 queries, 10,000 training images from the database",
             {"labels": 24}, official=20_015),
    Protocol("NUS-WIDE", "nuswide", 100, 500, True,
             "the {n} listed images on disk{official} with at least one of the 21 most frequent concepts",
             "DPSH (Li et al., IJCAI 2016) and the SAAT family: 100 queries and 500 training images per concept "
             "(2,100 / 10,500), database 193,734", {"top_concepts": 21}, official=195_834),
    Protocol("NUS-WIDE-81", "nuswide", 5_000, 10_000, False,
             "the {n} listed images on disk{official} with at least one of the 81 concepts",
             "5,000 queries and 10,000 training images drawn at random (the 81-concept lists are published with "
             "several protocols; this one follows the MS-COCO sizes)", {"top_concepts": 81}),
    Protocol("MS-COCO", "coco", 5_000, 10_000, False,
             "the {n} train2014 + val2014 images on disk{official} with at least one of the 80 categories",
             "HashNet (Cao et al., ICCV 2017): 5,000 queries, 10,000 training images, database 117,218",
             official=122_218),
    Protocol("CIFAR-10", "cifar10", 100, 500, True,
             "all {n} images{official} of the five training batches and the test batch, pooled in that order",
             "the paper family's CIFAR-10 protocol: 100 queries and 500 training images per class, database = "
             "every image but the queries (59,000); the same split as loading the pickles with this seed",
             official=60_000),
)}


def list_prepared() -> list[str]:
    """The catalog names ``saat data prepare`` builds."""
    return list(PROTOCOLS)


@dataclass
class Pool:
    """Every image of a raw download with its labels, before the split."""

    images: list[str]  # absolute paths
    labels: np.ndarray  # uint8 (N, C)
    classes: list[str]
    dropped: dict[str, int] = field(default_factory=dict)  # reason -> count
    sources: list[str] = field(default_factory=list)  # the raw files read


# --- raw files: a folder, or the zip it came in ------------------------------------------------------------------

def _collect(raw: Path, folders: Iterable[str], zips: Iterable[str], match: Callable[[PurePosixPath], bool],
             what: str, zip_folder: str | None = None) -> tuple[dict[str, bytes], str]:
    """{file name: content} of the files that ``match`` in the first of ``folders`` (relative to ``raw``) holding
    any, else in the first of ``zips`` holding any; and where they were found. In a zip, with ``zip_folder``, only
    members directly in a folder of that name count (at any depth: ``AllLabels/…``, ``Groundtruth/AllLabels/…``),
    as only the files directly in ``folders`` count on disk; the matching members must then share one folder.
    FileNotFoundError if none."""
    for folder in folders:
        path = raw / folder
        if path.is_dir():
            found = {p.name: p.read_bytes() for p in sorted(path.iterdir())
                     if p.is_file() and match(PurePosixPath(p.name))}
            if found:
                return found, str(path)
    for name in zips:
        path = raw / name
        if path.is_file():
            try:
                with zipfile.ZipFile(path) as zf:
                    members = sorted(m for m in zf.namelist() if not m.endswith("/") and match(PurePosixPath(m))
                                     and (zip_folder is None or PurePosixPath(m).parent.name == zip_folder))
                    parents = sorted({str(PurePosixPath(m).parent) for m in members})
                    if zip_folder is not None and len(parents) > 1:
                        raise ValueError(f"{path}: {zip_folder}/ occurs more than once ({parents[0]}/ and "
                                         f"{parents[1]}/); keep one copy of the files in the zip, or unzip the one "
                                         f"wanted into {raw}")
                    found = {PurePosixPath(m).name: zf.read(m) for m in members}
            except zipfile.BadZipFile as exc:
                raise ValueError(f"{path}: not a readable zip file ({exc}); download it again") from None
            if found:
                inside = parents[0] if zip_folder is not None else "."
                return found, str(path) if inside == "." else f"{path}:{inside}"
    places = [str(raw / f) for f in folders] + [str(raw / z) for z in zips]
    raise FileNotFoundError(f"{what} not found in {raw}: looked in {', '.join(places)}")


def _one_file(raw: Path, candidates: Iterable[str], zips: Iterable[str], what: str,
              required: bool = True, hint: str = "") -> tuple[bytes, str] | None:
    """The content of the first existing of ``candidates`` (paths relative to ``raw``), else of a zip member with
    the same file name; None (or FileNotFoundError, ending with ``hint``, when ``required``) if none."""
    candidates = list(candidates)
    for rel in candidates:
        if (raw / rel).is_file():
            return (raw / rel).read_bytes(), str(raw / rel)
    names = {PurePosixPath(c).name for c in candidates}
    for name in zips:
        path = raw / name
        if path.is_file():
            try:
                with zipfile.ZipFile(path) as zf:
                    member = next((m for m in zf.namelist() if PurePosixPath(m).name in names), None)
                    if member is not None:
                        return zf.read(member), f"{path}:{member}"
            except zipfile.BadZipFile as exc:
                raise ValueError(f"{path}: not a readable zip file ({exc}); download it again") from None
    if required:
        raise FileNotFoundError(f"{what} not found: looked for {', '.join(str(raw / c) for c in candidates)}"
                                + (f" and inside {', '.join(str(raw / z) for z in zips)}" if zips else "")
                                + (f"; {hint}" if hint else ""))
    return None


def _image_base(raw: Path, out: Path, folder: str, zip_name: str, member: re.Pattern, verbose: bool) -> Path:
    """The folder under which ``folder/...`` image paths resolve: ``raw`` when ``raw/folder`` exists; otherwise the
    images are extracted from ``raw/zip_name`` into ``OUT/images/folder`` (into a temporary folder renamed when
    complete, so an interrupted extraction is redone and a finished one reused)."""
    if (raw / folder).is_dir():
        return raw
    target = out / IMAGES / folder
    if target.is_dir():
        return out / IMAGES
    zip_path = raw / zip_name
    if not zip_path.is_file():
        raise FileNotFoundError(f"images not found: expected the folder {raw / folder} or the zip {zip_path}")
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=f".{folder}.partial.", dir=target.parent))
    try:
        with zipfile.ZipFile(zip_path) as zf:
            members = [m for m in zf.infolist() if not m.is_dir() and member.search(m.filename)]
            for info in progress_bar(members, desc=f"extracting {zip_name}", unit="img", disable=not verbose):
                name = PurePosixPath(info.filename).name  # flat: <folder>/<file name>, nothing else from the zip
                with zf.open(info) as src, open(partial / name, "wb") as dst:
                    shutil.copyfileobj(src, dst)
    except zipfile.BadZipFile as exc:
        shutil.rmtree(partial, ignore_errors=True)
        raise ValueError(f"{zip_path}: not a readable zip file ({exc}); download it again") from None
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    os.replace(partial, target)
    return out / IMAGES


def _text_lines(data: bytes) -> list[str]:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = data.decode("latin-1")
    return [line.strip() for line in text.splitlines()]


def _drop_missing(pool: Pool, verbose: bool) -> Pool:
    present = np.fromiter((os.path.isfile(p) for p in progress_bar(pool.images, desc="checking images",
                                                                   unit="img", disable=not verbose)),
                          dtype=bool, count=len(pool.images))
    missing = int((~present).sum())
    if missing:
        first = pool.images[int(np.flatnonzero(~present)[0])]
        if missing == len(pool.images):
            raise FileNotFoundError(f"none of the {missing:,} listed images is on disk (first: {first}); check --raw")
        print(f"warning: {missing:,} of {len(pool.images):,} listed images are not on disk (first: {first}); they "
              "are dropped and counted in manifest.json", file=sys.stderr, flush=True)
        pool.dropped["image not on disk"] = missing
        pool.images = [p for p, keep in zip(pool.images, present) if keep]
        pool.labels = pool.labels[present]
    return pool


def _keep_labelled(pool: Pool) -> Pool:
    keep = pool.labels.any(axis=1)
    if not keep.all():
        pool.dropped["no label"] = int((~keep).sum())
        pool.images = [p for p, k in zip(pool.images, keep) if k]
        pool.labels = pool.labels[keep]
    return pool


# --- readers ---------------------------------------------------------------------------------------------------

def read_flickr25k(raw: Path, out: Path, n_labels: int, verbose: bool = True) -> Pool:
    """MIRFLICKR-25K with its 38 (potential + relevant) or 24 (potential) labels, rows in image-number order."""
    wanted = set(FLICKR_POTENTIAL) | ({f"{c}_r1" for c in FLICKR_RELEVANT} if n_labels == 38 else set())

    def is_annotation(p: PurePosixPath) -> bool:
        return p.suffix == ".txt" and p.stem in wanted

    files, where = _collect(raw, ["mirflickr25k_annotations_v080", "annotations", "."],
                            ["mirflickr25k_annotations_v080.zip"], is_annotation,
                            "MIRFLICKR-25K annotation files (animals.txt, baby.txt, baby_r1.txt, …)")
    missing = sorted(wanted - {PurePosixPath(n).stem for n in files})
    if missing:
        raise FileNotFoundError(f"{where}: annotation files missing for {', '.join(missing)} (the {n_labels}-label "
                                "set needs all of them; is this mirflickr25k_annotations_v080?)")
    base = _image_base(raw, out, "mirflickr", "mirflickr25k.zip", re.compile(r"(^|/)im\d+\.jpg$"), verbose)
    numbers = sorted(int(m.group(1)) for p in (base / "mirflickr").iterdir()
                     if (m := re.fullmatch(r"im(\d+)\.jpg", p.name)))
    if not numbers:
        raise FileNotFoundError(f"no images im<N>.jpg in {base / 'mirflickr'}")
    row_of = {n: i for i, n in enumerate(numbers)}
    classes = sorted(PurePosixPath(n).stem for n in files)
    labels = np.zeros((len(numbers), len(classes)), dtype=np.uint8)
    for c, name in enumerate(classes):
        for line_no, line in enumerate(_text_lines(files[f"{name}.txt"]), start=1):
            if not line:
                continue
            if not line.isdigit() or int(line) not in row_of:
                raise ValueError(f"{where}/{name}.txt, line {line_no}: expected the number of an image "
                                 f"(1..{numbers[-1]}), got {line!r}")
            labels[row_of[int(line)], c] = 1
    pool = Pool([str(base / "mirflickr" / f"im{n}.jpg") for n in numbers], labels, classes,
                sources=[where, str(base / "mirflickr")])
    if n_labels == 24:
        pool = _keep_labelled(pool)
    return pool


def _nus_image_path(line: str) -> str:
    """``C:\\ImageData\\Flickr\\actor\\0001_2124494179.jpg`` or ``actor\\0001_….jpg`` -> ``actor/0001_….jpg``."""
    parts = [p for p in PureWindowsPath(line.replace("/", "\\")).parts if p not in ("\\",)]
    lowered = [p.lower() for p in parts]
    if "flickr" in lowered:
        parts = parts[len(lowered) - 1 - lowered[::-1].index("flickr") + 1:]
    elif parts and PureWindowsPath(line).drive:
        parts = parts[1:]
    return "/".join(parts)


NUS_ZIP = "NUS-WIDE.zip"  # the current public re-release: Groundtruth/ and ConceptsList/ (no image list, no images)


def read_nuswide(raw: Path, out: Path, top_concepts: int, verbose: bool = True) -> Pool:
    """NUS-WIDE's official image list and per-concept ground truth; keeps the ``top_concepts`` most frequent
    concepts (ties broken by concept name), in Concepts81.txt order."""
    hint = f"put the official ImageList.zip (or its ImageList/Imagelist.txt) in {raw}"
    if (raw / NUS_ZIP).is_file():
        hint = (f"{NUS_ZIP} holds the ground truth but no image list (the images in ground-truth row order); "
                + hint + " as well")
    data, list_where = _one_file(raw, ["ImageList/Imagelist.txt", "Imagelist.txt"], ["ImageList.zip", NUS_ZIP],
                                 "the NUS-WIDE image list ImageList/Imagelist.txt", hint=hint)
    entries = _text_lines(data)
    while entries and not entries[-1]:
        entries.pop()
    if not entries or any(not e for e in entries):
        raise ValueError(f"{list_where}: expected one image path per line, with no blank lines")
    # only AllLabels/ (one row per listed image); Groundtruth.zip and NUS-WIDE.zip also hold TrainTestLabels/
    # Labels_<concept>_{Train,Test}.txt, whose rows follow the train/test image lists instead
    label_files, label_where = _collect(raw, ["Groundtruth/AllLabels", "AllLabels", "NUS-WIDE/Groundtruth/AllLabels"],
                                        ["Groundtruth.zip", NUS_ZIP],
                                        lambda p: p.name.startswith("Labels_") and p.suffix == ".txt",
                                        "NUS-WIDE ground truth (Groundtruth/AllLabels/Labels_<concept>.txt)",
                                        zip_folder="AllLabels")
    concepts_file = _one_file(raw, ["ConceptsList/Concepts81.txt", "Concepts81.txt",
                                    "NUS-WIDE/ConceptsList/Concepts81.txt"], ["ConceptsList.zip", NUS_ZIP],
                              "Concepts81.txt", required=False)
    names = {n[len("Labels_"):-len(".txt")]: n for n in label_files}
    order, order_where = sorted(names), []
    if concepts_file is not None:
        listed = [c for c in _text_lines(concepts_file[0]) if c]
        if set(listed) == set(names):
            order, order_where = listed, [concepts_file[1]]
    columns = []
    for concept in order:
        values = [v for v in _text_lines(label_files[names[concept]]) if v]
        if len(values) != len(entries):
            raise ValueError(f"{label_where}/{names[concept]}: {len(values):,} rows, but the image list has "
                             f"{len(entries):,} images; the ground truth and the image list must be the same release")
        if not set(values) <= {"0", "1"}:
            bad = next(v for v in values if v not in ("0", "1"))
            raise ValueError(f"{label_where}/{names[concept]}: expected 0 or 1 per line, got {bad!r}")
        columns.append(np.frombuffer("".join(values).encode("ascii"), dtype=np.uint8) - ord("0"))
    labels = np.stack(columns, axis=1)
    if top_concepts < len(order):
        counts = labels.sum(axis=0)
        ranked = sorted(range(len(order)), key=lambda c: (-int(counts[c]), order[c]))[:top_concepts]
        chosen = sorted(ranked)
        labels, order = labels[:, chosen], [order[c] for c in chosen]
    elif top_concepts > len(order):
        raise ValueError(f"{label_where}: {len(order)} concept files, fewer than the {top_concepts} this entry needs")
    image_root = next((raw / f for f in ("Flickr", "images") if (raw / f).is_dir()), None)
    if image_root is None:
        raise FileNotFoundError(f"NUS-WIDE images not found: expected the folder {raw / 'Flickr'} (one sub-folder per "
                                "concept, as in the image list)")
    pool = Pool([str(image_root / _nus_image_path(e)) for e in entries], labels, order,
                sources=[list_where, label_where, *order_where, str(image_root)])
    pool = _keep_labelled(pool)
    return _drop_missing(pool, verbose)


def read_coco(raw: Path, out: Path, verbose: bool = True) -> Pool:
    """MS-COCO 2014 (train + val): label rows from the instance annotations, categories in id order."""
    images, annotated, categories, sources = [], {}, {}, []
    for part in ("train2014", "val2014"):
        data, where = _one_file(raw, [f"annotations/instances_{part}.json", f"instances_{part}.json"],
                                ["annotations_trainval2014.zip"], f"MS-COCO annotations instances_{part}.json")
        try:
            doc = json.loads(data)
            part_images = [(int(im["id"]), str(im["file_name"])) for im in doc["images"]]
            for cat in doc["categories"]:
                categories[int(cat["id"])] = str(cat["name"])
            for ann in doc["annotations"]:
                annotated.setdefault(int(ann["image_id"]), set()).add(int(ann["category_id"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{where}: not a COCO instances file (needs images, annotations, categories; "
                             f"{type(exc).__name__}: {exc})") from None
        base = _image_base(raw, out, part, f"{part}.zip", re.compile(r"\.jpg$"), verbose)
        images += [(image_id, str(base / part / name)) for image_id, name in part_images]
        sources += [where, str(base / part)]
    ids = sorted(categories)
    column = {cat: c for c, cat in enumerate(ids)}
    labels = np.zeros((len(images), len(ids)), dtype=np.uint8)
    for row, (image_id, _) in enumerate(images):
        for cat in annotated.get(image_id, ()):
            if cat not in column:
                raise ValueError(f"MS-COCO annotations: image {image_id} has category {cat}, which is not among the "
                                 "categories listed")
            labels[row, column[cat]] = 1
    pool = Pool([path for _, path in images], labels, [categories[i] for i in ids], sources=sources)
    pool = _keep_labelled(pool)
    return _drop_missing(pool, verbose)


def read_cifar10_pool(raw: Path, out: Path, verbose: bool = True) -> tuple[Pool, np.ndarray]:
    """CIFAR-10's pooled images written as PNG files under OUT/images/cifar10/<class>/<pool index>.png."""
    from PIL import Image

    folder = cifar.find_cifar10(raw)
    tmp = None
    if folder is None and (raw / "cifar-10-python.tar.gz").is_file():
        tmp = Path(tempfile.mkdtemp(prefix=".cifar-10.", dir=out))
        with tarfile.open(raw / "cifar-10-python.tar.gz") as tar:
            wanted = [m for m in tar.getmembers() if m.isfile()
                      and PurePosixPath(m.name).name in (*cifar.TRAIN_BATCHES, cifar.TEST_BATCH, cifar.META)]
            for m in wanted:
                src = tar.extractfile(m)
                (tmp / PurePosixPath(m.name).name).write_bytes(src.read() if src else b"")
        folder = tmp
    if folder is None:
        raise FileNotFoundError(cifar.missing_message(raw))
    try:
        images, labels, names = cifar.read_cifar10(folder)
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    target = out / IMAGES / "cifar10"
    paths = [str(target / names[int(y)] / f"{i:05d}.png") for i, y in enumerate(labels)]
    if not target.is_dir():
        partial = Path(tempfile.mkdtemp(prefix=".cifar10.partial.", dir=out))
        try:
            for name in names:
                (partial / name).mkdir()
            for i in progress_bar(range(len(images)), desc="writing PNG files", unit="img", disable=not verbose):
                Image.fromarray(images[i].transpose(1, 2, 0)).save(partial / names[int(labels[i])] / f"{i:05d}.png")
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(partial, target)
    onehot = np.eye(len(names), dtype=np.uint8)[labels]
    return Pool(paths, onehot, list(names), sources=[str(folder if tmp is None else raw / "cifar-10-python.tar.gz")]), \
        labels


# --- splits ----------------------------------------------------------------------------------------------------

def random_split(n: int, query: int, train: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """``query`` random rows, the database = the rest, ``train`` random database rows (each sorted)."""
    if query + train > n:
        raise ValueError(f"the protocol needs {query:,} queries and {train:,} training images from the database, "
                         f"but only {n:,} images are kept; use --query-size/--train-size for a smaller download")
    perm = rng.permutation(n)
    database = perm[query:]
    return {"train": np.sort(rng.permutation(database)[:train]), "query": np.sort(perm[:query]),
            "database": np.sort(database)}


def per_class_split(labels: np.ndarray, query: int, train: int, rng: np.random.Generator,
                    classes: list[str]) -> dict[str, np.ndarray]:
    """Per class in order, ``query`` random rows holding that class among those not yet chosen; then likewise
    ``train`` rows per class from the database (every row but the queries)."""
    def draw(allowed: np.ndarray, k: int, what: str) -> np.ndarray:
        taken = np.zeros(len(labels), dtype=bool)
        for c in range(labels.shape[1]):
            candidates = np.flatnonzero(labels[:, c].astype(bool) & allowed & ~taken)
            if len(candidates) < k:
                raise ValueError(f"class {classes[c]!r} has {len(candidates):,} images left for its {k:,} {what} per "
                                 "class; use --query-size/--train-size for a smaller download")
            taken[rng.choice(candidates, size=k, replace=False)] = True
        return taken

    is_query = draw(np.ones(len(labels), dtype=bool), query, "queries")
    is_train = draw(~is_query, train, "training images")
    return {"train": np.flatnonzero(is_train), "query": np.flatnonzero(is_query),
            "database": np.flatnonzero(~is_query)}


# --- writing ---------------------------------------------------------------------------------------------------

def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _listed_path(path: str, out: Path) -> str:
    """Images under OUT are listed relative to it (the folder moves as a whole); others by absolute path."""
    try:
        rel = Path(path).relative_to(out)
    except ValueError:
        return str(Path(path).absolute())
    return rel.as_posix()


def _existing_outputs(out: Path) -> list[str]:
    names = [MANIFEST, *LIST_FILES.values(), *(f for pair in PAIRED_FILES.values() for f in pair)]
    return [n for n in names if (out / n).exists()]


def prepare_dataset(name: str, raw: str | os.PathLike, out: str | os.PathLike, seed: int = 0,
                    query_size: int | None = None, train_size: int | None = None, overwrite: bool = False,
                    verbose: bool = True) -> dict:
    """Build the dataset folder ``out`` for the catalog entry ``name`` from the official files in ``raw``; returns
    the manifest (also written to ``out/manifest.json``). ``query_size``/``train_size`` change the protocol's
    sizes (per class where the protocol is per class; recorded as non-standard). An ``out`` that already holds
    lists or a manifest is refused unless ``overwrite``."""
    canonical = resolve_name(name)
    if canonical not in PROTOCOLS:
        raise ValueError(f"saat data prepare builds {', '.join(PROTOCOLS)}; {canonical} is not one of them (give its "
                         "list files with --dataset-dir instead)")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"--seed must be a non-negative integer, got {seed!r}")
    for value, flag in ((query_size, "--query-size"), (train_size, "--train-size")):
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1):
            raise ValueError(f"{flag} must be a positive integer, got {value!r}")
    protocol = PROTOCOLS[canonical]
    raw, out = Path(raw).absolute(), Path(out).absolute()
    if not raw.is_dir():
        raise FileNotFoundError(f"--raw folder not found: {raw} (the folder holding the official downloads)")
    existing = _existing_outputs(out)
    if existing and not overwrite:
        held = existing[0] + (f" and {len(existing) - 1} more dataset files" if len(existing) > 1 else "")
        raise FileExistsError(f"{out} already holds {held}; pass --overwrite to replace the lists, or choose another "
                              "--out")
    out.mkdir(parents=True, exist_ok=True)

    q, t = query_size or protocol.query, train_size or protocol.train
    if protocol.reader == "cifar10":
        pool, class_index = read_cifar10_pool(raw, out, verbose)
        rows = cifar.cifar10_split(class_index, seed, query_per_class=q, train_per_class=t)
    else:
        if protocol.reader == "flickr25k":
            pool = read_flickr25k(raw, out, protocol.options["labels"], verbose)
        elif protocol.reader == "nuswide":
            pool = read_nuswide(raw, out, protocol.options["top_concepts"], verbose)
        else:
            pool = read_coco(raw, out, verbose)
        rng = np.random.default_rng(derive_seed(seed, "prepare", canonical))
        rows = (per_class_split(pool.labels, q, t, rng, pool.classes) if protocol.per_class
                else random_split(len(pool.images), q, t, rng))

    listed = [_listed_path(p, out) for p in pool.images]
    texts: dict[str, str] = {}
    for split in SPLITS:
        idx = rows[split]
        label_rows = [" ".join("01"[v] for v in row) for row in pool.labels[idx]]
        paths = [listed[i] for i in idx]
        img_name, label_name = PAIRED_FILES[split]
        texts[img_name] = "".join(p + "\n" for p in paths)
        texts[label_name] = "".join(r + "\n" for r in label_rows)
        texts[LIST_FILES[split]] = "".join(f"{p} {r}\n" for p, r in zip(paths, label_rows))
    for file_name, text in texts.items():
        atomic_write_text(out / file_name, text)

    manifest = {
        "manifest_version": MANIFEST_VERSION,
        "saat_version": __version__,
        "dataset": canonical,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "raw": str(raw),
        "sources": pool.sources,
        "seed": int(seed),
        "protocol": protocol.describe(len(pool.images), q, t),
        "classes": pool.classes,
        "counts": {"kept": len(pool.images), "dropped": pool.dropped,
                   **{split: int(len(rows[split])) for split in SPLITS}},
        "class_counts": {split: {c: int(n) for c, n in zip(pool.classes, pool.labels[rows[split]].sum(axis=0))}
                         for split in SPLITS},
        "unlabelled": {split: int((pool.labels[rows[split]].sum(axis=1) == 0).sum()) for split in SPLITS},
        "files": {name: _sha256(text) for name, text in texts.items()},
    }
    atomic_write_json(out / MANIFEST, manifest)
    return manifest


def manifest_problems(folder: str | os.PathLike) -> list[tuple[str, str]]:
    """(file, problem) for each list of a prepared folder that is missing or whose sha256 differs from its
    manifest; [] for a folder without a manifest."""
    folder = Path(folder)
    path = folder / MANIFEST
    if not path.is_file():
        return []
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
        files = manifest["files"]
        if not isinstance(files, dict):
            raise TypeError("'files' is not a mapping")
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
        return [(MANIFEST, f"not a saat manifest ({type(exc).__name__}: {exc})")]
    problems = []
    for name, digest in files.items():
        if not (folder / name).is_file():
            problems.append((name, "listed in manifest.json but missing"))
        elif file_sha256(folder / name) != digest:
            problems.append((name, "sha256 differs from manifest.json: the list was changed after saat data prepare "
                                   "wrote it"))
    return problems
