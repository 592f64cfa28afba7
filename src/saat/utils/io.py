"""Atomic file writes: every file is written to a temporary name beside its target, then renamed.

A crash (or SIGKILL) mid-write therefore never leaves a truncated file under the final name, and a file
that already existed stays intact until the new one is complete.
"""

from __future__ import annotations

import errno
import json
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()

# Fault injection for the kill tests (tests/test_faults.py): SAAT_FAULT_INJECT="NAME:N" kills this process with
# SIGKILL inside its N-th atomic write of a file named NAME — the data is in the temporary file, not yet renamed.
# Read at each write, not at import: the tests start their processes forked from one that imported saat already.
_WRITES: dict[str, int] = {}


def _maybe_die(name: str) -> None:
    fault = os.environ.get("SAAT_FAULT_INJECT", "")
    if not fault:
        return
    target, _, nth = fault.rpartition(":")
    if target != name:
        return
    _WRITES[name] = _WRITES.get(name, 0) + 1
    if str(_WRITES[name]) == nth:
        import signal

        os.kill(os.getpid(), signal.SIGKILL)


def _atomic(path: str | os.PathLike, write: Callable[[Any], None], mode: str) -> Path:
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(errno.EISDIR, "Is a directory", str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    # The writer's pid is in the name, so that a later run can tell a leftover of a killed writer from a write in
    # progress (remove_stale_temps).
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from None
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp creates 0600; give the file the usual permissions
        with os.fdopen(fd, mode) as fh:
            write(fh)
            fh.flush()
            _maybe_die(path.name)
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if isinstance(exc, OSError) and exc.errno is not None:
            raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from exc  # name the target, not the temp
        raise
    return path


def nearest_existing(path: str | os.PathLike) -> Path:
    """``path`` if it exists, else the nearest folder above it that does (where it would be created)."""
    path = Path(path)
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_writable(directory: str | os.PathLike) -> Path:
    """Fail early, before any expensive work, when ``directory`` (or the nearest existing folder above it, where it
    would be created) cannot take new files: an OSError naming the folder (read-only, no permission, a file in the
    way)."""
    directory = Path(directory)
    probe_dir = nearest_existing(directory)
    if not probe_dir.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, "Not a directory", str(probe_dir))
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".write-check.{os.getpid()}.", suffix=".tmp", dir=probe_dir)
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror or str(exc), str(directory)) from None
    os.close(fd)
    os.unlink(tmp)
    return directory


LEGACY_TEMP_AGE = 3600.0  # seconds: a pid-less temporary beside its target, older than this, is a leftover


