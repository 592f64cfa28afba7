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


# --- hostile inputs that used to end badly (each: one line naming the problem and what to do, or the right result) --


def _one_line_error(capsys, command: str) -> str:
    """The error line of a failed command: its last line on stderr, the only one with an error (before it, at most
    the dataset's summary line)."""
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines and lines[-1].startswith(f"saat {command}: error: "), lines
    assert len(lines) <= 2 and not any("Traceback" in line or "rror" in line for line in lines[:-1]), lines
    return lines[-1]


def _tiny_dataset(root: Path) -> Path:
    """A dataset folder (list format) of 8 + 4 + 8 colour images of 8x8 pixels, two classes."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in (("train", 8), ("test", 4), ("database", 8)):
        lines = []
        for i in range(n):
            c = i % 2
            rel = f"img/{split}{i}.png"
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray((rng.random((8, 8, 3)) * 100 + 100 * c).astype(np.uint8)).save(root / rel)
            lines.append(f"{rel} {1 - c} {c}")
        (root / f"{split}.txt").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A trained run directory in a few seconds: one epoch of small_cnn on the tiny dataset (config.yaml,
    checkpoint.pt, model.pt, metrics.json with the curves). Tests that change it work on a copy (tiny_run_copy)."""
    import saat

    root = tmp_path_factory.mktemp("tiny")
    data = _tiny_dataset(root / "data")
    saat.train(out=root / "run", progress=False, dataset_dir=str(data), backbone="small_cnn", method="dpsh", bits=8,
               epochs=1, batch_size=4, device="cpu")
    return root / "run"


@pytest.fixture
def tiny_run_copy(tiny_run, tmp_path):
    import shutil

    return Path(shutil.copytree(tiny_run, tmp_path / "run"))


@pytest.mark.parametrize("command, message", [
    (["attack", "{run}", "--option", "lr=!!python/object/apply:os.system ['touch {marker}']"],
     "--option lr: cannot read the value \"!!python/object/apply:os.system ['touch |(YAML tags such as !!python/... "
     "are not allowed); a value may be a number (fractions like 8/255 too), true or false, a text, or a YAML list or "
     "mapping"),
    (["attack", "{run}", "--option", "steps=[1"],
     "--option steps: cannot read the value '[1' (not valid YAML: expected ',' or ']', but got '<stream end>'); a "
     "value may be a number"),
    (["defend", "{run}", "--option", "beta=[1"], "--option beta: cannot read the value '[1' (not valid YAML"),
    (["defend", "{run}", "--method", "comdefend", "--option", "beta=[1"], "--option beta: cannot read the value"),
    (["attack", "{run}", "--option", "=3"], "--option expects KEY=VALUE, got '=3'"),
])
def test_a_malformed_option_value_is_one_line_and_runs_nothing(tmp_path, capsys, command, message):
    marker = tmp_path / "pwned"
    args = [a.format(run=tmp_path / "nowhere", marker=marker) for a in command]
    assert main(args) == 2
    err = _one_line_error(capsys, command[0])
    assert all(part in err for part in message.split("|")) and not marker.exists()


def test_an_option_of_the_wrong_kind_is_refused_with_every_problem():
    from saat.config import resolve_settings

    defaults = {"steps": 100, "lr": 100.0, "bounded": True, "milestones": (0.5, 0.75), "random_start": None}
    with pytest.raises(ValueError) as info:
        resolve_settings(defaults, what="attack 'x'", explicit={"steps": "fast", "lr": [1], "bounded": 1,
                                                                 "milestones": 0.5, "stepz": 1})
    text = str(info.value)
    assert text.startswith("5 problems: --stepz does not apply to attack 'x'")
    for part in ("attack 'x': steps must be an integer (default 100), got 'fast'",
                 "attack 'x': lr must be a number (default 100.0), got [1]",
                 "attack 'x': bounded must be true or false (default True), got 1",
                 "attack 'x': milestones must be a list (default (0.5, 0.75)), got 0.5"):
        assert part in text
    ok = resolve_settings(defaults, what="attack 'x'", explicit={"lr": 3, "milestones": [0.2], "random_start": "x"})
    assert ok["lr"] == 3 and ok["milestones"] == [0.2]


