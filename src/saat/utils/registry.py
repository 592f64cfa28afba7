"""A small name -> constructor registry (timm-style), so that the CLI, configs and tests never grow if/elif chains."""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from typing import Any


class Registry:
    """Maps lower-case names to objects. ``@REG.register("name")`` adds one; ``REG.get(name)`` finds it.

    A registered class that has a ``name`` attribute (attack methods, hashing methods, defenses, generators) is
    known by it everywhere (listings, run records), so the registry keeps the two in step: a class that does not set
    ``name`` itself gets the first registered name; one that sets it to something it is not registered under is
    refused. Factories (functions) and classes without ``name`` are stored as they are.
    """

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, Any] = {}

    def register(self, name: str, *aliases: str) -> Callable[[Any], Any]:
        keys = [key.lower() for key in (name, *aliases)]

        def deco(obj):
            for key in keys:
                if key in self._items:
                    raise KeyError(f"{self.kind} {key!r} is registered twice")
            if isinstance(obj, type) and hasattr(obj, "name"):
                own = obj.__dict__.get("name")
                if own is None:
                    obj.name = keys[0]  # not inherited: a subclass is listed under its own name, not its base's
                elif str(own).lower() not in keys:
                    raise ValueError(f"{self.kind} class {obj.__qualname__} sets name = {own!r} but is registered "
                                     f"as {', '.join(map(repr, keys))}: drop its name attribute (the registry sets "
                                     "it) or register it under that name")
            for key in keys:
                self._items[key] = obj
            return obj

        return deco

    def unregister(self, name: str) -> Any:
        """Remove ``name`` and every alias of the same entry; returns the entry (for tests that register a
        throwaway class)."""
        obj = self.get(name)
        for key in [k for k, v in self._items.items() if v is obj]:
            del self._items[key]
        return obj

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
