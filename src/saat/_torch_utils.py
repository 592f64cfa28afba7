"""Small tensor helpers shared across packages."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from torch import nn


@contextlib.contextmanager
def kept_modes(model) -> Iterator[None]:
    """Inside the block the caller may switch ``model`` between train and eval mode; on exit every one of its modules
    is back in the mode it had, each on its own. (Restoring only the top module's flag with ``model.train(flag)``
    would overwrite the modes of the modules below it: a wrapper's flag says nothing of the model it wraps, and a
    model fine-tuned with BatchNorm frozen in eval mode has modules in both modes.) A callable that is not an
    ``nn.Module`` has no mode; nothing is done for it."""
    modes = [(m, m.training) for m in model.modules()] if isinstance(model, nn.Module) else []
    try:
        yield
    finally:
        for module, training in modes:
            module.training = training
