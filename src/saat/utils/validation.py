"""Input checks at the public boundary (docs/retrieval.md#public-functions-and-input-validation,
docs/attacks.md#your-own-model): one module, reused by retrieval, the mainstay codes, the tensor attacks and the
defenses on any model. Every check raises ``ValueError`` with one line that names the argument and says how to fix
it; inside, the code trusts its inputs.

Images: float tensors (B, C, H, W) in [0, 1]. Codes: numpy arrays or torch tensors (n, K) whose entries are exactly
+1 or -1, in any integer or floating dtype. Labels: multi-hot 0/1 (n, C), or class indices (n,) turned into one-hot
rows. Model outputs: finite (B, K) tensors.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch


def is_tensor(x: Any) -> bool:
    return isinstance(x, torch.Tensor)


def on_accelerator(x: Any) -> bool:
    """True for a torch tensor that lives on a non-CPU device (CUDA, MPS, ...)."""
    return is_tensor(x) and x.device.type != "cpu"


def _describe(x: Any) -> str:
    if is_tensor(x):
        return f"a torch tensor of shape {tuple(x.shape)} and dtype {x.dtype}"
    if isinstance(x, np.ndarray):
        return f"an array of shape {x.shape} and dtype {x.dtype}"
    return f"an object of type {type(x).__name__}"


_CHECK_ROWS = 1 << 16  # rows checked at a time: the boolean temporaries stay small for a million-row database


def _is_plus_minus_one(b: np.ndarray) -> np.ndarray:
    return (b == 1) | (b == -1)


def _is_zero_one(b: np.ndarray) -> np.ndarray:
    return (b == 0) | (b == 1)


def _first_bad(x: np.ndarray, ok) -> Any:
    """The first entry of ``x`` (row-major order) for which ``ok`` is False, or None; checked in blocks of rows."""
    for start in range(0, x.shape[0], _CHECK_ROWS):
        block = x[start:start + _CHECK_ROWS]
        good = ok(block)
        if not good.all():
            return block[~good].flat[0]
    return None


def check_codes(x: Any, name: str) -> np.ndarray | torch.Tensor:
    """Validate a (n, K) matrix of +-1 codes. Returns a numpy array, or the tensor itself if on an accelerator."""
    if is_tensor(x):
        if x.is_complex() or x.dtype == torch.bool:
            raise ValueError(f"{name} must hold +1/-1 values in a real dtype, got {_describe(x)}")
        if x.ndim != 2:
            raise ValueError(f"{name} must be 2-D (n_items, n_bits), got {_describe(x)}")
        if x.shape[0] == 0 or x.shape[1] == 0:
            raise ValueError(f"{name} is empty: {_describe(x)}")
        if not bool(((x == 1) | (x == -1)).all()):
            bad = x[(x != 1) & (x != -1)].flatten()[0].item()
            raise ValueError(
                f"{name} must contain only +1 and -1 (hash codes, not continuous outputs); found {bad!r}. "
                "Use saat.retrieval.sign_codes(h) to binarise network outputs."
            )
        if x.device.type != "cpu":
            return x.detach()
        x = x.detach().numpy()
    if not isinstance(x, np.ndarray):
        try:
            x = np.asarray(x)
        except Exception as exc:  # noqa: BLE001 - report any conversion failure the same way
            raise ValueError(f"{name} could not be converted to an array: {exc}") from None
    if x.dtype == bool or x.dtype.kind not in "iuf":
        raise ValueError(f"{name} must hold +1/-1 values in an integer or float dtype, got {_describe(x)}")
    if x.ndim != 2:
        hint = " Reshape a single code with codes.reshape(1, -1)." if x.ndim == 1 else ""
        raise ValueError(f"{name} must be 2-D (n_items, n_bits), got {_describe(x)}.{hint}")
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"{name} is empty: {_describe(x)}")
    bad = _first_bad(x, _is_plus_minus_one)
    if bad is not None:
        raise ValueError(
            f"{name} must contain only +1 and -1 (hash codes, not continuous outputs); found {bad!r}. "
            "Use saat.retrieval.sign_codes(h) to binarise network outputs."
        )
    return x


def check_code_pair(query_codes: Any, db_codes: Any, query_name: str = "query_codes",
                    db_name: str = "db_codes"):
    q = check_codes(query_codes, query_name)
    d = check_codes(db_codes, db_name)
    if q.shape[1] != d.shape[1]:
        raise ValueError(
            f"{query_name} has {q.shape[1]} bits per code but {db_name} has {d.shape[1]}; "
            "both must come from the same hash model"
        )
    return q, d


def _labels_to_numpy(y: Any, name: str) -> np.ndarray:
    if is_tensor(y):
        y = y.detach().cpu().numpy()
    if not isinstance(y, np.ndarray):
        try:
            y = np.asarray(y)
        except Exception as exc:  # noqa: BLE001
            raise ValueError(f"{name} could not be converted to an array: {exc}") from None
    if y.dtype.kind not in "biuf":
        raise ValueError(f"{name} must be numeric 0/1 labels, got {_describe(y)}")
    if y.ndim not in (1, 2):
        raise ValueError(f"{name} must be multi-hot (n_items, n_classes) or a class vector (n_items,), "
                         f"got {_describe(y)}")
    return y


def check_label_pair(query_labels: Any, db_labels: Any, n_query: int, n_db: int,
                     query_name: str = "query_labels", db_name: str = "db_labels"):
    """Validate labels of queries and database; return two uint8 multi-hot arrays of equal width."""
    ql = _labels_to_numpy(query_labels, query_name)
    dl = _labels_to_numpy(db_labels, db_name)
    if ql.ndim != dl.ndim:
        raise ValueError(
            f"{query_name} is {ql.ndim}-D but {db_name} is {dl.ndim}-D; pass both as multi-hot matrices "
            "or both as integer class vectors"
        )
    for y, name, n, what in ((ql, query_name, n_query, "query"), (dl, db_name, n_db, "database")):
        if y.shape[0] != n:
            raise ValueError(f"{name} has {y.shape[0]} rows but there are {n} {what} codes")
    if ql.ndim == 1:
        for y, name in ((ql, query_name), (dl, db_name)):
            if y.dtype.kind not in "iu":
                raise ValueError(f"{name} is 1-D, so it must be integer class indices, got dtype {y.dtype}")
            if y.size and y.min() < 0:
                raise ValueError(f"{name} holds a negative class index ({int(y.min())})")
        # Only equality of classes matters for relevance: number the classes that occur, so that any index (even
        # 2**40) gives a one-hot matrix as wide as the number of distinct classes.
        classes, dense = np.unique(np.concatenate([ql, dl]), return_inverse=True)
        eye = np.eye(len(classes), dtype=np.uint8)
        return eye[dense[:len(ql)]], eye[dense[len(ql):]]
    if ql.shape[1] != dl.shape[1]:
        raise ValueError(f"{query_name} has {ql.shape[1]} classes but {db_name} has {dl.shape[1]}")
    if ql.shape[1] == 0:
        raise ValueError(f"{query_name} and {db_name} have zero classes")
    for y, name in ((ql, query_name), (dl, db_name)):
        bad = _first_bad(y, _is_zero_one)
        if bad is not None:
            raise ValueError(f"{name} must contain only 0 and 1 (multi-hot labels); found {bad!r}")
    return ql.astype(np.uint8, copy=False), dl.astype(np.uint8, copy=False)


def check_topk(topk: Any, name: str = "topk") -> int | None:
    if topk is None:
        return None
    if isinstance(topk, bool) or not isinstance(topk, (int, np.integer)) or topk < 1:
        raise ValueError(f"{name} must be a positive integer or None (whole database), got {topk!r}")
    return int(topk)


def check_positive_ints(values: Any, name: str) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 1 or arr.size == 0 or arr.dtype.kind not in "iu" or (arr < 1).any():
        raise ValueError(f"{name} must be a non-empty list of positive integers, got {values!r}")
    return arr.astype(np.int64)


def check_recalls(values: Any, name: str = "recalls") -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1 or arr.size == 0 or not np.all((arr > 0) & (arr <= 1)):
        raise ValueError(f"{name} must be a non-empty list of recall levels in (0, 1], got {values!r}")
    return arr


def check_images(images: Any) -> torch.Tensor:
    """Float images (B, C, H, W) with values in [0, 1]."""
    if not isinstance(images, torch.Tensor):
        raise ValueError(f"images must be a torch tensor (B, 3, H, W) of floats in [0, 1], got {type(images).__name__}")
    if images.ndim != 4:
        raise ValueError(f"images must be 4-D (B, C, H, W), got shape {tuple(images.shape)}")
    if images.shape[0] == 0:
        raise ValueError("images is an empty batch")
    if not images.is_floating_point():
        raise ValueError(f"images must be floats in [0, 1], got dtype {images.dtype}; for 0-255 images use "
                         "images.float() / 255")
    if not bool(torch.isfinite(images).all()):
        raise ValueError("images contain NaN or infinite values")
    lo, hi = float(images.min()), float(images.max())
    if lo < 0 or hi > 1:
        hint = ("they look like 0-255 pixel values: divide by 255" if hi > 1.5 and lo >= 0 else
                "they look normalised (e.g. with ImageNet mean/std): pass [0, 1] images and normalise inside the "
                "model, so that eps is in pixel units")
        raise ValueError(f"images must lie in [0, 1], got values in [{lo:.3g}, {hi:.3g}]; {hint}")
    return images.detach()


def check_eps(eps: Any) -> float:
    """An L-infinity budget in (0, 1) pixel units."""
    try:
        value = float(eps)
    except (TypeError, ValueError):
        raise ValueError(f"eps must be a number such as 8/255, got {eps!r}") from None
    if math.isnan(value) or value <= 0:
        raise ValueError(f"eps must be positive, got {eps!r}")
    if value >= 1:
        raise ValueError(f"eps = {value:g} is in pixel levels, but images are in [0, 1]: use eps={value:g}/255")
    return value


def check_labels(labels: Any, name: str, num_classes: int | None, batch: int | None = None,
                 batch_of: str = "images in the batch") -> torch.Tensor:
    """Multi-hot 0/1 labels (n, C), or class indices (n,) turned into one-hot rows of ``num_classes``; float32,
    on the device of a tensor input (CPU otherwise). ``batch``: the number of rows required (``batch_of`` says of
    what, for the error)."""
    if is_tensor(labels):
        y = labels.detach()
    else:
        try:
            y = torch.as_tensor(np.asarray(labels))
        except Exception as exc:  # noqa: BLE001 - report any conversion failure the same way
            raise ValueError(f"{name} could not be converted to a tensor: {exc}") from None
    if y.dtype == torch.bool:
        y = y.to(torch.uint8)
    if y.is_complex():
        raise ValueError(f"{name} must be numeric 0/1 labels, got {_describe(y)}")
    if y.ndim == 1:
        if y.is_floating_point() and not bool((y == y.round()).all()):
            raise ValueError(f"{name}: a 1-D label vector must hold class indices, got non-integers")
        if num_classes is None:
            raise ValueError(f"{name}: class indices need num_classes= (or pass multi-hot labels (n, C))")
        idx = y.long()
        if len(idx) and (int(idx.min()) < 0 or int(idx.max()) >= num_classes):
            raise ValueError(f"{name}: class indices must be in [0, {num_classes}), got {int(idx.min())}.."
                             f"{int(idx.max())}")
        y = torch.nn.functional.one_hot(idx, num_classes)
    elif y.ndim == 2:
        if num_classes is not None and y.shape[1] != num_classes:
            raise ValueError(f"{name} has {y.shape[1]} classes per row, expected {num_classes}")
        if not bool(((y == 0) | (y == 1)).all()):
            raise ValueError(f"{name} must contain only 0 and 1 (multi-hot rows), or be class indices of shape (n,)")
    else:
        raise ValueError(f"{name} must be (n, C) multi-hot or (n,) class indices, got shape {tuple(y.shape)}")
    if batch is not None and y.shape[0] != batch:
        raise ValueError(f"{name} has {y.shape[0]} rows but there are {batch} {batch_of}")
    return y.to(torch.float32)


def codes_tensor(codes: Any, name: str, device: torch.device | str | None = None,
                 rows: int | None = None) -> torch.Tensor:
    """:func:`check_codes`, then a float32 tensor on ``device`` (default: where a tensor input lives); ``rows``
    the number of rows the codes must have."""
    checked = check_codes(codes, name)
    t = checked if is_tensor(checked) else torch.from_numpy(np.ascontiguousarray(checked))
    if rows is not None and t.shape[0] != rows:
        raise ValueError(f"{name} has {t.shape[0]} rows, expected {rows} (one per item)")
    if device is None and is_tensor(codes):
        device = codes.device
    return t.to(device=device, dtype=torch.float32)


def check_outputs(h: Any, batch: int, values: bool = True, name: str = "the model's output") -> torch.Tensor:
    """Continuous codes (B, K), e.g. a model's output; finite when ``values`` (a check that waits for the device)."""
    if not isinstance(h, torch.Tensor):
        raise ValueError(f"{name} must be a tensor of continuous codes (B, K), got {type(h).__name__}")
    if h.ndim != 2 or h.shape[0] != batch:
        raise ValueError(f"{name} must be codes of shape (B, K) = ({batch}, K), got {tuple(h.shape)}; "
                         "flatten the output or add a hash layer")
    if values and not bool(torch.isfinite(h).all()):
        raise ValueError(f"{name} holds NaN or infinite values")
    return h


_NAME = __import__("re").compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,127}")


def check_name(name: Any, what: str = "--name") -> str:
    """A name that becomes one folder inside a run directory: letters, digits, '.', '_', '+', '-', starting with a
    letter or digit, at most 128 characters — never a path (no '/', '..', absolute or hidden names)."""
    if not isinstance(name, str) or not _NAME.fullmatch(name) or name.strip(".") == "":
        raise ValueError(f"{what} must be one folder name of letters, digits, '.', '_', '+' and '-' (starting with a "
                         f"letter or digit, at most 128 characters), got {name!r}")
    return name
