"""``saat report``: tables and figures from trained, attacked and defended runs (the paper's Tables I-II, Fig. 3-5).

>>> from saat.report import build_report
>>> paths = build_report(["runs/demo", "runs/demo-saat"], "report")  # doctest: +SKIP
>>> paths["html"]  # doctest: +SKIP
PosixPath('report/report.html')

The report layer only reads what ``saat train / evaluate / attack / defend`` wrote; it sits at the edge of the
package and nothing below imports it.
"""

from .build import build_report
from .claims import ClaimCheck
from .collect import AttackResult, Run, collect_runs

__all__ = ["AttackResult", "ClaimCheck", "Run", "build_report", "collect_runs"]
