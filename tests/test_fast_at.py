"""Fast adversarial training (docs/defenses.md#fast-adversarial-training): the inner maximisers FGSM-RS, N-FGSM
and free training against their formulas, the replaying loop, the catastrophic-overfitting watch and what a run
does on a collapse."""

import json

import pytest
import torch

from saat.attacks.generators import PGD
from saat.attacks.losses import simple_loss
from saat.defenses import DEFENSES, create_defense, list_defenses
from saat.defenses.base import FAST_TRAINING_DEFAULTS
from saat.defenses.inner import NFGSM, FreeInner, make_inner
from saat.defenses.watch import CollapseWatch
from saat.pipelines.loop import run_epoch

EPS = 0.1


def _defense(planted, name="saat", **settings):
    return create_defense(name, planted.model, "csq", train_codes=planted.train_codes,
                          train_labels=planted.train_labels, db_labels=planted.db_labels, seed=3, eps=EPS,
                          **settings)


def _objective(planted):
    m = planted.train_codes[:1].expand(planted.x.shape[0], -1)
    return lambda h, _x: simple_loss(h, m)


def _grad(model, x, objective):
    x = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(objective(model(x), x), x)
    return g


@pytest.mark.parametrize("name", list_defenses())
def test_the_paper_preset_keeps_pgd_and_every_defense_has_the_fast_settings(name, planted_retrieval):
    cls = DEFENSES.get(name)
    assert {k: cls.defaults[k] for k in FAST_TRAINING_DEFAULTS} == FAST_TRAINING_DEFAULTS
    assert cls.defaults["inner"] == "pgd" and cls.defaults["steps"] == 7
    crafter = _defense(planted_retrieval, name).crafter
    assert type(crafter) is PGD and crafter.steps == 7 and crafter.step == cls.defaults["step"]
    assert not _defense(planted_retrieval, name).watched  # PGD: the watch is off unless asked for
    assert _defense(planted_retrieval, name, inner="n-fgsm").watched


@pytest.mark.parametrize("bad, message", [({"inner": "fgsm"}, "inner must be one of pgd, fgsm-rs, n-fgsm, free"),
                                          ({"on_collapse": "halt"}, "on_collapse must be one of warn, stop"),
                                          ({"replays": 0}, "replays must be at least 1"),
                                          ({"collapse_threshold": 0.0}, "collapse_threshold must be positive")])
def test_bad_fast_settings_are_refused_in_one_line(bad, message, planted_retrieval):
    with pytest.raises(ValueError, match=message) as info:
        _defense(planted_retrieval, **bad)
    assert "\n" not in str(info.value)


def test_fgsm_rs_is_one_step_of_1_25_eps_from_a_random_start_projected(planted_retrieval):
    p = planted_retrieval
    objective = _objective(p)
    crafter = make_inner("fgsm-rs", p.model, eps=EPS, step=0.01, steps=7, seed=5)
    adv = crafter(p.x, objective)
    start = PGD(p.model, eps=EPS, step=0.0, steps=0, random_start=True, seed=5)(p.x, objective)  # the same draw
    expected = torch.clamp(torch.minimum(torch.maximum(start - 1.25 * EPS * _grad(p.model, start, objective).sign(),
                                                       p.x - EPS), p.x + EPS), 0, 1)
    assert torch.allclose(adv, expected, atol=1e-6)
    assert (adv - p.x).abs().max() <= EPS + 1e-6
    assert crafter.steps == 1  # PGD's --steps does not reach it


def test_n_fgsm_is_noise_of_2_eps_then_a_step_of_eps_without_projection(planted_retrieval):
    p = planted_retrieval
    objective = _objective(p)
    crafter = make_inner("n-fgsm", p.model, eps=EPS, step=0.01, steps=7, seed=5)
    assert isinstance(crafter, NFGSM)
    adv = crafter(p.x, objective)
    noisy = NFGSM(p.model, eps=EPS, step=EPS, steps=0, seed=5)(p.x, objective)  # the same noise, no step
    noise = noisy - p.x
    assert noise.abs().max() <= 2 * EPS + 1e-6 and noise.abs().max() > 1.5 * EPS  # U(-2 eps, 2 eps)
    expected = (noisy - EPS * _grad(p.model, noisy, objective).sign()).clamp(0, 1)
    assert torch.allclose(adv, expected, atol=1e-6)
    distance = (adv - p.x).abs().max()
    assert EPS < distance <= 3 * EPS + 1e-6  # outside the eps-ball: N-FGSM does not project
    assert adv.min() >= 0 and adv.max() <= 1


