"""Point-wise hashing losses towards fixed per-class codes (docs/hashing.md#hashing-methods): CSQ, DPN, OrthoHash.

Items with an all-zero label row (FLICKR-25K has some) have no class and therefore no target code: they add
nothing to the target term (only to CSQ's quantisation term), and every mean still runs over the whole batch,
so a batch with and without such rows gives the labelled rows the same weight per item.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from .base import HashingMethod, full_precision, register_method
from .codes import multi_label_targets, random_sign_codes, seeded_generator, sylvester_hadamard


def _labelled(y: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(B, 1) float mask, 1 for rows with at least one label."""
    return (y.sum(1, keepdim=True) > 0).to(dtype)


@register_method("csq")
class CSQ(HashingMethod):
    """CSQ (Yuan et al., "Central Similarity Quantization for Efficient Image and Video Retrieval", CVPR 2020).

    ``L = BCE((h + 1)/2, (c + 1)/2) + quant_weight * mean((|h| - 1)^2)``, quant_weight = 0.05, c the item's hash
    centre. Class centres (C, K): the first C rows of ``[H_K; -H_K]`` (Sylvester Hadamard, mutually orthogonal,
    Hamming distance K/2) when K is a power of 2 and 2K >= C; otherwise random Bernoulli(0.5) +-1 centres, drawn
    distinct when 2^K >= C (FIX: the authors crash at 48 bits and on 80 classes). ``centers="hadamard"`` or
    ``"random"`` forces a construction; ``hparams["centers"]`` reports the one in use. Multi-label centre: the
    sign of the sum of the item's class centres, a tie (0) taking a fixed random bit (buffer ``tie_bits``).

    Since the targets are exactly 0/1 the BCE is evaluated as ``-log((1 + c h)/2)`` with ``c h`` clamped away
    from -1 by the dtype's epsilon: finite for saturated outputs, equal to ``F.binary_cross_entropy`` elsewhere.
    Decision (the specification is silent): an item with an all-zero label has no centre, so it contributes only the
    quantisation term; the BCE is still averaged over all B x K entries.
    """

    def __init__(self, *, bits: int, n_classes: int, n_train: int, seed: int = 0, quant_weight: float = 0.05,
                 centers: str = "auto"):
        super().__init__(bits=bits, n_classes=n_classes, n_train=n_train, seed=seed)
        hadamard_fits = bits & (bits - 1) == 0 and 2 * bits >= n_classes
        if centers not in ("auto", "hadamard", "random"):
            raise ValueError(f"centers must be 'auto', 'hadamard' or 'random', got {centers!r}")
        if centers == "hadamard" and not hadamard_fits:
            raise ValueError(f"Hadamard centres need bits a power of 2 and 2*bits >= n_classes; got bits={bits}, "
                             f"n_classes={n_classes}")
        self.centers = "hadamard" if centers == "hadamard" or (centers == "auto" and hadamard_fits) else "random"
        self.quant_weight = float(quant_weight)
        if self.centers == "hadamard":
            hadamard = sylvester_hadamard(bits)
            class_centers = torch.cat([hadamard, -hadamard])[:n_classes]
        else:
            class_centers = random_sign_codes(n_classes, bits, seeded_generator(seed, "csq/centers"))
        tie_bits = random_sign_codes(1, bits, seeded_generator(seed, "csq/tie_bits"))[0]
        self.register_buffer("class_centers", class_centers)
        self.register_buffer("tie_bits", tie_bits)

    @property
    def hparams(self) -> dict[str, Any]:
        return {"quant_weight": self.quant_weight, "centers": self.centers}

    def hash_centers(self, y: torch.Tensor) -> torch.Tensor:
        """(B, K) +-1 centre of every item (``tie_bits`` for all-zero labels, which the loss ignores)."""
        return multi_label_targets(y, self.class_centers, self.tie_bits)

    def forward(self, h: torch.Tensor, y: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        self._check_batch(h, y, idx)
        h = full_precision(h)
        c = self.hash_centers(y).to(h.dtype)
        agreement = (c * h).clamp_min(-1 + torch.finfo(h.dtype).eps)
        bce = math.log(2.0) - torch.log1p(agreement)
        center = (bce * _labelled(y, h.dtype)).sum() / h.numel()
        quantization = (h.abs() - 1).pow(2).mean()
        return center + self.quant_weight * quantization


@register_method("dpn")
class DPN(HashingMethod):
    """DPN (Fan, Ng, Ju, Zhang, Chan, "Deep Polarized Network for Supervised Learning of Accurate Binary Hashing
    Codes", IJCAI 2020).

    Polarisation loss ``L = mean(max(0, margin - h * t))``, margin = 1, with per-item +-1 target t. Per-class
    targets have exactly floor(K/2) bits at -1 (random positions, seeded; distinct when enough such codes exist);
    multi-label targets follow CSQ's rule (sign of the sum of class targets, ties -> fixed random ``tie_bits``).
    Decision (the specification is silent), as for CSQ: an item with an all-zero label has no target and contributes 0;
    the mean still runs over all B x K entries.
    """

    def __init__(self, *, bits: int, n_classes: int, n_train: int, seed: int = 0, margin: float = 1.0):
        super().__init__(bits=bits, n_classes=n_classes, n_train=n_train, seed=seed)
        self.margin = float(margin)
        class_targets = random_sign_codes(n_classes, bits, seeded_generator(seed, "dpn/targets"),
                                          n_negative=bits // 2)
        tie_bits = random_sign_codes(1, bits, seeded_generator(seed, "dpn/tie_bits"))[0]
        self.register_buffer("class_targets", class_targets)
        self.register_buffer("tie_bits", tie_bits)

    @property
    def hparams(self) -> dict[str, Any]:
        return {"margin": self.margin}

    def targets(self, y: torch.Tensor) -> torch.Tensor:
        """(B, K) +-1 target of every item (``tie_bits`` for all-zero labels, which the loss ignores)."""
        return multi_label_targets(y, self.class_targets, self.tie_bits)

    def forward(self, h: torch.Tensor, y: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        self._check_batch(h, y, idx)
        h = full_precision(h)
        t = self.targets(y).to(h.dtype)
        hinge = (self.margin - h * t).clamp_min(0)
        return (hinge * _labelled(y, h.dtype)).sum() / h.numel()


@register_method("orthohash")
class OrthoHash(HashingMethod):
    """OrthoHash (Hoe et al., "One Loss for All: Deep Hashing with a Single Cosine Similarity based Learning
    Objective", NeurIPS 2021).

    A fixed +-1 codebook (C, K) of Bernoulli(0.5) bits (distinct when 2^K >= C); ``cos_c = cos(h, codebook_c)``;
    ``logits = scale * (cos - margin * y)`` (scale s = 8, margin m = 0.2, the margin on the item's own classes);
    ``L = mean_i -sum_c (y_ic / sum_c y_ic) log softmax_c(logits_i)``, which is the cross-entropy for one-hot
    labels. Rows with no label contribute 0 (still counted in the batch mean).

    Deviation (docs/hashing.md#hashing-methods): the authors apply BatchNorm only inside the loss, so their retrieval
    codes sign(z) differ from what was trained. Here ``head_norm = "bn"`` makes the model compute ``h = tanh(alpha *
    BN(z))``, so the loss takes ``cos(h, codebook)`` and the codes ``sign(h) = sign(BN(z))`` come from the trained
    quantity.
    """

    head_norm = "bn"

    def __init__(self, *, bits: int, n_classes: int, n_train: int, seed: int = 0, scale: float = 8.0,
                 margin: float = 0.2):
        super().__init__(bits=bits, n_classes=n_classes, n_train=n_train, seed=seed)
        self.scale = float(scale)
        self.margin = float(margin)
        self.register_buffer("codebook", random_sign_codes(n_classes, bits, seeded_generator(seed, "orthohash")))

    @property
    def hparams(self) -> dict[str, Any]:
        return {"scale": self.scale, "margin": self.margin}

    def forward(self, h: torch.Tensor, y: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        self._check_batch(h, y, idx)
        h = full_precision(h)
        y = y.to(h.dtype)
        cos = F.normalize(h, dim=1) @ F.normalize(self.codebook.to(h.dtype), dim=1).T
        log_prob = F.log_softmax(self.scale * (cos - self.margin * y), dim=1)
        weight = y / y.sum(1, keepdim=True).clamp_min(1)
        return (weight * -log_prob).sum() / h.shape[0]
