"""``saat reproduce``: run (or continue) a reproduction grid, cell by cell, and say what it will cost first.

Each cell (:mod:`saat.reproduce.grid`) is made by the pipeline function of its single command (``train``,
``defend``, ``run_attack``, ``run_robustness``, ``build_report``) and skipped when its result exists, so a rerun
continues where a run stopped: a killed training or defense resumes from its checkpoint, a killed card from its
finished attacks, a killed attack is redone. A cell that fails is recorded in ``OUT/reproduce.json`` with its
one-line error (the traceback in ``OUT/failures/``), the cells that need it are skipped as blocked, the others go
on; the summary lists the failures and a rerun retries them. Under torchrun every process walks the same cells
(training is data-parallel, attacks and cards are sharded across the processes: docs/scaling.md); one process
writes the grid's files.
"""

from __future__ import annotations

import datetime as _dt
import json
import shutil
import time
import traceback
from pathlib import Path

import torch

from ..runs import RunDir
from ..utils import dist
from ..utils.io import atomic_write_json, atomic_write_text, check_writable, nearest_existing
from .cost import (
    Estimate,
    attack_config,
    card_config,
    defense_config,
    estimate_cell,
    human_bytes,
    human_seconds,
    probe,
    sizes_of,
    train_config,
)
from .grid import DEFENSES_OF_TABLE2, PRESETS, Cell, GridSpec, build_grid

STATE = "reproduce.json"
FAILURES = "failures"
STATE_VERSION = 1


def is_done(cell: Cell) -> bool:
    """Whether a cell's result exists (the report is rebuilt every time: it reads everything else)."""
    files = RunDir(cell.run)
    if cell.kind in ("train", "defend"):
        return files.model.is_file()
    if cell.kind == "attack":
        return files.attack(cell.name).metrics.is_file()
    if cell.kind == "card":
        return files.robustness(cell.name).card.is_file()
    return False


def one_line(exc: BaseException) -> str:
    """``ValueError: the first line of its message`` (an OS error: its file and the system's words)."""
    if isinstance(exc, OSError) and exc.strerror and exc.filename is not None:
        return f"{type(exc).__name__}: {exc.filename}: {exc.strerror}"
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else '(no message)'}"


def read_state(out: Path, spec: GridSpec) -> dict:
    """The grid's state file, or a new one; refuses a folder that holds a grid of other settings."""
    path = out / STATE
    if not path.is_file():
        return {"version": STATE_VERSION, "grid": spec.identity(), "cells": {}}
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path} cannot be read ({exc}); restore it or delete it (finished cells are found again "
                         "from their files)") from None
    if not isinstance(state, dict) or not isinstance(state.get("cells"), dict):
        raise ValueError(f"{path} is not a saat reproduce state file; delete it or choose another --out")
    old = state.get("grid") or {}
    changed = sorted(k for k, v in spec.identity().items() if old.get(k, v) != v)
    if changed:
        was = ", ".join(f"{k}={old.get(k)!r}" for k in changed)
        raise ValueError(f"{out} holds a grid of other settings ({was}); choose another --out (bit lengths, seeds "
                         "and tables may change between reruns, not these)")
    return state


class _Printer:
    def __init__(self, label: str, progress: bool):
        self.label, self.on = label, progress and dist.is_main_process()

    def __call__(self, text: str = "", *, prefix: bool = True) -> None:
        if self.on:
            print(f"[{self.label}] {text}" if prefix else text, flush=True)


def plan_table(cells: list[Cell], estimates: dict[str, Estimate], state: dict | None = None) -> str:
    state = state or {"cells": {}}
    width = max(len(c.id) for c in cells)
    work = max(len(estimates[c.id].work) for c in cells)
    lines = [f"  {'#':>3}  {'cell':<{width}}  {'work':<{work}} {'estimate':>10} {'disk':>9}  status"]
    for i, c in enumerate(cells, 1):
        e = estimates[c.id]
        status = "done" if is_done(c) else (state["cells"].get(c.id) or {}).get("status", "to do")
        if status == "done" and not is_done(c):
            status = "to do"
        lines.append(f"  {i:>3}  {c.id:<{width}}  {e.work:<{work}} {human_seconds(e.seconds):>10} "
                     f"{human_bytes(e.disk):>9}  {status}")
    return "\n".join(lines)


