"""benchmarks/bench_paper_scale.py's extrapolation is saat.reproduce.cost's counting over the package's grid cells
(no measurement here: fixed per-image times, nothing opened, nothing written)."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
TIMES = {"train": 0.010, "saat": 0.080, "attack": 0.004, "encode": 0.002}  # seconds per image, made up


@pytest.fixture(scope="module")
def bench():
    sys.path.insert(0, str(ROOT / "benchmarks"))  # the script imports its sibling _timing
    try:
        spec = importlib.util.spec_from_file_location("bench_paper_scale", ROOT / "benchmarks" / "bench_paper_scale.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # dataclasses look their module up
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop("bench_paper_scale", None)
        sys.path.remove(str(ROOT / "benchmarks"))


def test_extrapolation_is_the_package_counting_over_the_grid_cells(bench):
    from saat.reproduce.cost import Probe, Sizes, estimate_cell

    shapes, queries = bench.dataset_shapes("FLICKR-25K"), 2000
    parts = bench.extrapolate(TIMES, shapes, "alexnet", queries)
    assert list(parts) == bench.part_names()

    # the same cells, counted directly: their seconds add up to the extrapolation's
    spec, preset = bench.paper_spec(shapes.name, "alexnet"), bench.paper_preset(queries)
    cells = bench.protocol_cells(spec)
    assert {c.kind for c in cells} == {"train", "defend", "attack"}
    probe = Probe("cpu", 2, {"train": TIMES["train"], "attack": TIMES["attack"], "encode": TIMES["encode"],
                             "defense:saat": TIMES["saat"], "defense:atrdh": TIMES["saat"]}, 0)
    sizes = Sizes(shapes.name, shapes.train, shapes.query, shapes.database, shapes.n_classes, 224)
    encoded: set = set()
    total = sum(estimate_cell(c, spec, sizes, probe, encoded=encoded, preset=preset).seconds for c in cells)
    assert sum(parts.values()) == pytest.approx(total, rel=1e-12)

    # and each component is the protocol's closed form (the bench's former counting, less its documented
    # differences: attacked queries not rounded up to whole batches, ProS-GAN's ceil(N / batch) generator
    # iterations and its one generation pass over the attacked queries)
    proto = bench.protocol(queries)
    n, q, m = shapes.train, shapes.query, shapes.database
    a, bits = min(queries, q), len(proto["bits"])
    hb = proto["hash_batch"]
    assert parts["hash_train"] == pytest.approx(bits * proto["hash_epochs"] * (n // hb) * hb * TIMES["train"])
    for name, d in proto["defenses"].items():
        images = d["epochs"] * (n // d["batch_size"]) * d["batch_size"]
        assert parts[f"{name}_train"] == pytest.approx(bits * images * TIMES["saat"])
    runs = proto["table1"]["untargeted"] + proto["table1"]["targeted"] + sum(proto["table2"].values(), [])
    steps = sum(proto["attack_steps"][r] or 1 for r in runs)
    g = proto["prosgan"]
    generator = g["gan_epochs"] * math.ceil(n / g["gan_batch"]) * g["gan_batch"]
    assert parts["attacks"] == pytest.approx(bits * (a * steps + generator) * TIMES["attack"])
    n_models = 1 + len(proto["defenses"])
    encodings = n_models * (m + q + n) + len(proto["defenses"]) * n + len(runs) * a
    assert parts["encoding"] == pytest.approx(bits * encodings * TIMES["encode"])


def test_world_size_divides_all_but_the_generator_training_and_variants_count_at_once(bench):
    shapes = bench.dataset_shapes("FLICKR-25K")
    one = bench.extrapolate(TIMES, shapes, "alexnet", 2000)
    # two variants at once (numpy arrays, as the bench's main passes them): the second twice the first's times
    both = bench.extrapolate({k: np.array([v, 2 * v]) for k, v in TIMES.items()}, shapes, "alexnet", 2000,
                             world_size=2)
    two = {k: v[0] for k, v in both.items()}
    for k in one:
        assert both[k][1] == pytest.approx(2 * both[k][0])
    for k in one:
        if k != "attacks":
            assert two[k] == pytest.approx(one[k] / 2)
    proto = bench.protocol(2000)
    g = proto["prosgan"]
    generator = len(proto["bits"]) * g["gan_epochs"] * math.ceil(shapes.train / g["gan_batch"]) * g["gan_batch"]
    generator *= TIMES["attack"]
    assert two["attacks"] == pytest.approx((one["attacks"] - generator) / 2 + generator)
