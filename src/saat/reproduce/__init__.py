"""The paper's protocol as one grid: ``saat reproduce`` (and ``saat demo``, its demo preset), planned, resumable
(docs/reproduce.md)."""

from .cost import Estimate, Probe, Sizes, estimate_cell, probe
from .demo import final_table, format_table, run_demo
from .grid import PRESETS, Cell, GridSpec, Preset, build_grid
from .run import make_plan, reproduce

__all__ = ["PRESETS", "Cell", "Estimate", "GridSpec", "Preset", "Probe", "Sizes", "build_grid", "estimate_cell",
           "final_table", "format_table", "make_plan", "probe", "reproduce", "run_demo"]
