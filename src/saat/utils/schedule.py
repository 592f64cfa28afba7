"""Step learning-rate decay at fractions of a run, the schedule of every trainer in the paper's code
("lr x 0.1 at 50 % and 75 % of all iterations"): SAAT, ATRDH and CgAT, THA's and ProS-GAN's PrototypeNets."""

from __future__ import annotations

from collections.abc import Iterable


def lr_milestones(fractions: Iterable[float], total: int) -> list[int]:
    """Iteration indices ``max(1, floor(f * total))`` at which the learning rate is multiplied by gamma."""
    return sorted({max(1, int(f * total)) for f in fractions})


def lr_factor(step: int, milestones: Iterable[int], gamma: float = 0.1) -> float:
    """The factor on the base learning rate at 0-based iteration ``step``: ``gamma`` per milestone reached —
    what ``MultiStepLR(milestones, gamma)`` gives after ``step`` scheduler steps."""
    return gamma ** sum(step >= m for m in milestones)