def test_free_training_moves_the_carried_perturbation_up_the_training_loss(planted_retrieval):
    p = planted_retrieval
    defense = _defense(p, "saat", inner="free", replays=3)
    assert isinstance(defense.crafter, FreeInner) and defense.replays == 3
    x, y, idx = p.train_images[:8], p.train_labels[:8], torch.arange(8)
    deltas = []
    for _ in range(3):
        terms = defense.step(x, y, idx, 0)
        terms["loss"].backward()
        grad = defense.crafter.delta.grad.clone()
        before = defense.crafter.delta.detach().clone()
        defense.after_backward()
        after = defense.crafter.delta
        # one signed step of eps up the loss's gradient, clipped to the ball; carried to the next replay
        assert torch.equal(after, (before + EPS * grad.sign()).clamp(-EPS, EPS))
        assert not after.requires_grad
        deltas.append(after.clone())
    assert deltas[0].abs().max() == pytest.approx(EPS) and not torch.equal(deltas[0], deltas[2])
    # carried to the next batch of the same shape
    defense.step(p.train_images[8:16], p.train_labels[8:16], torch.arange(8, 16), 1)
    assert torch.equal(defense.crafter.delta.detach(), deltas[-1])


def test_free_training_of_atrdh_follows_its_inner_objective(planted_retrieval):
    p = planted_retrieval
    defense = _defense(p, "atrdh", inner="free", replays=2)
    assert not defense.crafter.follows_loss
    x, y, idx = p.train_images[:8], p.train_labels[:8], torch.arange(8)
    captured = {}
    original = defense.crafter.observe

    def observe(h_adv):  # the inner objective's gradient at the step's own forward pass
        original(h_adv)
        captured["g"] = defense.crafter._grad.clone()

    defense.crafter.observe = observe
    terms = defense.step(x, y, idx, 0)
    terms["loss"].backward()
    defense.after_backward()
    assert torch.equal(defense.crafter.delta, (-EPS * captured["g"].sign()).clamp(-EPS, EPS))
    assert captured["g"].abs().sum() > 0


def test_the_loop_replays_each_batch_and_updates_after_each_backward(planted_retrieval):
    p = planted_retrieval
    defense = _defense(p, "cgat", inner="free", replays=3, augment=False)
    opt = defense.build_optimizer(p.model.parameters())
    loader = [(p.train_images[i:i + 8], p.train_labels[i:i + 8], torch.arange(i, i + 8)) for i in (0, 8)]
    calls = []

    def after_backward():
        calls.append(defense.crafter.delta.grad is not None)
        defense.after_backward()

    log = []
    summary, step = run_epoch(p.model, loader, lambda x, y, idx, it: defense.step(x, y, idx, it), opt,
                              device=torch.device("cpu"), epoch=0, step=0, log=log, progress=False,
                              replays=defense.replays, after_backward=after_backward)
    assert step == 6 and calls == [True] * 6 and summary["replays"] == 3
    stopped = []
    run_epoch(p.model, loader, lambda x, y, idx, it: defense.step(x, y, idx, it), opt, device=torch.device("cpu"),
              epoch=1, step=0, log=log, progress=False, replays=3, after_backward=defense.after_backward,
              after_step=lambda at: stopped.append(at) or at == 4)
    assert stopped == [1, 2, 3, 4] and log[-1]["stopped"] and log[-1]["step"] == 4


def _watch(planted, values, **settings):
    defense = _defense(planted, "saat", inner="fgsm-rs", **settings)
    watch = CollapseWatch(defense, planted.train_images[:8], planted.train_labels[:8], seed=1,
                          keep_best=settings.get("on_collapse") == "stop")
    sequence = iter(values)
    watch._map = lambda images, db: next(sequence)  # clean, training attack, PGD-10 per point
    return defense, watch


