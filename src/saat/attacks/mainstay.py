"""Mainstay codes (docs/attacks.md#mainstay-codes, "DMFL") and CgAT's center codes.

For query (or target) labels ``y`` (B, C), training codes ``U`` (N, K) of +-1 and training labels ``Y`` (N, C):

    s_ij  = y_i . Y_j / (|y_i| |Y_j| + 1e-8)          label cosine similarity
    Wp_ij = s_ij / sum_j s_ij                          (a zero row when no training item shares a label)
    Wn_ij = 1[s_ij = 0] / sum_j 1[s_ij = 0]            (a zero row when there are no negatives)
    m_i   = sign(sum_j Wp_ij U_j - sum_j Wn_ij U_j),   sign(0) = +1

``m_i`` maximises ``b . (sum Wp U - sum Wn U)`` over b in {-1, +1}^K: the code closest, weighted by semantic
similarity, to the positives and farthest from the negatives. The sums run over chunks of the training set so
memory stays bounded for any N.
"""

from __future__ import annotations

import torch

from ..utils.codes import sign_codes
from ..utils.validation import check_labels, codes_tensor

_CHUNK_ELEMENTS = 1 << 22  # B x chunk similarities held at once


def _validate(labels, train_codes, train_labels):
    """The checked inputs as tensors on the device of the torch inputs (CPU for numpy); class-index labels (n,)
    are accepted for the query side (the class count is the training labels' width)."""
    device = next((t.device for t in (labels, train_codes, train_labels) if isinstance(t, torch.Tensor)), None)
    u = codes_tensor(train_codes, "train_codes", device)
    ty = check_labels(train_labels, "train_labels", None).to(u.device)
    shape = getattr(labels, "shape", None)
    if shape is not None and len(shape) == 2 and shape[1] != ty.shape[1]:
        raise ValueError(f"labels has {shape[1]} classes but train_labels has {ty.shape[1]}")
    y = check_labels(labels, "labels", ty.shape[1]).to(u.device)
    if u.shape[0] != ty.shape[0]:
        raise ValueError(f"train_codes has {u.shape[0]} rows but train_labels has {ty.shape[0]}")
    return y, u, ty


def _work_dtype(device: torch.device) -> torch.dtype:
    # float64 keeps exact ties (an argument of exactly 0) exact; MPS has no float64.
    return torch.float32 if device.type == "mps" else torch.float64


def _side_means(y: torch.Tensor, u: torch.Tensor, ty: torch.Tensor, weighted: bool):
    """(positive-side weighted sum, positive weight), (negative-side sum, negative count), accumulated in chunks."""
    dt = _work_dtype(y.device)
    y, u, ty = y.to(dt), u.to(dt), ty.to(dt)
    y_norm = y.norm(dim=1, keepdim=True)
    b, k = y.shape[0], u.shape[1]
    pos = torch.zeros(b, k, dtype=dt, device=y.device)
    neg = torch.zeros_like(pos)
    pos_w = torch.zeros(b, 1, dtype=dt, device=y.device)
    neg_n = torch.zeros_like(pos_w)
    chunk = max(1, _CHUNK_ELEMENTS // max(b, 1))
    for start in range(0, u.shape[0], chunk):
        yc, uc = ty[start:start + chunk], u[start:start + chunk]
        s = (y @ yc.T) / (y_norm * yc.norm(dim=1)[None, :] + 1e-8)
        w = s if weighted else (s > 0).to(dt)
        n = (s == 0).to(dt)
        pos += w @ uc
        neg += n @ uc
        pos_w += w.sum(dim=1, keepdim=True)
        neg_n += n.sum(dim=1, keepdim=True)
    pos = pos / torch.where(pos_w > 0, pos_w, 1)  # a zero row stays zero
    neg = neg / torch.where(neg_n > 0, neg_n, 1)
    return pos - neg


def mainstay_codes(labels, train_codes, train_labels) -> torch.Tensor:
    """Mainstay codes (B, K) of +-1 (float32) for a batch of label vectors; see the module docstring.

    Inputs may be numpy arrays or torch tensors; the result lives on the device of the torch inputs (CPU for
    numpy). Raises ``ValueError`` naming the argument for non +-1 codes, non 0/1 labels or shape mismatches.
    """
    y, u, ty = _validate(labels, train_codes, train_labels)
    return sign_codes(_side_means(y, u, ty, weighted=True)).to(torch.float32)


def center_codes(labels, train_codes, train_labels) -> torch.Tensor:
    """CgAT's center codes: ``sign(mean of positives' codes - mean of negatives' codes)``, all positives weighing
    equally. An empty side is dropped (the authors return an all-zero code there) and sign(0) = +1."""
    y, u, ty = _validate(labels, train_codes, train_labels)
    return sign_codes(_side_means(y, u, ty, weighted=False)).to(torch.float32)


def mainstay_from_memory(labels: torch.Tensor, memory: torch.Tensor, memory_labels: torch.Tensor) -> torch.Tensor:
    """Mainstay codes from a training-set memory without input validation (inside training loops, every batch).

    ``memory`` may hold continuous values (SAAT's parity mode reproduces the authors' code, whose memory is
    overwritten with tanh outputs); the formula is the same.
    """
    return sign_codes(_side_means(labels, memory, memory_labels, weighted=True)).to(torch.float32)


def center_from_memory(labels: torch.Tensor, memory: torch.Tensor, memory_labels: torch.Tensor) -> torch.Tensor:
    """CgAT center codes from a training-set memory, without input validation."""
    return sign_codes(_side_means(labels, memory, memory_labels, weighted=False)).to(torch.float32)
