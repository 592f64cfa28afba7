"""The name -> class registries (saat.utils.registry) and what a new attack gets from them: its name, a place in
``list_attacks()``, ``create_attack`` and the registry-driven tests, and the one-line error for a missing input —
from one file with one decorated class (docs/architecture.md#where-new-code-goes)."""

import pkgutil
import sys

import pytest

import saat.attacks
from saat.attacks import ATTACKS, AttackMethod, create_attack, list_attacks
from saat.utils.registry import Registry

# ------------------------------------------------------------------------------------------------ Registry itself


def test_a_class_without_its_own_name_is_named_by_its_first_registered_name():
    reg = Registry("thing")

    class Base:
        name = "base"

    @reg.register("First", "second")
    class Child(Base):
        pass

    assert Child.name == "first" and Base.name == "base"  # set on the class, not on the one it inherits from
    assert reg.get("SECOND") is Child and reg.names() == ["first", "second"]


def test_an_explicit_name_must_be_one_the_class_is_registered_under():
    reg = Registry("thing")

    @reg.register("pros-gan-like", "alias")
    class Fine:
        name = "alias"  # an alias is fine

    assert Fine.name == "alias"
    with pytest.raises(ValueError, match="thing class .*Wrong sets name = 'other' but is registered as 'wrong'"):
        @reg.register("wrong")
        class Wrong:
            name = "other"
    assert "wrong" not in reg  # nothing half-registered


def test_factories_and_classes_without_a_name_are_stored_as_they_are():
    reg = Registry("factory")

    @reg.register("make")
    def make():
        return 1

    @reg.register("plain")
    class Plain:
        pass

    assert not hasattr(make, "name") and not hasattr(Plain, "name") and reg.get("make")() == 1


def test_duplicates_are_refused_whole_and_unregister_removes_the_aliases():
    reg = Registry("thing")
    reg.register("a", "b")(type("A", (), {"name": "a"}))
    with pytest.raises(KeyError, match="'b' is registered twice"):
        reg.register("c", "b")(type("C", (), {}))
    assert reg.names() == ["a", "b"]  # "c" was not added either
    reg.unregister("B")
    assert reg.names() == []
    with pytest.raises(ValueError, match="unknown thing 'a'"):
        reg.unregister("a")


def test_every_registry_of_the_package_keeps_names_and_keys_in_step():
    from saat.attacks import GENERATORS
    from saat.defenses import DEFENSES
    from saat.hashing import METHODS

    for reg in (ATTACKS, GENERATORS, DEFENSES, METHODS):
        for key in reg.names():
            assert reg.get(key).name in reg.names(), (reg.kind, key)


# ------------------------------------------------------------------------------------------- a new attack, in a test


@pytest.fixture
def toy_attack():
    """A throwaway targeted attack that needs the database labels: registered for one test, then removed."""

    @ATTACKS.register("toy-nudge", "nudge")
    class ToyNudge(AttackMethod):
        """Moves every pixel by +eps (targeted only; it reads db_labels, which it declares)."""

        untargeted = False
        needs_targeted = frozenset({"db_labels"})
        defaults = {"eps": 8 / 255}
        fast_settings = {}

        def attack(self, x, y, target):
            assert self.ctx.db_labels.shape[0] > 0
            return (x + self.settings["eps"]).clamp(0, 1)

    try:
        yield ToyNudge
    finally:
        ATTACKS.unregister("toy-nudge")
    assert "toy-nudge" not in list_attacks() and "nudge" not in ATTACKS


def test_a_new_attack_class_is_named_listed_and_built_by_name(toy_attack, planted_retrieval):
    p = planted_retrieval
    assert toy_attack.name == "toy-nudge"
    assert "toy-nudge" in list_attacks() and "toy-nudge" in list_attacks(targeted=True)
    assert "toy-nudge" not in list_attacks(targeted=False) and "nudge" not in list_attacks()
    atk = create_attack("nudge", p.model, eps=2 / 255, db_labels=p.db_labels)
    adv = atk(p.x, p.y, target_labels=p.targets)
    assert atk.name == "toy-nudge" and float((adv - p.x).abs().max()) <= 2 / 255 + 1e-6


def test_a_new_attack_without_a_declared_input_gets_the_one_line_error(toy_attack, planted_retrieval):
    p = planted_retrieval
    with pytest.raises(ValueError, match="^the targeted toy-nudge attack needs db_labels: pass db_labels=... to "
                                         "create_attack$"):
        create_attack("toy-nudge", p.model, num_classes=4)(p.x, p.y, target_labels=p.targets)
    with pytest.raises(ValueError, match="the toy-nudge attack is targeted only: pass target_labels"):
        create_attack("toy-nudge", p.model, db_labels=p.db_labels)(p.x, p.y)


def test_an_attack_needing_something_no_attacker_is_given_is_refused_when_defined():
    with pytest.raises(TypeError, match="needs query_codes: not something an attacker can be given"):
        class Greedy(AttackMethod):  # noqa: F841
            needs_untargeted = frozenset({"train_codes", "query_codes"})


def test_a_misnamed_attack_is_refused_at_registration():
    with pytest.raises(ValueError, match="attack class .*Misnamed sets name = 'other'"):
        @ATTACKS.register("misnamed")
        class Misnamed(AttackMethod):
            name = "other"
    assert "misnamed" not in ATTACKS


def test_every_module_of_the_attacks_package_is_imported_with_it():
    """``import saat.attacks`` imports each of its public modules, so a new file's ``@ATTACKS.register`` runs
    without an edit of ``__init__.py`` (run alone, nothing else imports them)."""
    modules = [m.name for m in pkgutil.iter_modules(saat.attacks.__path__) if not m.name.startswith("_")]
    assert {"methods", "hag", "dhta", "tha"} <= set(modules)
    assert all(f"saat.attacks.{m}" in sys.modules for m in modules)
    defined_in = {ATTACKS.get(n).__module__ for n in list_attacks()}
    assert defined_in <= {f"saat.attacks.{m}" for m in modules}


def test_every_registered_attack_declares_what_it_runs_on():
    for name in list_attacks():
        cls = ATTACKS.get(name)
        assert cls.name == name and (cls.untargeted or cls.targeted), name
        assert isinstance(cls.needs_untargeted, frozenset) and isinstance(cls.needs_targeted, frozenset), name
        assert isinstance(cls.fast_settings, dict) and set(cls.fast_settings) <= set(cls.defaults), name
