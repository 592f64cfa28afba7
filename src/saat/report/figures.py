"""The report's curve figures (PNG, matplotlib's Agg canvas; pyplot and its global state are never touched)."""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path

from ..utils.io import atomic_write_bytes
from .collect import ATTACK_NAMES, AttackResult, Run, curve_of
from .select import describe

DPI = 110
# One colour per attack family in every figure; the benign curve is black.
COLORS = {"hag": "tab:orange", "sdha": "tab:green", "mainstay": "tab:red", "p2p": "tab:purple", "dhta": "tab:brown",
          "tha": "tab:pink", "prosgan": "tab:olive", "cgat": "tab:cyan"}
MODEL_COLORS = {"undefended": "tab:gray", "saat": "tab:red", "atrdh": "tab:blue", "cgat": "tab:cyan"}


@dataclass
class Series:
    label: str
    x: list[float]
    y: list[float]
    color: str | None = None
    style: str = "-"
    marker: str | None = None


@dataclass
class Panel:
    title: str
    xlabel: str
    ylabel: str
    series: list[Series] = field(default_factory=list)
    xlim: tuple[float, float] | None = None
    ylim: tuple[float, float] | None = (0.0, 1.02)


def save_figure(fig, path: Path) -> Path:
    """Write a matplotlib figure as PNG like every other file: rendered in memory, then written atomically (a full
    disk or a kill leaves no partial figure, and the error names ``path``)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return atomic_write_bytes(path, buf.getvalue())


def draw_panels(path: Path, title: str, panels: list[Panel]) -> Path:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.2 * len(panels), 4.2), dpi=DPI, layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, panel in zip(axes, panels, strict=True):
        for s in panel.series:
            ax.plot(s.x, s.y, s.style, color=s.color, marker=s.marker, markersize=4, linewidth=1.8, label=s.label)
        ax.set_title(panel.title, fontsize=11)
        ax.set_xlabel(panel.xlabel)
        ax.set_ylabel(panel.ylabel)
        if panel.xlim:
            ax.set_xlim(*panel.xlim)
        if panel.ylim:
            ax.set_ylim(*panel.ylim)
        ax.grid(True, alpha=0.3)
        if panel.series:
            ax.legend(fontsize=8, loc="best")
    fig.suptitle(title, fontsize=12)
    return save_figure(fig, path)


def attack_label(a: AttackResult) -> str:
    eps = "unbounded" if a.eps_255 is None else f"ε {a.eps_255:g}/255"
    return f"{ATTACK_NAMES.get(a.method, a.method)} ({eps}, {describe(a)})"


def curve_panels(run: Run, attacks: list[AttackResult], key: str, x: str, xlabel: str) -> tuple[list[Panel], list[str]]:
    """Untargeted panel (benign curve of the run + each attack's) and targeted panel (each attack's, relevance =
    target labels); the names of attacks without the curve."""
    missing = []
    untargeted = Panel("untargeted (relevance: query labels)", xlabel, "precision")
    targeted = Panel("targeted (relevance: target labels)", xlabel, "precision")
    benign = curve_of(run.record.evaluation if run.record else None, key, x)
    if benign:
        untargeted.series.append(Series("benign (no attack)", *benign, color="black", style="-"))
    for a in attacks:
        c = a.curve(key, x)
        if c is None:
            missing.append(a.name)
            continue
        panel = targeted if a.targeted else untargeted
        panel.series.append(Series(attack_label(a), *c, color=COLORS.get(a.method), style="--" if a.targeted else "-"))
    panels = [p for p in (untargeted, targeted) if p.series]
    if key == "pr_curve":
        for p in panels:
            p.xlim = (0.0, 1.0)
    return panels, missing


def retrieval_curve_figure(path: Path, run: Run, attacks: list[AttackResult], kind: str
                           ) -> tuple[Path | None, list[str]]:
    """``kind`` "pr" (precision-recall, the paper's Fig. 3) or "pn" (P@N, Fig. 4) for one run."""
    if kind == "pr":
        panels, missing = curve_panels(run, attacks, "pr_curve", "recall", "recall")
        title = f"Precision-recall: {run.name} ({run.label})"
    else:
        panels, missing = curve_panels(run, attacks, "precision_at_n", "n", "N (top-N retrieved)")
        title = f"Precision@N: {run.name} ({run.label})"
    if not panels:
        return None, missing
    return draw_panels(path, title, panels), missing


def eps_figure(path: Path, title: str, lines: list[tuple[str, str, list[tuple[float, float]]]]) -> Path:
    """MAP under the untargeted SAAT attack vs eps; ``lines``: (label, colour key, [(eps/255, MAP)])."""
    panel = Panel("SAAT attack (untargeted), MAP vs budget", "ε (/255)", "MAP under attack")
    for label, key, points in lines:
        pts = sorted(points)
        panel.series.append(Series(label, [p[0] for p in pts], [p[1] for p in pts],
                                   color=MODEL_COLORS.get(key), marker="o"))
    return draw_panels(path, title, [panel])


def card_curve_figure(path: Path, title: str, lines: list[tuple[str, list[tuple[float, float]]]],
                      metric: str) -> Path:
    """The robustness cards' eps curves (the *monotone* check): one line per card, (eps/255, measure) points."""
    panel = Panel(f"mainstay APGD attack: {metric} vs budget", "ε (/255)", metric)
    for label, points in lines:
        pts = sorted(points)
        panel.series.append(Series(label, [p[0] for p in pts], [p[1] for p in pts], marker="o"))
    return draw_panels(path, title, [panel])


def heatmap_figure(path: Path, title: str, names: list[str], clean: list[float], matrix: list[list[float]]) -> Path:
    """A transfer matrix as a heat map: rows crafted on, columns evaluated on, the clean mAP as the first row."""
    from matplotlib.figure import Figure

    rows = ["(clean)", *names]
    values = [clean, *matrix]
    n = len(names)
    fig = Figure(figsize=(2.2 + 1.3 * n, 1.6 + 0.55 * (n + 1)), dpi=DPI, layout="constrained")
    ax = fig.subplots()
    image = ax.imshow(values, vmin=0.0, vmax=1.0, cmap="viridis", aspect="auto")
    ax.set_xticks(range(n), names, rotation=30, ha="right", fontsize=8)
    ax.set_yticks(range(n + 1), rows, fontsize=8)
    ax.set_xlabel("evaluated on")
    ax.set_ylabel("crafted on")
    for i, row in enumerate(values):
        for j, v in enumerate(row):
            ax.text(j, i, f"{v:.3f}", ha="center", va="center", fontsize=8, color="white" if v < 0.6 else "black")
    fig.colorbar(image, ax=ax, label="mAP")
    ax.set_title(title, fontsize=10)
    return save_figure(fig, path)
