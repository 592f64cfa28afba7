"""Split objects: ``torch.utils.data.Dataset`` subclasses yielding ``(uint8 image (3,S,S), float32 label (C,), index)``.

``TensorSplit`` holds decoded images in memory as one uint8 tensor (shared between splits: a split is a row
selection of a store) and serves whole batches through ``__getitems__`` with a single tensor index.
``FileSplit`` decodes image files lazily with PIL. Both deliver uint8 (``FloatTensorSplit``, a user's own float
images for the tensor APIs, delivers them as they are); the training loop converts each batch
to float in [0, 1] on its device (``x.float() / 255``).

Resizing follows torchvision's reference recipe, ``Resize(round(S * 256 / 224))`` then ``CenterCrop(S)``
(S = 224 gives the classic Resize(256) + CenterCrop(224)): with PIL for files, and an equivalent antialiased
bilinear resize plus center crop per batch for in-memory images (only when S differs from the stored size).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def reference_resize_side(image_size: int) -> int:
    """The shorter-side length torchvision's reference recipe resizes to before a center crop of ``image_size``."""
    return int(round(image_size * 256 / 224))


def resize_batch(images: torch.Tensor, image_size: int) -> torch.Tensor:
    """uint8 (B,c,H,W) -> uint8 (B,c,S,S): bilinear (antialiased) resize of the shorter side, then center crop."""
    _, _, h, w = images.shape
    side = reference_resize_side(image_size)
    if h <= w:
        new_h, new_w = side, max(1, int(side * w / h))
    else:
        new_h, new_w = max(1, int(side * h / w)), side
    x = F.interpolate(images.float(), size=(new_h, new_w), mode="bilinear", align_corners=False, antialias=True)
    top = int(round((new_h - image_size) / 2.0))
    left = int(round((new_w - image_size) / 2.0))
    x = x[:, :, top:top + image_size, left:left + image_size]
    return x.round_().clamp_(0, 255).to(torch.uint8)


def _index_tensor(indices: Sequence[int] | torch.Tensor, n: int) -> torch.Tensor:
    idx = torch.as_tensor(indices, dtype=torch.int64).reshape(-1)
    if idx.numel() and (int(idx.min()) < -n or int(idx.max()) >= n):
        raise IndexError(f"index out of range for a split of {n} items")
    return torch.where(idx < 0, idx + n, idx)


class RetrievalSplit(Dataset):
    """Common interface: ``labels`` (n, C) float32 multi-hot, ``image_size``, ``__getitems__``."""

    name: str
    labels: torch.Tensor
    image_size: int

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        n = len(self)
        if not -n <= int(i) < n:
            raise IndexError(f"index {i} out of range for the {self.name} split of {n} items")
        x, y, idx = self.__getitems__([int(i)])
        return x[0], y[0], int(idx[0])

    def __getitems__(self, indices: Sequence[int]) -> Batch:
        raise NotImplementedError

    @property
    def n_classes(self) -> int:
        return int(self.labels.shape[1])

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, n={len(self)}, classes={self.n_classes}, size={self.image_size})"


class TensorSplit(RetrievalSplit):
    """An in-memory split: rows ``rows`` of a uint8 image store (M, 1 or 3, H, W).

    Grayscale stores (1 channel) are repeated to 3 channels per batch. ``item_ids`` identify the items across
    splits (e.g. the row in the shipped subset, or in the pooled CIFAR-10 set), so ``train ⊂ database`` can be
    checked as a set inclusion; ``sources`` (optional, (n, k)) lists the shipped-subset images an item is made
    of (-1 = none), used by the mosaic demo to prove query and database share no source image.
    """

    def __init__(self, name: str, images: torch.Tensor, labels: torch.Tensor, rows: torch.Tensor | None = None,
                 image_size: int | None = None, item_ids: torch.Tensor | None = None,
                 sources: torch.Tensor | None = None) -> None:
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] not in (1, 3):
            raise ValueError(f"images must be a uint8 tensor (M, 1 or 3, H, W), "
                             f"got {images.dtype} {tuple(images.shape)}")
        self.name = name
        self.store = images
        self.rows = torch.arange(images.shape[0]) if rows is None else torch.as_tensor(rows, dtype=torch.int64)
        self.labels = labels.to(torch.float32)[self.rows].contiguous()
        self.stored_size = int(images.shape[-1])
        self.image_size = self.stored_size if image_size is None else int(image_size)
        self.item_ids = self.rows.clone() if item_ids is None else torch.as_tensor(item_ids, dtype=torch.int64)
        self.sources = sources

    def __getitems__(self, indices: Sequence[int]) -> Batch:
        idx = _index_tensor(indices, len(self))
        x = self.store[self.rows[idx]]
        if self.image_size != self.stored_size:
            x = resize_batch(x, self.image_size)
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1).contiguous()
        return x, self.labels[idx], idx