def make_plan(spec: GridSpec, out: Path, *, device: str = "auto", cells: list[Cell] | None = None) -> dict:
    """The plan of a grid: its cells, the probe, each cell's estimate, the totals (every process gets the same;
    one process probes)."""
    from ..models import HashModel
    from ..pipelines.common import open_dataset, resolve_image_size

    cells = cells if cells is not None else build_grid(spec, out)
    preset = PRESETS[spec.preset]
    cfg = train_config(spec, preset, spec.bits[0], spec.seeds[0], device)
    with torch.device("meta"):
        native = HashModel(cfg.backbone, cfg.bits).native_input_size
    t0 = time.perf_counter()
    ds = open_dataset(cfg, resolve_image_size(native, cfg.image_size), verbose=dist.is_main_process())
    setup = time.perf_counter() - t0
    sizes = sizes_of(ds)
    defenses = tuple(d for d in DEFENSES_OF_TABLE2 if any(c.kind == "defend" and c.model == d for c in cells))
    pr = None
    if dist.is_main_process():
        with dist.alone():  # one process probes, without the others: no collective operation inside
            pr = probe(spec, sizes, ds.train.labels, device=device, defenses=defenses)
    if pr is not None:
        pr.setup = setup
    pr = dist.broadcast_object(pr)
    world = dist.world_size()
    encoded: set = set()
    estimates = {c.id: estimate_cell(c, spec, sizes, pr, world_size=world, encoded=encoded) for c in cells}
    return {"cells": cells, "sizes": sizes, "probe": pr, "estimates": estimates, "world_size": world,
            "seconds": sum(e.seconds for e in estimates.values()), "disk": sum(e.disk for e in estimates.values())}


def describe_plan(spec: GridSpec, plan: dict, out: Path, state: dict | None = None) -> str:
    s, pr = plan["sizes"], plan["probe"]
    tables = " and ".join(("I", "II")[t - 1] for t in spec.tables)
    todo = [c for c in plan["cells"] if not is_done(c)]
    left = sum(plan["estimates"][c.id].seconds for c in todo)
    free = shutil.disk_usage(nearest_existing(out)).free
    lines = [
        f"plan: {s.name} (train {s.train:,} · query {s.query:,} · database {s.database:,} · {s.n_classes} classes · "
        f"{s.image_size} px), {spec.backbone.lower()}, {spec.method.upper()}, bits {'/'.join(map(str, spec.bits))}, "
        f"seeds {'/'.join(map(str, spec.seeds))}, Table{'s' if len(spec.tables) > 1 else ''} {tables}, preset "
        f"{spec.preset} ({PRESETS[spec.preset].help}); {plan['world_size']} process"
        f"{'es' if plan['world_size'] > 1 else ''}",
        pr.describe(),
        plan_table(plan["cells"], plan["estimates"], state),
        f"total: {len(plan['cells'])} cells, estimated {human_seconds(plan['seconds'])} on {pr.device} with "
        f"{plan['world_size']} process{'es' if plan['world_size'] > 1 else ''}"
        + (f" ({len(todo)} cells left: {human_seconds(left)})" if len(todo) < len(plan["cells"]) else "")
        + f"; disk {human_bytes(plan['disk'])} (free at {out}: {human_bytes(free)})",
    ]
    kinds = {"train": "training", "defend": "defenses", "attack": "attacks", "card": "robustness cards",
             "report": "report"}
    by_kind = {label: sum(plan["estimates"][c.id].seconds for c in plan["cells"] if c.kind == kind)
               for kind, label in kinds.items()}
    lines.append("by kind: " + " · ".join(f"{label} {human_seconds(v)}" for label, v in by_kind.items() if v > 0))
    if plan["disk"] > free:
        lines.append(f"warning: the grid needs about {human_bytes(plan['disk'])}, more than the "
                     f"{human_bytes(free)} free at {out}")
    return "\n".join(lines)


