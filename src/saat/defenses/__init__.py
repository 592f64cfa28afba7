"""Defenses (docs/defenses.md#the-shared-training-loop): SAAT and the baselines ATRDH and CgAT on one
adversarial-training loop, found by name.

>>> from saat.defenses import DEFENSES, list_defenses
>>> list_defenses()
['atrdh', 'cgat', 'saat']
"""

from . import atrdh, cgat, saat  # noqa: F401  (importing registers the defenses)
from .api import create_defense
from .base import DEFENSES, Defense, DefenseContext


def list_defenses() -> list[str]:
    return DEFENSES.names()


__all__ = ["DEFENSES", "Defense", "DefenseContext", "create_defense", "list_defenses"]
