"""Small tensor helpers shared across packages."""

from __future__ import annotations

import torch


def generator_normal(shape, std: float, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """N(0, std^2) noise drawn from a CPU generator (same numbers on every device), moved to ``device``."""
    return (torch.randn(shape, generator=generator) * std).to(device)
