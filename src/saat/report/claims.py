"""The automatic check of the paper's qualitative claims (docs/paper-results.md#the-claims-checked) against our
results.

Each comparison of a claim is decided by the paired 95 % bootstrap interval of its **margin** (how far the paper's
side leads, a difference of MAP on the same queries; :func:`saat.retrieval.paired_ci`): it *holds* when the interval
lies entirely on the claim's side (above 0; for "far more than undefended" at or above ``FAR_MARGIN``), it *does not
hold* when it lies entirely on the other side (at or below 0; below ``FAR_MARGIN``), and it is *undecided at 95 %*
otherwise. Over several training seeds of one model the interval is the hierarchical one (seeds, then queries
within each seed: :func:`saat.retrieval.grouped_paired_ci`). Results written before per-query APs were kept are
compared by their point values, as before, and say "no interval (older result)".

A claim's verdict combines its comparisons: "holds" when every comparison it needs was measured and holds; "does not
hold" when a measured one does not; "undecided at 95 %" when none fails but one is undecided; "holds where
measured" when what was measured holds but something is missing; "not measured" when nothing could be compared. Two
models are compared under an attack only when it ran with the same settings (iterations, step, queries, seed) on
both: a weaker attack on one of them says nothing about which is more robust. The defense claims are also judged
under the worst case of the robustness cards, when both models have a card of one preset on the same queries.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..attacks.methods import TABLE1_ATTACKS, TABLE2_ATTACKS
from ..retrieval import grouped_paired_ci
from .collect import ATTACK_NAMES, EPS_TOLERANCE_255, AttackResult, Run, number
from .select import describe, pick, pick_matched, signature

HOLDS, FAILS, PARTLY, NOT_MEASURED = "holds", "does not hold", "holds where measured", "not measured"
UNDECIDED = "undecided at 95 %"
OLDER = "no interval (older result)"
# "Far more MAP than an undefended model": read as at least this many MAP points (x100). The paper's smallest such
# margin in Table II is 13.44 points (FLICKR-25K, 16 bits, SDHA: 35.26 vs 21.82).
FAR_MARGIN = 0.10
UNTARGETED_BASELINES = tuple(m for m in TABLE1_ATTACKS[False] if m != "mainstay")
TARGETED_BASELINES = ("p2p", "dhta", "tha")  # the claim names these three (not ProS-GAN)

CLAIM_ATTACK = "The SAAT attack lowers MAP more than HAG and SDHA."
CLAIM_TARGETED = "The targeted SAAT attack reaches a higher t-MAP than P2P, DHTA and THA."
CLAIM_VS_ATRDH = ("A SAAT-trained model keeps more MAP under every attack (HAG, SDHA, SAAT attack) than an "
                  "ATRDH-trained one.")
CLAIM_VS_UNDEFENDED = ("A SAAT-trained model keeps far more MAP under every attack (HAG, SDHA, SAAT attack) than the "
                       f"undefended one ('far': at least {FAR_MARGIN * 100:g} MAP points).")
_MARKS = {HOLDS: "✓", FAILS: "✗", UNDECIDED: "undecided"}


@dataclass
class Comparison:
    text: str
    outcome: str | None  # HOLDS, FAILS or UNDECIDED; None: not measured


@dataclass
class ClaimCheck:
    claim: str
    scope: str
    status: str
    evidence: str


def pct(v: float | None) -> str:
    return "—" if v is None else f"{100 * v:.2f}"


def verdict(comparisons: list[Comparison]) -> str:
    measured = [c.outcome for c in comparisons if c.outcome is not None]
    if not measured:
        return NOT_MEASURED
    if FAILS in measured:
        return FAILS
    if UNDECIDED in measured:
        return UNDECIDED
    return HOLDS if len(measured) == len(comparisons) else PARTLY


# --- margins and their intervals -------------------------------------------------------------------------------

@dataclass
class Unit:
    """One training seed's measurements of a comparison: ``high`` is the side the claim says is higher (its value
    and per-query values), ``low`` the other; ``why`` says why there are no per-query values to pair (then both
    arrays are None)."""

    high: float
    low: float
    high_queries: np.ndarray | None = None
    low_queries: np.ndarray | None = None
    why: str | None = None


@dataclass
class Margin:
    """How far the claim's side leads (a fraction of MAP): the mean over seeds of each seed's ``high - low``, its
    95 % interval (None: ``why``), and the number of seeds."""

    value: float
    ci: tuple[float, float] | None
    seeds: int
    why: str | None = None

    def text(self) -> str:
        """"+12.34 [+10.2, +14.5] points" or "+12.34 points, no interval (older result)"."""
        def points(v: float, places: int) -> str:
            return f"{round(v * 100, places) + 0.0:+.{places}f}"  # + 0.0: no "-0.00"

        if self.ci is None:
            return f"{points(self.value, 2)} points, {self.why}"
        lo, hi = self.ci
        return f"{points(self.value, 2)} [{points(lo, 1)}, {points(hi, 1)}] points"

    def decide(self, threshold: float = 0.0, strict: bool = True) -> str:
        """HOLDS when the interval lies above ``threshold`` (``strict``: above; else at or above), FAILS when it
        lies entirely on the other side, UNDECIDED otherwise; without an interval, the point value decides."""
        def above(v: float) -> bool:
            return v > threshold if strict else v >= threshold

        if self.ci is None:
            return HOLDS if above(self.value) else FAILS
        lo, hi = self.ci
        if above(lo):
            return HOLDS
        return FAILS if not above(hi) else UNDECIDED


def margin(units: Sequence[Unit]) -> Margin:
    """The margin of one comparison over its seeds (one unit: the paired bootstrap over the queries; several: the
    hierarchical one over seeds and queries)."""
    value = float(np.mean([u.high - u.low for u in units]))
    why = next((u.why for u in units if u.why is not None), None)
    if why is not None:
        return Margin(value, None, len(units), why)
    lo, hi = grouped_paired_ci([u.high_queries for u in units], [u.low_queries for u in units])
    return Margin(value, (lo, hi), len(units))


def _same_queries(a: AttackResult, b: AttackResult) -> bool:
    ia, ib = a.query_indices(), b.query_indices()
    if ia is not None and ib is not None:
        return ia.shape == ib.shape and bool((ia == ib).all())
    return a.queries == b.queries and a.settings.get("seed") == b.settings.get("seed")


def attack_unit(high: AttackResult, low: AttackResult) -> Unit:
    """A comparison of two attack results on one seed, paired over their queries when both kept per-query APs."""
    rows_h, rows_l = high.per_query_ap(), low.per_query_ap()
    unit = Unit(high.adversarial, low.adversarial)
    if rows_h is None or rows_l is None:
        unit.why = OLDER
    elif not _same_queries(high, low) or rows_h.shape != rows_l.shape:
        unit.why = "no interval (not the same queries)"
    else:
        unit.high_queries, unit.low_queries = rows_h[1], rows_l[1]
    return unit


def _seeds_note(used: int, total: int) -> str:
    return f" over {used} seeds" if used == total and total > 1 else (
        f" on {used} of {total} seeds" if total > 1 else "")


# --- claims 1 and 2: the attacks ---------------------------------------------------------------------------------

def attack_strength(runs: Run | Sequence[Run], eps: float | None, targeted: bool, scope: str | None = None
                    ) -> ClaimCheck:
    """Claims 1 and 2: the (targeted) SAAT attack against its baselines on an undefended model; ``runs`` are that
    model's training seeds (one run: one seed)."""
    runs = [runs] if isinstance(runs, Run) else list(runs)
    baselines = TARGETED_BASELINES if targeted else UNTARGETED_BASELINES
    metric = "t-MAP" if targeted else "MAP"
    first = runs[0]
    if scope is None:
        scope = f"{first.name} ({first.info('dataset')}, ε {eps:g}/255)" if eps is not None else first.name
    claim = CLAIM_TARGETED if targeted else CLAIM_ATTACK
    ours = [pick(r, "mainstay", targeted, eps) for r in runs]
    if all(o is None for o in ours):
        return ClaimCheck(claim, scope, NOT_MEASURED,
                          f"no {'targeted' if targeted else 'untargeted'} SAAT-attack result at this ε.")
    comps, shown = [], [o for o in ours if o is not None]
    for b in baselines:
        others = [pick(r, b, targeted, eps) for r in runs]
        shown += [o for o in others if o is not None]
        name = ATTACK_NAMES[b]
        pairs = [(o, t) for o, t in zip(ours, others, strict=True) if o is not None and t is not None]
        if not pairs:
            comps.append(Comparison(f"{name} not measured", None))
            continue
        # untargeted: the baseline's MAP is the higher side; targeted: the SAAT attack's t-MAP
        units = [attack_unit(o, t) if targeted else attack_unit(t, o) for o, t in pairs]
        m = margin(units)
        mine, theirs = np.mean([o.adversarial for o, _ in pairs]), np.mean([t.adversarial for _, t in pairs])
        sign = (">" if mine > theirs else "<=") if targeted else ("<" if mine < theirs else ">=")
        outcome = m.decide()
        comps.append(Comparison(f"{pct(mine)} {sign} {name} {pct(theirs)}{_seeds_note(len(pairs), len(runs))}: "
                                f"margin {m.text()}, {outcome}", outcome))
    status = verdict(comps)
    found = [o for o in ours if o is not None]
    evidence = f"SAAT attack {metric} {pct(float(np.mean([o.adversarial for o in found])))}%" + (
        f" (mean of {len(found)} seeds)" if len(found) > 1 else "") + "; " + "; ".join(c.text for c in comps)
    return ClaimCheck(claim, scope, status, evidence + "." + _queries_note(shown))


