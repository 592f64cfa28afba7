"""Robustness evaluation of deep hashing models (docs/robustness.md): the per-query worst case over an attack
ensemble, sanity checks for gradient masking, transfer — summarised in a versioned robustness card.

>>> from saat.robustness import evaluate
>>> card = evaluate(model, images, labels, db_codes=D, db_labels=DY, train_codes=U, train_labels=Y,
...                 eps=8/255, topk=5000, preset="quick")                              # doctest: +SKIP
>>> card["robust_map"], card["flags_raised"]                                            # doctest: +SKIP
"""

from .evaluate import (
    CARD_VERSION,
    PRESETS,
    Member,
    PassCounter,
    PriorRun,
    check_overrides,
    ensemble,
    evaluate,
    format_card,
)
from .masking import HardSign
from .transfer import Party, format_matrix, transfer_matrix

__all__ = ["CARD_VERSION", "PRESETS", "HardSign", "Member", "Party", "PassCounter", "PriorRun", "check_overrides",
           "ensemble", "evaluate", "format_card", "format_matrix", "transfer_matrix"]
