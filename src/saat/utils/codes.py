"""The sign rule, in one place: ``sign(h)`` with ``sign(0) = +1`` (docs/conventions.md: a 0 bit never leaks into
a stored code; the authors' code leaves 0 bits)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch


def sign_codes(h: Any):
    """+-1 codes of ``h`` with ``sign(0) = +1``.

    A floating torch tensor gives the same dtype and device (so it can enter a loss), an integer tensor int8, and
    anything else (numpy arrays, lists) a numpy int8 array.
    """
    if isinstance(h, torch.Tensor):
        return torch.where(h >= 0, 1, -1).to(h.dtype if h.is_floating_point() else torch.int8)
    return np.where(np.asarray(h) >= 0, 1, -1).astype(np.int8)
