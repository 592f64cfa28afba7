"""Hardening: one-line errors instead of tracebacks, nonsense refused, names that cannot escape a run directory,
atomic writes that name their file and leave nothing behind, stale temporary files cleaned up."""

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from saat.cli import describe_error, main
from saat.config import TrainConfig, check_value, config_from_dict, load_yaml, resolve_config
from saat.pipelines.attack import AttackConfig
from saat.pipelines.defend import DefenseConfig
from saat.pipelines.robustness import RobustnessConfig
from saat.utils.device import resolve_device
from saat.utils.io import atomic_write_json, atomic_write_text, remove_stale_temps
from saat.utils.validation import check_name


@pytest.mark.parametrize("make, message", [
    (lambda: TrainConfig(epochs=-1), "--epochs (config key epochs) must be >= 0, got -1"),
    (lambda: TrainConfig(epochs="many"), "--epochs (config key epochs) must be an integer, got 'many'"),
    (lambda: TrainConfig(lr="fast"), "--lr (config key lr) must be a number, got 'fast'"),
    (lambda: TrainConfig(lr=float("nan")), "--lr (config key lr) must be a number"),
    (lambda: TrainConfig(batch_size=0), "--batch-size (config key batch_size) must be at least 1, got 0"),
    (lambda: TrainConfig(amp="yes"), "--amp (config key amp) must be true or false"),
    (lambda: AttackConfig(batch_size=0), "--batch-size (config key batch_size) must be at least 1, got 0"),
    (lambda: AttackConfig(num_queries=0), "--num-queries (config key num_queries) must be at least 1, got 0"),
    (lambda: AttackConfig(steps=-3), "--steps (config key steps) must be >= 0, got -3"),
    (lambda: DefenseConfig(lambda_=-1.0), "--lambda (config key lambda_) must be >= 0, got -1.0"),
    (lambda: RobustnessConfig(num_queries=0), "--num-queries (config key num_queries) must be at least 1"),
])
def test_numeric_settings_are_checked_in_one_place(make, message):
    with pytest.raises(ValueError) as info:
        make()
    assert message in str(info.value)


def test_valid_settings_pass_and_none_means_preset():
    TrainConfig(epochs=0, lr=1, seed=3, topk=None)
    AttackConfig(steps=0, eps=0.0, num_queries=None)
    check_value("not_a_rule", object())


@pytest.mark.parametrize("text, message", [
    ("!!python/object/apply:os.system ['echo pwned']", "is not valid saat YAML"),
    ("dataset: [unclosed", "is not valid saat YAML"),
    ("- a\n- b\n", "must hold a mapping of settings, got list"),
    ("epochs: many\n", "--epochs (config key epochs) must be an integer, got 'many'"),
    ("lr: fast\n", "--lr (config key lr) must be a number, got 'fast'"),
    ("wrong_key: 1\n", "wrong_key"),
])
def test_resume_with_a_broken_config_yaml_is_one_line(tmp_path, capsys, text, message):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(text)
    assert main(["train", "--resume", str(run)]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_unknown_device_is_one_line(capsys):
    with pytest.raises(ValueError, match="'tpu' is not a device"):
        resolve_device("tpu")
    with pytest.raises(ValueError, match="cpu, cuda or mps"):
        resolve_device("meta")
    assert main(["evaluate", "nowhere", "--device", "tpu"]) == 2


@pytest.mark.parametrize("bad", ["..", ".", "../../x", "/abs", "a/b", ".hidden", "", "a" * 129, "x\0y", "ü"])
def test_names_are_one_safe_path_component(bad):
    with pytest.raises(ValueError, match="one folder name"):
        check_name(bad)


@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=40))
@settings(max_examples=300, deadline=None)
def test_an_accepted_name_never_leaves_its_folder(name):
    try:
        check_name(name)
    except ValueError:
        return
    root = Path("/base/run/attacks")
    assert (root / name).resolve().parent == root and "/" not in name and name not in (".", "..")


def test_os_errors_name_the_file_and_the_remedy():
    assert describe_error(PermissionError(errno.EACCES, "Permission denied", "/x/model.pt")).startswith(
        "/x/model.pt: permission denied: fix its permissions, or write elsewhere")
    assert "no space left" in describe_error(OSError(errno.ENOSPC, "No space left on device", "/x/c.pt"))
    assert describe_error(OSError(errno.EROFS, "Read-only file system", "/ro")).startswith("/ro: read-only")
    assert describe_error(ValueError("plain")) == "plain"


