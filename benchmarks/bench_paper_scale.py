"""Paper-scale cost model: what the paper's Table I + Table II protocol costs with this package, on this machine.

    python benchmarks/bench_paper_scale.py [--models alexnet,vgg11,resnet50] [--datasets FLICKR-25K,NUS-WIDE]
                                           [--variants fp32,amp,cl,amp+cl] [--batch-size B] [--iters N]
                                           [--warmup N] [--device auto] [--world-size W] [--json OUT]

**What is measured.** For each dataset shape and network, one subprocess (so that its peak memory is its own)
builds synthetic in-memory data with the dataset's label count and split sizes (from saat's dataset catalog:
FLICKR-25K 38 labels, train 5,000 / query 1,700 / database 23,300; NUS-WIDE 21 labels, train 10,500 / query
2,100 / database 193,734) at the network's input size (224 px), and times the package's own code paths:

- ``train``: one hashing-training iteration: ``saat.pipelines.loop.run_epoch`` over one batch with
  ``hashing_step`` and the paper preset's method and optimiser (``TrainConfig``: DPH, SGD);
- ``saat``: one SAAT adversarial-training iteration: ``run_epoch`` with ``create_defense("saat", ...).step``
  (7 inner PGD steps, the defense's paper settings), its code memory over the whole training set;
- ``attack``: one iteration of the SAAT attack on a query batch: ``create_attack("mainstay", ..., steps=1)``
  called once (one forward + backward with respect to the images, plus the per-call mainstay codes and random
  start, which a 100-iteration attack pays once: a slight over-estimate);
- ``encode``: database encoding: ``saat.pipelines.common.encode_split`` over one encoding batch.

Each in four variants: ``fp32``; ``amp`` (the package's ``--amp``: bf16 autocast through
``saat.utils.device.autocast``, on CPU as on CUDA; the package applies it to the training forward, the defense's
benign/adversarial forwards and encoding, *not* to attacks or the defense's inner PGD, so the attack's amp
variants are the fp32 measurements, marked ``=``); ``cl`` (channels_last weights and inputs) and ``amp+cl``.
The package's default for the network (no amp; channels_last for ResNets) is marked ``*``. Variants run
interleaved within each round (fp32, amp, cl, amp+cl, fp32, ...), after ``--warmup`` untimed rounds; times are
the median (min-max) over ``--iters`` rounds. Peak memory is the process's peak resident set size during the
iteration (Linux: VmHWM, reset before each iteration through /proc/self/clear_refs, so it includes what the
process already holds: model, optimiser, data, memories) and, on CUDA, ``torch.cuda.max_memory_allocated``.
Ratios of a variant to fp32 are formed per round and printed as median (min-max) when ``--iters`` >= 5
(benchmarks/_timing.py). Images come from memory (a pool of random 224-px images): JPEG decoding is not measured.

**Counting (the extrapolation)** is ``saat.reproduce.cost``'s (its module docstring; the one ``saat reproduce``
plans with), over the package's own grid of the protocol: for each paper dataset (``saat.report.paper``:
FLICKR-25K, NUS-WIDE, MS-COCO) ``build_grid(GridSpec(dataset, backbone=<network>, method=TrainConfig().method,
bits=16/32/48/64, preset="paper"))``, its train, defend and attack cells only (Tables I and II: no robustness
cards, no report), each counted by ``estimate_cell`` with the paper preset at A = min(--attacked-queries (2,000),
Q) attacked queries, the catalog's split sizes (``saat.data``) and a ``Probe`` holding the measured medians per
image (train, attack, encode; the ``saat`` task for both defenses). Every setting comes from the package: the
training config as ``saat train`` resolves it (DPH, 100 epochs, batch 32), the defenses' and attacks' paper
settings (``DEFENSES``/``ATTACKS`` defaults) and the grid's rows of Tables I and II. Per setting, with N training,
Q query, M database images and iterations per epoch floor(N / batch) (``drop_last``):

1. ``hash_train``: hashing training of the undefended model, 100 epochs x floor(N/32) x 32 images x t_train;
2. ``saat_train``: SAAT training, 20 epochs x floor(N/32) x 32 x t_saat;
3. ``atrdh_train``: ATRDH training, 100 epochs x floor(N/32) x 32 x t_saat (the same loop shape: 7 PGD steps,
   benign and adversarial forward, one backward; its PrototypeNet step, an MLP, is not counted);
4. ``attacks``: each attack A queries x T iterations x t_attack with T the method's paper setting: Table I's rows
   on the undefended model (HAG 2,000, SDHA 1,500, SAAT attack 100, P2P 2,000, DHTA 2,000, THA 100, targeted
   SAAT attack 100; THA's 30,000-step PrototypeNet is not counted) and Table II's rows on the ATRDH and SAAT
   models (HAG, SDHA, SAAT attack each); ProS-GAN one pass over its A queries plus its generator training as
   gan_epochs (100) x ceil(N/24) hashing-model forward+backward passes of 24 images (a lower bound: the generator
   and discriminator are not counted);
5. ``encoding``: each of the three models encodes database and query set (M + Q) after training and its training
   set (N) once, each defense encodes the training set of the model it starts from (N), each attack run encodes
   its A adversarial queries.

The differences from this script's former counting (its own ``protocol()``/``extrapolate()``): attacks count A
images per iteration, not A rounded up to whole batches of 32 (ceil(A/32) x 32: 1,728 for FLICKR-25K's 1,700
queries, 2,016 for 2,000); ProS-GAN's generator iterations are ceil(N/24), as the attack code runs them, not
floor(N/24), and its generation pass over the A queries is counted (one attack iteration); ProS-GAN's generator
training is not divided by the world size (below). At world size 1 the attacks come out 1.6 % lower on FLICKR-25K
and 0.75 % lower on NUS-WIDE and MS-COCO whatever the measured times (one time per image times a count); the other
components are unchanged.

All 12 settings reuse the measured per-iteration times (measured at ``--bits``, 32 by default; the code length
changes only the hash layer); a dataset of the protocol that was not measured (MS-COCO by default) takes the
times of the measured dataset with the nearest training-set size (and its own split sizes). Per-iteration times
measured at a batch smaller than the protocol's are scaled per image (t(32) = t(b) x 32/b; on CPUs throughput per
image changes little with the batch, but the optimiser step, a fixed cost per iteration, is then counted 32/b
times: the training rows are over-estimated at small b; on GPUs a small batch under-uses the device, so scaling
over-estimates too). ``--world-size W`` passes W to ``estimate_cell``: the sharded work is divided by W (ideal
data-parallel scaling, communication not measured), but not ProS-GAN's generator training, which every process
runs whole (the former counting divided it too); under torchrun it defaults to $WORLD_SIZE and only rank 0
measures, in one process. Opening the datasets (the probe's ``setup``) is not counted. Results: a printed table
and ``--json``.

The CPU defaults (batch 2, 1 measured round after 1 warm-up round, none for saat) are reduced so that all three
networks finish in about ten minutes on two idle cores; on a GPU the defaults are the paper's batch 32 and 5
measured rounds after 1 warm-up round.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from _timing import MIN_REPEATS, Stat, peak_rss_bytes, print_result, ratio, reset_peak_rss, run_worker

if TYPE_CHECKING:
    from saat.reproduce.grid import Cell, GridSpec, Preset

VARIANTS = {"fp32": (False, False), "amp": (True, False), "cl": (False, True), "amp+cl": (True, True)}
TASKS = ("encode", "attack", "train", "saat")  # order of measurement within a worker (lightest first)


# ------------------------------------------------------------------------------------------------ memory probes

# ------------------------------------------------------------------------------------------------------ worker

@dataclass
class Shapes:
    name: str
    n_classes: int
    train: int
    query: int
    database: int


def dataset_shapes(name: str) -> Shapes:
    from saat.data import DATASETS, resolve_name

    spec = DATASETS[resolve_name(name)]
    if not spec.expected_sizes:
        raise ValueError(f"{spec.name} has no standard split sizes in saat's catalog; choose a dataset with them")
    s = spec.expected_sizes
    return Shapes(spec.name, spec.n_classes, s["train"], s["query"], s["database"])


def worker(spec: dict) -> dict:
    import torch

    from saat.attacks import create_attack
    from saat.config import TrainConfig
    from saat.defenses import create_defense
    from saat.hashing import create_method
    from saat.models import HashModel
    from saat.pipelines.common import encode_split, resolve_image_size
    from saat.pipelines.loop import build_optimizer, hashing_step, run_epoch
    from saat.utils.device import resolve_device

    class BenchModel(HashModel):
        """saat's HashModel with its memory-format choice switched per variant (the package picks it per backbone;
        encode_split and saat attack read ``channels_last``)."""

        use_channels_last = False

        @property
        def channels_last(self) -> bool:
            return self.use_channels_last

    device = resolve_device(spec["device"])
    shapes = Shapes(**spec["shapes"])
    cfg = TrainConfig()
    batch, enc_batch, bits = spec["batch_size"], spec["encode_batch_size"], spec["bits"]
    variants = spec["variants"]
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    model = BenchModel(spec["model"], bits).to(device)
    package_cl = HashModel.channels_last.fget(model)
    size = resolve_image_size(model.native_input_size, None) or 224

    def multi_hot(n: int) -> torch.Tensor:
        y = (torch.rand(n, shapes.n_classes, generator=gen) < min(1.0, 3.0 / shapes.n_classes)).float()
        y[torch.arange(n), torch.randint(0, shapes.n_classes, (n,), generator=gen)] = 1.0  # >= 1 label each
        return y

    pool = torch.randint(0, 256, (max(batch, enc_batch), 3, size, size), dtype=torch.uint8, generator=gen)

    class SyntheticSplit(torch.utils.data.Dataset):
        """n items with real-size labels; image i is pool[i % len(pool)] (random pixels cost what real ones do)."""

        def __init__(self, labels: torch.Tensor):
            self.labels = labels

        def __len__(self) -> int:
            return len(self.labels)

        def __getitems__(self, indices):
            idx = torch.as_tensor(indices, dtype=torch.int64)
            return pool[idx % len(pool)], self.labels[idx], idx

    train_split = SyntheticSplit(multi_hot(shapes.train))
    enc_split = SyntheticSplit(multi_hot(enc_batch))  # one encoding batch of the database
    query_y = multi_hot(batch)
    train_codes = torch.where(torch.rand(shapes.train, bits, generator=gen) < 0.5, 1.0, -1.0).to(device)
    train_labels = train_split.labels.to(device)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        elif device.type == "mps":
            torch.mps.synchronize()

    def set_variant(name: str) -> None:
        cl = VARIANTS[name][1]
        model.use_channels_last = cl
        model.to(memory_format=torch.channels_last if cl else torch.contiguous_format)

    def train_batch():
        return train_split.__getitems__(torch.randint(0, shapes.train, (batch,), generator=gen).tolist())

    method = create_method(cfg.method, bits=bits, n_classes=shapes.n_classes, n_train=shapes.train, seed=0).to(device)
    # One optimiser per task, shared by the variants (as one run holds one: its state counts once in the peak), and
    # released after its task, so that the SAAT iterations do not carry the hashing optimiser's momentum buffers.
    optimizers: dict[str, torch.optim.Optimizer] = {}
    defenses = {amp: create_defense("saat", model, cfg.method, train_codes=train_codes, train_labels=train_labels,
                                    seed=0, amp=amp) for amp in (False, True)}
    attack = create_attack("mainstay", model, eps=8 / 255, steps=1, train_codes=train_codes,
                           train_labels=train_labels, seed=0)
    step = [0]

    def run_train(v: str) -> None:
        amp, cl = VARIANTS[v]
        if "train" not in optimizers:
            optimizers["train"] = build_optimizer(cfg.optimizer, model.parameters(), cfg.lr, cfg.momentum,
                                                  cfg.weight_decay)
        opt = optimizers["train"]
        _, step[0] = run_epoch(model, [train_batch()], hashing_step(model, method, device, amp), opt, device=device,
                               epoch=0, step=step[0], log=[], log_every=0, progress=False, channels_last=cl)

    def run_saat(v: str) -> None:
        amp, cl = VARIANTS[v]
        d = defenses[amp]
        if "saat" not in optimizers:
            optimizers["saat"] = d.build_optimizer(model.parameters())  # the paper's: SGD, the same for amp or not
        opt = optimizers["saat"]
        _, step[0] = run_epoch(model, [train_batch()], lambda x, y, idx, it: d.step(d.augment(x), y, idx, it), opt,
                               device=device, epoch=0, step=step[0], log=[], log_every=0, progress=False,
                               desc="saat", channels_last=cl)

    def run_attack(v: str) -> None:
        x = pool[:batch].to(device).float().div_(255)
        if VARIANTS[v][1]:
            x = x.contiguous(memory_format=torch.channels_last)  # as saat attack feeds a channels_last model
        attack(x, query_y.to(device))

    def run_encode(v: str) -> None:
        encode_split(model, enc_split, batch_size=enc_batch, device=device, amp=VARIANTS[v][0], progress=False)

    runners = {"train": run_train, "saat": run_saat, "attack": run_attack, "encode": run_encode}
    out = {"tasks": {}, "package_channels_last": package_cl, "image_size": size, "threads": torch.get_num_threads(),
           "params": sum(p.numel() for p in model.parameters()),
           "device": str(device), "peak_rss_resettable": reset_peak_rss()}
    for task in spec["tasks"]:
        # The package runs attacks without autocast: their amp variants are the fp32 ones.
        measured = [v for v in variants if not (task == "attack" and VARIANTS[v][0])]
        times = {v: [] for v in measured}
        rss = dict.fromkeys(measured, 0)
        gpu = dict.fromkeys(measured, 0)
        warmup = spec["warmup"][task]
        for r in range(warmup + spec["iters"]):
            for v in measured:
                set_variant(v)
                reset_peak_rss()
                if device.type == "cuda":
                    torch.cuda.reset_peak_memory_stats(device)
                sync()
                t0 = time.perf_counter()
                runners[task](v)
                sync()
                seconds = time.perf_counter() - t0
                if r >= warmup:
                    times[v].append(seconds)
                rss[v] = max(rss[v], peak_rss_bytes())
                if device.type == "cuda":
                    gpu[v] = max(gpu[v], torch.cuda.max_memory_allocated(device))
        per = {}
        for v in variants:
            src = v if v in times else next(m for m in measured if VARIANTS[m][1] == VARIANTS[v][1])
            per[v] = {"seconds": times[src], "peak_rss_bytes": rss[src],
                      "peak_gpu_bytes": gpu[src] if device.type == "cuda" else None, "measured_as": src}
        out["tasks"][task] = per
        optimizers.clear()
        model.zero_grad(set_to_none=True)
        gc.collect()
        print(f"  {shapes.name} {spec['model']} {task}: " + ", ".join(
            f"{v} {Stat(per[v]['seconds']).median:.3g} s" for v in variants), file=sys.stderr, flush=True)
    return out


# ------------------------------------------------------------------------------------------------------ parent

PROTOCOL_KINDS = ("train", "defend", "attack")  # Table I + II: no robustness cards, no report
GRID_OUT = Path("paper-grid")  # the cells' folder names only: building a grid opens and writes nothing


def paper_spec(dataset: str, model: str) -> GridSpec:
    """The package's grid of the paper's protocol on one dataset: its bit lengths, the paper preset."""
    from saat.config import TrainConfig
    from saat.report import paper
    from saat.reproduce.grid import GridSpec

    return GridSpec(dataset, backbone=model, method=TrainConfig().method, bits=tuple(paper.BITS), preset="paper")


def paper_preset(attacked_queries: int) -> Preset:
    """The paper preset, with --attacked-queries attacked per attack run (A = min(it, Q))."""
    from saat.reproduce.grid import PRESETS

    return dataclasses.replace(PRESETS["paper"], queries=attacked_queries)


def protocol_cells(spec: GridSpec) -> list[Cell]:
    """The grid's training, defense and attack cells (Tables I and II), in the order the grid runs them."""
    from saat.reproduce.grid import build_grid

    return [c for c in build_grid(spec, GRID_OUT) if c.kind in PROTOCOL_KINDS]


