"""`saat evaluate-codes`, `saat --help` and `saat --version`."""

import json
import subprocess
import sys

import numpy as np
import pytest

import saat
from conftest import make_retrieval_data
from saat import retrieval as R
from saat.cli import main


@pytest.fixture
def code_files(tmp_path):
    q, db, ql, dl = make_retrieval_data(21, 30, 400, 16, 5)
    paths = {}
    for name, arr in (("q", q), ("db", db), ("ql", ql), ("dl", dl), ("tl", np.roll(ql, 2, axis=1))):
        paths[name] = tmp_path / f"{name}.npy"
        np.save(paths[name], arr)
    return paths, (q, db, ql, dl)


def _args(p, *extra):
    return ["evaluate-codes", "--query-codes", str(p["q"]), "--db-codes", str(p["db"]),
            "--query-labels", str(p["ql"]), "--db-labels", str(p["dl"]), *extra]


def test_evaluate_codes_writes_the_same_metrics_as_the_api(code_files, tmp_path, capsys):
    paths, (q, db, ql, dl) = code_files
    out = tmp_path / "m" / "metrics.json"
    assert main(_args(paths, "--topk", "100", "--target-labels", str(paths["tl"]), "--out", str(out))) == 0
    printed = capsys.readouterr().out
    assert "mAP@100" in printed and "t-MAP@100" in printed and f"wrote {out}" in printed
    data = json.loads(out.read_text())
    aps = R.average_precision(q, db, ql, dl, topk=100)
    assert R.format_ci(data["mAP"], R.ci_or_none(aps), digits=4) in printed  # the mAP with its 95 % interval
    assert data["mAP"] == R.mean_average_precision(q, db, ql, dl, topk=100)
    assert data["t-MAP"] == R.targeted_mean_average_precision(q, db, np.roll(ql, 2, axis=1), dl, topk=100)
    assert data["counts"] == {"queries": 30, "database": 400, "bits": 16, "classes": 5,
                              "queries_without_relevant_in_topk": data["counts"]["queries_without_relevant_in_topk"]}
    assert data["precision_within_radius_2"] == pytest.approx(R.precision_within_radius(q, db, ql, dl))
    assert data["pr_curve"]["recall"] == list(R.DEFAULT_RECALLS)
    assert len(data["pr_by_radius"]["precision"]) == 17
    assert data["precision_at_n"]["n"] == list(R.DEFAULT_NS)
    assert "ties broken by ascending database index" in data["definition"]
    assert 0 < data["random_ranking_mAP"] < 1


def test_evaluate_codes_topk_all_and_drop_empty(code_files, tmp_path):
    paths, (q, db, ql, dl) = code_files
    out = tmp_path / "metrics.json"
    assert main(_args(paths, "--topk", "all", "--drop-empty", "--out", str(out))) == 0
    data = json.loads(out.read_text())
    assert data["topk"] is None
    assert data["mAP"] == R.mean_average_precision(q, db, ql, dl, topk=None, drop_empty=True)


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda p, t: p["q"].unlink(), "--query-codes: file not found"),
        (lambda p, t: p["db"].write_text("not an array"),
         "--db-codes: .* is not a .npy array \\(it does not start with the .npy signature\\)"),
        (lambda p, t: np.save(p["q"], np.zeros((30, 16))), "--query-codes must contain only \\+1 and -1"),
        (lambda p, t: np.save(p["ql"], np.ones((29, 5))), "--query-labels has 29 rows but there are 30"),
        (lambda p, t: np.save(p["dl"], np.ones((400, 4))), "--query-labels has 5 classes but --db-labels has 4"),
        (lambda p, t: np.save(p["db"], np.ones((400, 8))), "--query-codes has 16 bits per code but --db-codes"),
    ],
)
def test_bad_files_get_clear_errors(code_files, tmp_path, capsys, mutate, message):
    paths, _ = code_files
    mutate(paths, tmp_path)
    out = tmp_path / "metrics.json"
    out.write_text("previous result")
    assert main(_args(paths, "--out", str(out), "--overwrite")) == 2  # bad inputs: the old file stays
    err = capsys.readouterr().err
    assert err.startswith("saat evaluate-codes: error: ")
    import re

    assert re.search(message, err), err
    assert out.read_text() == "previous result"  # nothing already written is lost


def test_bad_topk_is_rejected_by_the_parser(code_files, capsys):
    paths, _ = code_files
    with pytest.raises(SystemExit) as exc:
        main(_args(paths, "--topk", "-3"))
    assert exc.value.code == 2
    assert "expected a positive integer or 'all'" in capsys.readouterr().err


@pytest.mark.slow  # three subprocesses, each importing torch
def test_help_and_version_from_the_console_script(capsys):
    # One new interpreter (3 s of imports) shows `python -m saat` reaches the command line; the help pages are the
    # same parser in this process.
    res = subprocess.run([sys.executable, "-m", "saat", "--version"], capture_output=True, text=True, check=True)
    assert res.stdout.strip() == f"saat {saat.__version__}"
    for argv, said in ((["--help"], ["evaluate-codes"]), (["evaluate-codes", "--help"], ["--target-labels", "--topk"])):
        with pytest.raises(SystemExit) as done:
            main(argv)
        assert done.value.code == 0
        printed = capsys.readouterr().out
        assert all(s in printed for s in said), (argv, printed[:300])
