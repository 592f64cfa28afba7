"""Pairwise hashing losses against a memory of the whole training set (docs/hashing.md#hashing-methods): DPH, DPSH,
HashNet, HSWD."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from ..utils.codes import sign_codes
from ..utils.dist import batch_sum, gather_batch, global_count
from .base import PairwiseMethod, register_method
from .codes import seeded_generator


@register_method("dph")
class DPH(PairwiseMethod):
    """DPH: pairwise inner-product regression, the attacked model of the HAG paper (Yang et al., "Adversarial
    Examples for Hamming Space Search", IEEE T-Cybernetics 2018) and the SAAT authors' default method.

    ``L = sum_ij (h_i . U_j / K - (2 S_ij - 1))^2 / (B N)``: the normalised inner product of a batch output and
    every memory code regresses to +1 for similar pairs and -1 for dissimilar ones. No hyper-parameters.
    Deviation: none (the memory semantics are those of :class:`PairwiseMethod`).
    """

    def pair_loss(self, h, U, S):
        inner = h @ U.T / self.bits
        return (inner - (2 * S - 1)).pow(2).sum() / S.numel()


@register_method("dpsh")
class DPSH(PairwiseMethod):
    """DPSH (Li, Wang, Kang, "Feature Learning based Deep Supervised Hashing with Pairwise Labels", IJCAI 2016).

    ``theta_ij = h_i . U_j / 2``;
    ``L = -sum_ij (S_ij theta_ij - log(1 + e^theta_ij)) / (B N) + eta sum_i ||sign(h_i) - h_i||^2 / (B N)``.
    ``log(1 + e^theta)`` is ``F.softplus`` (no overflow for large theta); ``sign(0) = +1``
    (docs/conventions.md#conventions; a deliberate deviation). Both terms are divided by B N as
    docs/hashing.md#hashing-methods states (the authors' normalisation), which is why eta = 50 is large.
    """

    def __init__(self, *, bits: int, n_classes: int, n_train: int, seed: int = 0, eta: float = 50.0):
        super().__init__(bits=bits, n_classes=n_classes, n_train=n_train, seed=seed)
        self.eta = float(eta)

    @property
    def hparams(self) -> dict[str, Any]:
        return {"eta": self.eta}

    def pair_loss(self, h, U, S):
        theta = 0.5 * (h @ U.T)
        likelihood = (F.softplus(theta) - S * theta).sum()
        quantization = (sign_codes(h.detach()) - h).pow(2).sum()
        return (likelihood + self.eta * quantization) / S.numel()


@register_method("hashnet")
class HashNet(PairwiseMethod):
    """HashNet (Cao, Long, Wang, Yu, "HashNet: Deep Learning to Hash by Continuation", ICCV 2017).

    ``theta = (scale / K) h U^T`` (scale = 10); ``l_ij = log(1 + e^-|theta_ij|) + max(theta_ij, 0) - S_ij theta_ij``
    (the overflow-free form of softplus(theta) - S theta); ``L = sum_ij w_ij l_ij / S_tot`` with ``S_tot = B N``,
    ``w = S_tot / S_1`` on similar pairs and ``S_tot / S_0`` on dissimilar ones (S_1, S_0: their counts in the
    B x N matrix). FIX: a count of 0 is replaced by 1 — the weight of an empty side multiplies nothing, so this
    only removes the 0/0. Continuation: the model uses ``tanh(alpha z)`` with
    ``alpha = (1 + alpha_rate * it) ** alpha_power``, ``it`` the step rounded down to a multiple of ``alpha_every``
    (the authors refresh it every 200 steps); alpha is returned by :meth:`train_alpha`, never stored in the model
    (docs/models.md#hashmodel; a deliberate deviation), and evaluation uses alpha = 1.
    """

    def __init__(self, *, bits: int, n_classes: int, n_train: int, seed: int = 0, scale: float = 10.0,
                 alpha_rate: float = 0.005, alpha_power: float = 0.5, alpha_every: int = 200):
        super().__init__(bits=bits, n_classes=n_classes, n_train=n_train, seed=seed)
        if alpha_every < 1:
            raise ValueError(f"alpha_every must be a positive integer, got {alpha_every!r}")
        self.scale = float(scale)
        self.alpha_rate = float(alpha_rate)
        self.alpha_power = float(alpha_power)
        self.alpha_every = int(alpha_every)

    @property
    def hparams(self) -> dict[str, Any]:
        return {"scale": self.scale, "alpha_rate": self.alpha_rate, "alpha_power": self.alpha_power,
                "alpha_every": self.alpha_every}

    def train_alpha(self, step: int) -> float:
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        it = step // self.alpha_every * self.alpha_every
        return (1.0 + self.alpha_rate * it) ** self.alpha_power

    def pair_loss(self, h, U, S):
        theta = (self.scale / self.bits) * (h @ U.T)
        pair = F.softplus(-theta.abs()) + theta.clamp_min(0) - S * theta
        # The weights count the pairs of the whole (global) batch; the mean below runs over this rank's share. The
        # shares of a global batch are equal (GlobalBatchShards), so its pair count needs no collective (and no read).
        total = global_count(S.shape[0]) * S.shape[1]
        n_similar = batch_sum(S.sum())
        w_similar = total / n_similar.clamp_min(1)
        w_dissimilar = total / (total - n_similar).clamp_min(1)
        weight = torch.where(S > 0, w_similar, w_dissimilar)
        return (weight * pair).sum() / S.numel()


@register_method("hswd")
class HSWD(HashNet):
    """HSWD (Doan, Yang, Li, "One Loss for Quantization: Deep Hashing with Discrete Wasserstein Distributional
    Matching", CVPR 2022): the HashNet loss (same alpha schedule) plus ``swd_weight`` (0.1) times a sliced
    Wasserstein quantisation term.

    Quantisation: for every bit k, sort the B values ``h[:, k]`` and B random +-1 samples (Bernoulli 0.5), take
    the mean squared difference of the two sorted vectors, and average over bits — the squared 2-Wasserstein
    distance between the batch's per-bit distribution and the balanced binary one. The samples of call t come
    from a generator seeded by (``swd_seed``, t) with ``swd_seed = seed``; both ``swd_seed`` and the call counter
    ``swd_calls`` are buffers, so a run resumed from a state_dict draws exactly the samples an uninterrupted run
    would have drawn. A call never reads them from the device: the generator is seeded from a host copy of the two,
    taken at construction and after each ``load_state_dict``.
    """

    def __init__(self, *, bits: int, n_classes: int, n_train: int, seed: int = 0, scale: float = 10.0,
                 alpha_rate: float = 0.005, alpha_power: float = 0.5, alpha_every: int = 200,
                 swd_weight: float = 0.1):
        super().__init__(bits=bits, n_classes=n_classes, n_train=n_train, seed=seed, scale=scale,
                         alpha_rate=alpha_rate, alpha_power=alpha_power, alpha_every=alpha_every)
        self.swd_weight = float(swd_weight)
        self.register_buffer("swd_seed", torch.tensor(seed, dtype=torch.long))
        self.register_buffer("swd_calls", torch.zeros((), dtype=torch.long))
        self._host_counter: tuple[int, int] | None = (self.seed, 0)  # (swd_seed, swd_calls); None: read the buffers

    def _load_from_state_dict(self, *args, **kwargs):
        self._host_counter = None  # the loaded buffers are read (once) at the next call
        super()._load_from_state_dict(*args, **kwargs)

    @property
    def hparams(self) -> dict[str, Any]:
        return {**super().hparams, "swd_weight": self.swd_weight}

    def binary_samples(self, n: int) -> torch.Tensor:
        """The (n, K) +-1 samples of the next call (advances ``swd_calls``)."""
        if self._host_counter is None:
            self._host_counter = (int(self.swd_seed), int(self.swd_calls))
        seed, calls = self._host_counter
        generator = seeded_generator(seed, "hswd/samples", calls)
        self.swd_calls += 1
        self._host_counter = (seed, calls + 1)
        return (torch.rand(n, self.bits, generator=generator) < 0.5).float() * 2 - 1

    def pair_loss(self, h, U, S):
        batch = gather_batch(h)  # the per-bit distribution is the whole (global) batch's
        samples = self.binary_samples(batch.shape[0]).to(device=h.device, dtype=h.dtype)
        sorted_h = torch.sort(batch, dim=0).values
        sorted_samples = torch.sort(samples, dim=0).values
        wasserstein = (sorted_h - sorted_samples).pow(2).mean()
        return super().pair_loss(h, U, S) + self.swd_weight * wasserstein
