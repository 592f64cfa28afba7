"""`saat reproduce` under torchrun: every process walks the same cells, and a cell that fails in one process is
recorded as failed by all of them (the others do not go on without it), blocking what needs it; one process writes
the grid's files. The cells' work is stubbed (the sharded pipelines are tested in test_ddp_attacks.py / test_ddp.py).

The same file is the worker: ``torchrun --standalone --nproc_per_node=2 tests/test_reproduce_ddp.py OUT``."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

FAILING = "dph-16bit-seed0-saat/defend"  # fails in process 1 only


def _worker(out: Path) -> None:
    sys.path.insert(0, str(Path(__file__).parent))
    from saat.reproduce import GridSpec
    from saat.reproduce import run as runner
    from saat.utils import dist
    from test_reproduce import _fake_cell, _fake_plan

    rank = int(os.environ["RANK"])
    calls: list = []
    writes = _fake_cell(set(), [])  # process 0 writes each cell's result file, as the pipelines do

    def run_cell(cell, spec, **kw):
        calls.append(cell.id)
        if cell.id == FAILING:
            if rank == 1:
                raise ValueError(f"{cell.id} broke in process 1")
            return
        if rank == 0:
            writes(cell, spec, **kw)

    runner.make_plan = _fake_plan
    runner._run_cell = run_cell
    spec = GridSpec("FLICKR-25K", "alexnet", "dph", bits=(16,), preset="quick")
    result = runner.reproduce(spec, out, progress=False)
    (out / f"calls-{rank}.json").write_text(json.dumps({"calls": calls, "failures": result["failures"],
                                                        "world": dist.world_size()}))


@pytest.mark.slow
def test_a_failure_in_one_process_is_a_failure_of_all(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", __file__,
           str(tmp_path)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"calls-{r}.json").read_text()) for r in (0, 1)]
    assert [r["world"] for r in ranks] == [2, 2]
    assert ranks[0]["calls"] == ranks[1]["calls"]  # the same cells, in the same order, in both processes
    assert ranks[0]["failures"] == ranks[1]["failures"]
    failed = dict(ranks[0]["failures"])
    blocked = [c for c in failed if c.startswith("dph-16bit-seed0-saat/")]
    assert failed[FAILING] == f"ValueError: {FAILING} broke in process 1"  # recorded by process 0 too
    assert len(blocked) == 1 + 3 + 1  # the defense, its Table II attacks, its card (the extra 8/255 is the main ε)
    assert not set(blocked[1:]) & set(ranks[0]["calls"])
    state = json.loads((tmp_path / "reproduce.json").read_text())
    assert state["cells"][FAILING]["status"] == "failed" and state["cells"]["report"]["status"] == "done"
    assert {c for c, r in state["cells"].items() if r["status"] != "done"} == set(failed)
    assert "dph-16bit-seed0-atrdh/defend" in ranks[1]["calls"]  # the others went on


@pytest.mark.slow
def test_the_plan_under_torchrun_probes_in_one_process(tmp_path):
    """The real probe (sharded encoding, defense steps, attacks inside) runs in process 0 alone while the other
    waits: it once deadlocked in a collective operation only process 0 entered."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "saat",
           "reproduce", "--dataset", "fashion-mnist", "--backbone", "small_cnn", "--method", "csq", "--bits", "16",
           "--tables", "1", "--preset", "quick", "--out", str(tmp_path / "grid"), "--device", "cpu", "--plan"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "2 processes" in done.stdout and "csq-16bit-seed0/card/quick-quick" in done.stdout
    assert done.stdout.count("[reproduce] total:") == 1  # process 0 prints
    assert not (tmp_path / "grid").exists()


if __name__ == "__main__":
    _worker(Path(sys.argv[1]))
