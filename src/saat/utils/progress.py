"""One progress-bar factory: tqdm on a terminal, silent when stderr is a file or pipe (logs stay readable)."""

from __future__ import annotations


def progress_bar(iterable=None, **kwargs):
    from tqdm.auto import tqdm

    kwargs.setdefault("leave", False)
    kwargs.setdefault("dynamic_ncols", True)
    kwargs.setdefault("disable", None)  # None: tqdm turns itself off when not writing to a terminal
    return tqdm(iterable, **kwargs)
