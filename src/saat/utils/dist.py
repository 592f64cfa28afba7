"""Process-group helpers. Single-process runs see rank 0 of world 1; under torchrun the env variables decide.

Only rank 0 writes files; every other rank computes and stays silent.
"""

from __future__ import annotations

import os


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main_process() -> bool:
    return rank() == 0
