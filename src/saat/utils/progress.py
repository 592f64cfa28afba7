"""One progress-bar factory: tqdm on a terminal, silent when stderr is a file or pipe (logs stay readable) and on
every torchrun rank but rank 0."""

from __future__ import annotations

from .dist import is_main_process


def progress_bar(iterable=None, *, disable: bool = False, **kwargs):
    """A tqdm bar. ``disable=True`` makes it a silent no-op (``update``, ``set_postfix`` and ``close`` still work, so
    callers never test for a bar); otherwise it shows only when stderr is a terminal, and only on rank 0."""
    from tqdm.auto import tqdm

    kwargs.setdefault("leave", False)
    kwargs.setdefault("dynamic_ncols", True)
    return tqdm(iterable, disable=True if disable or not is_main_process() else None, **kwargs)
