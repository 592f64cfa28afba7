"""Device selection and bf16 autocast as a switch."""

from __future__ import annotations

import contextlib

import torch

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


def autocast(device: torch.device, enabled: bool):
    """bf16 mixed precision when ``enabled``; a no-op context otherwise."""
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
