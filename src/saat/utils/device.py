"""Device selection, mixed precision as a switch, and the CUDA math settings.

- ``--amp``: autocast in bfloat16 where the device supports it (CPU, CUDA from Ampere on, MPS), else float16
  (older GPUs), where training then needs a gradient scaler (:func:`grad_scaler`). What runs under it: every
  forward of the attacked or trained model (training, encoding, the attacks' and the defenses' inner passes,
  :class:`Autocast`); what never does: the losses and objectives (computed on float32 outputs), the projections
  and the perturbations (float32 images).
- ``--tf32`` and cuDNN's autotuner (:func:`configure_backends`): on by default on CUDA, off for parity runs.
- :func:`precision_name` / :func:`precision_tag`: the precision a result was computed in, as recorded and as a
  cache-key suffix.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from .dist import device_for_rank


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``"auto"``/None: CUDA if available, else MPS if available, else CPU. Otherwise the named device. Under
    torchrun a CUDA device without an index is this process's GPU (``cuda:LOCAL_RANK``)."""
    if device is None or str(device) == "auto":
        if torch.cuda.is_available():
            return device_for_rank(torch.device("cuda"))
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"--device {device!r} is not a device: use cpu, cuda, cuda:N, mps or auto") from None
    if dev.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"--device {device}: saat runs on cpu, cuda or mps, not {dev.type}")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {device}: CUDA is not available on this machine (use --device cpu)")
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ValueError(f"--device {device}: MPS is not available on this machine (use --device cpu)")
    return device_for_rank(dev)


def amp_dtype(device: torch.device) -> torch.dtype:
    """The autocast dtype of ``--amp`` on ``device``: bfloat16 where supported, else float16."""
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return torch.float16
    return torch.bfloat16


def autocast(device: torch.device, enabled: bool):
    """Mixed precision (:func:`amp_dtype`) when ``enabled``; a no-op context otherwise."""
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=amp_dtype(device))


def grad_scaler(device: torch.device, amp: bool) -> torch.amp.GradScaler | None:
    """The gradient scaler training needs under float16 autocast (small gradients underflow there); None under
    bfloat16 (float32's exponent range) or without ``--amp``. Its ``step`` reads one flag back from the device per
    step (whether the gradients overflowed): the one host sync of a float16 training step."""
    if amp and amp_dtype(device) == torch.float16:
        return torch.amp.GradScaler(device.type)
    return None


def precision_name(device: torch.device, amp: bool) -> str:
    """How a forward pass's numbers were computed, as results record it: ``""`` for float32 (the reference),
    ``"bf16"`` / ``"fp16"`` under ``--amp``, ``"tf32"`` for float32 on CUDA with TF32 matmuls on."""
    if amp:
        return "bf16" if amp_dtype(device) == torch.bfloat16 else "fp16"
    if device.type == "cuda" and torch.backends.cuda.matmul.allow_tf32:
        return "tf32"
    return ""


def precision_tag(device: torch.device, amp: bool) -> str:
    """:func:`precision_name` as a cache-key suffix: ``"-bf16"`` etc., ``""`` for float32."""
    name = precision_name(device, amp)
    return f"-{name}" if name else ""


def configure_backends(device: torch.device, tf32: bool | None = None, *, parity: bool = False) -> bool:
    """Set CUDA's TF32 matmuls/convolutions and cuDNN's autotuner (``cudnn.benchmark``) for a run on ``device``.

    ``tf32`` None means the default: on for CUDA (TF32 keeps float32's range with a 10-bit mantissa: several
    times faster matmuls on Ampere and later), off for a parity run (``parity=True``: the authors' procedure
    reproduced number for number) and on any other device. Returns whether they are on. Process-wide settings,
    as torch has them."""
    on = device.type == "cuda" and not parity if tf32 is None else bool(tf32)
    torch.backends.cuda.matmul.allow_tf32 = on
    torch.backends.cudnn.allow_tf32 = on
    torch.backends.cudnn.benchmark = on and device.type == "cuda"
    return on


class Autocast(nn.Module):
    """``model``'s ``forward(x, alpha)`` under :func:`autocast`, its outputs returned in float32: the attacks' and
    the defenses' inner passes under ``--amp``, with the objective on top computed in float32. Modes,
    parameters and attributes are the wrapped model's."""

    def __init__(self, model: nn.Module, device: torch.device):
        super().__init__()
        self.model, self.device = model, torch.device(device)

    def forward(self, x: torch.Tensor, alpha: float = 1.0) -> torch.Tensor:
        with autocast(self.device, True):
            h = self.model(x, alpha=alpha)
        return h.float()

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(super().__getattr__("model"), name)


def with_amp(model: nn.Module, device: torch.device, amp: bool) -> nn.Module:
    """``model`` itself, or wrapped in :class:`Autocast` when ``amp``."""
    return Autocast(model, device) if amp else model