def _run_cell(cell: Cell, spec: GridSpec, *, finished_runs: list[Path], device: str, num_workers: int | None,
              progress: bool) -> None:
    from ..pipelines.attack import run_attack
    from ..pipelines.defend import defend
    from ..pipelines.robustness import run_robustness
    from ..pipelines.train import train

    preset = PRESETS[spec.preset]
    files = RunDir(cell.run)
    if cell.kind == "train":
        if files.config.is_file():
            train(resume=cell.run, progress=progress)
        else:
            cfg = train_config(spec, preset, cell.bits, cell.seed, device)
            if num_workers is not None:
                cfg.num_workers = num_workers
            train(cfg, out=cell.run, progress=progress)
    elif cell.kind == "defend":
        if files.is_defense_run():
            defend(resume=cell.run, progress=progress)
        else:
            cfg = defense_config(preset, cell, device)
            if num_workers is not None:
                cfg.num_workers = num_workers
            defend(cell.source, cfg, out=cell.run, progress=progress)
    elif cell.kind == "attack":
        run_attack(cell.run, attack_config(preset, cell), device=device, progress=progress, num_workers=num_workers)
    elif cell.kind == "card":
        run_robustness(cell.run, card_config(preset, cell), device=device, progress=progress,
                       num_workers=num_workers)
    else:
        from ..report import build_report

        if dist.is_main_process():
            if not finished_runs:
                raise RuntimeError("no model of the grid has finished training: nothing to report")
            build_report(finished_runs, cell.run, overwrite=True)


