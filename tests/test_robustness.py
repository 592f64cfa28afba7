"""The robustness evaluation (docs/robustness.md): APGD, the per-query worst case over the ensemble, the sanity
flags on a plain and on a gradient-masked model, the adaptive (BPDA) and transfer evaluations, resume."""

import importlib
import json

import numpy as np
import pytest
import torch
from torch import nn

from saat.attacks import ATTACKS, create_attack
from saat.attacks.api import system_codes
from saat.attacks.generators import APGD, PGD, apgd_checkpoints
from saat.attacks.losses import mainstay_loss
from saat.retrieval import average_precision
from saat.robustness import (
    HardSign,
    Party,
    PriorRun,
    ensemble,
    evaluate,
    format_card,
    format_matrix,
    transfer_matrix,
)
from saat.robustness.evaluate import (
    EPS_MULTIPLES,
    PRESETS,
    PROFILE_HISTORY,
    check_overrides,
    monotone_raised,
    monotone_steps,
    profile_fingerprint,
    profile_version,
)

EPS = 16 / 255
# Cheap settings for the planted problem (every attack still does its own procedure).
FAST = {"hag": {"steps": 20}, "sdha": {"steps": 20}, "dhta": {"steps": 20}, "p2p": {"steps": 20},
        "tha": {"steps": 20, "proto_steps": 20}}


def run(p, model=None, **kwargs):
    options = {"db_codes": p.db_codes, "db_labels": p.db_labels, "train_codes": p.train_codes,
               "train_labels": p.train_labels, "eps": EPS, "topk": None, "preset": "quick", "overrides": FAST}
    return evaluate(model if model is not None else p.model, p.x, p.y, **{**options, **kwargs})


def test_apgd_checkpoints_follow_croce_and_hein():
    assert apgd_checkpoints(100) == [22, 41, 57, 70, 80, 87, 93, 99]
    for n in (1, 5, 10, 37):
        points = apgd_checkpoints(n)
        assert points == sorted(set(points)) and all(1 <= c < n for c in points)


def test_apgd_stays_in_the_ball_and_beats_pgd_with_a_bad_step(planted_retrieval):
    p = planted_retrieval
    m = p.model.encode(p.x).float()

    def objective(h, _x):  # per sample: agreement with the clean codes (-1 when every bit flipped)
        return (h * m).mean(1)

    adv = APGD(p.model, eps=EPS, steps=30, seed=0)(p.x, objective)
    assert float((adv - p.x).abs().max()) <= EPS + 1e-6 and float(adv.min()) >= 0 and float(adv.max()) <= 1
    tiny_step = PGD(p.model, eps=EPS, step=EPS / 100, steps=30, seed=0)(p.x, lambda h, x: objective(h, x).mean())
    with torch.no_grad():
        apgd_loss, pgd_loss = objective(p.model(adv), adv), objective(p.model(tiny_step), tiny_step)
        start = objective(p.model(p.x), p.x)
    assert bool((apgd_loss <= start + 1e-6).all())
    assert float(apgd_loss.mean()) < float(pgd_loss.mean()) - 0.1  # no hand-tuned step: it finds its own
    with pytest.raises(ValueError, match="per-sample objective"):
        APGD(p.model, eps=EPS, steps=3)(p.x, lambda h, x: objective(h, x).mean())
    per_row = mainstay_loss(p.model(p.x), -m, per_sample=True)
    with torch.no_grad():
        per_row, mean = mainstay_loss(p.model(p.x), -m, per_sample=True), mainstay_loss(p.model(p.x), -m)
    assert per_row.shape == (len(p.x),) and float(per_row.mean()) == pytest.approx(float(mean))


