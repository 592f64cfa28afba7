"""ComDefend (Jia et al., "ComDefend: An Efficient Image Compression Model to Defend Adversarial Examples",
CVPR 2019), SPEC 8.2: an input purifier in front of the hashing model.

ComCNN compresses an image to a 12-channel map; during training the map is binarised softly with
``sigmoid(z + N(0, 20^2))`` (the large noise forces the map toward 0/1 codes), at evaluation by ``z > 0``; ResCNN
reconstructs the image. Loss: ``MSE(reconstruction, x) + 1e-4 * mean(z^2)``, Adam 1e-4, clean training images.
The purified system ``f(ResCNN(binarise(ComCNN(x))))`` replaces the model at evaluation (FIX: the authors never
wire the purifier in). For adaptive attacks the hard binarisation passes gradients straight through (BPDA).
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
from torch import nn

from ..checkpoint import load_file, save_file
from ..utils.progress import progress_bar

NOISE_STD = 20.0


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
        return hard

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


def purifier_path(run_dir: str | Path) -> Path:
    return Path(run_dir) / "purifiers" / "comdefend.pt"


def load_purifier(run_dir: str | Path, device: torch.device) -> tuple[ComDefend, dict]:
    path = purifier_path(run_dir)
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir} has no trained ComDefend purifier ({path}); train it with "
                                f"'saat defend {run_dir} --method comdefend'")
    state = load_file(path, "ComDefend purifier")
    net = ComDefend(state["settings"]["code_channels"], state["settings"]["width"]).to(device)
    net.load_state_dict(state["state_dict"])
    return net.eval().requires_grad_(False), state


def train_comdefend(run_dir: str | Path, *, epochs: int | None = None, lr: float = 1e-4, batch_size: int = 32,
                    code_weight: float = 1e-4, width: float | None = None, limit: int | None = None, seed: int = 0,
                    device: str = "auto", progress: bool = True) -> dict:
    """Train the purifier on the run's clean training images; saved at ``RUN/purifiers/comdefend.pt``.

    Resumes from ``comdefend.partial.pt`` after an interruption. Defaults: 30 epochs at full width; on the demo
    datasets 2 epochs at width 0.25. ``limit`` trains on the first N training images only.
    """
    from .._torch_utils import generator_normal
    from ..config import DEMO_DATASETS
    from ..data import make_loader
    from ..pipelines.common import FirstItems, load_run, open_dataset
    from ..pipelines.loop import to_device_batch
    from ..utils.device import resolve_device
    from ..utils.dist import is_main_process

    dev = resolve_device(device)
    run = load_run(run_dir, dev)
    ds = open_dataset(run.config, run.image_size)
    demo = ds.name.lower() in DEMO_DATASETS
    epochs = epochs if epochs is not None else (2 if demo else 30)
    width = width if width is not None else (0.25 if demo else 1.0)
    settings = {"epochs": epochs, "lr": lr, "batch_size": batch_size, "code_weight": code_weight, "seed": seed,
                "noise_std": NOISE_STD, "code_channels": 12, "width": width, "limit": limit}
    final, partial = purifier_path(run_dir), purifier_path(run_dir).with_suffix(".partial.pt")
    torch.manual_seed(seed)
    net = ComDefend(12, width).to(dev)
    train_split = ds.train if limit is None else FirstItems(ds.train, limit)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    noise_gen = torch.Generator().manual_seed(seed)
    start, log = 0, []
    if partial.is_file():
        state = load_file(partial, "partial ComDefend checkpoint")
        if state["settings"] == settings:
            net.load_state_dict(state["state_dict"])
            opt.load_state_dict(state["optimizer"])
            noise_gen.set_state(state["noise_generator"])
            start, log = int(state["epoch"]), list(state["log"])
    for epoch in range(start, epochs):
        net.train()
        t0, total, n = time.perf_counter(), 0.0, 0
        loader = make_loader(train_split, batch_size, shuffle=True, seed=seed, epoch=epoch)
        bar = None
        if progress:

            bar = progress_bar(total=len(loader), desc=f"comdefend epoch {epoch + 1}", unit="batch")
        for batch in loader:
            x, _, _ = to_device_batch(batch, dev)
            z_shape = (x.shape[0], 12, *x.shape[-2:])
            noise = generator_normal(z_shape, NOISE_STD, noise_gen, dev)
            rec, z = net(x, noise=noise)
            loss = (rec - x).pow(2).mean() + code_weight * z.pow(2).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * x.shape[0]
            n += x.shape[0]
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{float(loss.detach()):.4f}", refresh=False)
        if bar is not None:
            bar.close()
        log.append({"epoch": epoch + 1, "loss": total / max(n, 1), "seconds": time.perf_counter() - t0})
        if progress:
            print(f"comdefend epoch {epoch + 1}/{epochs}: loss {log[-1]['loss']:.5f}")
        if is_main_process():
            save_file({"state_dict": net.state_dict(), "optimizer": opt.state_dict(), "settings": settings,
                       "noise_generator": noise_gen.get_state(), "epoch": epoch + 1, "log": log}, partial)
    if is_main_process():
        save_file({"state_dict": net.state_dict(), "settings": settings, "log": log,
                   "checkpoint": run.checkpoint_hash}, final)
        partial.unlink(missing_ok=True)
    return {"purifier": str(final), "settings": settings, "log": log}

