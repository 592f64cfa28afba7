"""`saat reproduce`: the grid's cells, the cost counting, the runner's skip / fail / block / retry logic, the plan
(fast, with the cells' work stubbed), and one real grid on fashion-mnist (slow)."""

import json
import math
from dataclasses import replace

import pytest
import torch

from saat.attacks import TABLE1_ATTACKS, TABLE2_ATTACKS
from saat.cli import main
from saat.reproduce import PRESETS, GridSpec, build_grid, estimate_cell
from saat.reproduce import run as runner
from saat.reproduce.cost import Probe, Sizes, card_iterations, card_reuses
from saat.reproduce.demo import demo_spec
from saat.runs import RunDir

SPEC = GridSpec("FLICKR-25K", "alexnet", "dph", bits=(16, 32), seeds=(0, 1), preset="paper")


def test_the_grid_holds_every_cell_of_tables_one_and_two_in_order(tmp_path):
    cells = build_grid(SPEC, tmp_path)
    ids = [c.id for c in cells]
    assert len(ids) == len(set(ids))
    per_model = 1 + len(TABLE1_ATTACKS[False]) + len(TABLE1_ATTACKS[True]) \
        + 2 * (1 + len(TABLE2_ATTACKS)) + 3  # train + Table I, two defenses + Table II, three cards
    assert len(cells) == 4 * per_model + 1 and cells[-1].kind == "report"
    first = [c for c in cells if c.bits == 16 and c.seed == 0]
    assert first[0].id == "dph-16bit-seed0/train" and first[0].run == tmp_path / "dph-16bit-seed0"
    assert [c.attack for c in first if c.kind == "attack" and c.model == "undefended"] == \
        [*TABLE1_ATTACKS[False], *TABLE1_ATTACKS[True]]
    assert [c.name for c in first if c.kind == "attack"][:2] == ["paper-hag-u-eps8", "paper-sdha-u-eps8"]
    defend = [c for c in first if c.kind == "defend"]
    assert [c.run.name for c in defend] == ["dph-16bit-seed0-saat", "dph-16bit-seed0-atrdh"]
    assert all(c.after == ("dph-16bit-seed0/train",) and c.source == tmp_path / "dph-16bit-seed0" for c in defend)
    for c in cells:  # every cell comes after what it needs
        assert all(ids.index(d) < ids.index(c.id) for d in c.after)
    seeds = [c.seed for c in cells if c.kind == "train"]
    assert seeds == [0, 0, 1, 1]
    quick = build_grid(GridSpec("FLICKR-25K", "alexnet", "dph", bits=(16,), preset="quick"), tmp_path)
    assert len({c.id for c in quick}) == len(quick)  # the quick preset's extra 8/255 is FLICKR's main budget
    assert sum(c.attack == "mainstay" and not c.targeted for c in quick) == 3
    only_one = build_grid(GridSpec("FLICKR-25K", "alexnet", "dph", bits=(16,), tables=(1,)), tmp_path)
    assert {c.kind for c in only_one} == {"train", "attack", "card", "report"}
    assert [c.model for c in only_one if c.kind == "card"] == ["undefended"]


def test_the_demo_grid_keeps_the_demos_folders_and_order(tmp_path):
    cells = build_grid(demo_spec(), tmp_path)
    runs = list(dict.fromkeys(c.run.name for c in cells if c.kind != "report"))
    assert runs == ["csq", "csq-saat", "csq-atrdh"]
    base = [c.name for c in cells if c.kind == "attack" and c.run.name == "csq"]
    assert base[:8] == [f"demo-{m}-u-eps32" for m in TABLE1_ATTACKS[False]] + \
        [f"demo-{m}-t-eps32" for m in TABLE1_ATTACKS[True]]
    assert base[8:] == ["demo-mainstay-u-eps8", "demo-mainstay-u-eps16"]
    cards = [(c.run.name, c.name) for c in cells if c.kind == "card"]
    assert cards == [("csq", "demo-quick"), ("csq-saat", "demo-quick")]
    quick = build_grid(demo_spec(quick=True), tmp_path)
    assert [c.name for c in quick if c.kind == "card"] == ["quick-quick", "quick-quick"]


