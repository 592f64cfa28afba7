"""Backbone registry: name -> feature extractor (images -> (B, F) features), per docs/models.md#hashmodel.

torchvision backbones are built with ``weights=None`` unless ``pretrained=True`` (ImageNet weights through the
torch hub cache, which needs network or a warm cache) or ``weights_path`` (a local ImageNet state_dict of the
torchvision model, loaded with ``weights_only=True``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..checkpoint import load_file
from ..errors import WeightsUnavailableError
from ..utils.registry import Registry

BACKBONES = Registry("backbone")


@dataclass
class Backbone:
    features: nn.Module  # (B, 3, S, S) normalised images -> (B, feat_dim)
    feat_dim: int
    input_size: int | None  # the side the backbone is meant for (None: any, e.g. small_cnn)
    hash_init_std: float | None = None  # N(0, std) init of the hash layer (None: PyTorch default)


def list_backbones(pattern: str | None = None) -> list[str]:
    return BACKBONES.names(pattern)


def create_backbone(name: str, pretrained: bool = False, weights_path: str | Path | None = None) -> Backbone:
    return BACKBONES.get(name)(pretrained=pretrained, weights_path=weights_path)


def _torchvision_model(name: str, pretrained: bool, weights_path) -> nn.Module:
    import torchvision

    ctor = getattr(torchvision.models, name)
    if weights_path is not None:
        model = ctor(weights=None)
        path = Path(weights_path)
        if not path.is_file():
            raise FileNotFoundError(f"--backbone-weights: file not found: {path}")
        state = load_file(path, "loadable state_dict (--backbone-weights)",
                          f"give torchvision's ImageNet weights of {name}, saved with torch.save(model.state_dict())")
        state = state.get("state_dict", state) if isinstance(state, dict) else state
        try:
            model.load_state_dict(state)
        except RuntimeError as exc:
            raise ValueError(f"--backbone-weights: {path} does not fit torchvision's {name}: {exc}") from None
        return model
    if not pretrained:
        return ctor(weights=None)
    weights = torchvision.models.get_model_weights(name).DEFAULT
    try:
        return ctor(weights=weights)
    except Exception as exc:  # noqa: BLE001 - offline / blocked download / corrupt cache
        hub = Path(torch.hub.get_dir()) / "checkpoints"
        filename = Path(weights.url).name
        raise WeightsUnavailableError(
            f"could not load ImageNet weights for {name} ({type(exc).__name__}: {exc}). Without network, download "
            f"{weights.url} elsewhere and put it at {hub / filename}, or pass --backbone-weights FILE "
            "(a torchvision state_dict)."
        ) from None


def _classifier_trunk(name: str):
    """alexnet / vgg*: conv features -> fc6 -> ReLU -> dropout -> fc7 -> ReLU (the 1000-way layer is dropped)."""

    def build(pretrained=False, weights_path=None) -> Backbone:
        tv = _torchvision_model(name, pretrained, weights_path)
        # torchvision's classifiers end in Linear(4096, 1000); keep everything before it.
        trunk = nn.Sequential(*list(tv.classifier.children())[:-1])
        features = nn.Sequential(tv.features, tv.avgpool, nn.Flatten(1), trunk)
        return Backbone(features, 4096, 224)

    return build


def _resnet(name: str):
    def build(pretrained=False, weights_path=None) -> Backbone:
        tv = _torchvision_model(name, pretrained, weights_path)
        dim = tv.fc.in_features
        tv.fc = nn.Identity()  # everything up to global pooling (+ flatten)
        return Backbone(tv, dim, 224, hash_init_std=0.01)

    return build


BACKBONES.register("alexnet")(_classifier_trunk("alexnet"))
for _depth in (11, 13, 16, 19):
    BACKBONES.register(f"vgg{_depth}")(_classifier_trunk(f"vgg{_depth}"))
    BACKBONES.register(f"vgg{_depth}_bn")(_classifier_trunk(f"vgg{_depth}_bn"))
for _depth in (18, 34, 50, 101):
    BACKBONES.register(f"resnet{_depth}")(_resnet(f"resnet{_depth}"))


class SmallCNN(nn.Module):
    """Four conv-BN-ReLU blocks (32-64-128-256 channels), max-pooling between them, global average pooling.

    Fast at 28-64 px on a CPU; meant for demos and tests, trained from scratch.
    """

    def __init__(self, widths=(32, 64, 128, 256)):
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 3
        for i, c_out in enumerate(widths):
            layers += [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]
            if i < len(widths) - 1:
                layers.append(nn.MaxPool2d(2))
            c_in = c_out
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(1)]
        self.body = nn.Sequential(*layers)
        self.out_dim = widths[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            return self.body(x)
        # Eval mode: each BatchNorm is an affine map of its convolution's output, folded into that convolution's
        # weights and bias (the same function, without BatchNorm's backward: on 2 CPU cores a PGD iteration of the
        # demo model took 1.6 instead of 2.0 ms per image, docs/models.md).
        layers = iter(self.body)
        for layer in layers:
            x = _conv_bn_eval(layer, next(layers), x) if isinstance(layer, nn.Conv2d) else layer(x)
        return x


def _conv_bn_eval(conv: nn.Conv2d, bn: nn.BatchNorm2d, x: torch.Tensor) -> torch.Tensor:
    """``bn(conv(x))`` in eval mode as one convolution (a bias-free ``conv`` followed by ``bn``)."""
    scale = bn.weight * torch.rsqrt(bn.running_var + bn.eps)
    return F.conv2d(x, conv.weight * scale[:, None, None, None], bn.bias - bn.running_mean * scale, conv.stride,
                    conv.padding, conv.dilation, conv.groups)


@BACKBONES.register("small_cnn")
def _small_cnn(pretrained: bool = False, weights_path=None) -> Backbone:
    if pretrained or weights_path is not None:
        raise ValueError("small_cnn has no ImageNet weights; drop --pretrained / --backbone-weights")
    net = SmallCNN()
    return Backbone(net, net.out_dim, None)


BackboneFactory = Callable[..., Backbone]