def test_atomic_write_to_a_directory_or_a_bad_parent_names_the_target(tmp_path):
    with pytest.raises(IsADirectoryError) as info:
        atomic_write_text(tmp_path, "x")
    assert info.value.filename == str(tmp_path)
    (tmp_path / "file").write_text("")
    with pytest.raises(OSError) as info:
        atomic_write_json(tmp_path / "file" / "inside.json", {})
    assert info.value.filename == str(tmp_path / "file")  # the file in the way, not a temporary name
    assert not list(tmp_path.rglob("*.tmp"))


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_stale_temporary_files_of_dead_writers_are_removed(tmp_path):
    (tmp_path / "attacks" / "a").mkdir(parents=True)
    stale = tmp_path / f".checkpoint.pt.{_dead_pid()}.k3j2h1.tmp"
    stale_deep = tmp_path / "attacks" / "a" / f".metrics.json.{_dead_pid()}.aaaa.tmp"
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        live = tmp_path / f".model.pt.{sleeper.pid}.zzzz.tmp"
        foreign = tmp_path / ".notes.tmp"  # not ours: no pid in the name
        for f in (stale, stale_deep, live, foreign):
            f.write_bytes(b"partial")
        (tmp_path / "checkpoint.pt").write_bytes(b"complete")
        legacy = tmp_path / ".checkpoint.pt.k3j2h1ab.tmp"  # the older form: no pid in the name
        legacy_new = tmp_path / ".checkpoint.pt.zz9y8x7w.tmp"
        for f in (legacy, legacy_new):
            f.write_bytes(b"partial")
        os.utime(legacy, (0, 0))  # old: a leftover
        removed = remove_stale_temps(tmp_path)
        assert sorted(removed) == sorted([stale, stale_deep, legacy]) and legacy_new.exists()
        legacy_new.unlink()
        assert live.exists() and foreign.exists()
    finally:
        sleeper.kill()
        sleeper.wait()
    assert remove_stale_temps(tmp_path) == [live]


def test_atomic_writes_carry_the_writer_pid(tmp_path, monkeypatch):
    seen = []
    real_replace = os.replace

    def spy(src, dst):
        seen.append(Path(src).name)
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", spy)
    atomic_write_text(tmp_path / "f.txt", "x")
    assert seen[0].startswith(f".f.txt.{os.getpid()}.") and seen[0].endswith(".tmp")


def _tmpfs(mount: Path, options: str) -> None:
    mount.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(mount)],
                                           capture_output=True).returncode != 0:
        pytest.skip("needs root and mount to build a tmpfs")


@pytest.fixture
def small_tmpfs(tmp_path):
    """A 256 KiB tmpfs (root only; skipped where mounting is not allowed)."""
    _tmpfs(tmp_path / "small", "size=256k")
    yield tmp_path / "small"
    subprocess.run(["umount", str(tmp_path / "small")], check=False)


@pytest.fixture
def read_only_dir(tmp_path):
    """A read-only tmpfs holding a fake run folder (root only: permissions do not stop root)."""
    _tmpfs(tmp_path / "ro", "size=1m")
    (tmp_path / "ro" / "run").mkdir()
    (tmp_path / "ro" / "run" / "model.pt").write_bytes(b"not read: the write check comes first")
    subprocess.run(["mount", "-o", "remount,ro", str(tmp_path / "ro")], check=True)
    yield tmp_path / "ro"
    subprocess.run(["umount", str(tmp_path / "ro")], check=False)


@pytest.mark.parametrize("command", [
    ["evaluate", "{ro}/run"], ["attack", "{ro}/run"], ["robustness", "{ro}/run"], ["transfer", "{ro}/run", "{ro}/run"],
    ["report", "{tmp}", "--out", "{ro}/report"], ["defend", "{tmp}", "--out", "{ro}/defended"],
    ["train", "--dataset", "fashion-mosaic", "--out", "{ro}/new"],
])
def test_a_read_only_output_is_one_line_before_any_work(read_only_dir, tmp_path, capsys, command):
    args = [a.format(ro=read_only_dir, tmp=tmp_path) for a in command]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "read-only file system: write elsewhere" in err and "Traceback" not in err


def test_disk_full_keeps_the_previous_file_and_names_it(small_tmpfs):
    target = small_tmpfs / "checkpoint.pt"
    atomic_write_text(target, "old, complete")
    with pytest.raises(OSError) as info:
        atomic_write_text(target, "x" * (1 << 20))
    assert info.value.errno == errno.ENOSPC and info.value.filename == str(target)
    assert target.read_text() == "old, complete"
    assert not list(small_tmpfs.glob(".*.tmp"))