def _queries_note(results: list[AttackResult | None]) -> str:
    qs = sorted({r.queries for r in results if r is not None and r.queries is not None})
    return f" Caveat: the results come from different numbers of queries ({', '.join(map(str, qs))})." if len(
        qs) > 1 else ""


# --- claims 3 and 4: the defenses -------------------------------------------------------------------------------

def _cards(run: Run, eps: float | None) -> list[dict]:
    """The run's untargeted, non-adaptive cards of the model itself (no input purifier) at ``eps`` (/255), the
    standard preset first, then the most queries."""
    def part(card: dict, key: str) -> dict:
        value = card.get(key)
        return value if isinstance(value, dict) else {}

    out = []
    for card in run.cards:
        card_eps = number(card.get("eps"))
        if card.get("targeted") or part(card, "threat_model").get("adaptive") or part(card, "model").get(
                "input_defense") or number(card.get("robust_map")) is None:
            continue
        if eps is not None and card_eps is not None and abs(card_eps * 255 - eps) >= 2 * EPS_TOLERANCE_255:
            continue
        out.append(card)
    return sorted(out, key=lambda c: (c.get("preset") != "standard", -(number(c.get("queries")) or 0)))


def _card_key(card: dict) -> tuple:
    """What two cards share when they ran one ensemble on the same queries: the profile and its version, the options
    that changed its member settings (``saat robustness --option``; none on cards without them), the queries."""
    profile = card["profile"] if isinstance(card.get("profile"), dict) else {}
    dataset = card["dataset"] if isinstance(card.get("dataset"), dict) else {}
    settings = card["settings"] if isinstance(card.get("settings"), dict) else {}
    options = json.dumps(settings.get("options"), sort_keys=True, default=str)
    eps = number(card.get("eps"))
    return (card.get("preset"), profile.get("version"), options, card.get("queries"), card.get("seed"),
            card.get("topk"), None if eps is None else round(eps * 255, 3), dataset.get("query_indices_sha256"))