def test_worst_case_is_the_per_query_minimum_over_every_attack_run(planted_retrieval, tmp_path):
    p = planted_retrieval
    card, worst = run(p, checks=False, work_dir=tmp_path, return_codes=True)
    members = ensemble("quick")
    assert list(card["per_attack"]) == [m.name for m in members]
    aps = {}
    for m in members:
        for r in range(m.restarts):
            codes = np.load(tmp_path / f"{m.name}-r{r}.npy", allow_pickle=False)
            aps[(m.name, r)] = average_precision(codes, p.db_codes.numpy(), p.y.numpy(), p.db_labels.numpy(),
                                                 topk=None)
    clean = average_precision(p.codes(p.x), p.db_codes.numpy(), p.y.numpy(), p.db_labels.numpy(), topk=None)
    expected = np.minimum(clean, np.min(np.stack(list(aps.values())), axis=0))
    assert card["robust_map"] == pytest.approx(float(expected.mean()))
    worst_ap = average_precision(worst, p.db_codes.numpy(), p.y.numpy(), p.db_labels.numpy(), topk=None)
    np.testing.assert_allclose(worst_ap, expected)
    assert sum(row["wins"] for row in card["per_attack"].values()) + card["clean_wins"] == len(p.x)
    for m in members:
        assert card["per_attack"][m.name]["map"] == pytest.approx(float(aps[(m.name, 0)].mean()))
        row = card["per_attack"][m.name]
        if ATTACKS.get(m.attack).uses_gradients:
            assert row["backwards_per_query"] > 0
        else:  # the score-based member: its budget of forwards per query, no backward pass at all
            assert row["backwards_per_query"] == 0
            assert row["forwards_per_query"] == pytest.approx(row["settings"]["steps"], abs=1)
    assert card["robust_map"] <= card["best_single"]["map"] + 1e-12 < card["clean_map"]
    assert card["version"] == 1 and card["queries"] == len(p.x) and card["flags"] == {}
    assert card["profile"] == {"name": "quick", "version": profile_version("quick"),
                               "fingerprint": profile_fingerprint("quick")}
    # the overrides of the profile's settings are recorded (the targeted members' ones too: one mapping for both)
    assert card["overrides"] == FAST and card["per_attack"]["hag"]["settings"]["steps"] == FAST["hag"]["steps"]


def test_a_seed_free_member_takes_an_earlier_run_of_what_it_would_compute(planted_retrieval):
    """HAG run before on the same queries with the member's settings (as `saat attack` and a grid's attack cells run
    it) stands for the card's HAG member: the same card, no pass spent on it. A run of other settings, batch size
    or targeting, a seeded attack's run or an adaptive card attack again."""
    p = planted_retrieval
    cheap = {**FAST, "mainstay": {"steps": 5}, "cgat": {"steps": 5}, "square": {"steps": 20}}  # the others: quicker

    def card(model=None, **kwargs):
        return run(p, model, checks=False, overrides=cheap, **kwargs)

    base = card()
    hag_settings = {**ATTACKS.get("hag").defaults, **FAST["hag"], "eps": EPS}
    earlier = create_attack("hag", p.model, **hag_settings)(p.x, p.y)
    codes = system_codes(p.model, earlier)

    def prior(**change):
        fields = {"attack": "hag", "targeted": False, "settings": hag_settings, "batch_size": 64, "codes": codes,
                  "source": "attacks/hag-earlier", **change}
        return [PriorRun(**fields)]

    result = card(prior=prior())
    row = result["per_attack"]["hag"]
    assert row["reused"] == "attacks/hag-earlier" and row["forwards_per_query"] == row["seconds"] == 0
    assert result["per_query"] == base["per_query"] and result["robust_map"] == base["robust_map"]
    assert ({k: v["map"] for k, v in result["per_attack"].items()}
            == {k: v["map"] for k, v in base["per_attack"].items()})
    assert "reused: attacks/hag-earlier" in format_card(result)
    assert result["forwards_per_query"] < base["forwards_per_query"]
    # the codes are what the card takes (not a run of its own): other codes give another figure
    flipped = card(prior=prior(codes=-codes))
    assert flipped["per_attack"]["hag"]["map"] != base["per_attack"]["hag"]["map"]
    # what computed something else is not taken
    for other in (prior(settings={**hag_settings, "steps": 21}), prior(batch_size=8), prior(targeted=True),
                  prior(attack="sdha")):
        assert "reused" not in card(prior=other)["per_attack"]["hag"], other[0]
    square = {**ATTACKS.get("square").defaults, **cheap["square"], "eps": EPS}
    assert "reused" not in card(prior=[PriorRun("square", False, square, 64, codes, "sq")])["per_attack"]["square"]
    assert "reused" not in card(HardSign(p.model), adaptive=True, prior=prior())["per_attack"]["hag"]
    with pytest.raises(ValueError, match="attacks/hag-earlier: its codes must be ±1"):
        card(prior=prior(codes=np.zeros_like(codes)))


