"""The hashing-method interface, the pairwise memory, and the name -> class registry
(docs/hashing.md#hashing-methods)."""

from __future__ import annotations

import inspect
import operator
from typing import Any, ClassVar

import torch
from torch import nn

from ..utils.dist import set_rows
from ..utils.registry import Registry

METHODS = Registry("hashing method")


def register_method(name: str):
    """Class decorator: register a :class:`HashingMethod` subclass under ``name`` (lower-case); the registry sets its
    ``name``."""
    return METHODS.register(name)


def list_methods(pattern: str | None = None) -> list[str]:
    """Registered method names, sorted; ``pattern`` is a shell-style filter such as ``"d*"``."""
    return METHODS.names(pattern)


def create_method(name: str, *, bits: int, n_classes: int, n_train: int, seed: int = 0, **hyper: Any) -> HashingMethod:
    """Build the training loss of a hashing method by name (case-insensitive).

    ``hyper`` overrides the method's hyper-parameters (their names are the keys of ``method.hparams``), so
    ``create_method(m.name, bits=..., n_classes=..., n_train=..., seed=..., **m.hparams)`` rebuilds ``m``.

    >>> method = create_method("dpsh", bits=32, n_classes=10, n_train=5000, seed=0)  # doctest: +SKIP
    >>> loss = method(h, y, idx)  # doctest: +SKIP
    """
    cls = METHODS.get(name)
    allowed = cls.hyper_parameter_names()
    unknown = sorted(set(hyper) - set(allowed))
    if unknown:
        expected = ", ".join(allowed) if allowed else "none"
        raise ValueError(f"unknown hyper-parameter(s) {unknown} for hashing method {cls.name!r}; expected: {expected}")
    return cls(bits=bits, n_classes=n_classes, n_train=n_train, seed=seed, **hyper)


def _count(arg: str, value: Any, minimum: int) -> int:
    """An integer argument (Python or numpy int) that is at least ``minimum``."""
    try:
        if isinstance(value, bool):
            raise TypeError
        number = operator.index(value)
    except TypeError:
        number = None
    if number is None or number < minimum:
        kind = "a positive" if minimum == 1 else "a non-negative"
        raise ValueError(f"{arg} must be {kind} integer, got {value!r}")
    return number


def full_precision(h: torch.Tensor) -> torch.Tensor:
    """h in float32 unless it is float64: the losses sum B x N terms, which overflow float16 (max 65504)."""
    return h if h.dtype in (torch.float32, torch.float64) else h.float()


