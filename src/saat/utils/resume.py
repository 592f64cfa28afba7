"""Resumable training loops, one way for every trainer (hashing models, defenses, THA's and ProS-GAN's networks,
ComDefend): the state of a loop is the state of its named objects (modules, optimisers, schedulers, defenses,
random generators) plus a counter and any extra values, saved atomically and restored by name.

    ckpt = Checkpointer({"net": net, "optimizer": opt, "generator": gen}, load=cache.load_partial,
                        save=cache.save_partial, every=500)
    start, extras = ckpt.resume()
    for step in range(start, steps):
        ...
        ckpt.after(step + 1, steps, log=log)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch


def capture(objects: dict[str, Any]) -> dict:
    """Each object's state by name: ``get_state()`` of a torch generator, ``state_dict()`` of anything else."""
    return {name: obj.get_state() if isinstance(obj, torch.Generator) else obj.state_dict()
            for name, obj in objects.items()}


def restore(objects: dict[str, Any], state: dict) -> None:
    """Load ``state`` (as :func:`capture` made it) into the objects, by name."""
    for name, obj in objects.items():
        if isinstance(obj, torch.Generator):
            obj.set_state(state[name])
        else:
            obj.load_state_dict(state[name])


class Checkpointer:
    """Saves a loop's objects every ``every`` completed units (steps or epochs, named by ``counter``) through
    ``save(state)``, and restores them from ``load()`` (None: nothing to resume). ``accept(state)`` may refuse a
    saved state (e.g. one written with other settings); the loop then starts from 0."""

    def __init__(self, objects: dict[str, Any], *, load: Callable[[], dict | None], save: Callable[[dict], None],
                 every: int = 1, counter: str = "step", accept: Callable[[dict], bool] | None = None):
        self.objects, self.load, self.save = objects, load, save
        self.every, self.counter, self.accept = max(int(every), 1), counter, accept

    def resume(self) -> tuple[int, dict]:
        """(units already done, the extra values saved with them); objects are restored when a state exists."""
        state = self.load()
        if state is None or (self.accept is not None and not self.accept(state)):
            return 0, {}
        restore(self.objects, state)
        extras = {k: v for k, v in state.items() if k not in self.objects and k != self.counter}
        return int(state[self.counter]), extras

    def due(self, done: int, total: int) -> bool:
        """Whether :meth:`after` saves at ``done`` of ``total`` units (a loop reads what it saves only then)."""
        return done % self.every == 0 and done < total

    def after(self, done: int, total: int, **extras) -> None:
        """Call after each unit: saves when ``done`` is a multiple of ``every`` and the loop is not finished (the
        finished result is saved by the caller in its final form)."""
        if self.due(done, total):
            self.save({**capture(self.objects), self.counter: done, **extras})
