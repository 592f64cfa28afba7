"""Input checks at the public boundary of the tensor APIs (attacks on any model): one place, one-line errors that
name the argument and say how to fix it. Inside, the code trusts its inputs."""

from __future__ import annotations

import math
from typing import Any

import torch


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


def check_labels(labels: Any, name: str, num_classes: int | None, batch: int | None = None) -> torch.Tensor:
    """Multi-hot 0/1 labels (n, C), or class indices (n,) turned into one-hot rows of ``num_classes``."""
    y = torch.as_tensor(labels)
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
            raise ValueError(f"{name} must be multi-hot 0/1 rows (or class indices of shape (n,))")
    else:
        raise ValueError(f"{name} must be (n, C) multi-hot or (n,) class indices, got shape {tuple(y.shape)}")
    if batch is not None and y.shape[0] != batch:
        raise ValueError(f"{name} has {y.shape[0]} rows but the batch has {batch} images")
    return y.to(torch.float32)


def check_outputs(h: Any, batch: int, values: bool = True) -> torch.Tensor:
    """A model's continuous codes: (B, K), and finite when ``values`` (a check that waits for the device)."""
    if not isinstance(h, torch.Tensor):
        raise ValueError(f"the model must return a tensor of continuous codes (B, K), got {type(h).__name__}")
    if h.ndim != 2 or h.shape[0] != batch:
        raise ValueError(f"the model must return codes of shape (B, K) = ({batch}, K), got {tuple(h.shape)}; "
                         "flatten the output or add a hash layer")
    if values and not bool(torch.isfinite(h).all()):
        raise ValueError("the model returned NaN or infinite codes for these images")
    return h