def test_the_watch_calls_a_collapse_when_pgd_falls_and_the_training_attack_does_not(planted_retrieval):
    # (clean, training attack, PGD-10) per watch point: PGD-10 falls 0.35 -> 0.30 (noise) -> 0.12 (collapse) while
    # the training attack's mAP soars; then both fall together (a weaker model, not a collapse)
    points = [(0.9, 0.40, 0.35), (0.9, 0.45, 0.30), (0.9, 0.80, 0.12), (0.5, 0.20, 0.05)]
    _, watch = _watch(planted_retrieval, [v for p in points for v in p], collapse_threshold=0.1)
    records = [watch.measure(epoch, 10 * epoch) for epoch in range(1, 5)]
    assert [r["collapse"] for r in records] == [False, False, True, False]
    assert records[2]["best_pgd10"] == 0.35 and records[2]["inner"] == "fgsm-rs"
    _, strict = _watch(planted_retrieval, [v for p in points[:2] for v in p], collapse_threshold=0.04)
    assert [strict.measure(e, e)["collapse"] for e in (1, 2)] == [False, True]


def test_the_watch_measures_on_the_real_batch_without_touching_training(planted_retrieval):
    p = planted_retrieval
    defense = _defense(p, "saat", inner="fgsm-rs")
    defense.step(p.train_images[:8], p.train_labels[:8], torch.arange(8), 0)  # the crafter's stream has drawn
    state = {k: v.clone() for k, v in p.model.state_dict().items()}
    rng = defense.crafter.rng.state_dict()
    assert rng  # a generator state to compare
    watch = CollapseWatch(defense, p.train_images[:8], p.train_labels[:8], seed=1)
    record = watch.measure(1, 5)
    assert 0 <= record["pgd10"] <= record["clean"] <= 1 and 0 <= record["train_attack"] <= 1
    assert record["pgd10"] < record["clean"]  # PGD-10 at eps 0.1 moves the planted codes
    assert all(torch.equal(v, state[k]) for k, v in p.model.state_dict().items())
    after = defense.crafter.rng.state_dict()
    assert after.keys() == rng.keys() and all(torch.equal(after[k], rng[k]) for k in rng)


def test_the_best_pgd10_weights_are_kept_and_restored(planted_retrieval):
    p = planted_retrieval
    defense, watch = _watch(p, [0.9, 0.4, 0.35, 0.9, 0.8, 0.1], on_collapse="stop")
    watch.measure(1, 10)
    best = {k: v.clone() for k, v in p.model.state_dict().items()}
    with torch.no_grad():
        p.model.linear.weight.add_(1.0)  # training moves on
    assert watch.measure(2, 20)["collapse"]
    assert watch.restore_best() == {"epoch": 1, "step": 10, "pgd10": 0.35}
    assert all(torch.equal(v, best[k]) for k, v in p.model.state_dict().items())
    saved = watch.state_dict()
    again = CollapseWatch(defense, p.train_images[:8], p.train_labels[:8], seed=1, keep_best=True)
    again.load_state_dict(saved)
    assert again.history == watch.history and again.best_state["epoch"] == 1


def test_fallback_switches_the_inner_maximiser_and_resumes_switched(planted_retrieval):
    p = planted_retrieval
    defense = _defense(p, "saat", inner="free", replays=2)
    defense.step(p.train_images[:8], p.train_labels[:8], torch.arange(8), 0)["loss"].backward()
    defense.after_backward()
    free_state = defense.state_dict()
    assert free_state["inner"] == "free" and free_state["crafter_state"]["delta"].abs().max() > 0
    defense.switch_inner("pgd")
    assert type(defense.crafter) is PGD and defense.crafter.steps == 7 and defense.replays == 2
    state = defense.state_dict()
    resumed = _defense(p, "saat", inner="free", replays=2)
    resumed.load_state_dict(state)
    assert resumed.inner == "pgd" and type(resumed.crafter) is PGD
    carried = _defense(p, "saat", inner="free", replays=2)
    carried.load_state_dict(free_state)
    assert torch.equal(carried.crafter.delta, free_state["crafter_state"]["delta"])


# ------------------------------------------------------------------------------------------------ the pipeline


def _scripted_watch(monkeypatch, pgd_values):
    """CollapseWatch.measure with scripted mAPs: the training attack's 0.5 throughout, PGD-10 as given per point
    (real watch points of a real run; only the attacks' outcome is scripted, to make the collapse certain)."""
    from saat.defenses.watch import CollapseWatch

    real = CollapseWatch.measure
    values = iter(pgd_values)

    def measure(self, epoch, step):
        point = iter([0.9, 0.5, next(values)])  # clean, training attack, PGD-10
        self._map = lambda images, db: next(point)
        return real(self, epoch, step)

    monkeypatch.setattr(CollapseWatch, "measure", measure)


