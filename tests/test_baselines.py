"""Baseline attacks of Table I: their losses on hand-made tensors and their effect on a demo model.

The demo-model tests are slow (the session's quick demo trains the model). Those that write into the run
directory — target labels of a new seed, a cached THA PrototypeNet, a summary table — attack a private copy
(``mosaic_run_copy``); fast tests of every method on a tiny model are in test_attack_methods_fast.py."""

import numpy as np
import pytest
import torch

from saat.attacks import ATTACKS
from saat.attacks.dhta import anchor_codes
from saat.attacks.hag import hag_loss
from saat.attacks.sdha import sdha_surrogate
from saat.pipelines.attack import AttackConfig, run_attack, run_attack_family
from saat.retrieval import format_ci


def test_hag_mask_selects_exactly_the_bits_not_pushed_past_the_threshold():
    h = torch.tensor([[0.9, -0.8, 0.3, -0.2]])  # benign: sign = [+, -, +, -]
    h_adv = torch.tensor([[-0.6, 0.7, -0.4, 0.1]], requires_grad=True)
    # |ĥ - sign(h)| = [1.6, 1.7, 1.4, 1.1] -> mask [0, 0, 1, 1]: bits 0 and 1 are already past -0.5 the other way
    loss = hag_loss(h_adv, h)
    agreement = (-0.4 * 0.3 + 0.1 * -0.2) / 2
    balance = ((-0.4 + 0.1) / 4) ** 2  # the masked outputs, averaged over all K bits
    assert loss.item() == pytest.approx((agreement + 1) ** 2 + balance)
    loss.backward()
    g = h_adv.grad[0]
    assert float(g[0]) == 0.0 and float(g[1]) == 0.0  # masked bits get no gradient from either term
    assert float(g[2]) != 0.0 and float(g[3]) != 0.0


def test_sdha_surrogate_weights_and_positive_averaging():
    q = torch.tensor([[0.5, -0.5, 1.0, -1.0]])
    codes = torch.tensor([[1.0, -1.0, 1.0, -1.0], [-1.0, -1.0, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0]])
    positive = torch.tensor([[1.0, 1.0, 0.0]])  # the third code is not a positive
    sig = torch.sigmoid

    def untargeted_pair(r):
        qr = q[0] * r
        return float(0.5 * ((q[0] - r).abs() * sig(5 * qr)).sum() + (1 - sig(5 * qr)).sum())

    # Hamming distances of sign(q) = [+, -, +, -] to the codes: 0 and 2 -> weights (1e-8)^-0.5 and 2^-0.5
    expected = (untargeted_pair(codes[0]) * (1e-8) ** -0.5 + untargeted_pair(codes[1]) * 2 ** -0.5) / 2
    assert float(sdha_surrogate(q, codes, positive, targeted=False)) == pytest.approx(expected, rel=1e-5)

    def targeted_pair(r):
        return float(0.5 * ((q[0] - r).abs() * sig(-10 * q[0] * r)).sum())

    expected_t = (targeted_pair(codes[0]) * 0.0 + targeted_pair(codes[1]) * 2 ** 0.3) / 2
    assert float(sdha_surrogate(q, codes, positive, targeted=True)) == pytest.approx(expected_t, rel=1e-5)
    assert float(sdha_surrogate(q, codes, torch.zeros(1, 3), targeted=False)) == 0.0  # no positives: 0, not NaN


def test_dhta_anchor_is_the_majority_vote_of_the_chosen_items():
    db_labels = torch.tensor([[1.0, 0], [1, 0], [1, 0], [0, 1], [1, 1]])
    db_codes = torch.tensor([[1.0, 1, -1], [1, -1, -1], [-1, 1, 1], [-1, -1, -1], [-1, -1, -1]])
    g = torch.Generator().manual_seed(0)
    # target [1, 0] matches items 0, 1, 2 exactly (not 4, whose label is [1, 1]); their sum is [1, 1, -1]
    assert anchor_codes(torch.tensor([[1.0, 0]]), db_codes, db_labels, 9, g).tolist() == [[1.0, 1.0, -1.0]]
    one = anchor_codes(torch.tensor([[1.0, 0]]), db_codes, db_labels, 1, g)
    assert one.tolist()[0] in db_codes[:3].tolist()  # P2P: the code of one matching item
    tie = anchor_codes(torch.tensor([[1.0, 0]]), db_codes[:2], db_labels[:2], 9, g)
    assert tie.tolist() == [[1.0, 1.0, -1.0]]  # sum [2, 0, -2]: the 0 becomes +1


