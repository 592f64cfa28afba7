"""The dataset catalog (a name -> spec registry, docs/data.md#dataset-catalog) and ``load_dataset``."""

from __future__ import annotations

import os
import re
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import cifar, demo
from .dataset import RetrievalDataset
from .formats import FORMAT_HELP, LIST_FILES, PAIRED_FILES, FolderListing, read_folder
from .splits import FileSplit, TensorSplit

FILE_IMAGE_SIZE = 224  # native size of file-based datasets: Resize(256) + CenterCrop(224)
CUSTOM_TOPK = 5000  # the paper family's mAP depth, also used for custom folders
DATA_ROOT_ENV = "SAAT_DATA_ROOT"


@dataclass(frozen=True)
class LoadRequest:
    """The arguments of ``load_dataset``, validated, as handed to a catalog entry's loader."""

    data_root: Path
    dataset_dir: Path | None
    image_root: Path | None
    image_size: int | None
    seed: int
    download: bool
    split_seed: int | None
    path_map: tuple[str, ...] = ()


@dataclass(frozen=True)
class DatasetSpec:
    """A catalog entry: what the dataset is and how to load it (``loader(spec, request)``)."""

    name: str
    n_classes: int
    default_topk: int | None
    native_size: int
    multi_label: bool
    loader: Callable[[DatasetSpec, LoadRequest], RetrievalDataset]
    expected_sizes: dict[str, int] | None = None  # warn when a loaded split differs
    aliases: tuple[str, ...] = ()
    folders: tuple[str, ...] = ()  # sub-folders of data_root searched for the dataset's files
    description: str = ""
    options: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        """One line about a catalog entry: classes, label kind, split sizes, topK, formats, folder names, aliases."""
        sizes = ("train {train:,} / query {query:,} / database {database:,}".format(**self.expected_sizes)
                 if self.expected_sizes else "split sizes from your lists")
        if self.loader is _load_demo:
            formats = "shipped with saat"
        elif self.loader is _load_cifar10:
            formats = "torchvision's python pickles (seeded split), or list files"
        else:
            formats = "paired *_img.txt/*_label.txt or list files"
        topk = f"mAP@{self.default_topk}" if self.default_topk else "mAP@all"
        kind = "multi-label" if self.multi_label else "single-label"
        folders = f"; folders: {', '.join(self.folders)}" if self.folders else ""
        aliases = f"; aliases: {', '.join(self.aliases)}" if self.aliases else ""
        return (f"{self.name}: {self.n_classes} classes, {kind}, {sizes}, {topk}, {self.native_size} px; {formats}"
                f"{folders}{aliases} — {self.description}")

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "n_classes": self.n_classes, "default_topk": self.default_topk,
                "native_size": self.native_size, "multi_label": self.multi_label,
                "expected_sizes": self.expected_sizes, "aliases": list(self.aliases), "description": self.description}


DATASETS: dict[str, DatasetSpec] = {}
_ALIASES: dict[str, str] = {}


