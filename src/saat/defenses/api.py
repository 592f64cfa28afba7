"""Adversarial training of any PyTorch hashing model: ``create_defense`` and one documented training loop.

    from saat.defenses import create_defense
    defense = create_defense("saat", model, "csq", train_codes=U, train_labels=Y)   # U: sign(model(X_train))
    opt = defense.build_optimizer(model.parameters())
    for epoch in range(epochs):
        for it, (x, y, idx) in enumerate(loader):         # images in [0, 1], multi-hot labels, dataset indices
            for _ in range(defense.replays):              # free training replays each batch (1 otherwise)
                loss = defense.step(x, y, idx, it)["loss"]
                opt.zero_grad(); loss.backward(); defense.after_backward(); opt.step()

``inner="fgsm-rs"`` (or ``"n-fgsm"``, ``"free"`` with ``replays=M``) replaces the paper's PGD inner maximiser
(docs/defenses.md#fast-adversarial-training); ``defense.after_backward()`` is free training's perturbation update
and does nothing for the others.

``hashing_loss`` is one of the seven methods by name (built for the model's code length and the training set,
its memories filled from ``train_codes``) or any callable ``(h, y, idx) -> loss``. The model is any module
mapping [0, 1] images to continuous codes (B, K); ``alpha`` reaches it only if its forward takes it.
"""

from __future__ import annotations

import torch

from ..attacks.api import HashingModel
from ..config import resolve_settings
from ..utils.validation import check_labels, check_outputs, codes_tensor
from .base import DEFENSES, Defense, DefenseContext


def create_defense(name: str, model: torch.nn.Module, hashing_loss, *, train_codes, train_labels,
                   train_outputs=None, db_labels=None, num_classes: int | None = None, total_iterations: int = 0,
                   seed: int = 0, amp: bool = False, **settings) -> Defense:
    """A defense ("saat", "atrdh", "cgat") bound to ``model`` (module docstring). ``train_codes`` (N, K) are the
    model's +-1 codes of the training set before defense training, ``train_labels`` (N, C) or (N,) with
    ``num_classes``; ``train_outputs`` the continuous outputs (ATRDH's memory; default: the codes), ``db_labels``
    where ATRDH draws target labels (default: the training labels). ``total_iterations`` lets the defense follow
    the paper's lr milestones in the networks it owns (ATRDH's PrototypeNet); other settings default to the
    paper's (``DEFENSES.get(name).defaults``)."""
    cls = DEFENSES.get(name)
    resolved = resolve_settings(cls.defaults, what=f"defense {cls.name!r}", explicit=settings)
    params = list(model.parameters())
    device = params[0].device if params else torch.device("cpu")
    codes = codes_tensor(train_codes, "train_codes", device)
    labels = check_labels(train_labels, "train_labels", num_classes, batch=codes.shape[0],
                          batch_of="rows in train_codes").to(device)
    outputs = codes.clone() if train_outputs is None else check_outputs(
        torch.as_tensor(train_outputs).to(device, torch.float32), codes.shape[0], name="train_outputs")
    if isinstance(hashing_loss, str):
        from ..hashing import create_method

        method = create_method(hashing_loss, bits=codes.shape[1], n_classes=labels.shape[1], n_train=codes.shape[0],
                               seed=seed).to(device)
        method.init_memory(codes, labels)
    elif callable(hashing_loss):
        method = hashing_loss
    else:
        raise ValueError(f"hashing_loss must be a method name or a callable (h, y, idx) -> loss, got "
                         f"{type(hashing_loss).__name__}")
    pool = None if db_labels is None else check_labels(db_labels, "db_labels", labels.shape[1]).to(device)
    ctx = DefenseContext(HashingModel(model), method, device, codes, outputs, labels, seed=seed, amp=amp,
                         db_labels=pool, total_iterations=total_iterations)
    return cls(ctx, **resolved)