def test_overrides_name_only_attacks_and_settings_of_the_profile(planted_retrieval):
    assert check_overrides({"square": {"steps": 3}, "dhta": {"steps": 2}}, "quick") == {"square": {"steps": 3},
                                                                                        "dhta": {"steps": 2}}
    assert check_overrides(None, "standard") == {}
    with pytest.raises(ValueError, match="'sqaure' is not an attack of the quick preset's ensembles; their attacks: "
                                         "cgat, dhta, hag, mainstay, p2p, sdha, square, tha"):
        check_overrides({"sqaure": {"steps": 3}}, "quick")
    with pytest.raises(ValueError, match=r"attack 'square': unknown setting\(s\) stepz; its settings: eps, p_init"):
        check_overrides({"square": {"stepz": 3}}, "quick")
    with pytest.raises(ValueError, match="attack 'square': steps must be an integer \\(default 1000\\), got 'fast'"):
        check_overrides({"square": {"steps": "fast"}}, "quick")
    with pytest.raises(ValueError, match="'square' needs a mapping of settings, got 3"):
        check_overrides({"square": 3}, "quick")
    p = planted_retrieval
    with pytest.raises(ValueError, match="'prosgan' is not an attack"):  # before any attack runs
        run(p, overrides={"prosgan": {"steps": 1}}, checks=False)


def test_an_interrupted_evaluation_resumes_from_its_work_dir(planted_retrieval, tmp_path, monkeypatch):
    p = planted_retrieval
    first = run(p, checks=False, work_dir=tmp_path)
    (tmp_path / "sdha-r0.npy").unlink()  # as if killed during the last attack

    calls = []
    from saat.attacks.api import TensorAttack

    original = TensorAttack.__call__

    def counting(self, *args, **kwargs):
        calls.append(self.name)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(TensorAttack, "__call__", counting)
    second = run(p, checks=False, work_dir=tmp_path)
    assert set(calls) == {"sdha"}
    assert second["robust_map"] == first["robust_map"]
    assert all(second["per_attack"][n][k] == first["per_attack"][n][k] for n in first["per_attack"]
               for k in ("map", "wins", "settings", "backwards_per_query"))
    changed = run(p, checks=False, work_dir=tmp_path, eps=8 / 255)  # other settings never reuse a result
    assert {m.attack for m in ensemble("quick")} <= set(calls) and changed["eps"] == 8 / 255


def test_a_plain_model_raises_no_flag(planted_retrieval):
    card = run(planted_retrieval)
    assert card["flags_raised"] == [], format_card(card)
    assert set(card["flags"]) == {"monotone", "collapse", "converged", "noise", "zero-gradient", "stochastic",
                                  "black-box"}
    assert [c["eps"] for c in card["eps_curve"]] == pytest.approx([0, EPS / 4, EPS / 2, EPS, 2 * EPS, 4 * EPS])
    assert card["eps_curve"][0]["map"] == card["clean_map"]
    assert card["robust_map"] < card["clean_map"] - 0.3
    assert all(isinstance(f["detail"], str) and f["detail"] for f in card["flags"].values())


