"""saat.runs: the file names of a run directory and the attack-result record (schema, old files, bad files)."""

import json

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
