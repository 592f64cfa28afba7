"""saat.runs: the file names of a run directory and the attack-result record (schema, old files, bad files)."""

import json
from pathlib import Path

import pytest

from saat.runs import ATTACK_SCHEMA_VERSION, AttackDir, AttackRecord, RunDir


def test_run_dir_names_every_file(tmp_path):
    run = RunDir(tmp_path / "r")
    assert run.model.name == "model.pt" and run.checkpoint.name == "checkpoint.pt"
    assert run.config.name == "config.yaml" and run.defense_config.name == "defense.yaml"
    assert run.split_metrics("test") == run.metrics and run.split_metrics("train").name == "metrics-train.json"
    assert run.codes_cache("codes-query-abc") == tmp_path / "r" / "cache" / "codes-query-abc.npy"
    assert run.attack("hag-u").metrics == tmp_path / "r" / "attacks" / "hag-u" / "metrics.json"
    assert run.targets(3).name == "targets-seed3.npz" and run.attack_summary("targeted", ".md").name == \
        "summary-targeted.md"
    assert not run.is_run() and not run.has_started()
    run.path.mkdir()
    run.config.write_text("dataset: x\n")
    assert run.is_run() and not run.is_defense_run() and not run.has_started()
    run.checkpoint.write_bytes(b"")
    assert run.has_started()
    result = run.attack("hag-u")
    result.path.mkdir(parents=True)
    result.metrics.write_text("{}")
    assert result.is_result() and not RunDir(result.path).is_run() and run.attack_dirs() == [result]
    assert not AttackDir(run.path).is_result()


@pytest.mark.parametrize("targeted", [False, True])
def test_attack_record_round_trips_through_json(targeted):
    record = AttackRecord(attack="mainstay", targeted=targeted, name="x", queries=5, benign_map=0.9,
                          adversarial=0.2, theory=0.1, benign_tmap=0.3 if targeted else None,
                          settings={"eps": 8 / 255}, perceptibility={"linf_max": 0.03})
    data = json.loads(json.dumps(record.to_json()))
    key = "t-MAP" if targeted else "mAP"
    assert data[f"adversarial_{key}"] == 0.2 and data[f"theory_{key}"] == 0.1 and data["schema"] == 1
    assert ("benign_t-MAP" in data) == targeted
    back = AttackRecord.from_json(data)
    assert back == record
    assert back.benign == (0.3 if targeted else 0.9)


def test_attack_record_reads_a_file_of_the_release_before_it():
    legacy = {"attack": "hag", "targeted": False, "name": "demo-hag-u-eps32", "queries": 100, "benign_mAP": 0.9006,
              "adversarial_mAP": 0.1663, "theory_mAP": 0.151, "random_ranking_mAP": 0.427, "topk": 1000,
              "settings": {"eps": 32 / 255}, "perceptibility": {"linf_max": 0.1255}, "seconds": 10.0}
    record = AttackRecord.from_json(legacy)
    assert (record.adversarial, record.benign, record.theory, record.topk) == (0.1663, 0.9006, 0.151, 1000)
    assert record.schema == ATTACK_SCHEMA_VERSION


def test_attack_record_bad_files_name_the_problem():
    with pytest.raises(ValueError, match="field 'targeted' is missing"):
        AttackRecord.from_json({"attack": "hag"}, "attacks/x/metrics.json")
    with pytest.raises(ValueError, match="must be a JSON object"):
        AttackRecord.from_json([1, 2])
    with pytest.raises(ValueError, match="newer saat"):
        AttackRecord.from_json({"attack": "hag", "targeted": False, "schema": ATTACK_SCHEMA_VERSION + 1})
    odd = AttackRecord.from_json({"attack": "hag", "targeted": False, "adversarial_mAP": "high", "queries": None,
                                  "settings": [1], "benign_mAP": float("nan")})
    assert odd.adversarial is None and odd.queries is None and odd.settings == {} and odd.benign is None


def test_train_and_defense_records_keep_the_file_as_it_was_and_add_a_schema():
    from saat.runs import RUN_SCHEMA_VERSION, DefenseRecord, TrainRecord

    evaluation = {"counts": {"queries": 500, "database": 8000}, "topk": 1000, "mAP": 0.908,
                  "pr_curve": {"recall": [0.5], "precision": [0.9]}, "random_ranking_mAP": 0.371}
    legacy = {**evaluation, "dataset": "fashion-mosaic", "split": "test", "method": "csq", "backbone": "small_cnn",
              "bits": 32, "checkpoint": "abc", "defense": None, "seconds": {"metrics": 0.1},
              "training_seconds_this_session": 59.1, "epochs": 12}
    record = TrainRecord.from_json(legacy)
    assert type(record) is TrainRecord and record.map == 0.908 and record.queries == 500 and record.epochs == 12
    assert record.evaluation == evaluation
    assert record.to_json() == {"schema": RUN_SCHEMA_VERSION, **legacy}
    defended = {**legacy, "defense": {"method": "saat", "mode": "default"}, "seconds_per_epoch": 30.0,
                "epoch_time_ratio_to_plain_training": 6.1}
    d = TrainRecord.from_json(defended)
    assert isinstance(d, DefenseRecord) and d.epoch_time_ratio_to_plain_training == 6.1 and d.map == 0.908
    assert TrainRecord.from_json(d.to_json()) == d
    assert TrainRecord.from_json({"mAP": "x", "bits": "32"}).map is None  # wrong types read as missing
    with pytest.raises(ValueError, match="newer saat"):
        TrainRecord.from_json({"schema": RUN_SCHEMA_VERSION + 1})
    with pytest.raises(ValueError, match="must be a JSON object"):
        TrainRecord.from_json("0.9")


