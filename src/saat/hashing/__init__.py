"""Deep-hashing training losses (docs/hashing.md#hashing-methods), found by name in one registry.

>>> from saat.hashing import create_method, list_methods
>>> list_methods()
['csq', 'dph', 'dpn', 'dpsh', 'hashnet', 'hswd', 'orthohash']
>>> method = create_method("dpsh", bits=32, n_classes=10, n_train=5000, seed=0)  # doctest: +SKIP
>>> loss = method(h, y, idx)  # h (B, K) tanh outputs, y (B, C) multi-hot labels, idx (B,) training indices
...                            # doctest: +SKIP

``method.train_alpha(step)`` is the tanh scale for training step ``step``, ``method.head_norm`` tells the model
whether to put a BatchNorm before its tanh, and pairwise methods (``method.uses_memory``) keep memories of the
whole training set that :meth:`HashingMethod.init_memory` can fill from an encoded training set.
"""

from . import pairwise, pointwise  # noqa: F401  (importing registers the methods)
from .base import METHODS, HashingMethod, PairwiseMethod, create_method, list_methods, register_method
from .codes import multi_label_targets, random_sign_codes, seeded_generator, sylvester_hadamard
from .pairwise import DPH, DPSH, HSWD, HashNet
from .pointwise import CSQ, DPN, OrthoHash

__all__ = [
    "CSQ",
    "DPH",
    "DPN",
    "DPSH",
    "HSWD",
    "METHODS",
    "HashNet",
    "HashingMethod",
    "OrthoHash",
    "PairwiseMethod",
    "create_method",
    "list_methods",
    "multi_label_targets",
    "random_sign_codes",
    "register_method",
    "seeded_generator",
    "sylvester_hadamard",
]
