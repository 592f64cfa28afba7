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


def load_file(path: str | Path, what: str = "checkpoint", remedy: str | None = None) -> dict:
    """A dict saved by :func:`save_file`, read with ``weights_only=True``. A file that cannot be read is one line
    naming it, what it should be and ``remedy`` (what to do) — never PyTorch's many lines, which advise loading
    the file unsafely; torch's own warnings about the file are not printed either."""
    import warnings

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    remedy = remedy or "restore it from a copy, or delete it and rerun the command that wrote it"
    damaged = _failed_checksum(path)
    if damaged:  # torch does not check the archive's CRCs: flipped weight bytes would load as other weights
        raise ValueError(f"{path} is damaged ({damaged} fails its checksum), not a usable {what}; {remedy}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except OSError as exc:
        if exc.errno is not None:
            raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from None
        raise ValueError(f"{path} is damaged or is not a {what} (PyTorch cannot read it); {remedy}") from None
    except Exception as exc:  # noqa: BLE001 - any unreadable file is reported the same way
        raise ValueError(f"{path} {_unreadable(path, exc)} a {what}; {remedy}") from None
    if not isinstance(obj, dict):
        raise ValueError(f"{path} is not a saat {what} (it holds a {type(obj).__name__}); {remedy}")
    return obj


def _failed_checksum(path: Path) -> str | None:
    """The first record of the zip archive ``path`` (PyTorch's file format) whose CRC-32 does not match its bytes,
    or None (also for files that are not zip archives: torch.load judges those)."""
    import zipfile

    try:
        if not zipfile.is_zipfile(path):
            return None
        with zipfile.ZipFile(path) as archive:
            return archive.testzip()
    except Exception:  # noqa: BLE001 - an archive too broken to check is reported by torch.load
        return None


def _unreadable(path: Path, exc: Exception) -> str:
    """Why a file is not a checkpoint, in a few words (PyTorch's own text runs to many lines)."""
    import pickle
    import zipfile

    if path.stat().st_size == 0:
        return "is empty, not"
    if isinstance(exc, pickle.UnpicklingError) and "GLOBAL" in str(exc) and zipfile.is_zipfile(path):
        return "holds pickled Python objects (which saat never loads), not"
    return "is damaged or is not"


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
    from .runs import RunDir

    path = Path(path)
    files = RunDir(path.parent)
    resume = "defend" if files.defense_config.is_file() else "train"
    remedy = (f"rebuild it with 'saat {resume} --resume {path.parent}' (from {files.checkpoint.name}), or restore it "
              "from a copy" if files.checkpoint.is_file() else "restore it from a copy, or train the run again")
    ckpt = load_file(path, "model checkpoint", remedy)
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