def _key(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def register_dataset(spec: DatasetSpec) -> DatasetSpec:
    """Add ``spec`` to the catalog under its name and aliases (case, '-', '_' and spaces are ignored)."""
    DATASETS[spec.name] = spec
    for alias in (spec.name, *spec.aliases):
        _ALIASES[_key(alias)] = spec.name
    return spec


def list_datasets() -> list[str]:
    """Canonical names of the catalog datasets."""
    return list(DATASETS)


def list_dataset_specs() -> list[DatasetSpec]:
    """The catalog entries, for listings (``saat list datasets``)."""
    return list(DATASETS.values())


def resolve_name(name: str) -> str:
    """Canonical catalog name for ``name`` or an alias; ValueError listing the catalog otherwise."""
    canonical = _ALIASES.get(_key(str(name)))
    if canonical is None or canonical not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; known datasets: {', '.join(list_datasets())} (for a folder of "
                         "your own lists give --dataset-dir FOLDER without --dataset; in Python dataset_dir=FOLDER)")
    return canonical


def load_dataset(name: str | None = None, *, data_root: str | os.PathLike | None = None,
                 dataset_dir: str | os.PathLike | None = None, image_root: str | os.PathLike | None = None,
                 image_size: int | None = None, seed: int = 0, download: bool = False,
                 split_seed: int | None = None, path_map=None, verbose: bool = True) -> RetrievalDataset:
    """Load a catalog dataset by name, or any dataset folder (``name=None, dataset_dir=DIR``).

    ``data_root``: where catalog datasets live (default ``$SAAT_DATA_ROOT`` or ``./data``); the dataset's files
    may sit directly in it or in a sub-folder named after the dataset. ``dataset_dir``: the exact folder
    (required for custom datasets). ``image_root``: base of relative image paths (default: the dataset folder).
    ``image_size``: side of delivered images (None = native). ``seed``: the run seed; splits drawn by seed
    (CIFAR-10) use ``split_seed`` if given, else ``seed``; demo datasets use a fixed split seed unless
    ``split_seed`` is given. ``download``: fetch CIFAR-10 if missing. ``verbose``: print the split counts
    (one line on stderr). The shipped demo datasets ignore ``data_root``, ``dataset_dir``, ``image_root``,
    ``seed`` and ``download``. ``path_map``: ``["OLD=NEW", ...]`` rewrites the prefixes of listed image paths (lists
    written with their authors' absolute paths).

    Returns a ``RetrievalDataset``; bad dataset files raise ValueError/FileNotFoundError naming file and line.
    """
    request = LoadRequest(
        data_root=Path(data_root if data_root is not None else os.environ.get(DATA_ROOT_ENV, "data")),
        dataset_dir=None if dataset_dir is None else Path(dataset_dir),
        image_root=None if image_root is None else Path(image_root),
        image_size=_check_optional_int(image_size, "image_size", minimum=1),
        seed=_check_seed(seed),
        download=bool(download),
        split_seed=_check_optional_int(split_seed, "split_seed", minimum=0),
        path_map=tuple(path_map or ()),
    )
    if name is None:
        if request.dataset_dir is None:
            raise ValueError("load_dataset needs a catalog name or dataset_dir=FOLDER for a custom dataset; "
                             f"catalog: {', '.join(list_datasets())}")
        ds = _load_custom(request)
    else:
        spec = DATASETS[resolve_name(name)]
        if spec.loader is _load_demo and (dataset_dir or image_root):
            raise ValueError(f"{spec.name} is shipped with saat: --dataset-dir/--image-root do not apply to it; drop "
                             "them, or drop --dataset to load the folder as a custom dataset")
        ds = spec.loader(spec, request)
    if verbose:
        print(ds.summary(), file=sys.stderr, flush=True)
    return ds


def _check_optional_int(value: Any, name: str, minimum: int) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum} or None, got {value!r}")
    return int(value)


def _check_seed(seed: Any) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    return int(seed)


# --- file-based datasets ---------------------------------------------------------------------------------------

def _has_lists(folder: Path) -> bool:
    names = [f for pair in PAIRED_FILES.values() for f in pair] + list(LIST_FILES.values())
    return folder.is_dir() and any((folder / f).is_file() for f in names)


def _find_folder(spec: DatasetSpec, request: LoadRequest) -> Path | None:
    if request.dataset_dir is not None:
        return request.dataset_dir
    for folder in (request.data_root, *(request.data_root / f for f in spec.folders)):
        if _has_lists(folder):
            return folder
    return None


def _not_found(spec: DatasetSpec, request: LoadRequest) -> FileNotFoundError:
    looked = ", ".join(str(p) for p in (request.data_root, *(request.data_root / f for f in spec.folders)))
    return FileNotFoundError(f"{spec.name}: no dataset list files found (looked in {looked}); pass data_root "
                             f"(--data-root) or dataset_dir pointing at the folder; {FORMAT_HELP}")


