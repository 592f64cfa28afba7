"""Attacks on deep hashing models (docs/attacks.md#mainstay-codes and docs/attacks.md#what-every-attack-shares).

>>> from saat.attacks import mainstay_codes, PGD, mainstay_loss
>>> m = mainstay_codes(query_labels, train_codes, train_labels)           # doctest: +SKIP
>>> adv = PGD(model, eps=8/255, step=1/255, steps=100)(x, lambda h, _: mainstay_loss(h, m))  # doctest: +SKIP
"""

import importlib
import pkgutil

from .api import HashingModel, TensorAttack, create_attack, evaluate_attack
from .base import ALPHA_SCHEDULE, Attack, OptimizerAttack, continuation_alpha, frozen_eval
from .dhta import DHTAAttack, P2PAttack
from .generators import BIM, DIFGSM, GENERATORS, NIFGSM, PGD, SINIFGSM, VMIFGSM, create_generator, list_generators
from .hag import HAGAttack
from .losses import mainstay_loss, simple_loss
from .mainstay import center_codes, mainstay_codes
from .methods import (
    ATTACKS,
    TABLE1_ATTACKS,
    TABLE2_ATTACKS,
    AttackContext,
    AttackMethod,
    CenterAttack,
    MainstayAttack,
    list_attacks,
)
from .perceptibility import Perceptibility
from .prosgan import ProSGANAttack
from .sdha import SDHAAttack
from .targets import load_or_create_targets, query_subset, select_target_labels
from .tha import THAAttack

# Every module of the package registers what it defines when imported: a new attack is a new file
# ``attacks/<name>.py`` with ``@ATTACKS.register("<name>")``, found here without an edit (docs/architecture.md).
for _module in sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_")):
    importlib.import_module(f"{__name__}.{_module}")
del _module

__all__ = [
    "DHTAAttack",
    "HAGAttack",
    "HashingModel",
    "P2PAttack",
    "ProSGANAttack",
    "SDHAAttack",
    "THAAttack",
    "TensorAttack",
    "create_attack",
    "evaluate_attack",
    "ALPHA_SCHEDULE",
    "ATTACKS",
    "Attack",
    "AttackContext",
    "AttackMethod",
    "BIM",
    "CenterAttack",
    "DIFGSM",
    "GENERATORS",
    "MainstayAttack",
    "NIFGSM",
    "OptimizerAttack",
    "PGD",
    "Perceptibility",
    "SINIFGSM",
    "TABLE1_ATTACKS",
    "TABLE2_ATTACKS",
    "VMIFGSM",
    "center_codes",
    "continuation_alpha",
    "create_generator",
    "frozen_eval",
    "list_attacks",
    "list_generators",
    "load_or_create_targets",
    "mainstay_codes",
    "mainstay_loss",
    "query_subset",
    "select_target_labels",
    "simple_loss",
]
