"""Attacks sharded across processes (issue 25, item 4): under torchrun ``attack_evaluation`` (what ``saat attack``
runs) gives each process a contiguous share of whole query batches; a process replays the random draws of the
batches before its share, so the adversarial codes and mAP / t-MAP equal one process's exactly.

The same file is the worker: ``python tests/test_ddp_attacks.py one OUT`` is the one-process reference and
``torchrun --standalone --nproc_per_node=2 tests/test_ddp_attacks.py two OUT`` the sharded run; each writes, per
attack, the adversarial codes, the metric and the recorded world size."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import fresh_process, script_main

# (name, settings, targeted): 10 queries in batches of 3 -> batches of 3, 3, 3, 1; two processes take 2 each, so the
# second one replays two batches (the random starts of PGD/APGD, DHTA's anchor draws) before its own.
CASES = [("hag", {"steps": 5}, False), ("sdha", {"steps": 5}, False),
         ("mainstay", {"steps": 5, "step": 2 / 255}, False), ("mainstay", {"steps": 5, "generator": "apgd"}, False),
         ("mainstay", {"steps": 5, "step": 2 / 255}, True), ("dhta", {"steps": 5}, True),
         ("tha", {"steps": 5, "proto_steps": 20, "proto_batch": 8}, True), ("square", {"steps": 12}, False),
         ("square", {"steps": 12}, True)]
QUERIES, BATCH, EPS = 10, 3, 16 / 255


def _worker(role: str, out: Path) -> None:
    sys.path.insert(0, str(Path(__file__).parent))
    from conftest import TinyHashModel, make_planted_retrieval
    from saat.attacks.api import attack_evaluation, create_attack
    from saat.utils import dist

    torch.set_num_threads(1)
    p = make_planted_retrieval(TinyHashModel().eval(), per_class=(8, 12, 3))
    x, y, t = p.x[:QUERIES], p.y[:QUERIES], p.targets[:QUERIES]
    results = {}
    for i, (name, settings, targeted) in enumerate(CASES):
        atk = create_attack(name, p.model, eps=EPS, train_codes=p.train_codes, train_labels=p.train_labels,
                            db_codes=p.db_codes, db_labels=p.db_labels, seed=3, **settings)
        record, run = attack_evaluation(p.model, atk, x, y, p.db_codes, p.db_labels, topk=None,
                                        target_labels=t if targeted else None, batch_size=BATCH)
        results[f"{i}"] = {"metric": record.adversarial, "world_size": record.world_size,
                           "theory": record.theory, "linf_max": record.perceptibility["linf_max"]}
        if dist.is_main_process():
            np.save(out / f"{role}-{i}.npy", run.adv_codes)
    # the robustness card (quick preset, untargeted and targeted) and a transfer matrix, sharded the same way
    from saat.attacks import ATTACKS
    from saat.robustness import Party, ensemble, evaluate, transfer_matrix

    few = {m.attack: ATTACKS.get(m.attack).fast_settings for t in (False, True) for m in ensemble("quick", t)}
    for targeted in (False, True):
        card, worst = evaluate(p.model, x, y, db_codes=p.db_codes, db_labels=p.db_labels, train_codes=p.train_codes,
                               train_labels=p.train_labels, eps=EPS, topk=None, preset="quick", targeted=targeted,
                               target_labels=t if targeted else None, overrides=few, checks=False, batch_size=BATCH,
                               seed=2, return_codes=True)
        results[f"card-{targeted}"] = {"robust": card["robust_map"],
                                      "per_attack": {k: v["map"] for k, v in card["per_attack"].items()},
                                      "forwards": card["forwards_per_query"], "world_size": card["world_size"]}
        if dist.is_main_process():
            np.save(out / f"{role}-card-{targeted}.npy", worst)
    other = TinyHashModel(seed=1).eval()
    parties = [Party("a", p.model, p.train_codes, p.train_labels, p.db_codes, p.db_labels),
               Party("b", other, other.encode(p.train_images).float(), p.train_labels, p.db_codes, p.db_labels)]
    matrix = transfer_matrix(parties, x, y, eps=EPS, topk=None, settings={"steps": 4}, seed=2, batch_size=BATCH)
    results["transfer"] = {"matrix": matrix["matrix"], "clean": matrix["clean"]}
    if dist.is_main_process():
        (out / f"{role}.json").write_text(json.dumps(results))


def _env():
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def _check(proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"


@pytest.mark.slow
def test_two_processes_attack_like_one(tmp_path):
    _check(fresh_process(script_main, __file__, ["one", str(tmp_path)], env=_env(), timeout=300))
    _check(subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           __file__, "two", str(tmp_path)], env=_env(), capture_output=True, text=True, timeout=300))
    one, two = (json.loads((tmp_path / f"{r}.json").read_text()) for r in ("one", "two"))
    for i, (name, settings, targeted) in enumerate(CASES):
        case = f"{name} {settings} {'targeted' if targeted else 'untargeted'}"
        a, b = np.load(tmp_path / f"one-{i}.npy"), np.load(tmp_path / f"two-{i}.npy")
        assert a.shape == (QUERIES, b.shape[1]) and np.array_equal(a, b), case
        assert one[str(i)]["metric"] == two[str(i)]["metric"], case
        assert one[str(i)]["theory"] == two[str(i)]["theory"], case
        assert one[str(i)]["linf_max"] == two[str(i)]["linf_max"], case
        assert one[str(i)]["world_size"] == 1 and two[str(i)]["world_size"] == 2, case
    # the attacks moved the codes: the equality above is not that of untouched benign codes
    assert one["2"]["metric"] < 0.9
    for targeted in (False, True):  # the card: every member's mAP, the per-query worst case, the passes counted
        key = f"card-{targeted}"
        forwards = one[key].pop("forwards"), two[key].pop("forwards")
        assert (one[key].pop("world_size"), two[key].pop("world_size")) == (1, 2), key
        assert one[key] == two[key], key
        # the passes of all processes: one's, plus each further process's one-image probe per attack
        assert forwards[0] <= forwards[1] <= forwards[0] + 8 / QUERIES, (key, forwards)
        assert np.array_equal(np.load(tmp_path / f"one-{key}.npy"), np.load(tmp_path / f"two-{key}.npy")), key
    assert one["transfer"] == two["transfer"]


def test_methods_that_draw_inside_their_iterations_are_not_replayable():
    from conftest import TinyHashModel, make_planted_retrieval
    from saat.attacks import create_attack

    p = make_planted_retrieval(TinyHashModel().eval())
    knowledge = {"train_codes": p.train_codes, "train_labels": p.train_labels, "db_codes": p.db_codes,
                 "db_labels": p.db_labels}
    assert create_attack("mainstay", p.model, steps=2, **knowledge).method(False, p.x).replayable
    assert create_attack("dhta", p.model, steps=2, **knowledge).method(True, p.x).replayable
    from saat.attacks.prosgan import ProSGANAttack

    assert ProSGANAttack.replayable  # one deterministic generator pass per batch
    for generator in ("di-fgsm", "vmi-fgsm"):
        atk = create_attack("mainstay", p.model, steps=2, generator=generator, **knowledge)
        assert not atk.method(False, p.x).replayable
        with pytest.raises(NotImplementedError, match="cannot skip"):
            atk.replay(p.x[:2], p.y[:2])


def test_replay_advances_the_stream_as_an_attack_does():
    from conftest import TinyHashModel, make_planted_retrieval
    from saat.attacks import create_attack

    p = make_planted_retrieval(TinyHashModel().eval())
    knowledge = {"train_codes": p.train_codes, "train_labels": p.train_labels}
    first, second = p.x[:3], p.x[3:6]
    attacked = create_attack("mainstay", p.model, steps=3, seed=5, **knowledge)
    attacked(first, p.y[:3])
    replayed = create_attack("mainstay", p.model, steps=3, seed=5, **knowledge)
    replayed.replay(first, p.y[:3])
    assert torch.equal(attacked(second, p.y[3:6]), replayed(second, p.y[3:6]))
    fresh = create_attack("mainstay", p.model, steps=3, seed=5, **knowledge)
    assert not torch.equal(fresh(second, p.y[3:6]), replayed(second, p.y[3:6]))  # the stream did advance


if __name__ == "__main__":
    _worker(sys.argv[1], Path(sys.argv[2]))