def _file_dataset(name: str, listing: FolderListing, image_size: int | None, default_topk: int | None,
                  multi_label: bool | None, class_names: list[str] | None = None) -> RetrievalDataset:
    size = FILE_IMAGE_SIZE if image_size is None else image_size
    splits = {k: FileSplit(k, s.paths, s.labels, size, list_file=s.list_file, lines=s.lines)
              for k, s in listing.splits.items()}
    if multi_label is None:
        multi_label = any(bool((s.labels.sum(1) > 1).any()) for s in listing.splits.values())
    info = {
        "name": name,
        "format": listing.format,
        "root": str(listing.root),
        "image_root": str(listing.image_root),
        "files": listing.files,
        "resize": f"Resize({round(size * 256 / 224)}) + CenterCrop({size}) with PIL, RGB",
        "all_zero_label_items": {k: int((s.labels.sum(1) == 0).sum()) for k, s in listing.splits.items()},
    }
    if class_names:
        info["class_names"] = class_names
    return RetrievalDataset(name, default_topk=default_topk, multi_label=multi_label, info=info,
                            class_names=class_names, **splits)


def _check_catalog(spec: DatasetSpec, ds: RetrievalDataset, where: str) -> None:
    expected = spec.expected_sizes or {}
    differ = [f"{split} {len(ds.splits[split]):,} (standard {n:,})" for split, n in expected.items()
              if len(ds.splits[split]) != n]
    if differ:
        warnings.warn(f"{spec.name} ({where}): split sizes differ from the standard protocol: {', '.join(differ)}; "
                      f"results will not be comparable with published numbers", UserWarning, stacklevel=4)


def _load_catalog_files(spec: DatasetSpec, request: LoadRequest) -> RetrievalDataset:
    folder = _find_folder(spec, request)
    if folder is None:
        raise _not_found(spec, request)
    listing = read_folder(folder, request.image_root, expected_width=spec.n_classes, what=spec.name,
                          path_map=request.path_map)
    ds = _file_dataset(spec.name, listing, request.image_size, spec.default_topk, spec.multi_label,
                       spec.options.get("class_names"))
    _check_catalog(spec, ds, str(folder))
    return ds


def _load_custom(request: LoadRequest) -> RetrievalDataset:
    folder = request.dataset_dir
    listing = read_folder(folder, request.image_root, path_map=request.path_map)
    name = folder.resolve().name or str(folder)
    return _file_dataset(name, listing, request.image_size, CUSTOM_TOPK, multi_label=None)


# --- CIFAR-10 ---------------------------------------------------------------------------------------------------

def _load_cifar10(spec: DatasetSpec, request: LoadRequest) -> RetrievalDataset:
    listed = _find_folder(spec, request)
    if listed is not None and _has_lists(listed):  # explicit split lists win over the seeded split
        return _load_catalog_files(spec, request)
    root = request.dataset_dir or request.data_root
    folder = next(filter(None, map(cifar.find_cifar10, (root, *(root / f for f in spec.folders)))), None)
    if folder is None:
        if not request.download:
            raise FileNotFoundError(cifar.missing_message(root))
        folder = cifar.download_cifar10(root)
    images, labels, names = cifar.read_cifar10(folder)
    seed = request.seed if request.split_seed is None else request.split_seed
    q, t = spec.options["query_per_class"], spec.options["train_per_class"]
    rows = cifar.cifar10_split(labels, seed, query_per_class=q, train_per_class=t)
    store = torch.from_numpy(images)
    onehot = torch.nn.functional.one_hot(torch.from_numpy(labels), len(names)).to(torch.float32)
    splits = {k: TensorSplit(k, store, onehot, rows=torch.from_numpy(r), image_size=request.image_size)
              for k, r in rows.items()}
    info = {
        "name": spec.name,
        "format": "torchvision-cifar10-pickle",
        "root": str(folder),
        "split_seed": seed,
        "protocol": (f"train batches then test batch pooled ({len(labels):,} images); per class {q} queries and "
                     f"{t} training items by a seeded permutation; database = all but the queries"),
        "native_size": spec.native_size,
        "class_names": names,
    }
    ds = RetrievalDataset(spec.name, default_topk=spec.default_topk, multi_label=False, info=info,
                          class_names=names, **splits)
    _check_catalog(spec, ds, str(folder))
    return ds


# --- demo datasets ------------------------------------------------------------------------------------------------

def _load_demo(spec: DatasetSpec, request: LoadRequest) -> RetrievalDataset:
    return spec.options["builder"](image_size=request.image_size, split_seed=request.split_seed)


