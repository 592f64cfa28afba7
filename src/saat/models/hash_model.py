"""HashModel: normalise -> backbone features -> Linear(feat, K) [-> BatchNorm1d] -> tanh(alpha * z)
(docs/models.md#hashmodel)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..utils.codes import sign_codes
from .backbones import create_backbone

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class HashModel(nn.Module):
    """A deep hashing network.

    Inputs are float images in [0, 1], shape (B, 3, H, W); ImageNet normalisation happens inside, so attack
    budgets are always in [0, 1] pixel units. ``forward(x, alpha)`` returns ``tanh(alpha * z)`` in (-1, 1)^K and is
    pure: alpha is an argument, never stored. ``head_norm="bn"`` puts a BatchNorm1d between the hash layer and
    the tanh (OrthoHash), so that retrieval codes come from the same quantity its loss trains.

    Args:
        backbone: a name from :func:`saat.models.list_backbones` (alexnet, vgg16, resnet50, small_cnn, ...).
        bits: code length K.
        pretrained: load torchvision ImageNet weights (network or a warm torch hub cache needed).
        backbone_weights: path of a local ImageNet state_dict for the torchvision backbone.
        head_norm: None or "bn".

    Example::

        model = HashModel("small_cnn", bits=32)
        codes = model.encode(images)  # +-1, sign(0) = +1
    """

    def __init__(self, backbone: str = "alexnet", bits: int = 32, *, pretrained: bool = False,
                 backbone_weights: str | Path | None = None, head_norm: str | None = None):
        super().__init__()
        if not isinstance(bits, int) or bits < 1:
            raise ValueError(f"bits must be a positive integer, got {bits!r}")
        if head_norm not in (None, "bn"):
            raise ValueError(f"head_norm must be None or 'bn', got {head_norm!r}")
        spec = create_backbone(backbone, pretrained=pretrained, weights_path=backbone_weights)
        self.backbone_name = backbone.lower()
        self.bits = bits
        self.head_norm_kind = head_norm
        self.native_input_size = spec.input_size
        self.features = spec.features
        self.hash_layer = nn.Linear(spec.feat_dim, bits)
        if spec.hash_init_std is not None:
            nn.init.normal_(self.hash_layer.weight, 0.0, spec.hash_init_std)
            nn.init.zeros_(self.hash_layer.bias)
        self.head_norm = nn.BatchNorm1d(bits) if head_norm == "bn" else nn.Identity()
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """The pre-tanh hash-layer output z (after the optional BatchNorm)."""
        x = (x - self.mean) / self.std
        return self.head_norm(self.hash_layer(self.features(x)))

    def forward(self, x: torch.Tensor, alpha: float = 1.0) -> torch.Tensor:
        return torch.tanh(alpha * self.logits(x))

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """+-1 codes (int8) of a batch; sign(0) = +1. Call in eval mode."""
        return sign_codes(self.logits(x)).to(torch.int8)

    @property
    def channels_last(self) -> bool:
        """Whether inputs and weights should use the channels_last memory format. Measured on CPU: ResNets run
        about 2x faster, small_cnn 1.3-2.5x (forward+backward / forward); AlexNet's backward gets slower."""
        return self.backbone_name.startswith("resnet") or self.backbone_name == "small_cnn"

    def architecture(self) -> dict:
        """What is needed to rebuild this model (without pretrained weights: the state_dict carries them)."""
        return {"backbone": self.backbone_name, "bits": self.bits, "head_norm": self.head_norm_kind}

    @classmethod
    def from_architecture(cls, arch: dict) -> HashModel:
        return cls(arch["backbone"], int(arch["bits"]), head_norm=arch.get("head_norm"))


def build_model(ckpt: dict[str, Any]):
    """Rebuild the HashModel of a loaded checkpoint (no pretrained download: the state_dict has the weights)."""
    model = HashModel.from_architecture(ckpt["metadata"]["architecture"])
    model.load_state_dict(ckpt["state_dict"])
    return model
