"""Perceptibility of adversarial images (docs/retrieval.md#retrieval-metrics): per image, then averaged.

Elementwise L-infinity ``max |x' - x|``, L2 ``||x' - x||_2`` over all pixels and channels, MSE, and PSNR
``10 log10(1 / MSE)`` for [0, 1] images (images with MSE = 0 are left out of the PSNR mean). The authors report
per-channel matrix norms under these names; these are the usual elementwise definitions.
"""

from __future__ import annotations

import math

import torch


class Perceptibility:
    """Accumulates per-image distances batch by batch."""

    def __init__(self):
        self.n = 0
        self.sums = {"linf": 0.0, "l2": 0.0, "mse": 0.0}
        self.linf_max = 0.0
        self.psnr_sum = 0.0
        self.psnr_n = 0

    def update(self, x: torch.Tensor, x_adv: torch.Tensor) -> None:
        d = (x_adv.detach().double() - x.detach().double()).flatten(1)
        linf = d.abs().amax(dim=1)
        mse = d.pow(2).mean(dim=1)
        self.sums["linf"] += float(linf.sum())
        self.sums["l2"] += float(d.norm(dim=1).sum())
        self.sums["mse"] += float(mse.sum())
        self.linf_max = max(self.linf_max, float(linf.max()) if len(linf) else 0.0)
        positive = mse[mse > 0]
        self.psnr_sum += float((10 * torch.log10(1.0 / positive)).sum())
        self.psnr_n += int(positive.numel())
        self.n += d.shape[0]

    def result(self) -> dict:
        n = max(self.n, 1)
        return {
            "linf_mean": self.sums["linf"] / n, "linf_max": self.linf_max,
            "linf_mean_255": self.sums["linf"] / n * 255, "l2_mean": self.sums["l2"] / n,
            "mse_mean": self.sums["mse"] / n,
            "psnr_mean": self.psnr_sum / self.psnr_n if self.psnr_n else math.inf,
            "images": self.n, "psnr_images": self.psnr_n,
        }
