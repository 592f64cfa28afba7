"""A gradient-masking demonstrator (docs/robustness.md#gradient-masking): a wrapper that makes any model *look*
robust to gradient attacks without being any more robust, so that the robustness card can be seen to catch it.

``HardSign(model)`` outputs ``sign(model(x))`` — the binary codes themselves instead of their continuous
relaxation. The codes, and so retrieval, are exactly the model's; but the sign has a zero derivative everywhere, so
the input gradient every attack follows is exactly 0 and the attacks stay where they start. ``bpda()`` returns the
same wrapper with a straight-through estimate (the identity's gradient; Athalye et al., ICML 2018), which the
adaptive evaluation crafts on.
"""

from __future__ import annotations

import torch
from torch import nn

from ..attacks.api import HashingModel
from ..utils.codes import sign_codes


class HardSign(nn.Module):
    def __init__(self, model, straight_through: bool = False):
        super().__init__()
        self.model = model if isinstance(model, HashingModel) else HashingModel(model)
        self.straight_through = bool(straight_through)

    def forward(self, x: torch.Tensor, alpha: float = 1.0) -> torch.Tensor:
        h = self.model(x, alpha=alpha)
        codes = sign_codes(h)
        # Still a function of the input for autograd (so attacks run), with a derivative of exactly 0.
        return h + (codes - h).detach() if self.straight_through else codes + 0.0 * h

    def bpda(self) -> HardSign:
        """The same model with the sign's gradient taken as the identity (straight-through)."""
        return HardSign(self.model, straight_through=True)