@pytest.mark.slow
@pytest.mark.parametrize("method, targeted", [("hag", False), ("sdha", False), ("cgat", False),
                                              ("p2p", True), ("dhta", True), ("tha", True), ("cgat", True)])
def test_baseline_attacks_work_on_a_demo_model(mosaic_run_copy, method, targeted):
    options = {"proto_steps": 150} if method == "tha" else {}
    cfg = AttackConfig(method=method, targeted=targeted, num_queries=32, batch_size=32, steps=25, seed=1,
                       options=options)
    m = run_attack(mosaic_run_copy, cfg, progress=False, write=False)  # writes targets-seed1.npz, THA's cache
    p = m["perceptibility"]
    assert p["linf_max"] <= 32 / 255 + 1e-6 and p["images"] == 32
    if targeted:
        assert m["adversarial_t-MAP"] > m["benign_t-MAP"] + 0.15, m
    else:
        assert m["adversarial_mAP"] < m["benign_mAP"] - 0.2, m


@pytest.mark.slow
@pytest.mark.parametrize("method, targeted", [("hag", False), ("sdha", False), ("p2p", True), ("tha", True),
                                              ("mainstay", False)])
def test_seeded_attacks_repeat_exactly(mosaic_run_copy, method, targeted):
    options = {"proto_steps": 20} if method == "tha" else {}
    cfg = AttackConfig(method=method, targeted=targeted, num_queries=8, batch_size=8, steps=3, seed=2,
                       options=options)
    runs = [run_attack(mosaic_run_copy, cfg, progress=False, write=False) for _ in range(2)]
    key = "adversarial_t-MAP" if targeted else "adversarial_mAP"
    assert runs[0][key] == runs[1][key]
    assert runs[0]["perceptibility"] == runs[1]["perceptibility"]


@pytest.mark.slow
def test_method_settings_are_checked_and_recorded(mosaic_run):  # read-only: writes nothing into the run
    with pytest.raises(ValueError, match="--generator does not apply to attack 'hag'"):
        run_attack(mosaic_run, AttackConfig(method="hag", generator="pgd", num_queries=4), progress=False)
    with pytest.raises(ValueError, match="untargeted only"):
        run_attack(mosaic_run, AttackConfig(method="hag", targeted=True, num_queries=4), progress=False)
    with pytest.raises(ValueError, match="targeted only"):
        run_attack(mosaic_run, AttackConfig(method="dhta", num_queries=4), progress=False)
    m = run_attack(mosaic_run, AttackConfig(method="sdha", num_queries=4, steps=2, options={"lr": 0.02}),
                   progress=False, write=False)
    assert m["settings"]["lr"] == 0.02 and m["settings"]["steps"] == 2
    assert m["settings"]["eps"] == pytest.approx(32 / 255)  # the demo preset's shared eps
    assert ATTACKS.get("hag").defaults["steps"] == 2000 and ATTACKS.get("sdha").defaults["steps"] == 1500
    # every baseline's crafting loop runs the tanh continuation (SPEC 7.2, corrected 2026-12-02)
    assert all(ATTACKS.get(n).defaults["alpha_schedule"] for n in ("hag", "sdha", "dhta", "p2p", "tha"))


@pytest.mark.slow
def test_attack_family_writes_one_summary_table(mosaic_run_copy):
    cfg = AttackConfig(targeted=False, num_queries=16, batch_size=16, steps=5)
    summary = run_attack_family(mosaic_run_copy, cfg, progress=False)
    assert [r["attack"] for r in summary["rows"]] == ["hag", "sdha", "mainstay"]
    assert len({r["queries"] for r in summary["rows"]}) == 1 and len({r["eps_255"] for r in summary["rows"]}) == 1
    table = (mosaic_run_copy / "attacks" / "summary-untargeted.md").read_text()
    assert "| hag |" in table and "| mainstay |" in table and "clean mAP" in table
    assert np.isfinite(summary["benign"])
    # the summary keeps each figure's 95 % interval and the table prints it
    assert summary["benign_ci"][0] <= summary["benign"] <= summary["benign_ci"][1]
    assert f"| (clean mAP) | {format_ci(summary['benign'], summary['benign_ci'], digits=4)} |" in table
    for r in summary["rows"]:
        assert f"| {r['attack']} | {format_ci(r['mAP'], r['ci'], digits=4)} |" in table
