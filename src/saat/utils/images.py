"""A PNG grid of benign / adversarial / amplified-difference images (PIL only)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch

from .io import atomic_write_bytes


def _to_uint8(img: torch.Tensor) -> np.ndarray:
    arr = img.detach().float().clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).numpy()
    return arr


def save_example_grid(path: str | Path, pairs: list[tuple[torch.Tensor, torch.Tensor]], eps: float,
                      scale: int | None = None) -> Path:
    """Columns: one example each. Rows: benign, adversarial, |difference| stretched so that eps is white."""
    from PIL import Image

    h, w = pairs[0][0].shape[-2:]
    scale = scale or max(1, 96 // max(h, w))
    pad = 2
    cols, rows = len(pairs), 3
    canvas = np.full((rows * (h * scale + pad) + pad, cols * (w * scale + pad) + pad, 3), 255, np.uint8)
    for c, (x, x_adv) in enumerate(pairs):
        diff = (x_adv - x).abs() / max(eps, 1e-12)
        for r, img in enumerate((x, x_adv, diff)):
            tile = np.kron(_to_uint8(img), np.ones((scale, scale, 1), np.uint8))
            top, left = pad + r * (h * scale + pad), pad + c * (w * scale + pad)
            canvas[top:top + h * scale, left:left + w * scale] = tile
    buf = io.BytesIO()
    Image.fromarray(canvas).save(buf, format="PNG")
    return atomic_write_bytes(path, buf.getvalue())
