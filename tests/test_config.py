"""Config resolution: defaults = paper preset, demo preset for demo datasets, YAML, then flags."""

import pytest

from saat.config import PRESETS, TrainConfig, resolve_config, save_config
from saat.pipelines.loop import epoch_milestones


def test_paper_defaults_match_spec_section_4():
    cfg = resolve_config(TrainConfig, {"dataset": "FLICKR-25K"})
    assert (cfg.method, cfg.backbone, cfg.bits, cfg.optimizer, cfg.lr, cfg.momentum, cfg.weight_decay,
            cfg.epochs, cfg.batch_size, cfg.preset) == ("dph", "alexnet", 32, "sgd", 0.01, 0.9, 5e-4, 100, 32, "paper")


def test_demo_datasets_get_the_demo_preset_and_flags_win(tmp_path):
    cfg = resolve_config(TrainConfig, {"dataset": "fashion-mosaic"})
    assert cfg.preset == "demo" and cfg.backbone == PRESETS["demo"]["backbone"]
    yaml_file = tmp_path / "c.yaml"
    yaml_file.write_text("epochs: 7\nbits: 16\nlr: 0.5\n")
    cfg = resolve_config(TrainConfig, {"dataset": "fashion-mosaic", "bits": 48, "lr": None}, yaml_file)
    assert (cfg.epochs, cfg.bits, cfg.lr) == (7, 48, 0.5)  # YAML over preset, flags over YAML, None = unset
    cfg = resolve_config(TrainConfig, {"dataset": "fashion-mosaic", "preset": "paper"})
    assert cfg.backbone == "alexnet"


def test_config_yaml_roundtrip_and_errors(tmp_path):
    cfg = resolve_config(TrainConfig, {"dataset": "CIFAR-10", "seed": 3})
    save_config(cfg, tmp_path / "config.yaml")
    assert resolve_config(TrainConfig, {}, tmp_path / "config.yaml") == cfg
    bad = tmp_path / "bad.yaml"
    bad.write_text("epochz: 3\n")
    with pytest.raises(ValueError, match="unknown setting\\(s\\) epochz"):
        resolve_config(TrainConfig, {}, bad)
    bad.write_text("- 1\n- 2\n")
    with pytest.raises(ValueError, match="must hold a mapping"):
        resolve_config(TrainConfig, {}, bad)
    with pytest.raises(FileNotFoundError, match="--config: file not found"):
        resolve_config(TrainConfig, {}, tmp_path / "nope.yaml")
    with pytest.raises(ValueError, match="unknown preset"):
        resolve_config(TrainConfig, {"preset": "fast"})


@pytest.mark.parametrize("epochs, expected", [(100, [33, 66]), (3, [1, 2]), (2, [1]), (1, []), (0, [])])
def test_lr_milestones_work_for_any_epoch_count(epochs, expected):
    assert epoch_milestones(epochs, None) == expected