def part_names() -> list[str]:
    """The extrapolation's components, in the printed order."""
    from saat.report import paper

    return ["hash_train", *[f"{d}_train" for d in paper.TABLE2], "attacks", "encoding"]


def protocol(attacked_queries: int, model: str = "alexnet") -> dict:
    """The paper's Table I + Table II protocol as the package's grid resolves it (one setting of the first paper
    dataset), for the printed header and --json; the counting itself runs over the cells (``extrapolate``)."""
    from saat.pipelines.attack import AttackConfig
    from saat.report import paper
    from saat.reproduce.cost import resolved_attack, resolved_defense, train_config

    spec, preset = paper_spec(paper.DATASETS[0], model), paper_preset(attacked_queries)
    cells = [c for c in protocol_cells(spec) if c.bits == spec.bits[0] and c.seed == spec.seeds[0]]
    train = next(c for c in cells if c.kind == "train")
    cfg = train_config(spec, preset, train.bits, train.seed)
    attacks = [c for c in cells if c.kind == "attack"]
    defended = {c.model for c in cells if c.kind == "defend"}
    defenses = [d for d in paper.TABLE2 if d in defended] + sorted(defended - set(paper.TABLE2))  # Table II's order
    prosgan = next((c for c in attacks if c.attack == "prosgan"), None)
    return {
        "datasets": list(paper.DATASETS), "bits": list(spec.bits), "attacked_queries": attacked_queries,
        "hash_epochs": cfg.epochs, "hash_batch": cfg.batch_size, "hash_method": cfg.method,
        "defenses": {d: {k: resolved_defense(spec, preset, d).get(k) for k in ("epochs", "batch_size", "steps")}
                     for d in defenses},
        "attack_batch": AttackConfig().batch_size,
        "table1": {"untargeted": [c.attack for c in attacks if c.model == "undefended" and not c.targeted],
                   "targeted": [c.attack for c in attacks if c.model == "undefended" and c.targeted]},
        "table2": {d: [c.attack for c in attacks if c.model == d] for d in defenses},
        "attack_steps": {c.attack: resolved_attack(spec, preset, c).get("steps") for c in attacks},
        "prosgan": ({k: resolved_attack(spec, preset, prosgan)[k] for k in ("gan_epochs", "gan_batch")}
                    if prosgan else {}),
        "counting": "saat.reproduce.cost.estimate_cell over the grid's train, defend and attack cells",
    }