def test_an_eps_attack_that_stops_short_raises_the_monotone_flag(planted_retrieval, monkeypatch):
    ev = importlib.import_module("saat.robustness.evaluate")  # the module (the package exports its function)
    original = ev._run_attack

    def stopping_short(problem, attack, settings, eps, seed, *, key=None, **kwargs):
        codes, info, images = original(problem, attack, settings, eps, seed, key=key, **kwargs)
        if key == "mainstay-apgd-r0":  # the ensemble's mainstay attack leaves every query's codes as they were
            codes = problem.encode(problem.x)
        return codes, info, images

    monkeypatch.setattr(ev, "_run_attack", stopping_short)
    card = run(planted_retrieval)
    curve = [point["map"] for point in card["eps_curve"]]
    assert curve[3] == pytest.approx(card["clean_map"]) and curve[2] < curve[3] - 0.1  # eps/2 does better than eps
    assert "monotone" in card["flags_raised"], format_card(card)
    assert card["flags"]["monotone"]["worst_increase_ci"][0] > 0
    assert curve[4] <= curve[3] and curve[5] <= curve[4]  # above eps a point keeps what its start found


def test_a_curve_point_above_eps_keeps_what_its_start_found(planted_retrieval, monkeypatch):
    ev = importlib.import_module("saat.robustness.evaluate")
    original = ev._run_attack

    def failing_continuation(problem, attack, settings, eps, seed, *, key=None, **kwargs):
        codes, info, images = original(problem, attack, settings, eps, seed, key=key, **kwargs)
        if key == "curve-2":  # the continuation at 2 eps ends back at the clean codes
            codes = problem.encode(problem.x)
        return codes, info, images

    monkeypatch.setattr(ev, "_run_attack", failing_continuation)
    card = run(planted_retrieval)
    curve = [point["map"] for point in card["eps_curve"]]
    assert curve[3] < card["clean_map"] - 0.3
    assert curve[4] == pytest.approx(curve[3])  # the eps images lie in the 2 eps ball: their result counts
    assert "monotone" not in card["flags_raised"], format_card(card)


def test_a_masked_model_looks_robust_and_is_caught_then_broken(planted_retrieval):
    p = planted_retrieval
    plain = run(p, checks=False)
    masked_model = HardSign(p.model)
    masked = run(p, masked_model)
    assert masked["clean_map"] == pytest.approx(plain["clean_map"], abs=0.05)
    gradient_based = [m.name for m in ensemble("quick") if ATTACKS.get(m.attack).uses_gradients]
    # it looks robust to every gradient attack ...
    assert min(masked["per_attack"][n]["map"] for n in gradient_based) > plain["robust_map"] + 0.3
    # ... but not to the black-box member, so the worst case holds without --adaptive ...
    assert masked["robust_map"] < plain["robust_map"] + 0.1 and masked["best_single"]["attack"] == "square"
    # ... and the card says why not to trust the gradient attacks
    assert {"collapse", "zero-gradient", "black-box"} <= set(masked["flags_raised"])
    assert "black-box" not in run(p)["flags_raised"]  # not raised on the plain model
    adaptive = run(p, masked_model, adaptive=True, checks=False)
    assert adaptive["robust_map"] < plain["robust_map"] + 0.1
    transfer = run(p, masked_model, surrogate=(p.model, p.train_codes))
    assert transfer["flags"]["transfer"]["raised"] and transfer["transfer"]["map"] < plain["robust_map"] + 0.1
    with pytest.raises(ValueError, match="bpda"):
        run(p, adaptive=True)


def test_a_randomised_model_is_flagged_stochastic(planted_retrieval):
    p = planted_retrieval

    class Noisy(nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x, alpha=1.0):
            return self.inner(x + 0.2 * torch.randn_like(x), alpha=alpha)

    torch.manual_seed(0)
    card = run(p, Noisy(p.model))
    assert card["flags"]["stochastic"]["raised"] and "EOT" in card["flags"]["stochastic"]["detail"]