def test_a_listed_image_that_is_a_directory_says_so(tmp_path, capsys):
    from saat.data import load_dataset

    root = _tiny_dataset(tmp_path / "data")
    (root / "img" / "sub").mkdir()
    lines = (root / "train.txt").read_text().splitlines()
    lines[1] = "img/sub 0 1"
    (root / "train.txt").write_text("\n".join(lines) + "\n")
    with pytest.raises(FileNotFoundError, match=r"train\.txt, line 2: .*/img/sub is a directory, not an image file: "
                                                r"list each image file"):
        load_dataset(dataset_dir=root, verbose=False)
    assert main(["data", "check", str(root)]) == 1
    assert "train.txt:2: missing-image: " in capsys.readouterr().out


def _npy_bytes(array) -> bytes:
    import io

    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=True)
    return buf.getvalue()


@pytest.mark.parametrize("content, message", [
    (bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8)),
     "is not a .npy array (it does not start with the .npy signature); write it with numpy.save"),
    (b"1 -1 1\n", "is not a .npy array (it does not start with the .npy signature)"),
    (b"", "is not a .npy array"),
    (_npy_bytes(np.array([{"a": 1}], dtype=object)),
     "holds Python objects (an object array), which saat never loads; save a numeric array"),
    (_npy_bytes(np.ones((5, 8), np.int8))[:-10], "is damaged or truncated"),
    (b"PK\x03\x04" + bytes(60), "holds several arrays (.npz); save one array with numpy.save"),
])
def test_a_file_that_is_not_a_npy_array_says_so_and_never_invites_unsafe_loading(tmp_path, capsys, content, message):
    codes = np.where(np.random.default_rng(0).random((5, 8)) > 0.5, 1, -1).astype(np.int8)
    np.save(tmp_path / "codes.npy", codes)
    np.save(tmp_path / "labels.npy", np.eye(3, dtype=np.uint8)[[0, 1, 2, 0, 1]])
    bad = tmp_path / "bad.npy"
    bad.write_bytes(content)
    assert main(["evaluate-codes", "--query-codes", str(bad), "--db-codes", str(tmp_path / "codes.npy"),
                 "--query-labels", str(tmp_path / "labels.npy"), "--db-labels", str(tmp_path / "labels.npy")]) == 2
    err = _one_line_error(capsys, "evaluate-codes")
    assert f"--query-codes: {bad} {message}" in err and "allow_pickle" not in err and "pickle.load" not in err


def test_every_npy_reader_shares_the_one_loading_helper(tmp_path):
    from saat.pipelines.common import cached_codes
    from saat.utils.io import load_npy, load_npz

    cache = tmp_path / "cache" / "codes-query-abc.npy"
    cache.parent.mkdir()
    cache.write_bytes(b"\x80\x04random, not an array")
    fresh = np.ones((2, 4), np.int8)
    assert np.array_equal(cached_codes(tmp_path, "codes-query-abc", lambda: fresh), fresh)  # a bad cache: recomputed
    assert np.array_equal(load_npy(cache), fresh)
    np.savez(tmp_path / "a.npz", x=np.arange(3))
    assert list(load_npz(tmp_path / "a.npz")) == ["x"]
    with pytest.raises(ValueError, match=r"a\.npy: .* is not a \.npz archive"):
        load_npz(cache, "a.npy")


def test_no_module_reads_npy_files_around_the_helper():
    """Every .npy/.npz file is read through saat.utils.io (the shipped demo data, read from bytes, aside)."""
    import saat

    root = Path(saat.__file__).parent
    allowed = {root / "utils" / "io.py", root / "data" / "demo.py"}
    readers = [str(p.relative_to(root)) for p in root.rglob("*.py") if p not in allowed and "np.load(" in p.read_text()]
    assert readers == []


