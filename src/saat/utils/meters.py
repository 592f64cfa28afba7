"""Logged values that stay on their device until the host needs them.

Every read of a CUDA (or MPS) tensor's value on the host (``float(t)``, ``t.item()``, ``bool(t)``, a Python ``if``
on a tensor) waits for everything queued on the device: one such read per training step or attack iteration
stalls the pipeline at every step. The training loops therefore add their logged terms into running sums on the
device (:class:`DeviceSums`), remember the first non-finite loss there (:class:`NonFiniteWatch`), and read
everything at once (:func:`read_scalars`) where a value is needed anyway: a log record, an epoch summary, a
checkpoint.

The sums are float64 (float32 on MPS, which has no float64) and start from the Python float 0.0: on the CPU and
CUDA they are bit for bit the sums of the same values converted to Python floats and added in the same order.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch


def sum_dtype(device: torch.device) -> torch.dtype:
    """The dtype of running sums on ``device``: float64 (a Python float's), float32 on MPS."""
    return torch.float32 if torch.device(device).type == "mps" else torch.float64


def _detached(value):
    """A tensor as a detached 0-d tensor of :func:`sum_dtype` on its device (no host read); a number as a float."""
    if torch.is_tensor(value):
        return value.detach().reshape(()).to(sum_dtype(value.device))
    return float(value)


def read_scalars(values: Mapping) -> dict[str, float]:
    """The named scalars (0-d tensors or numbers) as Python floats, with one device-to-host transfer for all the
    tensors (a float32 value becomes the Python float ``float(t)`` gives)."""
    out = {k: _detached(v) for k, v in values.items()}
    tensors = [k for k, v in out.items() if torch.is_tensor(v)]
    if tensors:
        device = out[tensors[0]].device
        dtype = sum_dtype(device)
        read = torch.stack([out[k].to(device=device, dtype=dtype) for k in tensors]).tolist()
        out.update(zip(tensors, read))
    return out


class DeviceSums:
    """Named running sums, each with the number of values added, kept on the device of the values.

    ``add(terms)`` adds each term (a 0-d tensor or a number, times ``weight``) without reading anything back;
    :meth:`read` returns ``{name: (sum, count)}`` with one transfer. ``initial`` (as :meth:`read` returned it, e.g.
    from a checkpoint) continues earlier sums exactly.
    """

    def __init__(self, initial: Mapping[str, tuple[float, int]] | None = None):
        self._totals: dict[str, torch.Tensor | float] = {}
        self.counts: dict[str, int] = {}
        for name, (total, count) in (initial or {}).items():
            self._totals[name], self.counts[name] = float(total), int(count)

    def add(self, terms: Mapping, weight: float = 1) -> None:
        for name, value in terms.items():
            value = _detached(value)
            if weight != 1:
                value = value * weight
            self._totals[name] = self._totals.get(name, 0.0) + value
            self.counts[name] = self.counts.get(name, 0) + 1

    def read(self) -> dict[str, tuple[float, int]]:
        totals = read_scalars(self._totals)
        return {name: (totals[name], self.counts[name]) for name in self._totals}


class NonFiniteWatch:
    """The first step at which a watched value was not finite, and that value, remembered on the device.

    ``observe(value, step)`` never reads the value; :meth:`first` returns ``(step, value)`` of the first non-finite
    observation, or None, with one read (two when there is one).
    """

    def __init__(self):
        self._step: torch.Tensor | None = None  # int64, -1 while every value was finite
        self._value: torch.Tensor | None = None
        self._host: tuple[int, float] | None = None  # for values given as numbers

    def observe(self, value, step: int) -> None:
        value = _detached(value)
        if not torch.is_tensor(value):
            if self._host is None and not math.isfinite(value):
                self._host = (int(step), value)
            return
        bad = ~torch.isfinite(value)
        if self._step is None:
            self._step = torch.where(bad, int(step), -1)
            self._value = value
            return
        new = bad & (self._step < 0)
        self._step = torch.where(new, int(step), self._step)
        self._value = torch.where(new, value, self._value)

    def first(self) -> tuple[int, float] | None:
        found = []
        if self._host is not None:
            found.append(self._host)
        if self._step is not None:
            step = int(self._step.tolist())
            if step >= 0:
                found.append((step, float(self._value.tolist())))
        return min(found) if found else None
