#!/usr/bin/env python
"""A GPU check anyone can run (issue 24): every part of the package once, tiny, on one device, in fp32 and in bf16.

    python scripts/gpu_check.py                        # CUDA (<= 5 minutes on one GPU)
    python scripts/gpu_check.py --device cpu           # the dry run, where no GPU is available
    python scripts/gpu_check.py --json check.json      # the table as JSON too

Steps, on a tiny planted dataset written under ``--out`` (4 classes, 16 x 16 px PNG files in the paired list format):
train (``saat.train``, CSQ + small_cnn), determinism (the same training again, same seed), encode (the database
split), attack:<name> for every attack of ``saat.attacks.list_attacks()`` (a few iterations each), defend:saat /
atrdh / cgat (``saat.pipelines.defend``, a few steps), robustness (``saat.robustness.evaluate``, quick preset, a few
iterations), host copies (one step of each defense and of PGD / VMI-FGSM crafting, with the batch already on the
device: the bytes copied from the host, which must stay far below one batch of images, i.e. no noise drawn on the
host) and ddp (``torchrun --standalone --nproc_per_node=2 -m saat train``, NCCL, when >= 2 GPUs are visible).

Every step but determinism runs twice: fp32, then with the package's ``amp`` switch ("amp": bfloat16 autocast,
float16 on GPUs without bfloat16): ``TrainConfig.amp``, ``DefenseConfig.amp``, ``encode_split(amp=)``,
``create_attack(..., amp=True)`` and ``saat.robustness.evaluate(..., amp=True)``. The AMP row's "diff" is its
difference from the fp32 row of the same step, measured
as the row's "metric" column says; a row passes when the step ran, its results are finite (and, for the attacks,
inside the eps ball and [0, 1]) and, for AMP, the difference is at most the row's tolerance. A step that raises
becomes a FAIL row with a one-line reason and the check goes on. Exit status 1 if any row failed.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils._python_dispatch import TorchDispatchMode

SIDE, CLASSES, BITS, BATCH, EPOCHS = 16, 4, 16, 16, 2
SPLIT_SIZES = {"train": 64, "test": 16, "database": 64}
EPS = 16 / 255
ATTACK_STEPS = 3
# A few iterations of every attack; THA's PrototypeNet and ProS-GAN's generator get a few steps too.
ATTACK_SETTINGS: dict[str, dict] = {
    "hag": {"steps": ATTACK_STEPS}, "sdha": {"steps": ATTACK_STEPS},
    "mainstay": {"steps": ATTACK_STEPS, "step": 4 / 255}, "cgat": {"steps": ATTACK_STEPS, "step": 4 / 255},
    "p2p": {"steps": ATTACK_STEPS, "step": 4 / 255}, "dhta": {"steps": ATTACK_STEPS, "step": 4 / 255},
    "tha": {"steps": ATTACK_STEPS, "step": 4 / 255, "proto_steps": 10, "proto_lr": 1e-3},
    "prosgan": {"proto_steps": 10, "proto_lr": 1e-3, "gan_epochs": 1, "gan_batch": 16, "gan_lr": 1e-3},
}
GAN_TRAIN_IMAGES = 16  # ProS-GAN's generator trains on the first 16 training images only (one batch)
H2D_SHARE = 0.05  # the host copies of one step: at most this share of one batch of images (noise is drawn on device)
DEFENSES = ("saat", "atrdh", "cgat")

# Tolerances of the AMP rows (bf16 keeps 8 bits of mantissa: ~4e-3 relative per operation) and of the repeat.
TOL_MAP = 0.15  # |mAP(amp) - mAP(fp32)| of training, defenses and the robustness worst case
TOL_ATTACK_MAP = 0.25  # |adversarial mAP (amp) - (fp32)| after a few sign-gradient steps (flips are discrete)
TOL_OUTPUTS = 0.1  # max |output(amp) - output(fp32)| of the encoded database, tanh outputs in (-1, 1)
TOL_REPEAT = {"cpu": 0.0, "cuda": 1e-4}  # max |weights| between two trainings with one seed
TOL_DDP = {"fp32": 1e-3, "amp": 5e-2}  # max |weights| two processes vs one, same precision


# ------------------------------------------------------------------------------------------------- the table


@dataclass
class Row:
    step: str
    precision: str  # fp32 | amp
    status: str = "PASS"  # PASS | FAIL | SKIP
    seconds: float | None = None
    peak_mib: float | None = None  # peak GPU memory of the step (CUDA only)
    diff: float | None = None
    tolerance: float | None = None
    metric: str = ""  # what "diff" measures
    note: str = ""


@dataclass
class Step:
    """``run(ctx, amp)`` returns the step's result (a dict of numbers, arrays and tensors, checked finite);
    ``diff(fp32, amp)`` the AMP run's difference from the fp32 run (``metric`` says what, at most ``tolerance``).
    A step with ``check`` returns ``(diff, note)`` from ``run`` itself and is compared with ``tolerance`` in every
    precision (determinism, ddp)."""

    name: str
    run: Callable[[Any, bool], Any]
    metric: str = ""
    diff: Callable[[Any, Any], float] | None = None
    tolerance: float | Callable[[Any, bool], float] | None = None
    precisions: tuple[bool, ...] = (False, True)
    check: bool = False
    skip: Callable[[Any], str | None] | None = None  # a reason to skip, or None
    note: Callable[[Any, Any], str] | None = None  # (fp32 result, this result) -> a note for the row


class StepSkipped(Exception):
    """Raised by a step to become a SKIP row."""


def _finite(value) -> bool:
    if isinstance(value, dict):
        return all(_finite(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return all(_finite(v) for v in value)
    if isinstance(value, torch.Tensor):
        return bool(torch.isfinite(value.float()).all()) if value.is_floating_point() else True
    if isinstance(value, np.ndarray):
        return bool(np.isfinite(value).all()) if np.issubdtype(value.dtype, np.floating) else True
    if isinstance(value, float):
        return math.isfinite(value)
    return True


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"[:160]


def run_checks(steps: list[Step], ctx) -> list[Row]:
    """Each step in each precision; an exception becomes a FAIL row with a one-line reason, and the rest go on."""
    rows: list[Row] = []
    cuda = ctx.device.type == "cuda"
    for step in steps:
        reference = None  # the fp32 result
        for amp in step.precisions:
            precision = "amp" if amp else "fp32"
            tol = step.tolerance(ctx, amp) if callable(step.tolerance) else step.tolerance
            row = Row(step.name, precision, metric=step.metric, tolerance=tol)
            rows.append(row)
            reason = step.skip(ctx) if step.skip is not None else None
            if reason:
                row.status, row.note = "SKIP", reason
                continue
            if cuda:
                torch.cuda.synchronize(ctx.device)
                torch.cuda.reset_peak_memory_stats(ctx.device)
            start = time.perf_counter()
            try:
                result = step.run(ctx, amp)
                if cuda:
                    torch.cuda.synchronize(ctx.device)
            except StepSkipped as exc:
                row.status, row.note = "SKIP", str(exc)
                continue
            except Exception as exc:  # noqa: BLE001 - every failure becomes a row
                row.status, row.note = "FAIL", _one_line(exc)
                row.seconds = time.perf_counter() - start
                if ctx.verbose:
                    traceback.print_exc()
                continue
            finally:
                if cuda:
                    row.peak_mib = torch.cuda.max_memory_allocated(ctx.device) / 2**20
            row.seconds = time.perf_counter() - start
            try:
                if step.check:
                    row.diff, row.note = result
                elif not _finite(result):
                    raise ValueError("non-finite results")
                elif amp and step.diff is not None:
                    if reference is None:
                        raise ValueError("no fp32 result to compare with (the fp32 run failed)")
                    row.diff = float(step.diff(reference, result))
                if step.note is not None and not row.note:
                    row.note = step.note(reference if amp else result, result)
                if isinstance(result, dict) and result.get("note"):
                    row.note = f"{row.note}; {result['note']}" if row.note else result["note"]
                if isinstance(result, dict) and result.get("problem"):
                    raise ValueError(result["problem"])
                if row.diff is not None and tol is not None and not (row.diff <= tol):
                    raise ValueError(f"difference {row.diff:.3g} above the tolerance {tol:.3g}")
            except Exception as exc:  # noqa: BLE001
                row.status, row.note = "FAIL", _one_line(exc)
            if not amp:
                reference = result
    return rows


def _fmt(value: float | None, spec: str) -> str:
    return "—" if value is None else format(value, spec)


def format_table(rows: list[Row], device: str) -> str:
    header = ("step", "prec", "seconds", "peak GPU MiB", "diff vs fp32", "tol", "metric", "result", "note")
    cells = [(r.step, r.precision, _fmt(r.seconds, ".2f"), _fmt(r.peak_mib, ".1f"), _fmt(r.diff, ".3g"),
              _fmt(r.tolerance, ".3g"), r.metric, r.status, r.note) for r in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) if cells else len(h) for i, h in enumerate(header)]
    widths[-1] = len(header[-1])  # the note is left ragged
    aligns = ["<", "<", ">", ">", ">", ">", "<", "<", "<"]

    def line(values):
        return "  ".join(format(v, f"{a}{w}") for v, a, w in zip(values, aligns, widths)).rstrip()

    out = [f"saat GPU check on {device}: 'diff vs fp32' is the amp row's difference from the fp32 row of the same "
           "step, measured as 'metric' says (determinism: vs a second fp32 training; ddp: 2 processes vs 1)",
           line(header), line(["-" * w for w in widths])]
    out += [line(c) for c in cells]
    failed = [r for r in rows if r.status == "FAIL"]
    counts = {s: sum(r.status == s for r in rows) for s in ("PASS", "FAIL", "SKIP")}
    out.append(f"overall: {'FAIL' if failed else 'PASS'} ({counts['PASS']} passed, {counts['FAIL']} failed, "
               f"{counts['SKIP']} skipped)")
    return "\n".join(out)


# ------------------------------------------------------------------------------------------------- the steps


@dataclass
class Context:
    device: torch.device
    out: Path
    ddp: bool = True  # run the ddp step where it can run
    ddp_cpu: bool = False  # run the ddp step with gloo on the CPU
    verbose: bool = False
    runs: dict = field(default_factory=dict)  # precision -> training run directory
    data: dict = field(default_factory=dict)  # tensors shared by the attack and robustness steps


def write_dataset(root: Path) -> None:
    """Four classes, each a random prototype image plus noise, as PNG files in the paired list format."""
    from PIL import Image

    rng = np.random.default_rng(0)
    prototypes = rng.integers(40, 216, size=(CLASSES, SIDE, SIDE, 3))
    (root / "img").mkdir(parents=True, exist_ok=True)
    for split, n in SPLIT_SIZES.items():
        classes = np.arange(n) % CLASSES
        paths, labels = [], []
        for i, c in enumerate(classes):
            image = np.clip(prototypes[c] + rng.integers(-30, 31, size=(SIDE, SIDE, 3)), 0, 255).astype(np.uint8)
            path = f"img/{split}-{i}.png"
            Image.fromarray(image).save(root / path)
            paths.append(path)
            labels.append(" ".join("1" if k == c else "0" for k in range(CLASSES)))
        (root / f"{split}_img.txt").write_text("\n".join(paths) + "\n")
        (root / f"{split}_label.txt").write_text("\n".join(labels) + "\n")


def _train_settings(ctx: Context) -> dict:
    return {"dataset_dir": str(ctx.out / "data"), "method": "csq", "backbone": "small_cnn", "bits": BITS,
            "epochs": EPOCHS, "batch_size": BATCH, "optimizer": "sgd", "lr": 0.05, "seed": 0,
            "image_size": SIDE, "device": str(ctx.device), "topk": None}


def _weights(run_dir: Path) -> dict:
    return torch.load(run_dir / "model.pt", map_location="cpu", weights_only=True)["state_dict"]


def _max_weight_difference(a: Path, b: Path) -> float:
    x, y = _weights(a), _weights(b)
    if x.keys() != y.keys():
        raise ValueError(f"the two models have different parameters ({len(x)} vs {len(y)} tensors)")
    return max((float((x[k].double() - y[k].double()).abs().max()) for k in x
                if x[k].is_floating_point() and x[k].numel()), default=0.0)


def _precision(amp: bool) -> str:
    return "amp" if amp else "fp32"


def step_train(ctx: Context, amp: bool) -> dict:
    import saat

    out = ctx.out / f"train-{_precision(amp)}"
    metrics = saat.train(out=out, amp=amp, progress=False, **_train_settings(ctx))
    ctx.runs[_precision(amp)] = out
    return {"mAP": float(metrics["mAP"]), "weights": _weights(out)}


def step_determinism(ctx: Context, amp: bool) -> tuple[float, str]:
    import saat

    first = _need_run(ctx, amp)
    again = ctx.out / f"train-{_precision(amp)}-again"
    saat.train(out=again, amp=amp, progress=False, **_train_settings(ctx))
    return _max_weight_difference(first, again), "max |Δweights| of two trainings, seed 0"


def _need_run(ctx: Context, amp: bool = False) -> Path:
    run = ctx.runs.get(_precision(amp))
    if run is None:
        raise RuntimeError(f"needs the {_precision(amp)} train step, which failed")
    return run


def _prepare_data(ctx: Context) -> dict:
    """The fp32 model, its codes of the training and database splits, and the queries (on the device)."""
    if ctx.data:
        return ctx.data
    from saat.data import load_dataset
    from saat.pipelines.common import encode_split, load_run

    run = load_run(_need_run(ctx), ctx.device)
    ds = load_dataset(dataset_dir=str(ctx.out / "data"), image_size=SIDE, verbose=False)

    def tensors(split):
        x, y, _ = split.__getitems__(list(range(len(split))))
        x = x.float() / 255 if not x.is_floating_point() else x  # the splits hold uint8 images
        return x.to(ctx.device), y.float().to(ctx.device)

    def codes(split):
        return torch.as_tensor(np.asarray(encode_split(run.model, split, batch_size=32, device=ctx.device,
                                                       progress=False))).float().to(ctx.device)

    x, y = tensors(ds.query)
    train_x, train_y = tensors(ds.train)
    _, db_y = tensors(ds.database)
    classes = y.argmax(1)
    targets = torch.nn.functional.one_hot((classes + 1) % CLASSES, CLASSES).float()
    ctx.data = {"model": run.model, "ds": ds, "x": x, "y": y, "targets": targets, "train_x": train_x,
                "train_y": train_y, "train_codes": codes(ds.train), "db_codes": codes(ds.database), "db_y": db_y}
    return ctx.data


def step_encode(ctx: Context, amp: bool) -> dict:
    from saat.pipelines.common import encode_split

    d = _prepare_data(ctx)
    outputs = encode_split(d["model"], d["ds"].database, batch_size=32, device=ctx.device, amp=amp, progress=False,
                           continuous=True)
    codes = encode_split(d["model"], d["ds"].database, batch_size=32, device=ctx.device, amp=amp, progress=False)
    return {"outputs": torch.as_tensor(np.asarray(outputs)).float().cpu(),
            "codes": torch.as_tensor(np.asarray(codes)).cpu()}


def _attack_step(name: str, targeted: bool) -> Callable[[Context, bool], dict]:
    def run(ctx: Context, amp: bool) -> dict:
        from saat.attacks import create_attack
        from saat.retrieval import mean_average_precision, sign_codes

        d = _prepare_data(ctx)
        model = d["model"]
        n = GAN_TRAIN_IMAGES if name == "prosgan" else len(d["train_x"])  # ProS-GAN trains a ~20 M generator
        atk = create_attack(name, model, eps=EPS, train_codes=d["train_codes"][:n], train_labels=d["train_y"][:n],
                            db_codes=d["db_codes"], db_labels=d["db_y"], train_images=d["train_x"][:n],
                            num_classes=CLASSES, seed=0, amp=amp, **ATTACK_SETTINGS.get(name, {"steps": ATTACK_STEPS}))
        adv = atk(d["x"], d["y"], target_labels=d["targets"] if targeted else None)
        adv_dtype = str(adv.dtype).replace("torch.", "")
        with torch.no_grad():
            codes = sign_codes(model(adv)).cpu().numpy().astype(np.int8)
        relevance = (d["targets"] if targeted else d["y"]).cpu().numpy()
        value = mean_average_precision(codes, d["db_codes"].cpu().numpy().astype(np.int8), relevance,
                                       d["db_y"].cpu().numpy(), topk=None)
        distance = float((adv - d["x"]).abs().max())
        problem = note = None
        # The model's passes run in mixed precision, the perturbation and its projection in float32: the ball holds.
        if adv_dtype != "float32":
            problem = f"adversarial images in {adv_dtype}, not float32"
        elif distance > EPS + 1e-6:
            problem = f"perturbation {distance:.4f} outside the eps ball {EPS:.4f}"
        elif float(adv.min()) < 0 or float(adv.max()) > 1:
            problem = "adversarial images outside [0, 1]"
        return {"mAP": float(value), "adv": adv.cpu(), "problem": problem, "note": note}

    return run


def step_defend(method: str) -> Callable[[Context, bool], dict]:
    def run(ctx: Context, amp: bool) -> dict:
        from saat.pipelines.defend import DefenseConfig, defend

        out = ctx.out / f"defend-{method}-{_precision(amp)}"
        lr = 1e-2 if method == "atrdh" else None
        metrics = defend(_need_run(ctx), DefenseConfig(method=method, epochs=1, batch_size=BATCH, steps=2, lr=lr,
                                                      train_limit=32, device=str(ctx.device), amp=amp),
                         out=out, progress=False)
        return {"mAP": float(metrics["mAP"]), "weights": _weights(out)}

    return run


def step_robustness(ctx: Context, amp: bool) -> dict:
    from saat.robustness import evaluate

    d = _prepare_data(ctx)
    few = {"steps": ATTACK_STEPS}
    card = evaluate(d["model"], d["x"], d["y"], db_codes=d["db_codes"], db_labels=d["db_y"],
                    train_codes=d["train_codes"], train_labels=d["train_y"], eps=EPS, topk=None, preset="quick",
                    overrides={"mainstay": few, "cgat": few, "hag": few, "sdha": few}, checks=False,
                    batch_size=BATCH, work_dir=ctx.out / f"robustness-{_precision(amp)}", amp=amp)
    return {"clean": float(card["clean_map"]), "robust": float(card["robust_map"])}


class HostCopies(TorchDispatchMode):
    """Bytes copied from the host to another device by the operators run inside the block."""

    def __init__(self):
        super().__init__()
        self.bytes = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if func in (torch.ops.aten._to_copy.default, torch.ops.aten.copy_.default):
            source = args[1] if func is torch.ops.aten.copy_.default else args[0]
            target = args[0] if func is torch.ops.aten.copy_.default else out
            if (torch.is_tensor(source) and torch.is_tensor(target) and source.device.type == "cpu"
                    and target.device.type != "cpu"):
                self.bytes += source.numel() * source.element_size()
        return out


def step_host_copies(ctx: Context, amp: bool) -> dict:
    """One step of each defense and one PGD / VMI-FGSM crafting call with the batch on the device: the bytes copied
    from the host (random starts, neighbours, crops, flips and targets must be drawn on the device)."""
    from saat.attacks import create_attack
    from saat.defenses import DEFENSES as REGISTRY
    from saat.defenses import DefenseContext
    from saat.hashing import create_method

    d = _prepare_data(ctx)
    model, x, y = d["model"], d["x"][:BATCH], d["y"][:BATCH]
    n = len(d["train_x"])
    limit = H2D_SHARE * x.numel() * x.element_size()
    copied = {}
    for name in DEFENSES:
        method = create_method("csq", bits=d["train_codes"].shape[1], n_classes=CLASSES, n_train=n, seed=0).to(
            ctx.device)
        method.init_memory(d["train_codes"], d["train_y"])
        dctx = DefenseContext(model, method, ctx.device, d["train_codes"].clone(), d["train_codes"].clone(),
                              d["train_y"], seed=0, amp=amp, db_labels=d["db_y"], total_iterations=4)
        defense = REGISTRY.get(name)(dctx, steps=2)
        idx = torch.arange(BATCH, device=ctx.device)
        defense.step(x, y, idx, 0)  # a first step builds what is built once
        with HostCopies() as seen:
            defense.step(x, y, idx, 1)
        copied[f"defend:{name}"] = seen.bytes
    for generator in ("pgd", "vmi-fgsm"):
        atk = create_attack("mainstay", model, eps=EPS, steps=2, generator=generator, random_start=True, amp=amp,
                            train_codes=d["train_codes"], train_labels=d["train_y"], seed=0)
        atk(x, y)
        with HostCopies() as seen:
            atk(x, y)
        copied[f"attack:{generator}"] = seen.bytes
    worst = max(copied, key=copied.get)
    problem = (f"{worst} copied {copied[worst]:,} bytes from the host (limit {limit:,.0f}: noise drawn on the host?)"
               if copied[worst] > limit else None)
    return {"max_bytes": float(copied[worst]), "problem": problem,
            "note": ", ".join(f"{k} {v:,} B" for k, v in copied.items())}


def _ddp_skip(ctx: Context) -> str | None:
    if not ctx.ddp:
        return "--skip-ddp"
    if ctx.device.type == "cuda":
        n = torch.cuda.device_count()
        return None if n >= 2 else f"needs >= 2 GPUs, {n} visible"
    if ctx.device.type == "cpu":
        return None if ctx.ddp_cpu else "CPU dry run (add --ddp-cpu for 2 gloo processes)"
    return f"not on {ctx.device.type}"


def step_ddp(ctx: Context, amp: bool) -> tuple[float, str]:
    reference = _need_run(ctx, amp)
    out = ctx.out / f"ddp-{_precision(amp)}"
    s = _train_settings(ctx)
    device = "cuda" if ctx.device.type == "cuda" else "cpu"  # under torchrun: cuda:LOCAL_RANK
    args = ["--dataset-dir", s["dataset_dir"], "--method", s["method"], "--backbone", s["backbone"], "--bits",
            str(BITS), "--image-size", str(SIDE), "--epochs", str(EPOCHS), "--batch-size", str(BATCH), "--optimizer",
            s["optimizer"], "--lr", str(s["lr"]), "--seed", "0", "--device", device, "--sync-bn", "--out", str(out)]
    args += ["--amp"] if amp else []
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "saat",
           "train", *args]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    if proc.returncode != 0:
        tail = (proc.stderr.strip() or proc.stdout.strip()).splitlines()[-1:] or [""]
        raise RuntimeError(f"torchrun exit {proc.returncode}: {tail[0]}")
    backend = "NCCL" if device == "cuda" else "gloo"
    return _max_weight_difference(reference, out), f"2 {backend} processes vs 1, max |Δweights|"


def _abs(key: str) -> Callable[[dict, dict], float]:
    return lambda a, b: abs(a[key] - b[key])


def _map_note(reference: dict, result: dict) -> str:
    return f"mAP {result['mAP']:.3f}" + ("" if reference is result else f" (fp32 {reference['mAP']:.3f})")


def build_steps() -> list[Step]:
    from saat.attacks import list_attacks

    untargeted = set(list_attacks(targeted=False))
    steps = [
        Step("train", step_train, "|ΔmAP|", _abs("mAP"), TOL_MAP, note=_map_note),
        Step("determinism", step_determinism, "max |Δw|", tolerance=lambda c, amp: TOL_REPEAT.get(c.device.type,
                                                                                                   1e-4),
             precisions=(False,), check=True),
        Step("encode", step_encode, "max |Δout|",
             lambda a, b: float((a["outputs"] - b["outputs"]).abs().max()), TOL_OUTPUTS,
             note=lambda a, b: f"codes agree {float((a['codes'] == b['codes']).float().mean()):.3f}"),
    ]
    for name in list_attacks():
        targeted = name not in untargeted
        steps.append(Step(f"attack:{name}" + (" (t)" if targeted else ""), _attack_step(name, targeted),
                          "|Δt-mAP|" if targeted else "|ΔmAP|", _abs("mAP"), TOL_ATTACK_MAP,
                          note=lambda a, b, t=targeted: f"{'t-mAP' if t else 'mAP'} {b['mAP']:.3f}"))
    for method in DEFENSES:
        steps.append(Step(f"defend:{method}", step_defend(method), "|ΔmAP|", _abs("mAP"), TOL_MAP, note=_map_note))
    steps.append(Step("robustness", step_robustness, "|Δworst mAP|", _abs("robust"), TOL_MAP,
                      note=lambda a, b: f"clean {b['clean']:.3f}, worst case {b['robust']:.3f}"))
    steps.append(Step("host copies", step_host_copies, "max bytes", _abs("max_bytes"), float("inf")))
    steps.append(Step("ddp", step_ddp, "max |Δw|", tolerance=lambda c, amp: TOL_DDP[_precision(amp)], check=True,
                      skip=_ddp_skip))
    return steps


# ------------------------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None, steps: list[Step] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda", help="cuda (default), cuda:K, or cpu for a dry run")
    p.add_argument("--out", type=Path, default=None, help="working directory (default: a temporary one, removed)")
    p.add_argument("--skip-ddp", action="store_true", help="leave out the 2-process torchrun step")
    p.add_argument("--ddp-cpu", action="store_true", help="on --device cpu, run the ddp step with gloo")
    p.add_argument("--json", type=Path, default=None, help="also write the table to this JSON file")
    p.add_argument("--verbose", action="store_true", help="print the traceback of every failed step")
    args = p.parse_args(argv)

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("gpu_check: no CUDA device is available; run with --device cpu for the dry run", file=sys.stderr)
        return 1
    if device.type == "cpu":
        print("gpu_check: --device cpu is a dry run: no GPU is exercised", file=sys.stderr)
    tmp = None
    if args.out is None:
        tmp = tempfile.TemporaryDirectory(prefix="saat-gpu-check-")
        out = Path(tmp.name)
    else:
        out = args.out
        out.mkdir(parents=True, exist_ok=True)
    try:
        t0 = time.perf_counter()
        ctx = Context(device, out, ddp=not args.skip_ddp, ddp_cpu=args.ddp_cpu, verbose=args.verbose)
        if steps is None:
            if not (out / "data" / "train_img.txt").is_file():
                write_dataset(out / "data")
            steps = build_steps()
        rows = run_checks(steps, ctx)
        name = str(device)
        if device.type == "cuda":
            name += f" ({torch.cuda.get_device_name(device)}, {torch.cuda.device_count()} visible)"
        print(format_table(rows, name))
        total = time.perf_counter() - t0
        print(f"total {total:.1f} s")
        if args.json is not None:
            args.json.write_text(json.dumps({"device": name, "seconds": total, "torch": torch.__version__,
                                             "passed": all(r.status != "FAIL" for r in rows),
                                             "rows": [asdict(r) for r in rows]}, indent=2))
        return 1 if any(r.status == "FAIL" for r in rows) else 0
    finally:
        if tmp is not None:
            tmp.cleanup()


if __name__ == "__main__":
    sys.exit(main())