def card_pair(mine: Run, theirs: Run, eps: float | None) -> tuple[dict, dict] | None:
    """A card of each model of one preset on the same queries, or None."""
    for a in _cards(mine, eps):
        for b in _cards(theirs, eps):
            if _card_key(a) == _card_key(b):
                return a, b
    return None


def _worst_queries(card: dict) -> np.ndarray | None:
    """A card's per-query worst-case APs, or None (a card written before they were kept)."""
    rows = card["per_query"].get("worst") if isinstance(card.get("per_query"), dict) else None
    if not isinstance(rows, list) or len(rows) != card.get("queries"):
        return None
    values = np.array([number(v) for v in rows], dtype=float)
    return None if np.isnan(values).any() else values


def card_unit(high: dict, low: dict) -> Unit:
    """The worst cases of two cards on one seed, paired over their queries when both kept them."""
    unit = Unit(float(high["robust_map"]), float(low["robust_map"]))
    qh, ql = _worst_queries(high), _worst_queries(low)
    if qh is None or ql is None:
        unit.why = OLDER
    else:
        unit.high_queries, unit.low_queries = qh, ql
    return unit


def defense_strength(saat_run: Run, others: list[Run], eps: float | None, undefended: bool) -> ClaimCheck:
    """Claims 3 and 4: the SAAT-trained model against ATRDH-trained ones (``undefended=False``) or against the
    undefended model it came from (``undefended=True``), under HAG, SDHA and the SAAT attack, and under the worst
    case of their robustness cards."""
    scope = f"{saat_run.name} ({saat_run.label}{f', ε {eps:g}/255' if eps is not None else ''})"
    return _defense_check([[(saat_run, other)] for other in others], eps, undefended, scope)