def extrapolate(per_image: dict, shapes: Shapes, model: str, attacked_queries: int, *, world_size: int = 1,
                image_size: int = 224, params: int = 0, batch: int = 32, device: str = "") -> dict:
    """Seconds of the protocol on one dataset (every bit length of the paper), by component, from per-image costs
    (``per_image``: train, saat, attack, encode): ``saat.reproduce.cost.estimate_cell`` summed over the package's
    grid cells (module docstring: Counting). The costs may be numpy arrays, one entry per variant (the results are
    then arrays too): the cells are counted once for all variants (estimate_cell's disk estimate, unused here,
    builds ProS-GAN's networks on the meta device, about a second per grid on a CPU)."""
    from saat.reproduce.cost import Probe, Sizes, estimate_cell

    spec, preset = paper_spec(shapes.name, model), paper_preset(attacked_queries)
    sizes = Sizes(shapes.name, shapes.train, shapes.query, shapes.database, shapes.n_classes, image_size, 3)
    times = {"train": per_image["train"], "attack": per_image["attack"], "encode": per_image["encode"],
             "defense:saat": per_image["saat"], "defense:atrdh": per_image["saat"]}  # ATRDH: the SAAT loop's shape
    probe = Probe(device, batch, times, params)
    out = dict.fromkeys(part_names(), 0.0)
    encoded: set = set()  # each model encodes its training set once (the first attack that needs its codes)
    w = max(1, world_size)
    for cell in protocol_cells(spec):
        est = estimate_cell(cell, spec, sizes, probe, world_size=w, encoded=encoded, preset=preset)
        for part, seconds in est.parts.items():
            if part == "setup":
                continue  # the probe's setup is 0: opening the dataset is not measured here
            key = {"train": "hash_train", "defense": f"{cell.model}_train", "attack": "attacks",
                   "generator": "attacks", "encode": "encoding"}[part]
            out[key] = out.get(key, 0.0) + seconds / w  # estimate_cell's seconds: the sum of its parts over W
    return out