def test_attack_record_keeps_its_intervals_and_reads_older_files_without_them():
    record = AttackRecord(attack="hag", targeted=False, queries=3, benign_map=0.9, adversarial=0.2,
                          benign_ci=[0.8, 0.95], adversarial_ci=[0.1, 0.3], ci_level=0.95, ci_resamples=10000)
    data = json.loads(json.dumps(record.to_json()))
    assert data["benign_mAP_ci"] == [0.8, 0.95] and data["adversarial_mAP_ci"] == [0.1, 0.3]
    assert data["ci_resamples"] == 10000 and AttackRecord.from_json(data) == record
    targeted = AttackRecord(attack="p2p", targeted=True, benign_tmap=0.1, adversarial=0.7, benign_ci=[0.05, 0.2],
                            adversarial_ci=[0.6, 0.8])
    t_data = targeted.to_json()
    assert t_data["benign_t-MAP_ci"] == [0.05, 0.2] and t_data["adversarial_t-MAP_ci"] == [0.6, 0.8]
    assert AttackRecord.from_json(t_data).adversarial_ci == [0.6, 0.8]
    older = {"attack": "hag", "targeted": False, "benign_mAP": 0.9, "adversarial_mAP": 0.2, "queries": 100}
    read = AttackRecord.from_json(older)
    assert read.benign_ci is None and read.adversarial_ci is None and read.ci_resamples is None
    for bad in ([0.3, 0.1], [0.1], "0.1-0.3", [0.1, None]):  # malformed intervals read as missing
        assert AttackRecord.from_json({**older, "adversarial_mAP_ci": bad}).adversarial_ci is None


def test_train_record_reads_the_interval_of_its_map():
    from saat.runs import TrainRecord

    assert TrainRecord.from_json({"mAP": 0.9, "mAP_ci": [0.85, 0.93]}).map_ci == [0.85, 0.93]
    assert TrainRecord.from_json({"mAP": 0.9}).map_ci is None  # written before intervals existed


def _attack_result(targeted: bool, with_intervals: bool) -> dict:
    """An attack's metrics.json as the pipeline writes it; without intervals, as an earlier release wrote it."""
    cis = {"benign_ci": [0.75, 0.87], "adversarial_ci": [0.09, 0.16], "ci_level": 0.95, "ci_resamples": 10000}
    return AttackRecord(
        attack="mainstay", targeted=targeted, name="mainstay-x", dataset="mosaic", topk=50, queries=6,
        benign_map=0.81234, benign_tmap=0.05678 if targeted else None, adversarial=0.1234, theory=0.1,
        random_ranking_map=0.2, perceptibility={"linf_mean_255": 8.0, "l2_mean": 1.0, "psnr_mean": 35.0},
        seconds=1.0, images_per_s=6.0, **(cis if with_intervals else {})).to_json()


@pytest.mark.parametrize("targeted", [False, True])
def test_the_attack_print_carries_the_intervals_and_older_results_print_as_before(targeted):
    from saat.cli.attack import format_attack_summary

    key = "t-MAP" if targeted else "mAP"
    benign = "0.0568" if targeted else "0.8123"
    text = format_attack_summary(_attack_result(targeted, with_intervals=True))
    assert f"  benign {key} {benign} [0.750, 0.870] -> adversarial {key} 0.1234 [0.090, 0.160]" in text
    assert f"  theory {key} 0.1000" in text  # the theory figure has no interval
    older = format_attack_summary(_attack_result(targeted, with_intervals=False))
    assert f"  benign {key} {benign} -> adversarial {key} 0.1234" + ("" if targeted else "  (random") in older
    assert "[" not in older


def test_the_family_table_carries_the_intervals_and_older_results_print_as_before():
    from saat.pipelines.attack import format_family_table

    row = {"attack": "hag", "name": "hag-x", "mAP": 0.1234, "ci": [0.09, 0.16], "theory": None, "linf_255": 8.0,
           "psnr": 35.0, "seconds": 1.0, "queries": 6, "eps_255": 8.0}
    summary = {"kind": "untargeted", "metric": "mAP", "run": "run", "benign": 0.81234, "benign_ci": [0.75, 0.87],
               "rows": [row]}
    table = format_family_table(summary)
    assert "| (clean mAP) | 0.8123 [0.750, 0.870] |" in table and "| hag | 0.1234 [0.090, 0.160] |" in table
    older = format_family_table({**summary, "benign_ci": None, "rows": [{**row, "ci": None}]})
    assert "| (clean mAP) | 0.8123 |" in older and "| hag | 0.1234 |" in older


