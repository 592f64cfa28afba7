"""What would break on CUDA, checked on a CPU machine (issue 24): resuming where another number of GPUs is visible,
and an explicit --device cuda:K under torchrun."""

import pytest
import torch

from saat.pipelines import train as train_pipeline
from saat.utils import dist
from saat.utils.device import resolve_device


class FakeCuda:
    """torch.cuda as seen from a machine with ``visible`` GPUs: records which generator states are restored."""

    def __init__(self, monkeypatch, visible: int):
        self.restored = []
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: visible)
        monkeypatch.setattr(torch.cuda, "set_rng_state", lambda state, device: self.restored.append((device, state)))

        def set_all(states):  # what torch does: one state per visible GPU, IndexError past the last one
            for i, state in enumerate(states):
                if i >= visible:
                    raise IndexError(f"GPU {i} is not visible")
                self.restored.append((i, state))

        monkeypatch.setattr(torch.cuda, "set_rng_state_all", set_all)


def saved_on(gpus: int) -> dict:
    return {"torch": torch.get_rng_state(), "cuda": [torch.full((8,), i, dtype=torch.uint8) for i in range(gpus)]}


@pytest.mark.parametrize("saved, visible", [(8, 2), (2, 2), (1, 4)])
def test_resume_restores_the_cuda_states_of_the_gpus_both_machines_have(monkeypatch, capsys, saved, visible):
    fake = FakeCuda(monkeypatch, visible)
    state = saved_on(saved)
    train_pipeline.set_rng_state(state)
    assert [d for d, _ in fake.restored] == list(range(min(saved, visible)))
    assert all(torch.equal(s, state["cuda"][d]) for d, s in fake.restored)
    note = capsys.readouterr().err
    if saved == visible:
        assert note == ""
    else:
        assert note.count("\n") == 1 and f"{saved} GPU(s)" in note and f"{visible} are visible" in note


def test_a_checkpoint_from_a_cpu_machine_restores_no_cuda_state(monkeypatch, capsys):
    fake = FakeCuda(monkeypatch, 2)
    train_pipeline.set_rng_state({"torch": torch.get_rng_state()})
    assert fake.restored == [] and capsys.readouterr().err == ""


def test_an_explicit_gpu_under_torchrun_is_refused_in_one_line(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "2")
    assert dist.device_for_rank(torch.device("cuda")) == torch.device("cuda", 2)
    with pytest.raises(ValueError, match=r"--device cuda:1 under torchrun would put all 4 processes on GPU 1: use "
                                         r"--device cuda") as info:
        dist.device_for_rank(torch.device("cuda:1"))
    assert "\n" not in str(info.value)
    assert dist.device_for_rank(torch.device("cpu")) == torch.device("cpu")


def test_an_explicit_gpu_in_one_process_is_kept(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert dist.device_for_rank(torch.device("cuda:3")) == torch.device("cuda:3")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("cuda:3") == torch.device("cuda:3")


@pytest.mark.parametrize("cpus, local, expected", [(16, 8, 2), (16, 2, 8), (2, 2, 1), (3, 8, 1), (8, 1, 8)])
def test_each_process_gets_its_share_of_the_cores(monkeypatch, cpus, local, expected):
    import numba

    monkeypatch.setattr(dist, "usable_cpus", lambda: cpus)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", str(local))
    torch_threads, numba_threads = torch.get_num_threads(), numba.get_num_threads()
    try:
        assert dist.share_threads() == expected
        assert torch.get_num_threads() == expected
        assert numba.get_num_threads() == min(expected, numba.config.NUMBA_NUM_THREADS)
    finally:
        torch.set_num_threads(torch_threads)
        numba.set_num_threads(numba_threads)


def test_the_transfer_matrix_path_is_the_run_directory_s():
    from saat.runs import RunDir

    assert RunDir("r").transfer_metrics("m") == RunDir("r").transfer("m") / "metrics.json"