def run_worker_process(spec: dict) -> dict:
    try:
        return run_worker(__file__, spec, "worker")
    except RuntimeError as exc:
        return {"error": str(exc)}


def fmt_mem(b: int | None) -> str:
    return "-" if not b else f"{b / 2**30:.2f}G"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="alexnet,vgg11,resnet50", help="comma-separated saat backbones")
    ap.add_argument("--datasets", default="FLICKR-25K,NUS-WIDE",
                    help="comma-separated catalog datasets whose shapes are measured")
    ap.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated, from {', '.join(VARIANTS)}")
    ap.add_argument("--tasks", default=",".join(TASKS), help=f"comma-separated, from {', '.join(TASKS)}")
    ap.add_argument("--device", default="auto", help="cpu, cuda, cuda:N, mps or auto")
    ap.add_argument("--batch-size", type=int, default=None,
                    help="training/attack batch (default: 32, the paper's, on a GPU; 2 on CPU, reduced)")
    ap.add_argument("--encode-batch-size", type=int, default=None,
                    help="encoding batch (default: saat's, 256 on a GPU; --batch-size on CPU, reduced)")
    ap.add_argument("--iters", type=int, default=None,
                    help="measured rounds per cell (default: 5 on a GPU; 1 on CPU, reduced; ratios need >= 5)")
    ap.add_argument("--warmup", type=int, default=None,
                    help="untimed rounds before measuring each task (default 1; on CPU 0 for saat, reduced: the "
                         "train and attack tasks before it run the same kernels)")
    ap.add_argument("--bits", type=int, default=32, help="code length measured (the extrapolation uses it for all)")
    ap.add_argument("--attacked-queries", type=int, default=2000, help="queries attacked per attack run")
    ap.add_argument("--world-size", type=int, default=int(os.environ.get("WORLD_SIZE", "1")),
                    help="processes the protocol is spread over (ideal scaling; default: $WORLD_SIZE or 1)")
    ap.add_argument("--json", type=Path, metavar="OUT", help="write every measurement and the extrapolation here")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker is not None:
        result = worker(json.loads(args.worker))
        print_result(result)
        return 0

    if int(os.environ.get("RANK", "0")) != 0:
        return 0  # under torchrun only rank 0 measures (one process); --world-size carries the rank count
    from saat.models import list_backbones
    from saat.utils.device import resolve_device
    from saat.utils.io import atomic_write_json

    models = [m.strip().lower() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in models if m not in list_backbones()]
    if unknown:
        ap.error(f"unknown model(s) {', '.join(unknown)}; choose from {', '.join(list_backbones())}")
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    if not variants or any(v not in VARIANTS for v in variants):
        ap.error(f"--variants: choose from {', '.join(VARIANTS)}")
    if any(t not in TASKS for t in tasks):
        ap.error(f"--tasks: choose from {', '.join(TASKS)}")
    for name, value, low in (("--batch-size", args.batch_size, 1), ("--encode-batch-size", args.encode_batch_size, 1),
                             ("--iters", args.iters, 1), ("--warmup", args.warmup, 0), ("--bits", args.bits, 1),
                             ("--attacked-queries", args.attacked_queries, 1), ("--world-size", args.world_size, 1)):
        if value is not None and value < low:
            ap.error(f"{name} must be >= {low}, got {value}")
    try:
        device = resolve_device(args.device)
        shapes = [dataset_shapes(d) for d in args.datasets.split(",") if d.strip()]
    except ValueError as exc:
        ap.error(str(exc))
    accel = device.type != "cpu"
    batch = args.batch_size or (32 if accel else 2)
    enc_batch = args.encode_batch_size or (256 if accel else batch)
    iters = args.iters or (MIN_REPEATS if accel else 1)
    warmup = {t: args.warmup if args.warmup is not None else (0 if t == "saat" and not accel else 1) for t in tasks}
    proto = protocol(args.attacked_queries, models[0])
    reduced = not accel and (args.batch_size is None or args.iters is None or args.warmup is None)
    print(f"paper-scale cost model on {device} (world size {args.world_size}): batch {batch}, encoding batch "
          f"{enc_batch}, {args.bits} bits, warm-up rounds {warmup}, {iters} measured round(s) per cell"
          + (" (reduced CPU counts)" if reduced else ""), flush=True)

    cells = []
    t_start = time.perf_counter()
    for sh in shapes:
        for model in models:
            spec = {"model": model, "shapes": sh.__dict__, "device": str(device), "batch_size": batch,
                    "encode_batch_size": enc_batch, "bits": args.bits, "variants": variants, "tasks": tasks,
                    "iters": iters, "warmup": warmup}
            res = run_worker_process(spec)
            cells.append({"dataset": sh.name, "model": model, **res})
            if "error" in res:
                print(f"error: {sh.name} {model}: {res['error']}", file=sys.stderr, flush=True)
    wall = time.perf_counter() - t_start

    # ------------------------------------------------------------------ table of measurements
    print(f"\nPer iteration, median (min-max) of {iters} measured round(s), the variants interleaved in each; "
          f"batch {batch} (encode: s per batch of {enc_batch}); peak RSS during the iteration"
          + ("; peak GPU memory" if device.type == "cuda" else "") + ".  * package default, = attack without amp")
    header = f"{'dataset':<11} {'model':<9} {'variant':<8}" + "".join(f" {t:>26}" for t in tasks)
    print(header)
    for c in cells:
        if "error" in c:
            print(f"{c['dataset']:<11} {c['model']:<9} {'-':<8} {c['error']}")
            continue
        for v in variants:
            mark = "*" if (not VARIANTS[v][0] and VARIANTS[v][1] == c["package_channels_last"]) else " "
            row = f"{c['dataset']:<11} {c['model']:<9} {v + mark:<8}"
            for t in tasks:
                e = c["tasks"][t][v]
                s = Stat(e["seconds"])
                same = "=" if e["measured_as"] != v else " "
                rng = f"({s.min:.2f}-{s.max:.2f})" if len(s.values) > 1 else ""
                mem = fmt_mem(e["peak_rss_bytes"]) + (f"/{fmt_mem(e['peak_gpu_bytes'])}" if e["peak_gpu_bytes"]
                                                      else "")
                row += f" {f'{s.median:.2f}{same}{rng} {mem}':>26}"
            print(row)

    # ------------------------------------------------------------------ ratios (paired per round)
    ratios = {}
    if iters >= MIN_REPEATS and "fp32" in variants:
        print("\nTime ratio variant / fp32 per task, paired per interleaved round: median (min, max)")
        for c in (c for c in cells if "error" not in c):
            for t in tasks:
                base = Stat(c["tasks"][t]["fp32"]["seconds"])
                for v in variants:
                    e = c["tasks"][t][v]
                    if v == "fp32" or e["measured_as"] != v:
                        continue
                    r = ratio(Stat(e["seconds"]), base)
                    ratios[f"{c['dataset']}/{c['model']}/{t}/{v}"] = r.as_dict()
                    print(f"  {c['dataset']:<11} {c['model']:<9} {t:<7} {v:<7} {r.fmt('.3f')}")
    else:
        print(f"\n(no variant/fp32 ratios printed: they need --iters >= {MIN_REPEATS} interleaved rounds)")

    # ------------------------------------------------------------------ extrapolation
    measured = {(c["dataset"], c["model"]): c for c in cells if "error" not in c}
    catalog = {d: dataset_shapes(d) for d in proto["datasets"]}
    by_size = sorted({s.name: s for s in shapes}.values(), key=lambda s: s.train)
    stand_in = {d: (d if any(s.name == d for s in shapes) else
                    min(by_size, key=lambda s: abs(s.train - catalog[d].train)).name) for d in catalog}
    print(f"\nExtrapolated wall time of the paper's Table I + Table II protocol (saat.reproduce.cost over the "
          f"package's grid cells), world size {args.world_size} (ideal scaling of the sharded work; ProS-GAN's "
          f"generator training runs whole in every process): {len(proto['datasets'])} datasets x "
          f"{len(proto['bits'])} bit lengths; hashing {proto['hash_epochs']} epochs, "
          + ", ".join(f"{d.upper()} {v['epochs']} epochs ({v['steps']} PGD steps)"
                      for d, v in proto["defenses"].items())
          + f"; {proto['attacked_queries']:,} attacked queries per attack run; Table I attacks "
          + ", ".join(f"{r} {proto['attack_steps'][r] or 'generator'}" for r in
                      proto["table1"]["untargeted"] + proto["table1"]["targeted"])
          + "; Table II: " + ", ".join(f"{d.upper()} x {'/'.join(rows)}" for d, rows in proto["table2"].items()))
    print("  stand-ins: " + ", ".join(f"{d} <- {s}" for d, s in stand_in.items() if d != s)
          + f"; per-iteration times scaled per image from batch {batch} to the protocol's batches")
    extrap = {}
    parts_order = part_names()
    print(f"  {'model':<9} {'variant':<8} {'total h':>9}  " + "  ".join(f"{p:>11}" for p in parts_order))
    for model in models:
        sources = [measured.get((src, model)) for src in stand_in.values()]
        if any(c is None or any(t not in c["tasks"] for t in TASKS) for c in sources):
            continue
        totals = dict.fromkeys(parts_order, np.zeros(len(variants)))
        for d, c in zip(stand_in, sources, strict=True):
            per_image = {t: np.array([Stat(c["tasks"][t][v]["seconds"]).median for v in variants])
                         / (enc_batch if t == "encode" else batch) for t in TASKS}  # one entry per variant
            part = extrapolate(per_image, catalog[d], model, args.attacked_queries, world_size=args.world_size,
                               image_size=c.get("image_size") or 224, params=c.get("params") or 0, batch=batch,
                               device=str(device))
            for k, val in part.items():
                totals[k] = totals.get(k, 0.0) + val
        for i, v in enumerate(variants):
            hours = {k: float(np.broadcast_to(val, (len(variants),))[i]) / 3600 for k, val in totals.items()}
            total = sum(hours.values())
            extrap[f"{model}/{v}"] = {"total_hours": total, "hours": hours}
            print(f"  {model:<9} {v:<8} {total:9.0f}  " + "  ".join(f"{hours[p]:11.0f}" for p in parts_order))
    if not extrap:
        print(f"  (nothing to extrapolate: it needs all of {', '.join(TASKS)} measured)")
    print(f"\nbenchmark wall time {wall:.0f} s")
    if args.json is not None:
        atomic_write_json(args.json, {
            "device": str(device), "world_size": args.world_size, "batch_size": batch, "encode_batch_size": enc_batch,
            "bits": args.bits, "iters": iters, "warmup": warmup, "reduced_cpu_counts": reduced,
            "protocol": proto, "stand_ins": stand_in, "cells": cells, "ratios_to_fp32": ratios,
            "extrapolation": extrap, "wall_seconds": wall, "argv": sys.argv[1:]})
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