def test_targeted_worst_case_is_the_highest_t_ap(planted_retrieval, tmp_path):
    p = planted_retrieval
    card = run(p, targeted=True, target_labels=p.targets, checks=False, work_dir=tmp_path)
    assert card["metric"] == "t-MAP" and list(card["per_attack"]) == ["mainstay-apgd", "dhta", "p2p", "tha",
                                                                             "square"]
    assert card["robust_map"] >= max(row["map"] for row in card["per_attack"].values()) - 1e-12
    assert card["robust_map"] > card["clean_map"] + 0.5
    with pytest.raises(ValueError, match="target_labels"):
        run(p, targeted=True)


def test_monotone_steps_give_each_rise_with_its_paired_interval_over_the_queries():
    rng = np.random.default_rng(0)
    base = rng.uniform(0.2, 0.8, 100)
    # untargeted: mAP falls along the curve except one step where every query rises by 0.05 (decided) ...
    curve = [base + 0.6, base + 0.2, base, base + 0.05, base - 0.1]
    steps = monotone_steps(curve, targeted=False)
    assert [round(st["rise"], 6) for st in steps] == [-0.4, -0.2, 0.05, -0.15]
    assert steps[2]["ci"] == pytest.approx([0.05, 0.05])  # every query moved alike: no doubt
    assert steps[0]["ci"][1] == pytest.approx(-0.4)
    assert monotone_raised(steps)
    assert not monotone_raised(monotone_steps([base + 0.6, base + 0.2, base, base + 0.005], targeted=False))
    # ... a rise of 0.05 in the mean carried by two queries of twenty is not decided at 95 %
    twenty = base[:20]
    noisy = twenty.copy()
    noisy[:2] += 0.5
    (step,) = monotone_steps([twenty, noisy], targeted=False)
    assert step["rise"] == pytest.approx(0.05) and step["ci"][0] <= 0 < step["ci"][1]
    assert not monotone_raised([step])
    # targeted: t-MAP must not fall as eps grows
    (step,) = monotone_steps([base, base - 0.05], targeted=True)
    assert step["rise"] == pytest.approx(0.05) and step["ci"][0] == pytest.approx(0.05) and monotone_raised([step])


def test_the_card_is_json_and_reads_as_text(planted_retrieval):
    card = run(planted_retrieval, checks=False)
    assert json.loads(json.dumps(card)) == card
    text = format_card(card)
    assert "worst case" in text and "mainstay-apgd" in text


def test_transfer_matrix_rows_crafted_on_columns_evaluated_on(planted_retrieval, tmp_path):
    p = planted_retrieval
    plain, masked = p.model, HardSign(p.model)
    parties = [Party(name, model, p.train_codes, p.train_labels, p.db_codes, p.db_labels)
               for name, model in (("plain", plain), ("masked", masked))]
    settings = {"step": 4 / 255, "steps": 20}
    result = transfer_matrix(parties, p.x, p.y, eps=EPS, topk=None, settings=settings, work_dir=tmp_path)
    (a_a, a_m), (m_a, m_m) = result["matrix"]
    assert result["models"] == ["plain", "masked"] and len(result["clean"]) == 2
    assert a_a < result["clean"][0] - 0.3  # white box on the plain model
    assert m_m > result["clean"][1] - 0.05  # the masked model's own gradients lead nowhere ...
    assert a_m < result["clean"][1] - 0.3  # ... but queries crafted on the plain model carry over
    assert m_a > a_a  # the masked model's zero-gradient queries are no attack on the plain one
    again = transfer_matrix(parties, p.x, p.y, eps=EPS, topk=None, settings=settings, work_dir=tmp_path)
    assert again["matrix"] == result["matrix"] and again["craft_seconds"] == result["craft_seconds"]  # resumed
    assert "crafted on" in format_matrix(result)
    with pytest.raises(ValueError, match="at least two"):
        transfer_matrix(parties[:1], p.x, p.y, eps=EPS, topk=None)