def test_the_final_print_of_training_carries_the_interval_of_the_clean_map():
    from saat.pipelines.train import format_clean_map

    metrics = {"mAP": 0.75123, "mAP_ci": [0.731, 0.77], "topk": 1000, "random_ranking_mAP": 0.1043}
    assert format_clean_map(metrics) == "clean mAP@1000: 0.7512 [0.731, 0.770] (random ranking 0.1043)"
    older = {k: v for k, v in metrics.items() if k != "mAP_ci"}
    assert format_clean_map({**older, "topk": None}) == "clean mAP@all: 0.7512 (random ranking 0.1043)"


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
    """A tiny trained run on a folder of PNG files: small_cnn, 8 bits, 1 epoch, evaluated (a few seconds)."""
    import saat
    from test_data import make_dataset

    root = tmp_path_factory.mktemp("toy")
    make_dataset(root / "data", "paired", n_classes=3, sizes={"train": 16, "query": 8, "database": 24})
    saat.train(out=root / "run", dataset_dir=str(root / "data"), backbone="small_cnn", bits=8, image_size=16,
               epochs=1, batch_size=8, method="dpsh", device="cpu", progress=False, num_workers=0)
    return root / "run"


def test_clean_metrics_carry_the_interval_of_their_map(toy_run):
    from saat.pipelines.common import codes_for, load_run, open_dataset
    from saat.retrieval import average_precision, mean_ci

    metrics = json.loads(RunDir(toy_run).metrics.read_text())
    assert metrics["ci_resamples"] == 10000 and metrics["ci_level"] == 0.95
    run = load_run(toy_run)
    ds = open_dataset(run.config, run.image_size, verbose=False)
    query, _ = codes_for(run, "query", ds.query, device="cpu", batch_size=8, progress=False, num_workers=0)
    db, _ = codes_for(run, "database", ds.database, device="cpu", batch_size=8, progress=False, num_workers=0)
    ap = average_precision(query, db, ds.query.labels.numpy(), ds.database.labels.numpy(), topk=metrics["topk"])
    assert ap.mean() == pytest.approx(metrics["mAP"])
    assert metrics["mAP_ci"] == list(mean_ci(ap))


@pytest.mark.parametrize("targeted", [False, True])
def test_an_attack_keeps_its_per_query_aps_and_their_intervals(toy_run, tmp_path, targeted):
    import shutil

    import numpy as np

    from saat.pipelines.attack import AttackConfig, run_attack
    from saat.retrieval import mean_ci

    run = Path(shutil.copytree(toy_run, tmp_path / "run"))
    written = []
    import saat.pipelines.attack as pipeline

    original = pipeline.atomic_write_json

    def spy(path, obj):  # the order of the files: metrics.json, the mark of a complete result, comes last
        written.append((Path(path).name, RunDir(run).attack(obj["name"]).per_query_ap.is_file()))
        return original(path, obj)

    pipeline.atomic_write_json = spy
    try:
        metrics = run_attack(run, AttackConfig(method="mainstay", targeted=targeted, steps=3, num_queries=6,
                                               eps=8 / 255), device="cpu", progress=False, examples=0, num_workers=0)
    finally:
        pipeline.atomic_write_json = original
    assert written == [("metrics.json", True)]
    record = AttackRecord.from_json(metrics)
    files = RunDir(run).attack(record.name)
    ap = np.load(files.per_query_ap)
    assert ap.dtype == np.float64 and ap.shape == (2, 6)
    assert ap[0].mean() == pytest.approx(record.benign) and ap[1].mean() == pytest.approx(record.adversarial)
    assert record.benign_ci == list(mean_ci(ap[0])) and record.adversarial_ci == list(mean_ci(ap[1]))
    assert record.ci_resamples == 10000 and record.ci_level == 0.95
    stored = AttackRecord.from_json(json.loads(files.metrics.read_text()))
    assert (stored.benign_ci, stored.adversarial_ci) == (record.benign_ci, record.adversarial_ci)
    if targeted:  # the benign row is the benign t-MAP's (target labels), not the benign mAP's
        assert ap[0].mean() == pytest.approx(record.benign_tmap)


def test_saat_evaluate_prints_the_interval_of_its_map(toy_run, tmp_path, capsys):
    import shutil

    from saat.cli import main
    from saat.retrieval import format_ci

    run = Path(shutil.copytree(toy_run, tmp_path / "run"))  # evaluate rewrites metrics.json: a copy of the run
    assert main(["evaluate", str(run), "--device", "cpu", "--num-workers", "0"]) == 0
    out = capsys.readouterr().out
    metrics = json.loads(RunDir(run).metrics.read_text())
    lo, hi = metrics["mAP_ci"]
    assert f"mAP@{metrics['topk']} {metrics['mAP']:.4f} [{lo:.3f}, {hi:.3f}] (random ranking" in out, out
    assert format_ci(metrics["mAP"], metrics["mAP_ci"], digits=4) in out
