"""Networks an attack trains for itself (THA's and ProS-GAN's PrototypeNets, ProS-GAN's generator) are trained
once per attacked checkpoint and settings, cached next to the run, and resumed after an interruption.

Files: ``<cache_dir>/<name>-<checkpoint hash>-<settings hash>.pt`` when finished, ``...partial.pt`` while
training. Both hold weights_only-loadable dicts (state_dicts, numbers, RNG state tensors).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from ..checkpoint import load_file, save_file


class CachedTraining:
    def __init__(self, cache_dir: str | Path | None, name: str, checkpoint_hash: str, settings: dict):
        key = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:12]
        self.enabled = cache_dir is not None
        base = Path(cache_dir or ".") / f"{name}-{checkpoint_hash or 'nohash'}-{key}"
        self.final_path = base.with_suffix(".pt")
        self.partial_path = base.parent / (base.name + ".partial.pt")

    def load_final(self) -> dict | None:
        if self.enabled and self.final_path.is_file():
            return load_file(self.final_path, "cached attack network")
        return None

    def load_partial(self) -> dict | None:
        if self.enabled and self.partial_path.is_file():
            return load_file(self.partial_path, "partial attack-network checkpoint")
        return None

    def save_partial(self, state: dict) -> None:
        if self.enabled:
            save_file(state, self.partial_path)

    def save_final(self, state: dict) -> None:
        if self.enabled:
            save_file(state, self.final_path)
            self.partial_path.unlink(missing_ok=True)