def test_an_amp_card_is_recorded_and_never_resumes_a_float32_one(planted_retrieval, tmp_path, monkeypatch):
    p = planted_retrieval
    first = run(p, checks=False, work_dir=tmp_path)
    assert "amp" not in first
    calls = []
    from saat.attacks.api import TensorAttack

    original = TensorAttack.__call__

    def counting(self, *args, **kwargs):
        calls.append((self.name, self.amp))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(TensorAttack, "__call__", counting)
    amp = run(p, checks=False, work_dir=tmp_path, amp=True)
    assert amp["amp"] == "bf16"
    assert {name for name, _ in calls} == {m.attack for m in ensemble("quick")} and all(a for _, a in calls)
    assert all(json.loads(f.read_text())["settings"]["amp"] == "bf16" for f in tmp_path.glob("*-r0.json"))
    calls.clear()
    assert run(p, checks=False, work_dir=tmp_path, amp=True)["robust_map"] == amp["robust_map"]
    assert calls == []  # an AMP card resumes its own AMP results


def test_a_profile_that_changes_gets_a_new_version():
    """Each robustness preset is a versioned profile: its current fingerprint is the one recorded for its current
    version, and no two versions share one (a change of settings is a new version, not an edit of an old entry)."""
    assert set(PROFILE_HISTORY) == set(PRESETS)
    for preset, history in PROFILE_HISTORY.items():
        assert profile_version(preset) == max(history)
        assert profile_fingerprint(preset) == history[profile_version(preset)], (
            f"the {preset!r} profile's settings changed: record them as version {profile_version(preset) + 1} in "
            "saat.robustness.evaluate.PROFILE_HISTORY (with the new fingerprint)")
        assert len(set(history.values())) == len(history)


def test_the_fingerprint_sees_every_kind_of_change(monkeypatch):
    import importlib

    from saat.attacks import ATTACKS

    ev = importlib.import_module("saat.robustness.evaluate")  # the package exports a function of that name

    base = {p: profile_fingerprint(p) for p in PRESETS}
    assert base["quick"] != base["standard"]
    monkeypatch.setitem(ev._THA_QUICK, "proto_steps", 999)  # a member's setting
    assert profile_fingerprint("quick") != base["quick"] and profile_fingerprint("standard") == base["standard"]
    monkeypatch.undo()
    monkeypatch.setitem(ATTACKS.get("hag").defaults, "steps", 1999)  # an attack default the standard preset keeps
    assert profile_fingerprint("standard") != base["standard"]
    monkeypatch.undo()
    monkeypatch.setattr(ev, "EPS_MULTIPLES", (0.0, 1.0))  # a sanity check's constant
    assert profile_fingerprint("quick") != base["quick"]
    monkeypatch.undo()
    assert {p: profile_fingerprint(p) for p in PRESETS} == base