def remove_stale_temps(root: str | os.PathLike) -> list[Path]:
    """Delete the temporary files that writers killed mid-write left under ``root`` (``.NAME.PID.XXXX.tmp`` whose
    process is gone); returns what was removed. Writes in progress (their process alive) are left alone."""
    root = Path(root)
    removed = []
    if not root.is_dir():
        return removed
    for tmp in root.rglob(".*.tmp"):
        parts = tmp.name.split(".")
        if len(parts) < 5 or not tmp.is_file():
            continue
        if parts[-3].isdigit():
            pid = int(parts[-3])
            if pid != os.getpid() and _alive(pid):
                continue
        elif not (len(parts[-2]) == 8 and (tmp.parent / ".".join(parts[1:-2])).exists()
                  and time.time() - tmp.stat().st_mtime > LEGACY_TEMP_AGE):
            continue  # not ours; or an older pid-less temporary that may still be being written
        try:
            tmp.unlink()
            removed.append(tmp)
        except FileNotFoundError:
            pass
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return _atomic(path, lambda fh: fh.write(text.encode("utf-8")), "wb")


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically."""
    return _atomic(path, lambda fh: fh.write(data), "wb")


def atomic_write_json(path: str | os.PathLike, obj: Any, indent: int = 2) -> Path:
    """Write ``obj`` as JSON (NaN written as null) to ``path`` atomically."""
    text = json.dumps(_json_safe(obj), indent=indent, allow_nan=False) + "\n"
    return atomic_write_text(path, text)


def atomic_save_npy(path: str | os.PathLike, array: Any) -> Path:
    """Save a numpy array to ``path`` (.npy) atomically."""
    import numpy as np

    return _atomic(path, lambda fh: np.save(fh, np.asarray(array), allow_pickle=False), "wb")


NPY_MAGIC = b"\x93NUMPY"
ZIP_MAGIC = b"PK\x03\x04"


def _numpy_file(path: Path, what: str, magic: bytes, kind: str) -> str:
    """The prefix of every error about ``path`` ("WHAT: PATH"), after refusing a missing file, a folder, and a file
    whose first bytes are not ``magic`` (numpy would then try to unpickle it, and advise loading it unsafely)."""
    where = f"{what}: {path}" if what else str(path)
    if not path.exists():
        raise FileNotFoundError(f"{what + ': ' if what else ''}file not found: {path}")
    if path.is_dir():
        raise ValueError(f"{where} is a directory, expected a {kind} file")
    try:
        with open(path, "rb") as fh:
            head = fh.read(len(NPY_MAGIC))
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from None
    if head[:len(magic)] != magic:
        if kind == ".npy" and head[:len(ZIP_MAGIC)] == ZIP_MAGIC:
            raise ValueError(f"{where} holds several arrays (.npz); save one array with numpy.save")
        noun, save = ("array", "numpy.save") if kind == ".npy" else ("archive", "numpy.savez")
        raise ValueError(f"{where} is not a {kind} {noun} (it does not start with the {kind} signature); write it "
                         f"with {save}")
    return where


def _array_error(where: str, kind: str, exc: Exception) -> ValueError:
    text = " ".join(str(exc).split())
    if "pickle" in text.lower() or "object arrays" in text.lower():
        return ValueError(f"{where} holds Python objects (an object array), which saat never loads; save a numeric "
                          f"array")
    return ValueError(f"{where} is damaged or truncated (numpy: {text[:160]}); write it again")


def load_npy(path: str | os.PathLike, what: str = "") -> Any:
    """The array of the .npy file ``path``, never unpickling anything. Every reader of .npy files uses it, so that a
    file that is not one (random bytes, a text, a .npz archive, an object array, a truncated file) is one ValueError
    that names ``what`` (e.g. the option) and the file, and says what it is instead."""
    import numpy as np

    path = Path(path)
    where = _numpy_file(path, what, NPY_MAGIC, ".npy")
    try:
        return np.load(path, allow_pickle=False)
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from None
    except (ValueError, EOFError) as exc:
        raise _array_error(where, ".npy", exc) from None


def load_npz(path: str | os.PathLike, what: str = "") -> dict[str, Any]:
    """Every array of the .npz archive ``path`` (read now, the file closed), with the errors of :func:`load_npy`."""
    import zipfile

    import numpy as np

    path = Path(path)
    where = _numpy_file(path, what, ZIP_MAGIC, ".npz")
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {name: archive[name] for name in archive.files}
    except OSError as exc:
        if exc.errno is None:
            raise _array_error(where, ".npz", exc) from None
        raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from None
    except (ValueError, EOFError, KeyError, zipfile.BadZipFile) as exc:
        raise _array_error(where, ".npz", exc) from None


def json_form(obj: Any) -> Any:
    """``obj`` as it reads back from a JSON file written by :func:`atomic_write_json` (tuples as lists, numpy values
    as plain ones): what settings stored in a file are compared with."""
    return json.loads(json.dumps(_json_safe(obj), allow_nan=False))


def _json_safe(obj: Any) -> Any:
    """Convert numpy scalars/arrays and non-finite floats into plain JSON values."""
    import math

    import numpy as np

    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _json_safe(obj.tolist())
    if isinstance(obj, np.generic):
        return _json_safe(obj.item())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, Path):
        return str(obj)
    return obj