@pytest.mark.parametrize("change, message", [
    (dict(bits=(16, 16)), "--bits lists a value twice"),
    (dict(bits=(0,)), "--bits must be positive"),
    (dict(seeds=(-1,)), "--seeds must be integers >= 0"),
    (dict(tables=(3,)), "--tables must be 1, 2 or 1,2"),
    (dict(preset="fast"), "--preset must be one of paper, demo, quick"),
    (dict(backbone="lenet"), "--backbone 'lenet' is not one of"),
    (dict(method="xyz"), "--method 'xyz' is not one of"),
    (dict(run_name="{method}-{bits}"), "gives one folder to several"),
    (dict(run_name="{method}-{size}"), "it may use {method}, {bits}, {seed} and {backbone}"),
    (dict(run_name="a/{bits}-{seed}"), "characters other than"),
])
def test_bad_grid_settings_are_refused_in_one_line(tmp_path, change, message):
    spec = GridSpec(**{**SPEC.__dict__, **change})
    with pytest.raises(ValueError, match=message.replace("{", r"\{").replace("}", r"\}")) as err:
        build_grid(spec, tmp_path)
    assert "\n" not in str(err.value)


# ------------------------------------------------------------------------------------------------------ counting

SIZES = Sizes("FLICKR-25K", train=5000, query=2000, database=18000, n_classes=24, image_size=224)
PROBE = Probe("cpu", 8, {"train": 0.1, "attack": 0.01, "encode": 0.001, "defense:saat": 0.5, "defense:atrdh": 0.6},
              params=1_000_000, setup=2.0)


def _cell(cells, cid):
    return next(c for c in cells if c.id == cid)