def test_the_card_keeps_its_per_query_aps_and_the_intervals_of_its_figures(planted_retrieval, tmp_path):
    from saat.retrieval import mean_ci

    p = planted_retrieval
    card = run(p, checks=False, work_dir=tmp_path)
    db, y, db_y = p.db_codes.numpy(), p.y.numpy(), p.db_labels.numpy()
    clean = average_precision(p.codes(p.x), db, y, db_y, topk=None)
    np.testing.assert_allclose(card["per_query"]["clean"], clean)
    worst = np.array(card["per_query"]["worst"])
    assert worst.shape == (len(p.x),) and worst.mean() == pytest.approx(card["robust_map"])
    assert (worst <= clean + 1e-12).all()  # the clean query is a candidate of every worst case
    assert card["clean_map_ci"] == list(mean_ci(clean)) and card["robust_map_ci"] == list(mean_ci(worst))
    assert card["ci"] == {"level": 0.95, "resamples": 10000}
    for name, row in card["per_attack"].items():
        best = np.load(tmp_path / f"{name}-r0.npy", allow_pickle=False)  # quick preset: one restart each
        assert row["map_ci"] == list(mean_ci(average_precision(best, db, y, db_y, topk=None))), name
    assert card["best_single"]["map_ci"] == card["per_attack"][card["best_single"]["attack"]]["map_ci"]
    text = format_card(card)
    lo, hi = card["robust_map_ci"]
    assert f"worst case {card['robust_map']:.3f} [{lo:.3f}, {hi:.3f}]" in text
    older = {k: v for k, v in card.items() if not k.endswith("_ci")}  # a card written before intervals
    older["best_single"] = {"attack": card["best_single"]["attack"], "map": card["best_single"]["map"]}
    older["per_attack"] = {n: {k: v for k, v in row.items() if k != "map_ci"} for n, row in card["per_attack"].items()}
    assert f"worst case {card['robust_map']:.3f}   best" in format_card(older)


def test_every_transfer_cell_has_its_interval(planted_retrieval, tmp_path):
    from saat.attacks.api import system_codes
    from saat.retrieval import mean_ci

    p = planted_retrieval
    parties = [Party(name, model, p.train_codes, p.train_labels, p.db_codes, p.db_labels)
               for name, model in (("plain", p.model), ("masked", HardSign(p.model)))]
    result = transfer_matrix(parties, p.x, p.y, eps=EPS, topk=None, settings={"step": 4 / 255, "steps": 5})
    clean = average_precision(system_codes(p.model, p.x), p.db_codes.numpy(), p.y.numpy(), p.db_labels.numpy(),
                              topk=None)
    assert result["clean_ci"][0] == list(mean_ci(clean))
    assert len(result["matrix_ci"]) == 2 and all(len(row) == 2 for row in result["matrix_ci"])
    for row, intervals in zip(result["matrix"], result["matrix_ci"], strict=True):
        for value, (lo, hi) in zip(row, intervals, strict=True):
            assert lo <= value <= hi
    lo, hi = result["matrix_ci"][0][0]
    assert f"{result['matrix'][0][0]:.3f} [{lo:.3f}, {hi:.3f}]" in format_matrix(result)
    older = {k: v for k, v in result.items() if k not in ("clean_ci", "matrix_ci")}
    assert "[" not in format_matrix(older).split("\n", 1)[1]  # a matrix written before intervals: values alone


def test_a_warm_start_replaces_the_random_start(planted_retrieval):
    p = planted_retrieval
    knowledge = {"train_codes": p.train_codes, "train_labels": p.train_labels}
    far = (p.x + 0.5).clamp(0, 1)  # outside the ball: projected onto it
    still = create_attack("mainstay", p.model, eps=EPS, steps=0, generator="apgd", random_start=False, **knowledge)
    expected = torch.minimum(torch.maximum(far, p.x - EPS), p.x + EPS).clamp(0, 1)
    torch.testing.assert_close(still(p.x, p.y, start=far), expected)
    moved = create_attack("mainstay", p.model, eps=EPS, steps=5, generator="apgd", random_start=False, **knowledge)
    assert not torch.equal(moved(p.x, p.y, start=far), moved(p.x, p.y))  # the start is used
    with pytest.raises(ValueError, match="random_start=False"):
        create_attack("mainstay", p.model, eps=EPS, steps=2, **knowledge)(p.x, p.y, start=far)
    with pytest.raises(ValueError, match="cannot start from given images"):
        create_attack("square", p.model, eps=EPS, steps=2, **knowledge)(p.x, p.y, start=far)


