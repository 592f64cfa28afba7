"""ComDefend (Jia et al., "ComDefend: An Efficient Image Compression Model to Defend Adversarial Examples",
CVPR 2019), docs/defenses.md#baseline-defenses: an input purifier in front of the hashing model.

ComCNN compresses an image to a 12-channel map; during training the map is binarised softly with
``sigmoid(z + N(0, 20^2))`` (the large noise forces the map toward 0/1 codes), at evaluation by ``z > 0``; ResCNN
reconstructs the image. Loss: ``MSE(reconstruction, x) + 1e-4 * mean(z^2)``, Adam 1e-4, clean training images.
The purified system ``f(ResCNN(binarise(ComCNN(x))))`` replaces the model at evaluation (FIX: the authors never
wire the purifier in). For adaptive attacks the hard binarisation passes gradients straight through (BPDA).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..checkpoint import load_file
from ..runs import RunDir

NOISE_STD = 20.0
# Training settings (the paper's preset; no eps: the purifier trains on clean images) and the demo preset's changes.
DEFAULTS = {"epochs": 30, "lr": 1e-4, "batch_size": 32, "code_weight": 1e-4, "width": 1.0, "limit": None}
DEMO_DEFAULTS = {"epochs": 2, "width": 0.25}


def _conv_stack(widths: list[int], act: type[nn.Module], norm: bool) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (c_in, c_out) in enumerate(zip(widths[:-1], widths[1:])):
        layers.append(nn.Conv2d(c_in, c_out, 3, padding=1))
        if i < len(widths) - 2:
            if norm:
                layers.append(nn.BatchNorm2d(c_out))
            layers.append(act())
    return nn.Sequential(*layers)


class ComDefend(nn.Module):
    """ComCNN (3 -> 16 ... 256 ... 32 -> 12 channels, ELU) and ResCNN (12 -> 32 ... 256 ... 32 -> 3 channels,
    BN + ReLU, sigmoid output), all 3x3 convolutions at full resolution. ``width`` scales the hidden channels
    (1.0: the paper's; the demo preset uses 0.25, 16x cheaper on a CPU)."""

    def __init__(self, code_channels: int = 12, width: float = 1.0):
        super().__init__()

        def w(c: int) -> int:
            return max(4, round(c * width))

        self.com = _conv_stack([3, *(w(c) for c in (16, 32, 64, 128, 256, 128, 64, 32)), code_channels], nn.ELU,
                               norm=False)
        self.res = _conv_stack([code_channels, *(w(c) for c in (32, 64, 128, 256, 128, 64, 32)), 3], nn.ReLU,
                               norm=True)

    def binarise(self, z: torch.Tensor, noise: torch.Tensor | None = None, straight_through: bool = False):
        if noise is not None:  # training: noisy sigmoid
            return torch.sigmoid(z + noise)
        hard = (z > 0).to(z.dtype)
        if straight_through:  # BPDA: hard forward, sigmoid gradient backward
            soft = torch.sigmoid(z)
            return soft + (hard - soft).detach()
        # Connected to the input for autograd with a derivative of exactly 0: a white-box attack on the purified
        # system sees the zero gradient (and the robustness card flags it) instead of failing.
        return hard + 0.0 * z

    def forward(self, x: torch.Tensor, noise: torch.Tensor | None = None, straight_through: bool = False):
        z = self.com(x)
        return torch.sigmoid(self.res(self.binarise(z, noise, straight_through))), z


class PurifiedModel(nn.Module):
    """The evaluated system: ``model(purifier(x))``. Same interface as :class:`~saat.models.HashModel`."""

    def __init__(self, purifier: ComDefend, model: nn.Module, straight_through: bool = False):
        super().__init__()
        self.purifier, self.model, self.straight_through = purifier, model, straight_through
        self.bits = model.bits

    @property
    def channels_last(self) -> bool:
        return False

    def purify(self, x: torch.Tensor) -> torch.Tensor:
        return self.purifier(x, straight_through=self.straight_through)[0]

    def forward(self, x: torch.Tensor, alpha: float = 1.0) -> torch.Tensor:
        return self.model(self.purify(x), alpha=alpha)

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.encode(self.purify(x))

    def bpda(self) -> PurifiedModel:
        """The same system with the purifier's binarisation differentiated straight-through (BPDA): what an adaptive
        attacker crafts on (docs/robustness.md#gradient-masking)."""
        return PurifiedModel(self.purifier, self.model, straight_through=True)


def purifier_path(run_dir: str | Path) -> Path:
    return RunDir(run_dir).purifier


def load_purifier(run_dir: str | Path, device: torch.device) -> tuple[ComDefend, dict]:
    path = purifier_path(run_dir)
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir} has no trained ComDefend purifier ({path}); train it with "
                                f"'saat defend {run_dir} --method comdefend'")
    state = load_file(path, "ComDefend purifier")
    net = ComDefend(state["settings"]["code_channels"], state["settings"]["width"]).to(device)
    net.load_state_dict(state["state_dict"])
    return net.eval().requires_grad_(False), state
