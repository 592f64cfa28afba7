"""Input validation at the public boundary of :mod:`saat.retrieval` (see
docs/retrieval.md#public-functions-and-input-validation).

Codes: numpy arrays or torch tensors of shape (n, K) whose entries are exactly +1 or -1, in any integer or
floating dtype. Labels: multi-hot 0/1 arrays of shape (n, C), or integer class vectors of shape (n,) that are
turned into one-hot rows. Everything wrong raises ``ValueError`` naming the argument.
"""

from __future__ import annotations

from typing import Any

import numpy as np

try:  # torch is a hard dependency of the package, but retrieval must not fail to import without it
    import torch
except ImportError:  # pragma: no cover
    torch = None


def is_tensor(x: Any) -> bool:
    return torch is not None and isinstance(x, torch.Tensor)


def on_accelerator(x: Any) -> bool:
    """True for a torch tensor that lives on a non-CPU device (CUDA, MPS, ...)."""
    return is_tensor(x) and x.device.type != "cpu"


def _describe(x: Any) -> str:
    if is_tensor(x):
        return f"a torch tensor of shape {tuple(x.shape)} and dtype {x.dtype}"
    if isinstance(x, np.ndarray):
        return f"an array of shape {x.shape} and dtype {x.dtype}"
    return f"an object of type {type(x).__name__}"


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
    ok = (x == 1) | (x == -1)
    if not ok.all():
        bad = x[~ok].flat[0]
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
        n_classes = int(max(ql.max(initial=0), dl.max(initial=0))) + 1
        eye = np.eye(n_classes, dtype=np.uint8)
        return eye[ql], eye[dl]
    if ql.shape[1] != dl.shape[1]:
        raise ValueError(f"{query_name} has {ql.shape[1]} classes but {db_name} has {dl.shape[1]}")
    if ql.shape[1] == 0:
        raise ValueError(f"{query_name} and {db_name} have zero classes")
    for y, name in ((ql, query_name), (dl, db_name)):
        ok = (y == 0) | (y == 1)
        if not ok.all():
            raise ValueError(f"{name} must contain only 0 and 1 (multi-hot labels); found {y[~ok].flat[0]!r}")
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