def test_the_counting_of_each_kind_of_cell(tmp_path):
    from saat.attacks import ATTACKS
    from saat.defenses import DEFENSES

    cells = build_grid(SPEC, tmp_path)
    n, q, m = SIZES.train, SIZES.query, SIZES.database
    encoded = set()
    train = estimate_cell(_cell(cells, "dph-16bit-seed0/train"), SPEC, SIZES, PROBE, encoded=encoded)
    # the paper preset: 100 epochs of floor(5000 / 32) = 156 batches of 32; evaluation encodes database + queries
    assert train.seconds == pytest.approx(100 * 156 * 32 * 0.1 + (m + q) * 0.001 + 2.0)
    hag = estimate_cell(_cell(cells, "dph-16bit-seed0/attack/paper-hag-u-eps8"), SPEC, SIZES, PROBE, encoded=encoded)
    steps = ATTACKS.get("hag").defaults["steps"]
    assert hag.seconds == pytest.approx(q * steps * 0.01 + (q + n) * 0.001 + 2.0)  # the first attack encodes N
    sdha = estimate_cell(_cell(cells, "dph-16bit-seed0/attack/paper-sdha-u-eps8"), SPEC, SIZES, PROBE,
                         encoded=encoded)
    assert sdha.seconds == pytest.approx(q * ATTACKS.get("sdha").defaults["steps"] * 0.01 + q * 0.001 + 2.0)
    d = DEFENSES.get("atrdh").defaults
    atrdh = estimate_cell(_cell(cells, "dph-16bit-seed0-atrdh/defend"), SPEC, SIZES, PROBE, encoded=encoded)
    assert atrdh.seconds == pytest.approx(d["epochs"] * (n // d["batch_size"]) * d["batch_size"] * 0.6
                                          + (n + m + q) * 0.001 + 2.0)
    g = ATTACKS.get("prosgan").defaults
    pros = estimate_cell(_cell(cells, "dph-16bit-seed0/attack/paper-prosgan-t-eps8"), SPEC, SIZES, PROBE,
                         encoded=encoded)
    assert pros.seconds == pytest.approx(g["gan_epochs"] * math.ceil(n / g["gan_batch"]) * g["gan_batch"] * 0.01
                                         + q * 0.01 + q * 0.001 + 2.0)
    cw = card_iterations(SPEC, PRESETS["paper"])
    assert cw.gradient == 3 * 100 + 100 + ATTACKS.get("hag").defaults["steps"] + ATTACKS.get("sdha").defaults["steps"]
    assert cw.forward == ATTACKS.get("square").defaults["steps"]  # model evaluations only: at the encoding's cost
    assert cw.checks == 4 * 50 + 50 + 100 + 1  # eps curve and collapse at half of 100 its, converged, zero-gradient
    # the quick grid's smoke-test card: its options over the quick profile's members, in the estimate and the config
    quick = PRESETS["quick"]
    qw = card_iterations(SPEC, quick)
    assert (qw.gradient, qw.forward, qw.checks) == (10 + 10 + 15 + 15, 100, 4 * 5 + 5 + 10 + 1)
    from saat.reproduce.cost import card_config

    assert card_config(quick, _cell(cells, "dph-16bit-seed0/card/paper-standard")).options == quick.card_options
    assert card_config(PRESETS["paper"], _cell(cells, "dph-16bit-seed0/card/paper-standard")).options is None
    # the card takes HAG's and SDHA's codes from the run's attack cells (seed-free, the same settings): not counted
    card_cell = _cell(cells, "dph-16bit-seed0/card/paper-standard")
    assert card_reuses(SPEC, PRESETS["paper"], card_cell) == {"hag", "sdha"}
    assert card_reuses(replace(SPEC, tables=(2,)), PRESETS["paper"], card_cell) == set()  # no Table I cells
    rw = card_iterations(SPEC, PRESETS["paper"], frozenset({"hag", "sdha"}))
    assert (rw.gradient, rw.forward, rw.checks, rw.members) == (3 * 100 + 100, cw.forward, cw.checks, cw.members)
    card = estimate_cell(card_cell, SPEC, SIZES, PROBE, encoded=encoded)
    assert card.seconds == pytest.approx(q * (rw.gradient + rw.checks) * 0.01
                                         + q * (rw.forward + len(rw.members)) * 0.001 + 2.0)
    # a defended model's card also crafts the transfer check on its surrogate (100 APGD iterations)
    assert rw.transfer == 100
    defended = estimate_cell(_cell(cells, "dph-16bit-seed0-saat/card/paper-standard"), SPEC, SIZES, PROBE,
                             encoded=set())  # its first encoding of the training set too
    assert defended.seconds == pytest.approx(q * (rw.gradient + rw.checks + 100) * 0.01
                                             + (q * (rw.forward + len(rw.members)) + n) * 0.001 + 2.0)
    assert "+ 100 it (transfer)" in defended.work
    # with the network probe: THA's PrototypeNet steps, ProS-GAN's PrototypeNet and generator steps, at their settings
    nets = Probe("cpu", 8, PROBE.per_image, params=1, setup=2.0,
                 per_step={"tha:proto": 0.003, "prosgan:proto": 0.004, "prosgan:gan": 0.9})
    tha = estimate_cell(_cell(cells, "dph-16bit-seed0/attack/paper-tha-t-eps8"), SPEC, SIZES, nets, encoded=encoded)
    t = ATTACKS.get("tha").defaults
    assert tha.seconds == pytest.approx(q * t["steps"] * 0.01 + t["proto_steps"] * 0.003 + q * 0.001 + 2.0)
    pros = estimate_cell(_cell(cells, "dph-16bit-seed0/attack/paper-prosgan-t-eps8"), SPEC, SIZES, nets,
                         encoded=encoded, world_size=2)  # every process trains the networks whole
    assert pros.seconds == pytest.approx(g["proto_steps"] * 0.004 + g["gan_epochs"] * math.ceil(n / g["gan_batch"])
                                         * 0.9 + (q * 0.01 + q * 0.001) / 2 + 2.0)
    # two processes: the sharded work halves, every process opens the dataset; ProS-GAN's generator is not sharded
    two = estimate_cell(_cell(cells, "dph-16bit-seed0/attack/paper-prosgan-t-eps8"), SPEC, SIZES, PROBE,
                        world_size=2, encoded={tmp_path / "dph-16bit-seed0"})
    gan = g["gan_epochs"] * math.ceil(n / g["gan_batch"]) * g["gan_batch"] * 0.01
    assert two.seconds == pytest.approx(gan + (q * 0.01 + q * 0.001) / 2 + 2.0)
    assert train.disk > 4 * PROBE.params and pros.disk > hag.disk  # the cached generator networks


# ------------------------------------------------------------------------------------------------------ the runner

def _fake_plan(spec, out, *, device="auto", cells=None):
    cells = cells if cells is not None else build_grid(spec, out)
    est = {c.id: runner.Estimate(1.0, 10, "work") for c in cells}
    return {"cells": cells, "sizes": SIZES, "probe": PROBE, "estimates": est, "world_size": 1,
            "seconds": float(len(cells)), "disk": 10 * len(cells)}


def _fake_cell(fail: set, calls: list):
    def run_cell(cell, spec, *, finished_runs, device, num_workers, progress):
        calls.append(cell.id)
        if cell.id in fail:
            raise ValueError(f"{cell.id} broke\nsecond line")
        files = RunDir(cell.run)
        if cell.kind in ("train", "defend"):
            files.path.mkdir(parents=True, exist_ok=True)
            files.model.write_bytes(b"m")
        elif cell.kind == "attack":
            files.attack(cell.name).path.mkdir(parents=True, exist_ok=True)
            files.attack(cell.name).metrics.write_text("{}")
        elif cell.kind == "card":
            files.robustness(cell.name).path.mkdir(parents=True, exist_ok=True)
            files.robustness(cell.name).card.write_text("{}")
    return run_cell


def test_a_failed_cell_is_recorded_blocks_what_needs_it_and_is_retried(tmp_path, monkeypatch, capsys):
    spec = GridSpec("FLICKR-25K", "alexnet", "dph", bits=(16, 32), preset="quick")
    monkeypatch.setattr(runner, "make_plan", _fake_plan)
    calls: list = []
    monkeypatch.setattr(runner, "_run_cell", _fake_cell({"dph-16bit-seed0-saat/defend",
                                                          "dph-32bit-seed0/attack/quick-hag-u-eps8"}, calls))
    result = runner.reproduce(spec, tmp_path, progress=True)
    state = json.loads((tmp_path / runner.STATE).read_text())
    cells = build_grid(spec, tmp_path)
    failed = state["cells"]["dph-16bit-seed0-saat/defend"]
    assert failed["status"] == "failed" and failed["error"] == "ValueError: dph-16bit-seed0-saat/defend broke"
    assert (tmp_path / "failures" / "dph-16bit-seed0-saat__defend.txt").read_text().startswith("Traceback")
    blocked = [c.id for c in cells if c.after == ("dph-16bit-seed0-saat/defend",)]
    assert blocked and all(state["cells"][b]["status"] == "blocked" for b in blocked)
    assert not set(blocked) & set(calls)  # never attempted
    assert state["cells"]["dph-16bit-seed0-atrdh/defend"]["status"] == "done"  # the others went on
    assert state["cells"]["dph-32bit-seed0/attack/quick-hag-u-eps8"]["status"] == "failed"
    assert {f[0] for f in result["failures"]} == {"dph-16bit-seed0-saat/defend",
                                                   "dph-32bit-seed0/attack/quick-hag-u-eps8", *blocked}
    printed = capsys.readouterr().out
    assert "did not finish" in printed and "dph-16bit-seed0-saat/defend: ValueError" in printed
    assert "report" in calls  # the report of whatever finished

    calls.clear()  # rerun: only what did not finish runs again (and the report), now without failures
    monkeypatch.setattr(runner, "_run_cell", _fake_cell(set(), calls))
    result = runner.reproduce(spec, tmp_path, progress=False)
    assert set(calls) == {"dph-16bit-seed0-saat/defend", "dph-32bit-seed0/attack/quick-hag-u-eps8", *blocked,
                          "report"}
    state = json.loads((tmp_path / runner.STATE).read_text())
    assert result["failures"] == [] and state["cells"]["dph-16bit-seed0-saat/defend"]["attempts"] == 2
    assert all(r["status"] == "done" for r in state["cells"].values())


def test_a_grid_folder_refuses_other_settings_but_grows(tmp_path, monkeypatch):
    monkeypatch.setattr(runner, "make_plan", _fake_plan)
    monkeypatch.setattr(runner, "_run_cell", _fake_cell(set(), []))
    spec = GridSpec("FLICKR-25K", "alexnet", "dph", bits=(16,), tables=(1,), preset="quick")
    runner.reproduce(spec, tmp_path, progress=False)
    with pytest.raises(ValueError, match=r"holds a grid of other settings \(preset='quick'\)"):
        runner.reproduce(GridSpec(**{**spec.__dict__, "preset": "paper"}), tmp_path, progress=False)
    calls: list = []
    monkeypatch.setattr(runner, "_run_cell", _fake_cell(set(), calls))
    runner.reproduce(GridSpec(**{**spec.__dict__, "bits": (16, 32)}), tmp_path, progress=False)
    assert calls[0] == "dph-32bit-seed0/train" and not any(c.startswith("dph-16bit") for c in calls)
    (tmp_path / runner.STATE).write_text("{not json")
    with pytest.raises(ValueError, match="cannot be read"):
        runner.reproduce(spec, tmp_path, progress=False)


def test_plan_only_writes_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(runner, "make_plan", _fake_plan)
    monkeypatch.setattr(runner, "_run_cell", lambda *a, **k: pytest.fail("--plan ran a cell"))
    out = tmp_path / "grid"
    runner.reproduce(GridSpec("FLICKR-25K", "alexnet", "dph", bits=(16,)), out, plan_only=True)
    assert not out.exists()
    printed = capsys.readouterr().out
    assert "dph-16bit-seed0/train" in printed and "total:" in printed and "disk" in printed
    # the fake plan gives every cell 1 s: 1 training, 8 Table I attacks, 2 defenses, 6 Table II attacks, 3 cards
    assert "by kind: training 1 s · defenses 2 s · attacks 14 s · robustness cards 3 s · report 1 s" in printed


def test_the_probe_times_the_grids_code_paths(tmp_path):
    """The real probe on a tiny grid (fashion-mnist, small_cnn): every code path gets a positive time per image."""
    from saat.data import load_dataset
    from saat.reproduce.cost import probe, sizes_of

    spec = GridSpec("fashion-mnist", "small_cnn", "csq", bits=(16,), preset="quick")
    ds = load_dataset("fashion-mnist", verbose=False)
    sizes = sizes_of(ds)
    pr = probe(spec, sizes, ds.train.labels[:300], device="cpu", defenses=("saat",))
    assert set(pr.per_image) == {"train", "attack", "encode", "defense:saat"}
    assert set(pr.per_step) == {"tha:proto", "prosgan:proto", "prosgan:gan"}
    assert all(v > 0 and math.isfinite(v) for v in [*pr.per_image.values(), *pr.per_step.values()])
    assert pr.per_step["prosgan:gan"] > pr.per_step["prosgan:proto"]  # a generator and a hashing model vs an MLP
    assert pr.per_image["defense:saat"] > pr.per_image["train"]  # 7 PGD steps and a training step
    assert pr.params == sum(p.numel() for p in __import__("saat").models.HashModel("small_cnn", 16).parameters())
    assert sizes.channels == 3 and sizes.image_size == 28 and torch.is_tensor(ds.train.labels)


def test_cli_plan_and_help(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(runner, "make_plan", _fake_plan)
    assert main(["reproduce", "--dataset", "FLICKR-25K", "--bits", "16,32", "--out", str(tmp_path / "g"),
                 "--plan"]) == 0
    assert "dph-32bit-seed0-atrdh/defend" in capsys.readouterr().out
    assert main(["reproduce", "--dataset", "FLICKR-25K", "--bits", "16,16", "--out", str(tmp_path / "g"),
                 "--plan"]) == 2
    assert "error: --bits lists a value twice" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["reproduce", "--dataset", "FLICKR-25K", "--bits", "a", "--out", str(tmp_path)])
    assert "--bits: expected integers" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------------ end to end

@pytest.mark.slow
def test_a_real_grid_runs_resumes_and_reports(tmp_path, monkeypatch, capsys):
    """fashion-mnist, small_cnn, CSQ, 16 and 32 bits, Table I, quick preset: every cell a real folder; a failing
    attack is recorded and retried by the rerun; the report has the grid's paper-layout tables."""
    import saat.pipelines.attack as attack_pipeline

    out = tmp_path / "grid"
    args = ["reproduce", "--dataset", "fashion-mnist", "--backbone", "small_cnn", "--method", "csq", "--bits",
            "16,32", "--tables", "1", "--preset", "quick", "--out", str(out), "--device", "cpu"]
    real = attack_pipeline.run_attack

    def broken(run_dir, config, **kw):
        if config.method == "dhta" and "32bit" in str(run_dir):
            raise RuntimeError("injected failure")
        return real(run_dir, config, **kw)

    monkeypatch.setattr(attack_pipeline, "run_attack", broken)
    assert main(args) == 1
    printed = capsys.readouterr().out
    assert "csq-32bit-seed0/attack/quick-dhta-t-eps32: RuntimeError: injected failure" in printed
    assert "estimate vs measured" in printed
    state = json.loads((out / "reproduce.json").read_text())
    assert state["cells"]["csq-32bit-seed0/attack/quick-dhta-t-eps32"]["status"] == "failed"
    for bits in (16, 32):
        assert RunDir(out / f"csq-{bits}bit-seed0").model.is_file()
        assert RunDir(out / f"csq-{bits}bit-seed0").attack("quick-hag-u-eps32").metrics.is_file()
    monkeypatch.setattr(attack_pipeline, "run_attack", real)
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "csq-16bit-seed0/attack/quick-hag-u-eps32" not in printed.split("estimate vs measured")[1]
    assert "[reproduce] attack csq-32bit-seed0 with dhta (targeted, eps 32/255) ..." in printed
    md = (out / "report" / "report.md").read_text()
    assert "Tables I and II over bit lengths and seeds" in md
    state = json.loads((out / "reproduce.json").read_text())
    assert all(r["status"] == "done" for r in state["cells"].values())
    assert all(r["estimate_seconds"] > 0 for r in state["cells"].values())
