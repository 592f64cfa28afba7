"""Choosing, among the attack results that were read (:mod:`saat.report.collect`), the ones that go into each
table: the main eps of a dataset, one result per (run, attack, eps), results matched across models, families of
an undefended run and the runs defended from it."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from .collect import EPS_TOLERANCE_255, AttackResult, Run, number


def eps_key(eps_255: float | None) -> float | None:
    return None if eps_255 is None else round(eps_255 / EPS_TOLERANCE_255) * EPS_TOLERANCE_255


def main_eps(runs: list[Run]) -> float | None:
    """The budget (/255) most attack results of these runs share; ties go to the budget covering more distinct
    (run, attack) pairs, then to the smaller budget. None when no result has a budget."""
    counts: Counter[float] = Counter()
    combos: dict[float, set] = {}
    for run in runs:
        for a in run.attacks:
            k = eps_key(a.eps_255)
            if k is None:
                continue
            counts[k] += 1
            combos.setdefault(k, set()).add((run.name, a.method, a.targeted, a.purifier))
    if not counts:
        return None
    return sorted(counts, key=lambda k: (-counts[k], -len(combos[k]), k))[0]


def same_eps(a: AttackResult, eps_255: float | None) -> bool:
    """Whether ``a`` ran at the budget ``eps_255``; an unbounded attack (no budget) counts as any budget."""
    return a.eps_255 is None or eps_255 is None or abs(a.eps_255 - eps_255) < 2 * EPS_TOLERANCE_255


def candidates(run: Run, method: str, targeted: bool, eps_255: float | None, purifier: str | None = None
               ) -> list[AttackResult]:
    return [a for a in run.attacks if a.method == method and a.targeted == targeted and a.purifier == purifier
            and a.adversarial is not None and same_eps(a, eps_255)]


def pick(run: Run, method: str, targeted: bool, eps_255: float | None, purifier: str | None = None
         ) -> AttackResult | None:
    """The result shown for (method, targeted) on ``run`` at ``eps_255`` (see ``AttackResult.preference``)."""
    hits = candidates(run, method, targeted, eps_255, purifier)
    return max(hits, key=AttackResult.preference) if hits else None


def signature(a: AttackResult) -> tuple:
    """What must agree for two results of one attack to be compared like with like: iterations, step, queries,
    seed (the query subset), generator, mode."""
    step = number(a.settings.get("step"))
    return (a.steps, None if step is None else round(step * 255, 3), a.queries, a.settings.get("seed"), a.generator,
            a.parity)


def describe(a: AttackResult) -> str:
    parts = [f"{a.steps} it" if a.steps is not None else None, f"{a.queries} q" if a.queries is not None else None]
    step = number(a.settings.get("step"))
    if step is not None:
        parts.append(f"step {step * 255:g}/255")
    return ", ".join(p for p in parts if p) or "settings unknown"


def pick_matched(runs: list[Run], method: str, targeted: bool, eps_255: float | None, purifier: str | None = None
                 ) -> list[AttackResult | None]:
    """One result per run for the same attack, with the settings shared by the most runs (so that models are
    compared under the same attack); a run without that setting gets its own preferred result."""
    cands = [candidates(r, method, targeted, eps_255, purifier) for r in runs]
    shared: Counter[tuple] = Counter(s for cs in cands for s in {signature(a) for a in cs})
    if not shared:
        return [None] * len(runs)

    def rank(sig: tuple) -> tuple:
        return shared[sig], max(a.preference() for cs in cands for a in cs if signature(a) == sig)

    top = max(shared, key=rank)
    out: list[AttackResult | None] = []
    for cs in cands:
        same = [a for a in cs if signature(a) == top]
        out.append(max(same or cs, key=AttackResult.preference) if cs else None)
    return out


def group_by_dataset(runs: list[Run]) -> dict[str, list[Run]]:
    groups: dict[str, list[Run]] = {}
    for run in runs:
        groups.setdefault(str(run.info("dataset") or "unknown dataset"), []).append(run)
    return groups


def origin_of(run: Run, runs: list[Run]) -> Run | None:
    """The undefended run (among ``runs``) that ``run`` was adversarially trained from."""
    o = run.origin
    if not o:
        return None
    for cand in runs:
        if cand is run or cand.defended:
            continue
        if o.get("checkpoint") and o.get("checkpoint") == cand.checkpoint_hash:
            return cand
    for cand in runs:
        if cand is run or cand.defended or not o.get("run"):
            continue
        sp = Path(str(o["run"]))
        if sp.is_absolute() and sp.resolve() == cand.path.resolve():
            return cand
    return None


def families(runs: list[Run]) -> list[tuple[Run | None, list[Run]]]:
    """(undefended run, its defended runs), plus (None, [defended runs whose origin is not in the report])."""
    out: list[tuple[Run | None, list[Run]]] = [(r, []) for r in runs if not r.defended]
    orphans = []
    for run in runs:
        if not run.defended:
            continue
        origin = origin_of(run, runs)
        for base, members in out:
            if base is origin and origin is not None:
                members.append(run)
                break
        else:
            orphans.append(run)
    if orphans:
        out.append((None, orphans))
    return out
