"""The three networks of ProS-GAN (Wang et al., CVPR 2021;
docs/baselines.md#baseline-attacks-and-defenses-as-the-paper-ran-them), adapted to any input size.

- :class:`PrototypeNet`: label -> feature f (512) -> prototype code p = tanh(.) and label reconstruction.
- :class:`ProSGenerator`: StarGAN-like encoder-decoder; f becomes a 3-channel "label image" of the input size,
  concatenated with the image. Returns the **pre-tanh** output ``G_raw`` (the attack decides how it becomes an
  image: bounded or the authors' unbounded mode).
- :class:`ProSDiscriminator`: five stride-2 spectral-norm convolutions and one convolution over the remaining map
  to C + 1 outputs (label regression + real/fake score).

Every normalisation is InstanceNorm without affine parameters, as in the authors' code. Images enter the
generator and the discriminator in [-1, 1].

Size adaptation (the authors' code fixes 224 px): the label image is decoded at ``16 * ceil(H/16)`` x
``16 * ceil(W/16)`` and center-cropped to H x W; the main path pads its input on the bottom/right (replicate) to a
multiple of 4 and crops the decoder output back to H x W; the discriminator zero-pads odd-sized maps by one row /
column (bottom/right) before each stride-2 convolution, so each one halves the size rounding up and no map
vanishes at 28 px. At 224 px (and any multiple of 16 for the generator, of 32 for the discriminator) nothing is
padded or cropped: the networks are the authors'.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

FEATURE_DIM = 512
LABEL_CHANNELS = 128  # channels of the label encoder's first map (the authors' nf)
LABEL_UPSAMPLINGS = 4  # the label map starts at (H/16, W/16)
GENERATOR_DOWNSAMPLINGS = 2
RESIDUAL_BLOCKS = 6  # 3 in the authors' "encoder" + 3 in their "decoder"
DISCRIMINATOR_CONVS = 5
DISCRIMINATOR_WIDTH = 64
LEAKY_SLOPE = 0.01


def _pair(size) -> tuple[int, int]:
    h, w = (size, size) if isinstance(size, int) else size
    if int(h) < 1 or int(w) < 1:
        raise ValueError(f"image_size must be positive, got {size!r}")
    return int(h), int(w)


def center_crop(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    top = (x.shape[-2] - height) // 2
    left = (x.shape[-1] - width) // 2
    return x[..., top:top + height, left:left + width]


class PrototypeNet(nn.Module):
    """label (C) -> Linear(C, 4096) -> ReLU -> Linear(4096, 512) = f; p = tanh(Linear(512, K) f);
    label head sigmoid(Linear(512, C) f). ``forward`` returns (f, p, label reconstruction)."""

    def __init__(self, classes: int, bits: int, hidden: int = 4096, feature_dim: int = FEATURE_DIM):
        super().__init__()
        self.feature = nn.Sequential(nn.Linear(classes, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, feature_dim))
        self.hash_head = nn.Linear(feature_dim, bits)
        self.label_head = nn.Linear(feature_dim, classes)

    def forward(self, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        f = self.feature(labels)
        return f, torch.tanh(self.hash_head(f)), torch.sigmoid(self.label_head(f))


def _norm_relu(channels: int) -> list[nn.Module]:
    return [nn.InstanceNorm2d(channels, affine=False), nn.ReLU(inplace=True)]


class ResidualBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1, bias=False), *_norm_relu(channels),
            nn.Conv2d(channels, channels, 3, padding=1, bias=False), nn.InstanceNorm2d(channels, affine=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class LabelEncoder(nn.Module):
    """f (512) -> Linear -> ReLU -> 128 x ceil(H/16) x ceil(W/16) -> four stride-2 transposed convs
    (128 -> 64 -> 32 -> 16 -> 8) -> conv 3x3 to 3 channels -> center crop to H x W."""

    def __init__(self, image_size, feature_dim: int = FEATURE_DIM, channels: int = LABEL_CHANNELS):
        super().__init__()
        self.height, self.width = _pair(image_size)
        scale = 2 ** LABEL_UPSAMPLINGS
        self.grid = (math.ceil(self.height / scale), math.ceil(self.width / scale))
        self.channels = channels
        self.fc = nn.Sequential(nn.Linear(feature_dim, channels * self.grid[0] * self.grid[1]), nn.ReLU(inplace=True))
        layers: list[nn.Module] = []
        c = channels
        for _ in range(LABEL_UPSAMPLINGS):
            layers += [nn.ConvTranspose2d(c, c // 2, 4, stride=2, padding=1, bias=False), *_norm_relu(c // 2)]
            c //= 2
        layers.append(nn.Conv2d(c, 3, 3, padding=1, bias=False))
        self.decode = nn.Sequential(*layers)

    def forward(self, feature: torch.Tensor) -> torch.Tensor:
        grid = self.fc(feature).view(feature.shape[0], self.channels, *self.grid)
        return center_crop(self.decode(grid), self.height, self.width)


class ProSGenerator(nn.Module):
    """(image in [-1, 1], prototype feature f) -> G_raw, the pre-tanh adversarial image (B, 3, H, W).

    [label image, image] (6 ch) -> conv 7x7 (64) -> two stride-2 convs (128, 256) -> six residual blocks (256) ->
    two stride-2 transposed convs (128, 64) -> concat with the image -> conv 3x3 (3).
    """

    def __init__(self, image_size, feature_dim: int = FEATURE_DIM, width: int = 64,
                 label_channels: int = LABEL_CHANNELS):
        super().__init__()
        self.height, self.width = _pair(image_size)
        self.label_encoder = LabelEncoder((self.height, self.width), feature_dim, label_channels)
        layers: list[nn.Module] = [nn.Conv2d(6, width, 7, padding=3), *_norm_relu(width)]
        c = width
        for _ in range(GENERATOR_DOWNSAMPLINGS):
            layers += [nn.Conv2d(c, 2 * c, 4, stride=2, padding=1), *_norm_relu(2 * c)]
            c *= 2
        layers += [ResidualBlock(c) for _ in range(RESIDUAL_BLOCKS)]
        for _ in range(GENERATOR_DOWNSAMPLINGS):
            layers += [nn.ConvTranspose2d(c, c // 2, 4, stride=2, padding=1, bias=False), *_norm_relu(c // 2)]
            c //= 2
        self.body = nn.Sequential(*layers)
        self.head = nn.Conv2d(c + 3, 3, 3, padding=1, bias=False)

    def forward(self, images: torch.Tensor, feature: torch.Tensor) -> torch.Tensor:
        h, w = images.shape[-2:]
        if (h, w) != (self.height, self.width):
            raise ValueError(f"this generator was built for {self.height}x{self.width} images, got {h}x{w}")
        mixed = torch.cat([self.label_encoder(feature), images], dim=1)
        multiple = 2 ** GENERATOR_DOWNSAMPLINGS
        pad_h, pad_w = (-h) % multiple, (-w) % multiple
        if pad_h or pad_w:
            mixed = F.pad(mixed, (0, pad_w, 0, pad_h), mode="replicate")
        decoded = self.body(mixed)[..., :h, :w]
        return self.head(torch.cat([decoded, images], dim=1))


def _halved(n: int) -> int:
    """Map size after one (odd-padded) 4x4 stride-2 convolution with padding 1: ceil(n / 2)."""
    return (n + 1) // 2


class ProSDiscriminator(nn.Module):
    """Five 4x4 stride-2 spectral-norm convs (64, 128, 256, 512, 1024; LeakyReLU 0.01), then one conv whose kernel
    covers the remaining map -> (B, C + 1): C label scores, then the real/fake score."""

    def __init__(self, classes: int, image_size, width: int = DISCRIMINATOR_WIDTH):
        super().__init__()
        h, w = _pair(image_size)
        self.image_size = (h, w)
        self.convs = nn.ModuleList()
        c_in, c_out = 3, width
        for _ in range(DISCRIMINATOR_CONVS):
            self.convs.append(spectral_norm(nn.Conv2d(c_in, c_out, 4, stride=2, padding=1)))
            c_in, c_out = c_out, 2 * c_out
            h, w = _halved(h), _halved(w)
        self.act = nn.LeakyReLU(LEAKY_SLOPE)
        self.out = nn.Conv2d(c_in, classes + 1, (h, w), bias=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if tuple(images.shape[-2:]) != self.image_size:
            raise ValueError(f"this discriminator was built for {self.image_size[0]}x{self.image_size[1]} images, "
                             f"got {images.shape[-2]}x{images.shape[-1]}")
        x = images
        for conv in self.convs:
            if x.shape[-2] % 2 or x.shape[-1] % 2:
                x = F.pad(x, (0, x.shape[-1] % 2, 0, x.shape[-2] % 2))
            x = self.act(conv(x))
        return self.out(x).flatten(1)
