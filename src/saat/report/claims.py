"""The automatic check of the paper's qualitative claims (docs/paper-results.md#the-papers-results, last paragraph)
against our results.

Each check compares numbers that are in the report and says "holds" only when every comparison it needs was
measured and goes the paper's way; "does not hold" when a measured comparison goes the other way; "holds where
measured" when what was measured agrees but something is missing; "not measured" when nothing could be compared.
Two models are compared under an attack only when it ran with the same settings (iterations, step, queries, seed)
on both: a weaker attack on one of them says nothing about which is more robust.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..attacks.methods import TABLE1_ATTACKS, TABLE2_ATTACKS
from .collect import ATTACK_NAMES, AttackResult, Run
from .select import describe, pick, pick_matched, signature

HOLDS, FAILS, PARTLY, NOT_MEASURED = "holds", "does not hold", "holds where measured", "not measured"
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


@dataclass
class Comparison:
    text: str
    holds: bool | None  # None: not measured


@dataclass
class ClaimCheck:
    claim: str
    scope: str
    status: str
    evidence: str


def pct(v: float | None) -> str:
    return "—" if v is None else f"{100 * v:.2f}"


def verdict(comparisons: list[Comparison]) -> str:
    measured = [c.holds for c in comparisons if c.holds is not None]
    if not measured:
        return NOT_MEASURED
    if not all(measured):
        return FAILS
    return HOLDS if len(measured) == len(comparisons) else PARTLY


def _queries_note(results: list[AttackResult | None]) -> str:
    qs = sorted({r.queries for r in results if r is not None and r.queries is not None})
    return f" Caveat: the results come from different numbers of queries ({', '.join(map(str, qs))})." if len(
        qs) > 1 else ""


def attack_strength(run: Run, eps: float | None, targeted: bool) -> ClaimCheck:
    """Claims 1 and 2: the (targeted) SAAT attack against its baselines on one undefended run."""
    baselines = TARGETED_BASELINES if targeted else UNTARGETED_BASELINES
    metric = "t-MAP" if targeted else "MAP"
    ours = pick(run, "mainstay", targeted, eps)
    scope = f"{run.name} ({run.info('dataset')}, ε {eps:g}/255)" if eps is not None else run.name
    claim = CLAIM_TARGETED if targeted else CLAIM_ATTACK
    if ours is None:
        return ClaimCheck(claim, scope, NOT_MEASURED,
                          f"no {'targeted' if targeted else 'untargeted'} SAAT-attack result at this ε.")
    comps, others = [], []
    for b in baselines:
        other = pick(run, b, targeted, eps)
        others.append(other)
        name = ATTACK_NAMES[b]
        if other is None:
            comps.append(Comparison(f"{name} not measured", None))
            continue
        better = ours.adversarial > other.adversarial if targeted else ours.adversarial < other.adversarial
        sign = (">" if ours.adversarial > other.adversarial else "<=") if targeted else (
            "<" if ours.adversarial < other.adversarial else ">=")
        comps.append(Comparison(f"{pct(ours.adversarial)} {sign} {name} {pct(other.adversarial)}", better))
    status = verdict(comps)
    evidence = f"SAAT attack {metric} {pct(ours.adversarial)}%; " + "; ".join(
        f"{c.text} ({'holds' if c.holds else 'does not hold'})" if c.holds is not None else c.text for c in comps)
    return ClaimCheck(claim, scope, status, evidence + "." + _queries_note([ours, *others]))


def defense_strength(saat_run: Run, others: list[Run], eps: float | None, undefended: bool) -> ClaimCheck:
    """Claim 3: the SAAT-trained model against ATRDH-trained ones (``undefended=False``) or against the undefended
    model it came from (``undefended=True``), under HAG, SDHA and the SAAT attack."""
    claim = CLAIM_VS_UNDEFENDED if undefended else CLAIM_VS_ATRDH
    scope = f"{saat_run.name} ({saat_run.label}{f', ε {eps:g}/255' if eps is not None else ''})"
    if not others:
        what = "the undefended model it was trained from is not in the report" if undefended else (
            "no ATRDH-trained model of the same origin is in the report")
        return ClaimCheck(claim, scope, NOT_MEASURED, what + ".")
    comps, margins = [], []
    for other in others:
        for attack in TABLE2_ATTACKS:
            name = ATTACK_NAMES[attack]
            mine, theirs = pick_matched([saat_run, other], attack, False, eps)
            if mine is None or theirs is None:
                missing = [r.name for r, a in ((saat_run, mine), (other, theirs)) if a is None]
                comps.append(Comparison(f"{name}: not measured on {', '.join(missing)}", None))
                continue
            margin = mine.adversarial - theirs.adversarial
            numbers = (f"{name}: {pct(mine.adversarial)} vs {other.name} {pct(theirs.adversarial)} "
                       f"({margin * 100:+.2f} points)")
            if signature(mine) != signature(theirs):
                # A weaker attack on one model says nothing about which model is more robust.
                comps.append(Comparison(f"{numbers}, not comparable: {describe(mine)} on {saat_run.name} but "
                                        f"{describe(theirs)} on {other.name}", None))
                continue
            margins.append(margin)
            ok = margin >= FAR_MARGIN if undefended else margin > 0
            comps.append(Comparison(numbers, ok))
    status = verdict(comps)
    evidence = "; ".join(f"{c.text}{'' if c.holds is None else (' ✓' if c.holds else ' ✗')}" for c in comps) + "."
    if undefended and margins and status == FAILS and min(margins) > 0:
        evidence += (f" It keeps more MAP under every compared attack, but the smallest margin "
                     f"({min(margins) * 100:.2f} points) is below the {FAR_MARGIN * 100:g}-point reading of 'far'.")
    return ClaimCheck(claim, scope, status, evidence)