def test_damaged_resume_files_of_targets_are_drawn_again(tmp_path):
    from saat.attacks.targets import load_or_create_targets

    q = np.eye(3, dtype=np.uint8)[[0, 1, 2, 0]]
    db = np.eye(3, dtype=np.uint8)[[0, 1, 2, 1, 2]]
    path = tmp_path / "targets.npz"
    first = load_or_create_targets(path, q, db, seed=4)
    path.write_bytes(b"\x80\x04 not an archive")
    assert np.array_equal(load_or_create_targets(path, q, db, seed=4), first)
    assert np.array_equal(np.load(path, allow_pickle=False)["target_labels"], first)  # rewritten


class _FullDisk:
    """A file whose first write stores half its bytes, then fails like a full disk (no file name, as the system
    reports it)."""

    def __init__(self, fh):
        self.fh = fh

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.fh.close()

    def write(self, data):
        self.fh.write(data[:len(data) // 2])
        self.fh.flush()
        raise OSError(errno.ENOSPC, "No space left on device")

    def flush(self):
        self.fh.flush()

    def fileno(self):
        return self.fh.fileno()


def test_a_report_onto_a_full_disk_names_the_figure_and_leaves_no_partial_file(tiny_run, tmp_path, capsys,
                                                                                 monkeypatch):
    real_fdopen = os.fdopen
    monkeypatch.setattr(os, "fdopen", lambda fd, *a, **k: _FullDisk(real_fdopen(fd, *a, **k)))
    out = tmp_path / "report"
    assert main(["report", str(tiny_run), "--out", str(out)]) == 2
    err = _one_line_error(capsys, "report")
    assert f"error: {out / 'pr-run.png'}: no space left on the device: free some space and rerun" in err
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]  # no 0-byte or half figure, no temporary file


def test_a_report_onto_a_real_full_disk(tiny_run, small_tmpfs, capsys):
    filler = small_tmpfs / "filler"
    with open(filler, "wb", buffering=0) as fh:  # fill the disk
        try:
            while fh.write(b"\0" * 4096):
                pass
        except OSError:
            pass
    out = small_tmpfs / "report"
    assert main(["report", str(tiny_run), "--out", str(out)]) == 2
    err = _one_line_error(capsys, "report")
    assert f"{out / 'pr-run.png'}: no space left on the device" in err
    assert not [p for p in small_tmpfs.rglob("*") if p.is_file() and p != filler]


@pytest.mark.parametrize("command", [
    ["attack", "{run}", "--name", "../x"], ["robustness", "{run}", "--name", "../x"],
    ["transfer", "{run}", "{run}", "--name", "../x"],
])
def test_an_invalid_name_is_refused_before_the_run_is_even_opened(tmp_path, capsys, command):
    assert main([a.format(run=tmp_path / "nowhere") for a in command]) == 2
    err = _one_line_error(capsys, command[0])
    assert "--name must be one folder name" in err and "not found" not in err


def test_more_queries_than_the_dataset_has_says_so(capsys):
    from types import SimpleNamespace

    from saat.pipelines.common import pick_queries

    ds = SimpleNamespace(query=[None] * 1000, name="toy")
    assert np.array_equal(pick_queries(ds, 5000, 0), np.arange(1000))
    note = "note: --num-queries 5000 is more than the 1,000 queries of toy; using all 1,000\n"
    assert capsys.readouterr().err == note
    assert len(pick_queries(ds, 10, 0)) == 10 and len(pick_queries(ds, None, 0)) == 1000
    assert capsys.readouterr().err == ""


def test_resume_with_a_damaged_model_says_it_is_rebuilt(tiny_run_copy, capsys):
    from saat.checkpoint import load_model_file

    (tiny_run_copy / "model.pt").write_bytes(b"\x80\x02damaged")
    assert main(["train", "--resume", str(tiny_run_copy)]) == 0
    err = capsys.readouterr().err
    assert f"note: {tiny_run_copy / 'model.pt'} is damaged (unreadable); it is rebuilt from checkpoint.pt\n" in err
    assert load_model_file(tiny_run_copy / "model.pt")["format"] == "saat.hash_model"


def test_several_bad_settings_are_all_reported(tmp_path, capsys):
    config = tmp_path / "bad.yaml"
    config.write_text("epochs: many\nlr: fast\nbatch_size: 0\n")
    assert main(["train", "--config", str(config), "--out", str(tmp_path / "run")]) == 2
    err = _one_line_error(capsys, "train")
    assert "3 problems: --epochs (config key epochs) must be an integer, got 'many'; --lr (config key lr) must be a " \
           "number, got 'fast'; --batch-size (config key batch_size) must be at least 1, got 0" in err
    assert main(["train", "--dataset", "fashion-mosaic", "--epochs", "-1", "--batch-size", "0", "--out",
                 str(tmp_path / "run")]) == 2
    assert "2 problems: --epochs (config key epochs) must be >= 0, got -1; --batch-size" in _one_line_error(
        capsys, "train")
    (tmp_path / "resumed").mkdir()
    (tmp_path / "resumed" / "config.yaml").write_text("epochs: many\nwrong_key: 1\n")
    assert main(["train", "--resume", str(tmp_path / "resumed")]) == 2
    err = _one_line_error(capsys, "train")
    assert "2 problems: --epochs (config key epochs) must be an integer" in err
    assert "unknown setting(s) wrong_key" in err
    assert main(["attack", "nowhere", "--steps", "-1", "--batch-size", "0"]) == 2
    assert "2 problems: --steps (config key steps) must be >= 0" in _one_line_error(capsys, "attack")
    with pytest.raises(ValueError, match="2 problems: .*--epochs.*--lambda"):
        DefenseConfig(epochs=-1, lambda_=-1.0)


@pytest.mark.parametrize("content, message", [
    (b"\x80\x02" + bytes(np.random.default_rng(1).integers(0, 256, 3000, dtype=np.uint8)),
     "is damaged or is not a model checkpoint; restore it from a copy, or train the run again"),
    (b"", "is empty, not a model checkpoint"),
    (b"just some text\n", "is damaged or is not a model checkpoint"),
])
def test_a_damaged_checkpoint_is_one_line_with_no_torch_text_or_warning(tmp_path, capsys, content, message):
    import warnings

    run = tmp_path / "run"
    run.mkdir()
    (run / "model.pt").write_bytes(content)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        assert main(["evaluate", str(run), "--device", "cpu"]) == 2
    err = _one_line_error(capsys, "evaluate")
    assert f"{run / 'model.pt'} {message}" in err and "weights_only" not in err and not seen


def test_damaged_weights_fail_their_checksum_instead_of_loading(tiny_run_copy, capsys):
    import zipfile

    path = tiny_run_copy / "model.pt"
    with zipfile.ZipFile(path) as archive:
        record = max(archive.infolist(), key=lambda i: i.file_size)  # the largest tensor
    data = bytearray(path.read_bytes())
    start = record.header_offset + 30 + len(record.filename.encode()) + len(record.extra) + record.file_size // 2
    data[start:start + 16] = bytes(b ^ 0xFF for b in data[start:start + 16])
    path.write_bytes(bytes(data))
    assert main(["evaluate", str(tiny_run_copy), "--device", "cpu"]) == 2
    err = _one_line_error(capsys, "evaluate")
    assert f"{path} is damaged ({record.filename} fails its checksum)" in err
    assert f"rebuild it with 'saat train --resume {tiny_run_copy}' (from checkpoint.pt)" in err


def test_a_damaged_training_checkpoint_on_resume_is_one_line(tiny_run_copy, capsys):
    (tiny_run_copy / "checkpoint.pt").write_bytes(b"PK\x03\x04 damaged")
    assert main(["train", "--resume", str(tiny_run_copy)]) == 2
    err = _one_line_error(capsys, "train")
    assert f"{tiny_run_copy / 'checkpoint.pt'} is damaged or is not a training checkpoint; restore it from a copy, " \
           "or delete it and resume again" in err
