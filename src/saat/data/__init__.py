"""Datasets for hashing retrieval: the catalog, the two on-disk formats, the shipped demo data, loaders.

>>> from saat.data import load_dataset, make_loader
>>> ds = load_dataset("fashion-mosaic")                      # shipped, no download  # doctest: +SKIP
>>> for x, y, idx in make_loader(ds.train, 64, shuffle=True, seed=0, epoch=0):  # doctest: +SKIP
...     x = x.to(device).float() / 255                         # uint8 (B,3,S,S) -> [0, 1]

**Splits.** Every dataset has ``train``, ``query`` and ``database`` splits (``ds.train`` ...). A split is a
``torch.utils.data.Dataset``: ``split[i] -> (image uint8 (3,S,S), label float32 (C,), i)``, and
``split.__getitems__(indices)`` returns a whole batch ``(uint8 (B,3,S,S), float32 (B,C), int64 (B,))``;
``split.labels`` is the (n, C) float32 multi-hot label matrix. The index is the item's position in its split
(what the hashing losses' memories are indexed by).

**Conventions.**
* Images stay uint8 until the training loop converts each batch on its device (``x.float() / 255``);
  models receive [0, 1] floats and normalise internally (docs/conventions.md#conventions).
* Grayscale images (the Fashion-MNIST demos) are **repeated to 3 channels**, so every model takes 3-channel
  input; they are stored with one channel and expanded per batch.
* Labels are multi-hot 0/1; single-label datasets are one-hot. All-zero label rows are allowed.
* Resizing (``image_size`` differing from the stored size) follows torchvision's reference recipe:
  ``Resize(round(S*256/224))`` then ``CenterCrop(S)`` (PIL for files; antialiased bilinear per batch in memory).
* Every random split is seeded; the demo datasets use a fixed split seed independent of the run seed.

**On-disk formats** (docs/data.md#on-disk-formats, detected automatically in any dataset folder; "test" is the query
split): 1. paired files ``train_img.txt``/``train_label.txt``, ``test_img.txt``/``test_label.txt``,
   ``database_img.txt``/``database_label.txt``: one image path per ``*_img.txt`` line, one row of 0/1 integers
   per ``*_label.txt`` line;
2. list files ``train.txt``, ``test.txt``, ``database.txt`` with lines ``relative/path.jpg 0 1 0 ... 1``.
Relative paths are resolved against ``image_root`` (default: the dataset folder); absolute paths are allowed.
Bad input (missing file, ragged or non-0/1 label rows, empty split, unpaired lines, missing image) raises
``ValueError``/``FileNotFoundError`` naming the file and line; an undecodable image raises ``ValueError``
naming its path when it is read. The class count C is the width of the first label row.

**Catalog** (``list_datasets()``, ``DATASETS``): ``fashion-mosaic`` and ``fashion-mnist`` (shipped demo data,
see ``saat.data.demo``), ``FLICKR-25K``, ``NUS-WIDE``, ``MS-COCO`` (dataset folders in either format) and
``CIFAR-10`` (torchvision's pickled batches, split by seed, or a dataset folder). Catalog datasets warn when
split sizes differ from the standard protocol and fail when the class count differs. Custom folders load with
``load_dataset(dataset_dir=FOLDER)``.
"""

from .catalog import (
    DATASETS,
    DatasetSpec,
    list_dataset_specs,
    list_datasets,
    load_dataset,
    register_dataset,
    resolve_name,
)
from .dataset import RetrievalDataset
from .demo import load_fashion_subset
from .loader import EpochShuffleSampler, FirstItems, make_loader, set_loader_epoch, to_device_batch
from .splits import FileSplit, FloatTensorSplit, RetrievalSplit, TensorSplit, resize_batch

__all__ = [
    "DATASETS",
    "DatasetSpec",
    "EpochShuffleSampler",
    "FileSplit",
    "FloatTensorSplit",
    "FirstItems",
    "RetrievalDataset",
    "RetrievalSplit",
    "TensorSplit",
    "list_datasets",
    "load_dataset",
    "load_fashion_subset",
    "make_loader",
    "register_dataset",
    "resize_batch",
    "resolve_name",
    "list_dataset_specs",
    "set_loader_epoch",
    "to_device_batch",
]
