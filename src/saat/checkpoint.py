"""One checkpoint format: a dict of a model ``state_dict`` plus JSON-serialisable metadata
(docs/conventions.md#conventions).

Files are written atomically and read with ``torch.load(weights_only=True)``; whole modules are never pickled.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import torch

from ._version import __version__
from .utils.io import atomic_write_bytes

FORMAT = "saat.hash_model"
FORMAT_VERSION = 1


def save_file(obj: dict, path: str | Path) -> Path:
    """``torch.save`` to memory, then an atomic write: a killed process never leaves a truncated file."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    return atomic_write_bytes(path, buf.getvalue())


def load_file(path: str | Path, what: str = "checkpoint") -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is reported the same way
        raise ValueError(f"{path} is not a readable {what} ({type(exc).__name__}: {exc})") from None
    if not isinstance(obj, dict):
        raise ValueError(f"{path} is not a saat {what}")
    return obj


def save_model(path: str | Path, model: torch.nn.Module, metadata: dict, method_state: dict | None = None) -> Path:
    """Save a trained hash model: its state_dict, the hashing method's buffers and metadata."""
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "saat_version": __version__,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "method_state": {k: v.detach().cpu() for k, v in (method_state or {}).items()},
        "metadata": metadata,
    }
    return save_file(payload, path)


def load_model_file(path: str | Path) -> dict:
    ckpt = load_file(path, "model checkpoint")
    if ckpt.get("format") != FORMAT:
        raise ValueError(f"{path} is not a saat model checkpoint (format {ckpt.get('format')!r})")
    if int(ckpt.get("format_version", 0)) > FORMAT_VERSION:
        raise ValueError(f"{path} was written by a newer saat (format {ckpt['format_version']}); upgrade saat")
    return ckpt


def file_hash(path: str | Path, length: int = 16) -> str:
    """sha256 of a file's bytes (cache keys depend on content, never on file times)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:length]