def test_evaluate_codes_out_is_checked_before_the_work(tmp_path, capsys):
    q = np.where(np.random.default_rng(0).random((5, 8)) > 0.5, 1, -1).astype(np.int8)
    labels = (np.eye(3)[[0, 1, 2, 0, 1]]).astype(np.uint8)
    for name, arr in (("q", q), ("l", labels)):
        np.save(tmp_path / f"{name}.npy", arr)
    base = ["evaluate-codes", "--query-codes", str(tmp_path / "q.npy"), "--db-codes", str(tmp_path / "q.npy"),
            "--query-labels", str(tmp_path / "l.npy"), "--db-labels", str(tmp_path / "l.npy")]
    assert main([*base, "--out", str(tmp_path)]) == 2
    assert "is a directory" in capsys.readouterr().err
    (tmp_path / "m.json").write_text("{}")
    assert main([*base, "--out", str(tmp_path / "m.json")]) == 2
    assert "pass --overwrite" in capsys.readouterr().err and (tmp_path / "m.json").read_text() == "{}"
    assert main([*base, "--out", str(tmp_path / "m.json"), "--overwrite"]) == 0
    assert "mAP" in json.loads((tmp_path / "m.json").read_text())


def test_yaml_loading_never_constructs_objects(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("!!python/name:os.system {}\n")
    with pytest.raises(ValueError, match="not valid saat YAML"):
        load_yaml(path)
    with pytest.raises(ValueError, match="must hold a mapping"):
        config_from_dict(TrainConfig, ["epochs", 3], "config.yaml")


YAML_PIECES = st.sampled_from(["epochs: ", "lr: ", "bits: ", "dataset: ", "- ", "{", "}", "[", "]", "!!python/",
                                "!!str ", "&a ", "*a", "\n", "  ", "1", "-1", "0.5", "many", "true", "null", ": ", "'"])


@given(st.one_of(st.text(alphabet=st.characters(codec="utf-8"), max_size=200),
                 st.lists(YAML_PIECES, max_size=30).map("".join)))
@settings(max_examples=300, deadline=None)
def test_any_yaml_text_gives_a_config_or_a_value_error(text):
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "config.yaml"
        path.write_text(text, encoding="utf-8")
        for read in (lambda: config_from_dict(TrainConfig, load_yaml(path), "config.yaml"),  # --resume
                     lambda: resolve_config(TrainConfig, {}, path)):  # --config
            try:
                read()
            except ValueError as exc:
                assert str(exc)


# --- fuzzing: malformed inputs give a ValueError-family error with a message, never another exception -------------

LIST_TOKENS = st.sampled_from(["img.png", "a b.png", "./data/x.png", "/abs/y.jpg", "0", "1", "2", "-1", "0.5", "nan",
                               "x", " ", "\t", "\r\n", "\n", "1 0 1", "0 0 0", "", "\ufeff", "é", "1,0", "#"])


@given(files=st.fixed_dictionaries({name: st.lists(LIST_TOKENS, max_size=25).map("".join) for name in (
    "train", "test", "database")}), paired=st.booleans())
@settings(max_examples=250, deadline=None)
def test_list_file_parsers_fail_only_with_clear_errors(files, paired):
    import tempfile

    from saat.data.formats import read_folder

    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        (root / "img.png").write_bytes(b"not decoded by the parser")
        for split, text in files.items():
            if paired:
                lines = text.splitlines()
                (root / f"{split}_img.txt").write_text("\n".join(w.split(" ")[0] for w in lines) + "\n")
                (root / f"{split}_label.txt").write_text(text)
            else:
                (root / f"{split}.txt").write_text(text)
        try:
            read_folder(root)
        except (ValueError, FileNotFoundError) as exc:
            assert str(exc)


ARRAYS = st.one_of(
    st.integers(0, 4).flatmap(lambda n: st.lists(st.lists(st.sampled_from([-1, 0, 1, 2, 0.5, float("nan")]),
                                                           min_size=0, max_size=4), min_size=n, max_size=n)),
    st.just([]), st.just([[1, -1]]), st.just("codes"), st.none(), st.just([[[1]]]))


@given(q=ARRAYS, db=ARRAYS, ql=ARRAYS, dl=ARRAYS, topk=st.sampled_from([None, 0, 1, 5, -2, 2.5, "3"]))
@settings(max_examples=400, deadline=None)
def test_metric_inputs_fail_only_with_value_errors(q, db, ql, dl, topk):
    from saat.retrieval import mean_average_precision

    def arr(x):
        try:
            return np.array(x)
        except ValueError:  # ragged lists: numpy itself refuses them
            return x

    try:
        value = mean_average_precision(arr(q), arr(db), arr(ql), arr(dl), topk=topk)
    except ValueError as exc:
        assert str(exc)
    else:
        assert 0.0 <= value <= 1.0