class HashingMethod(nn.Module):
    """A deep-hashing training loss: ``loss = method(h, y, idx)``.

    h: (B, K) tanh outputs in (-1, 1); y: (B, C) multi-hot 0/1 labels (all-zero rows allowed); idx: (B,) int64
    training-set indices. Memories, centres and codebooks are buffers (they follow ``.to(device)`` and live in the
    ``state_dict``); every random choice comes from a generator seeded by ``seed`` on CPU, so one seed gives the
    same buffers on every device.
    """

    name: ClassVar[str] = ""
    uses_memory: ClassVar[bool] = False
    head_norm: ClassVar[str | None] = None  # "bn": the model puts BatchNorm1d(K) before its tanh

    def __init__(self, *, bits: int, n_classes: int, n_train: int, seed: int = 0):
        super().__init__()
        self.bits = _count("bits", bits, minimum=1)
        self.n_classes = _count("n_classes", n_classes, minimum=1)
        self.n_train = _count("n_train", n_train, minimum=1)
        self.seed = _count("seed", seed, minimum=0)

    @classmethod
    def hyper_parameter_names(cls) -> list[str]:
        """Keyword arguments of the constructor beyond bits, n_classes, n_train and seed."""
        params = inspect.signature(cls.__init__).parameters
        return [p for p in params if p not in ("self", "bits", "n_classes", "n_train", "seed")]

    @property
    def hparams(self) -> dict[str, Any]:
        """The hyper-parameters in use (JSON-serialisable); the keys are the constructor's keyword arguments."""
        return {}

    def train_alpha(self, step: int) -> float:
        """The tanh scale the model uses at global training step ``step`` (0-based). Evaluation always uses 1."""
        return 1.0

    def init_memory(self, h: torch.Tensor, labels: torch.Tensor) -> None:
        """Fill the pairwise memories from an encoded training set; a no-op for methods without memory."""

    def forward(self, h: torch.Tensor, y: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _check_batch(self, h: torch.Tensor, y: torch.Tensor, idx: torch.Tensor) -> None:
        if h.dim() != 2 or h.shape[1] != self.bits:
            raise ValueError(f"h must have shape (B, {self.bits}), got {tuple(h.shape)}")
        if tuple(y.shape) != (h.shape[0], self.n_classes):
            raise ValueError(f"y must have shape ({h.shape[0]}, {self.n_classes}), got {tuple(y.shape)}")
        if tuple(idx.shape) != (h.shape[0],) or idx.is_floating_point():
            raise ValueError(f"idx must be an integer tensor of shape ({h.shape[0]},), got {tuple(idx.shape)} "
                             f"{idx.dtype}")

    def extra_repr(self) -> str:
        hyper = "".join(f", {k}={v}" for k, v in self.hparams.items())
        return f"bits={self.bits}, n_classes={self.n_classes}, n_train={self.n_train}, seed={self.seed}{hyper}"


class PairwiseMethod(HashingMethod):
    """A loss over pairs (batch item, training item), computed against memories of the whole training set.

    ``U`` (N, K) holds the latest continuous outputs of every training item and ``Y`` (N, C) its labels; both
    start at zero (an unseen item: zero code, no label). Each call first writes the batch into the memories
    (``U[idx] = h.detach()``, ``Y[idx] = y``), then evaluates :meth:`pair_loss` with ``S_ij = 1[y_i . Y_j > 0]``.
    """

    uses_memory: ClassVar[bool] = True

    def __init__(self, *, bits: int, n_classes: int, n_train: int, seed: int = 0):
        super().__init__(bits=bits, n_classes=n_classes, n_train=n_train, seed=seed)
        self.register_buffer("U", torch.zeros(n_train, bits))
        self.register_buffer("Y", torch.zeros(n_train, n_classes))

    @torch.no_grad()
    def init_memory(self, h: torch.Tensor, labels: torch.Tensor) -> None:
        h, labels = torch.as_tensor(h), torch.as_tensor(labels)
        if tuple(h.shape) != tuple(self.U.shape):
            raise ValueError(f"h must have shape {tuple(self.U.shape)} (n_train, bits), got {tuple(h.shape)}")
        if tuple(labels.shape) != tuple(self.Y.shape):
            raise ValueError(f"labels must have shape {tuple(self.Y.shape)} (n_train, n_classes), "
                             f"got {tuple(labels.shape)}")
        self.U.copy_(h)
        self.Y.copy_(labels)

    def forward(self, h: torch.Tensor, y: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        self._check_batch(h, y, idx)
        h = full_precision(h)
        with torch.no_grad():
            # Under torchrun every rank writes the whole global batch's rows (utils/dist.py: set_rows).
            set_rows(idx, (self.U, h.detach().to(self.U.dtype)), (self.Y, y.to(self.Y.dtype)))
            similar = (y.to(self.Y.dtype) @ self.Y.T > 0).to(h.dtype)
        # A private copy: the graph must not depend on storage that a later call (or a defense) updates in place.
        memory = self.U.to(h.dtype, copy=True)
        return self.pair_loss(h, memory, similar)

    def pair_loss(self, h: torch.Tensor, U: torch.Tensor, S: torch.Tensor) -> torch.Tensor:
        """The loss of the (B, K) batch against the (N, K) memory, with (B, N) similarity S in {0, 1}."""
        raise NotImplementedError