class FloatTensorSplit(RetrievalSplit):
    """A split of the user's own float images (n, 3, H, W) in [0, 1] with multi-hot labels (n, C), served as they
    are (no uint8 round trip; :func:`~saat.data.to_device_batch` keeps float batches as given). What the tensor
    APIs build around ``train_images=`` tensors."""

    def __init__(self, name: str, images: torch.Tensor, labels: torch.Tensor) -> None:
        if not images.is_floating_point() or images.ndim != 4 or images.shape[0] != labels.shape[0]:
            raise ValueError(f"images must be a float tensor (n, 3, H, W) with one label row each, got "
                             f"{images.dtype} {tuple(images.shape)} and labels {tuple(labels.shape)}")
        self.name = name
        self.images = images.detach()
        self.labels = labels.detach().to(torch.float32)
        self.image_size = int(images.shape[-1])

    def __getitems__(self, indices: Sequence[int]) -> Batch:
        idx = _index_tensor(indices, len(self))
        return self.images[idx.to(self.images.device)], self.labels[idx.to(self.labels.device)], idx


def image_problem(path: str) -> str | None:
    """Why the image file at ``path`` cannot be read (opened and verified with PIL, not decoded), or None."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img.verify()
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as exc:
        return str(exc)
    return None


class FileSplit(RetrievalSplit):
    """A split of image files decoded lazily with PIL (converted to RGB), resized and center-cropped to S."""

    def __init__(self, name: str, paths: list[str], labels: np.ndarray | torch.Tensor, image_size: int,
                 list_file: str | None = None, lines: np.ndarray | None = None) -> None:
        self.name = name
        self.paths = list(paths)
        self.labels = torch.as_tensor(np.asarray(labels), dtype=torch.float32)
        self.image_size = int(image_size)
        self.list_file = list_file
        self.lines = lines

    def load_image(self, i: int) -> torch.Tensor:
        """Decode item ``i`` -> uint8 (3, S, S); an undecodable file raises ValueError naming its path."""
        from PIL import Image, UnidentifiedImageError
        from torchvision.transforms import InterpolationMode
        from torchvision.transforms import functional as TF

        path = self.paths[i]
        try:
            with Image.open(path) as img:
                img = img.convert("RGB")
        except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as exc:
            where = f" (listed in {self.list_file}, line {int(self.lines[i])})" if self.lines is not None else ""
            raise ValueError(f"cannot decode image {path}{where}: {exc}") from None
        img = TF.resize(img, reference_resize_side(self.image_size), interpolation=InterpolationMode.BILINEAR)
        img = TF.center_crop(img, [self.image_size, self.image_size])
        return TF.pil_to_tensor(img)

    def check_readable(self, progress: bool = False) -> None:
        """Open and verify every image file of the split (no decoding: headers and, where the format has them,
        checksums), so that an unreadable file is found before training rather than when the split is first
        encoded. Raises ValueError naming the first bad file, its list line, and how many are bad."""
        from ..utils.progress import progress_bar

        bad = []
        for i in progress_bar(range(len(self.paths)), desc=f"check {self.name} images", unit="img",
                              disable=not progress):
            problem = image_problem(self.paths[i])
            if problem is not None:
                bad.append((i, problem))
        if bad:
            i, exc = bad[0]
            where = f" (listed in {self.list_file}, line {int(self.lines[i])})" if self.lines is not None else ""
            more = f"; {len(bad) - 1} more images of the {self.name} split are unreadable too" if len(bad) > 1 else ""
            raise ValueError(f"cannot read image {self.paths[i]}{where}: {exc}{more}")

    def __getitems__(self, indices: Sequence[int]) -> Batch:
        idx = _index_tensor(indices, len(self))
        images = [self.load_image(i) for i in idx.tolist()]
        x = torch.stack(images) if images else torch.empty((0, 3, self.image_size, self.image_size), dtype=torch.uint8)
        return x, self.labels[idx], idx
