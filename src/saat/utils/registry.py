"""A small name -> constructor registry (timm-style), so that the CLI, configs and tests never grow if/elif chains."""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from typing import Any


class Registry:
    """Maps lower-case names to objects. ``@REG.register("name")`` adds one; ``REG.get(name)`` finds it."""

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, Any] = {}

    def register(self, name: str, *aliases: str) -> Callable[[Any], Any]:
        def deco(obj):
            for key in (name, *aliases):
                key = key.lower()
                if key in self._items:
                    raise KeyError(f"{self.kind} {key!r} is registered twice")
                self._items[key] = obj
            return obj

        return deco

    def get(self, name: str) -> Any:
        key = str(name).lower()
        if key not in self._items:
            raise ValueError(f"unknown {self.kind} {name!r}; available: {', '.join(self.names())}")
        return self._items[key]

    def names(self, pattern: str | None = None) -> list[str]:
        names = sorted(self._items)
        return [n for n in names if pattern is None or fnmatch.fnmatch(n, pattern.lower())]

    def __contains__(self, name: str) -> bool:
        return str(name).lower() in self._items