def _log(out):
    return [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_a_collapse_stops_the_run_with_the_best_pgd10_weights(mosaic_run, tmp_path, monkeypatch, capsys):
    from saat.checkpoint import load_model_file
    from saat.pipelines.defend import DefenseConfig, defend

    # 3 batches per epoch, watch_every=2: watch points at steps 2, 3 (the end of epoch 1), 4, ...; PGD-10 0.30,
    # 0.40 (best), 0.20 (collapse, in the middle of epoch 2) -> stop at step 4 with the weights of step 3
    _scripted_watch(monkeypatch, [0.30, 0.40, 0.20])
    kept = {}
    import saat.defenses.watch as watch_module

    real_measure = watch_module.CollapseWatch.measure

    def measure(self, epoch, step):
        record = real_measure(self, epoch, step)
        kept[step] = {k: v.clone() for k, v in self.defense.ctx.model.state_dict().items()}
        return record

    monkeypatch.setattr(watch_module.CollapseWatch, "measure", measure)
    cfg = DefenseConfig(method="saat", epochs=3, inner="fgsm-rs", on_collapse="stop", train_limit=96,
                        options={"watch_every": 2, "watch_size": 8}, evaluate=False, device="cpu")
    defend(mosaic_run, cfg, out=tmp_path / "stop", progress=False)
    assert "catastrophic overfitting at epoch 2 (step 4)" in capsys.readouterr().err
    log = _log(tmp_path / "stop")
    assert [r["step"] for r in log if r["kind"] == "watch"] == [2, 3, 4]
    assert [(r["kind"], r["step"], r["action"]) for r in log if r["kind"] == "collapse"] == [("collapse", 4, "stop")]
    assert [r["restored"] for r in log if r["kind"] == "stopped"] == [{"epoch": 1, "step": 3, "pgd10": 0.40}]
    epochs = [r for r in log if r["kind"] == "epoch"]
    assert [(r["epoch"], r["step"], r.get("stopped", False)) for r in epochs] == [(1, 3, False), (2, 4, True)]
    saved = load_model_file(tmp_path / "stop" / "model.pt")
    assert saved["metadata"]["defense"]["collapse"][0]["step"] == 4
    # the model written is the one of step 3 (the best PGD-10 point), not the one of step 4
    state = saved["state_dict"]
    assert all(torch.equal(state[k], v) for k, v in kept[3].items())
    assert not all(torch.equal(state[k], v) for k, v in kept[4].items())


@pytest.mark.slow
def test_a_collapse_with_fallback_trains_the_rest_with_pgd(mosaic_run, tmp_path, monkeypatch):
    from saat.checkpoint import load_model_file
    from saat.pipelines.defend import DefenseConfig, defend

    _scripted_watch(monkeypatch, [0.40, 0.20, 0.30])  # a collapse at the end of the second epoch
    cfg = DefenseConfig(method="saat", epochs=5, inner="free", replays=2, on_collapse="fallback", train_limit=96,
                        options={"watch_size": 8}, evaluate=False, device="cpu")
    defend(mosaic_run, cfg, out=tmp_path / "fallback", progress=False)
    log = _log(tmp_path / "fallback")
    epochs = [r for r in log if r["kind"] == "epoch"]
    assert [r["replays"] for r in epochs] == [2, 2, 2]  # ceil(5 / 2) epochs of 2 replays
    assert [r["step"] for r in epochs] == [6, 12, 18]  # 3 batches of 32, 2 replays each
    watch = [(r["step"], r["inner"]) for r in log if r["kind"] == "watch"]
    assert watch == [(6, "free"), (12, "free"), (18, "pgd")]  # the third epoch trained with PGD
    assert [(r["step"], r["action"]) for r in log if r["kind"] == "collapse"] == [(12, "fallback")]
    meta = load_model_file(tmp_path / "fallback" / "model.pt")["metadata"]["defense"]
    assert meta["inner"] == "free" and meta["collapse"][0]["action"] == "fallback"
    checkpoint = torch.load(tmp_path / "fallback" / "checkpoint.pt", weights_only=True)
    assert checkpoint["defense"]["inner"] == "pgd"  # a resumed run goes on with PGD
