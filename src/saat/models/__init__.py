"""Deep hashing models (docs/models.md#hashmodel): a backbone registry and :class:`HashModel`."""

from .backbones import BACKBONES, Backbone, SmallCNN, create_backbone, list_backbones
from .hash_model import HashModel, build_model

__all__ = ["BACKBONES", "Backbone", "HashModel", "SmallCNN", "build_model", "create_backbone", "list_backbones"]
