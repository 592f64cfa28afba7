"""One progress-bar factory: tqdm on a terminal, silent when stderr is a file or pipe (logs stay readable)."""

from __future__ import annotations


def progress_bar(iterable=None, *, disable: bool = False, **kwargs):
    """A tqdm bar. ``disable=True`` makes it a silent no-op (``update``, ``set_postfix`` and ``close`` still work, so
    callers never test for a bar); otherwise it shows only when stderr is a terminal."""
    from tqdm.auto import tqdm

    kwargs.setdefault("leave", False)
    kwargs.setdefault("dynamic_ncols", True)
    return tqdm(iterable, disable=True if disable else None, **kwargs)
