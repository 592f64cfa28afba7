"""One settings resolver (saat.config.resolve_settings) for training, attacks, defenses and ComDefend, and command
lines that are checked against the settings dataclasses, so a new setting is one field plus one flag."""

import dataclasses

import pytest

from saat.attacks import ATTACKS, TABLE1_ATTACKS, list_attacks
from saat.cli import build_parser
from saat.config import DEMO_EPS, TrainConfig, check_settings, class_presets, resolve_settings
from saat.defenses import DEFENSES, list_defenses
from saat.defenses.comdefend import DEFAULTS as COMDEFEND_DEFAULTS
from saat.defenses.comdefend import DEMO_DEFAULTS as COMDEFEND_DEMO
from saat.pipelines.attack import AttackConfig
from saat.pipelines.defend import DefenseConfig
from saat.pipelines.robustness import RobustnessConfig

# Settings that only a --config file or the Python API sets (each deliberately has no flag).
CONFIG_ONLY = {
    TrainConfig: {"method_hparams", "lr_milestones", "lr_gamma", "eval_batch_size", "log_every"},
    AttackConfig: {"options"},  # from repeated --option KEY=VALUE
    DefenseConfig: {"options", "train_limit"},
    RobustnessConfig: {"options"},  # from repeated --option ATTACK.KEY=VALUE
}
COMMANDS = {TrainConfig: "train", AttackConfig: "attack", DefenseConfig: "defend", RobustnessConfig: "robustness"}


def command_dests(command: str) -> set[str]:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices[command]
    return {a.dest for a in sub._actions}


@pytest.mark.parametrize("config_cls", list(COMMANDS))
def test_every_setting_has_a_flag_or_is_config_only(config_cls):
    fields = {f.name for f in dataclasses.fields(config_cls)}
    dests = command_dests(COMMANDS[config_cls])
    missing = fields - dests - CONFIG_ONLY[config_cls]
    assert not missing, f"saat {COMMANDS[config_cls]} has no flag for {sorted(missing)}"
    assert CONFIG_ONLY[config_cls] <= fields  # the exclusions name real fields


def test_layers_in_order_and_one_unknown_key_check():
    defaults = {"eps": 8 / 255, "steps": 100, "lr": 0.01}
    presets = class_presets(defaults, {"steps": 50})
    assert presets["demo"] == {"eps": DEMO_EPS, "steps": 50}
    s = resolve_settings(defaults, what="attack 'x'", presets=presets, preset="demo", file_values={"lr": 0.1},
                         explicit={"steps": 7, "eps": None})
    assert s == {"eps": DEMO_EPS, "steps": 7, "lr": 0.1}  # None = not given: the preset's eps stays
    with pytest.raises(ValueError, match="--num-iters does not apply to attack 'x'; its settings: eps, lr, steps"):
        resolve_settings(defaults, what="attack 'x'", explicit={"num_iters": 3})
    with pytest.raises(ValueError, match=r"attack 'x' \(--config\): unknown setting\(s\) stepz"):
        resolve_settings(defaults, what="attack 'x'", file_values={"stepz": 3})
    with pytest.raises(ValueError, match="unknown preset 'fast'"):
        resolve_settings(defaults, what="attack 'x'", preset="fast")
    with pytest.raises(ValueError, match="--lambda does not apply"):
        check_settings({"lambda_": 1}, {"mu"}, "defense 'cgat'", as_flags=True)


@pytest.mark.parametrize("name", list_attacks())
def test_every_attack_presets_only_name_its_own_settings(name):
    cls = ATTACKS.get(name)
    for preset in ("paper", "demo"):
        resolve_settings(cls.defaults, what=name, presets=class_presets(cls.defaults, cls.demo_defaults),
                         preset=preset)


@pytest.mark.parametrize("name", list_defenses())
def test_every_defense_presets_only_name_its_own_settings(name):
    cls = DEFENSES.get(name)
    s = resolve_settings(cls.defaults, what=name, presets=class_presets(cls.defaults, cls.demo_defaults),
                         preset="demo")
    assert s["eps"] == DEMO_EPS


def test_comdefend_settings_resolve_like_the_others():
    demo = resolve_settings(COMDEFEND_DEFAULTS, what="defense 'comdefend'",
                            presets=class_presets(COMDEFEND_DEFAULTS, COMDEFEND_DEMO), preset="demo")
    assert (demo["epochs"], demo["width"], demo["lr"]) == (2, 0.25, 1e-4) and "eps" not in demo
    with pytest.raises(ValueError, match="--depth does not apply to defense 'comdefend'"):
        resolve_settings(COMDEFEND_DEFAULTS, what="defense 'comdefend'", explicit={"depth": 3})


def test_the_table_one_attacks_are_registered_and_listed_once():
    assert set(TABLE1_ATTACKS[False]) | set(TABLE1_ATTACKS[True]) <= set(list_attacks())
    from saat.report import build
    from saat.reproduce import demo

    assert demo.UNTARGETED is TABLE1_ATTACKS[False] and demo.TARGETED is TABLE1_ATTACKS[True]
    assert build.UNTARGETED_COLUMNS is TABLE1_ATTACKS[False] and build.TARGETED_COLUMNS is TABLE1_ATTACKS[True]