def reproduce(spec: GridSpec, out: str | Path, *, device: str = "auto", num_workers: int | None = None,
              plan_only: bool = False, progress: bool = True, label: str = "reproduce") -> dict:
    """Plan and run (or continue) the grid ``spec`` under ``out`` (module docstring). With ``plan_only`` nothing
    is written: the plan is printed and returned.

    Returns ``{"plan": ..., "cells": {id: record}, "failures": [(id, error)], "seconds": wall, "report": path}``;
    a cell's record holds its status (done, failed, blocked), estimated and measured seconds and its error.

    Example::

        from saat.reproduce import GridSpec, reproduce
        reproduce(GridSpec("fashion-mnist", "small_cnn", "csq", bits=(16, 32), preset="quick"), "runs/fm")
    """
    out = Path(out)
    say = _Printer(label, progress)
    cells = build_grid(spec, out)
    state = read_state(out, spec)
    if not plan_only:
        check_writable(out)
    if dist.is_distributed():
        from ..utils.device import resolve_device

        dist.init(resolve_device(device))
    t_start = time.perf_counter()
    plan = make_plan(spec, out, device=device, cells=cells)
    for line in describe_plan(spec, plan, out, state).splitlines():
        say(line, prefix=False) if line.startswith("  ") else say(line)
    if plan_only:
        return {"plan": plan, "cells": {}, "failures": [], "seconds": time.perf_counter() - t_start, "report": None}

    state["grid"] = spec.identity()
    state["plan"] = {"device": plan["probe"].device, "world_size": plan["world_size"],
                     "probe": {"batch": plan["probe"].batch, "per_image": plan["probe"].per_image,
                               "seconds": plan["probe"].seconds},
                     "estimated_seconds": plan["seconds"], "estimated_disk": plan["disk"]}

    def save() -> None:
        if dist.is_main_process():
            out.mkdir(parents=True, exist_ok=True)
            atomic_write_json(out / STATE, state)

    bad: set[str] = set()  # failed or blocked in this pass
    ran: list[str] = []
    # What was finished before this pass, as one process sees it: under torchrun another process may already have
    # written a cell's result when a slower one reaches it, and every process must run the same cells.
    done_before = dist.broadcast_object([is_done(c) for c in cells])
    for cell, done in zip(cells, done_before, strict=True):
        record = state["cells"].setdefault(cell.id, {})
        record["estimate_seconds"] = round(plan["estimates"][cell.id].seconds, 3)
        if done:
            if record.get("status") != "done":
                record.update(status="done", error=None)
            say(f"{cell.title}: done earlier, reused")
            continue
        blockers = [d for d in cell.after if d in bad] if cell.kind != "report" else []
        if blockers:
            bad.add(cell.id)
            record.update(status="blocked", error=f"needs {blockers[0]}, which did not finish")
            say(f"{cell.title}: skipped (needs {blockers[0]}, which did not finish)")
            save()
            continue
        say(f"{cell.title} ...")
        finished = [c.run for c in cells if c.kind in ("train", "defend") and is_done(c)] if cell.kind == "report" \
            else []
        t0 = time.perf_counter()
        error = None
        try:
            _run_cell(cell, spec, finished_runs=finished, device=device, num_workers=num_workers, progress=progress)
        except Exception as exc:  # noqa: BLE001 - a failed cell is recorded and the grid goes on
            error = one_line(exc)
            if dist.is_main_process():
                atomic_write_text(out / FAILURES / (cell.id.replace("/", "__") + ".txt"), traceback.format_exc())
        if dist.is_distributed():  # every process agrees that the cell failed if one of them failed
            messages = [m for m in dist.gather_objects(error) if m]
            error = messages[0] if messages else None
        seconds = time.perf_counter() - t0
        record["attempts"] = int(record.get("attempts", 0)) + 1
        record["seconds"] = round(seconds, 3)
        record["finished_at"] = _dt.datetime.now().astimezone().isoformat(timespec="seconds")
        ran.append(cell.id)
        if error is None:
            record.update(status="done", error=None)
            say(f"{cell.title}: {seconds:.1f} s")
        else:
            bad.add(cell.id)
            record.update(status="failed", error=error)
            say(f"{cell.title}: FAILED after {seconds:.1f} s: {error}")
        save()
    wall = time.perf_counter() - t_start
    failures = [(c.id, state["cells"][c.id]["error"]) for c in cells
                if state["cells"][c.id].get("status") in ("failed", "blocked")]
    state["last_run"] = {"seconds": round(wall, 3), "ran": len(ran), "failures": len(failures)}
    save()
    if ran:
        say(f"finished in {human_seconds(wall)}: {len(ran)} cell(s) ran, estimate vs measured:")
        say(summary_table(cells, state, ran), prefix=False)
    disk = _disk_usage(out) if dist.is_main_process() else 0
    say(f"disk: {human_bytes(disk)} written under {out} (estimated {human_bytes(plan['disk'])})")
    if failures:
        say(f"{len(failures)} cell(s) did not finish (a rerun of the same command retries them; tracebacks in "
            f"{out / FAILURES}):")
        for cid, err in failures:
            say(f"  {cid}: {err}", prefix=False)
    report = out / "report" / "report.html"
    return {"plan": plan, "cells": state["cells"], "failures": failures, "seconds": wall,
            "report": str(report) if report.is_file() else None}


def _disk_usage(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else 0


def summary_table(cells: list[Cell], state: dict, ran: list[str]) -> str:
    width = max(len(c) for c in ran)
    lines = [f"  {'cell':<{width}}  {'status':<8} {'estimate':>10} {'measured':>10} {'measured/est.':>13}"]
    est_total = meas_total = 0.0
    for cid in ran:
        r = state["cells"][cid]
        est, meas = r.get("estimate_seconds") or 0.0, r.get("seconds") or 0.0
        est_total += est
        meas_total += meas
        ratio = f"{meas / est:.2f}" if est > 0 else "—"
        lines.append(f"  {cid:<{width}}  {r['status']:<8} {human_seconds(est):>10} {human_seconds(meas):>10} "
                     f"{ratio:>13}")
    ratio = f"{meas_total / est_total:.2f}" if est_total > 0 else "—"
    lines.append(f"  {'total':<{width}}  {'':<8} {human_seconds(est_total):>10} {human_seconds(meas_total):>10} "
                 f"{ratio:>13}")
    return "\n".join(lines)