def defense_strength_over_seeds(pairs: list[tuple[Run, Run]], eps: float | None, undefended: bool,
                                scope: str) -> ClaimCheck:
    """Claims 3 and 4 over several training seeds of one model: ``pairs`` holds per seed (the SAAT-trained model,
    the ATRDH-trained or the undefended one of that seed); each comparison's interval is the hierarchical one over
    the seeds and their queries."""
    return _defense_check([pairs] if pairs else [], eps, undefended, scope)


def _defense_check(groups: list[list[tuple[Run, Run]]], eps: float | None, undefended: bool,
                   scope: str) -> ClaimCheck:
    claim = CLAIM_VS_UNDEFENDED if undefended else CLAIM_VS_ATRDH
    if not groups:
        what = "the undefended model it was trained from is not in the report" if undefended else (
            "no ATRDH-trained model of the same origin is in the report")
        return ClaimCheck(claim, scope, NOT_MEASURED, what + ".")
    threshold, strict = (FAR_MARGIN, False) if undefended else (0.0, True)
    comps, margins, notes = [], [], []
    for pairs in groups:
        other = pairs[0][1].name if len(pairs) == 1 else ("the undefended models" if undefended
                                                           else "the ATRDH-trained models")
        for attack in TABLE2_ATTACKS:
            name = ATTACK_NAMES[attack]
            found, missing, mismatched = [], [], []
            for mine_run, their_run in pairs:
                mine, theirs = pick_matched([mine_run, their_run], attack, False, eps)
                if mine is None or theirs is None:
                    missing += [r.name for r, a in ((mine_run, mine), (their_run, theirs)) if a is None]
                elif signature(mine) != signature(theirs):
                    # A weaker attack on one model says nothing about which model is more robust.
                    mismatched.append(f"{describe(mine)} on {mine_run.name} but {describe(theirs)} on "
                                      f"{their_run.name}")
                else:
                    found.append((mine, theirs))
            if not found:
                why = (f"not comparable: {'; '.join(mismatched)}" if mismatched
                       else f"not measured on {', '.join(missing)}")
                comps.append(Comparison(f"{name}: {why}", None))
                continue
            m = margin([attack_unit(a, b) for a, b in found])
            margins.append(m.value)
            outcome = m.decide(threshold, strict)
            mine_v, their_v = np.mean([a.adversarial for a, _ in found]), np.mean([b.adversarial for _, b in found])
            comps.append(Comparison(f"{name}: {pct(mine_v)} vs {other} {pct(their_v)}"
                                    f"{_seeds_note(len(found), len(pairs))} ({m.text()}) {_MARKS[outcome]}", outcome))
        cards = [(mine_run, card_pair(mine_run, their_run, eps)) for mine_run, their_run in pairs]
        matched = [pair for _, pair in cards if pair is not None]
        if matched:
            m = margin([card_unit(a, b) for a, b in matched])
            margins.append(m.value)
            outcome = m.decide(threshold, strict)
            presets = sorted({str(a.get("preset")) for a, _ in matched})
            comps.append(Comparison(
                f"worst case ({'/'.join(presets)} robustness card): "
                f"{pct(float(np.mean([a['robust_map'] for a, _ in matched])))} vs {other} "
                f"{pct(float(np.mean([b['robust_map'] for _, b in matched])))}{_seeds_note(len(matched), len(pairs))}"
                f" ({m.text()}) {_MARKS[outcome]}", outcome))
        elif any(run.cards for pair in pairs for run in pair):
            notes.append(f"no worst-case comparison with {other}: the two models have no robustness card of one "
                         "preset on the same queries")
    status = verdict(comps)
    evidence = "; ".join(c.text for c in comps) + "."
    if notes:
        evidence += " " + "; ".join(n[0].upper() + n[1:] for n in notes) + "."
    if undefended and margins and status != HOLDS and min(margins) > 0 and min(margins) < FAR_MARGIN:
        evidence += (f" It keeps more MAP under every compared attack, but the smallest margin "
                     f"({min(margins) * 100:.2f} points) is below the {FAR_MARGIN * 100:g}-point reading of 'far'.")
    return ClaimCheck(claim, scope, status, evidence)