register_dataset(DatasetSpec(
    "fashion-mosaic", 10, demo.DEMO_TOPK, 2 * demo.CELL, True, _load_demo,
    expected_sizes={"train": 3000, "query": 500, "database": 8000},
    aliases=("mosaic", "fashion-mnist-mosaic", "fmnist-mosaic"),
    description="shipped demo (default): multi-label 2x2 mosaics of Fashion-MNIST items, 56 px",
    options={"builder": demo.build_fashion_mosaic}))
register_dataset(DatasetSpec(
    "fashion-mnist", 10, demo.DEMO_TOPK, demo.CELL, False, _load_demo,
    expected_sizes={"train": 3000, "query": 1000, "database": 9000},
    aliases=("fashionmnist", "fmnist"),
    description="shipped demo: single-label Fashion-MNIST subset, 28 px",
    options={"builder": demo.build_fashion_mnist}))
register_dataset(DatasetSpec(
    "FLICKR-25K", 38, 5000, FILE_IMAGE_SIZE, True, _load_catalog_files,
    expected_sizes={"train": 5000, "query": 1700, "database": 23300},
    aliases=("flickr25k", "flickr", "mirflickr", "mirflickr25k"),
    folders=("FLICKR-25K", "flickr25k", "flickr", "mirflickr"),
    description="MIRFLICKR-25K, 38 concepts (SAAT-family lists)"))
register_dataset(DatasetSpec(
    "NUS-WIDE", 21, 5000, FILE_IMAGE_SIZE, True, _load_catalog_files,
    expected_sizes={"train": 10500, "query": 2100, "database": 193734},
    aliases=("nuswide", "nus-wide-21", "nus"),
    folders=("NUS-WIDE", "nus-wide", "nuswide", "nus_wide", "nuswide_21", "nuswide_21_m", "nus-wide-21"),
    description="NUS-WIDE, 21 most frequent concepts"))
register_dataset(DatasetSpec(
    "FLICKR-25K-24", 24, 5000, FILE_IMAGE_SIZE, True, _load_catalog_files,
    aliases=("flickr25k-24", "mirflickr-24", "flickr-24"),
    folders=("FLICKR-25K-24", "flickr25k_24", "mirflickr_24"),
    description="MIRFLICKR-25K, the 24 potential labels (cross-modal hashing lists); split sizes vary by list"))
register_dataset(DatasetSpec(
    "NUS-WIDE-81", 81, 5000, FILE_IMAGE_SIZE, True, _load_catalog_files,
    aliases=("nuswide-81", "nus-81", "nuswide81"),
    folders=("NUS-WIDE-81", "nuswide_81", "nus-wide-81", "nus_wide_81"),
    description="NUS-WIDE, all 81 concepts; split sizes vary by list"))
register_dataset(DatasetSpec(
    "ImageNet-100", 100, 1000, FILE_IMAGE_SIZE, False, _load_catalog_files,
    expected_sizes={"train": 13000, "query": 5000, "database": 128503},
    aliases=("imagenet100", "imagenet-100", "imagenet"),
    folders=("ImageNet-100", "imagenet100", "imagenet-100", "imagenet"),
    description="ImageNet-100 (100 ILSVRC classes, HashNet protocol), mAP@1000"))
register_dataset(DatasetSpec(
    "MS-COCO", 80, 5000, FILE_IMAGE_SIZE, True, _load_catalog_files,
    expected_sizes={"train": 10000, "query": 5000, "database": 117218},
    aliases=("mscoco", "coco"),
    folders=("MS-COCO", "ms-coco", "mscoco", "coco"),
    description="MS-COCO, 80 categories"))
register_dataset(DatasetSpec(
    "CIFAR-10", 10, 5000, 32, False, _load_cifar10,
    expected_sizes={"train": 5000, "query": 1000, "database": 59000},
    aliases=("cifar10", "cifar"),
    folders=("CIFAR-10", "cifar-10", "cifar10"),
    description="CIFAR-10 from torchvision's files, seeded split (query 100/class, train 500/class ⊂ database)",
    options={"query_per_class": cifar.QUERY_PER_CLASS, "train_per_class": cifar.TRAIN_PER_CLASS,
             "class_names": cifar.CLASS_NAMES}))