def test_the_checks_continue_earlier_runs_instead_of_starting_over(planted_retrieval, tmp_path):
    """The eps curve, collapse and converged checks cost half the iterations for each curve point and the collapse,
    and one run's worth for the converged check (its first run continued), counted in backward passes per query."""
    p = planted_retrieval
    without = run(p, checks=False)
    card = run(p, work_dir=tmp_path)
    steps = ensemble("quick")[0].settings["steps"]
    strongest = next(m for m in ensemble("quick") if m.name == card["flags"]["converged"]["attack"])
    cls = ATTACKS.get(strongest.attack)
    strongest_steps = {**strongest.settings, **FAST.get(strongest.attack, {})}.get("steps",
                                                                                    cls.defaults.get("steps"))
    converged = strongest_steps if cls.warm_start else 2 * strongest_steps if cls.uses_gradients else 0
    curve_points = len([m for m in EPS_MULTIPLES if m not in (0, 1)])
    expected = curve_points * (steps // 2) + steps // 2 + converged + 1  # + the zero-gradient check's pass
    assert card["backwards_per_query"] - without["backwards_per_query"] == pytest.approx(expected)
    # an evaluation interrupted during its checks crafts the images they continue from again: the same card
    for key in ("curve-4", "curve-0.25", "collapse", f"converged-{strongest.name}"):
        (tmp_path / f"{key}.npy").unlink()
    again = run(p, work_dir=tmp_path)
    assert again["eps_curve"] == card["eps_curve"]
    assert {k: v["raised"] for k, v in again["flags"].items()} == {k: v["raised"] for k, v in card["flags"].items()}
    assert again["flags"]["collapse"]["map"] == card["flags"]["collapse"]["map"]
    assert again["flags"]["converged"]["moved"] == card["flags"]["converged"]["moved"]


def test_a_card_is_handed_only_the_run_results_made_on_its_checkpoint_system_and_queries(tmp_path):
    """saat robustness passes a run's attack results as prior runs only when they attacked this checkpoint, through
    the same evaluated system, on the card's queries in the same order (targeted: with the same seed's targets)."""
    from saat.pipelines.robustness import RobustnessConfig, prior_runs

    picked = np.array([4, 1, 7])
    codes = np.ones((3, 8), np.int8)

    def result(name, attack="hag", targeted=False, checkpoint="abc", queries=picked, **settings):
        folder = tmp_path / "attacks" / name
        folder.mkdir(parents=True)
        np.save(folder / "adv_codes.npy", codes)
        np.save(folder / "query_indices.npy", queries)
        (folder / "metrics.json").write_text(json.dumps({
            "attack": attack, "targeted": targeted, "checkpoint": checkpoint,
            "settings": {"batch_size": 32, "seed": 0, "defense": None, "adaptive": False, "steps": 100,
                         **settings}}))

    result("good")
    result("sdha-good", attack="sdha")
    result("other-checkpoint", checkpoint="def")
    result("other-queries", queries=picked[::-1])
    result("purified", defense="comdefend")
    result("adaptive", adaptive=True)
    result("amp", precision="bf16")
    result("seeded", attack="mainstay")
    result("targeted", attack="sdha", targeted=True)
    (tmp_path / "attacks" / "unfinished").mkdir()  # no metrics.json: not a result
    found = prior_runs(tmp_path, "abc", picked, RobustnessConfig(preset="quick"), "")
    assert sorted(p.source for p in found) == ["attacks/good", "attacks/sdha-good"]
    assert all(p.batch_size == 32 and not p.targeted and p.codes.shape == (3, 8) for p in found)
    targeted = prior_runs(tmp_path, "abc", picked, RobustnessConfig(preset="quick", targeted=True), "")
    assert [p.source for p in targeted] == ["attacks/targeted"]
    assert prior_runs(tmp_path, "abc", picked, RobustnessConfig(preset="quick", targeted=True, seed=1), "") == []
    # behind an input defense nothing is reused (a record names the checkpoint, not the purifier's weights)
    assert prior_runs(tmp_path, "abc", picked, RobustnessConfig(preset="quick", defense="comdefend"), "") == []
