"""The paper's Tables I and II over a grid of bit lengths and seeds: one column per bit length, each cell the mean
over the seeds with the half-width of its 95 % Student-t interval, beside the paper's number.

``saat reproduce`` trains, for one dataset, backbone and hashing method, an undefended model per (bit length, seed)
and an ATRDH- and a SAAT-trained model from each. :func:`grid_section` finds such groups among the report's runs
(by what the runs recorded, never by their folder names) and lays their results out as the paper does. A group
whose undefended models cover a single (bits, seed) pair gets nothing, so the report of one model is unchanged.

The statistics are small pure functions (:func:`t_quantile`, :func:`mean_interval`, :func:`interval_text`); the
Student-t quantile is computed here (the regularized incomplete beta function by its continued fraction, then
bisection), since the package does not depend on scipy.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from ..attacks.methods import TABLE1_ATTACKS, TABLE2_ATTACKS
from . import paper
from .claims import pct
from .collect import ATTACK_NAMES, DEFENSE_NAMES, AttackResult, Run, number
from .document import Block, Heading, Paragraph, Table
from .select import origin_of, pick

SECTION = "Tables I and II over bit lengths and seeds (paper layout)"
CONFIDENCE = 0.95
DASH = "—"
UNDEFENDED = "undefended"

# --- statistics -----------------------------------------------------------------------------------------------------

_CF_MAX_ITERATIONS = 100_000
_CF_EPS = 1e-15
_TINY = 1e-300


def _beta_continued_fraction(a: float, b: float, x: float) -> float:
    """The continued fraction of the incomplete beta function (modified Lentz evaluation); converges quickly for
    x < (a + 1) / (a + b + 2)."""
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > _TINY else _TINY)
    h = d
    for m in range(1, _CF_MAX_ITERATIONS + 1):
        for numerator in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                          -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > _TINY else _TINY)
            c = 1.0 + numerator / c
            c = c if abs(c) > _TINY else _TINY
            delta = c * d
            h *= delta
        if abs(delta - 1.0) < _CF_EPS:
            return h
    raise ArithmeticError(f"incomplete beta continued fraction did not converge (a={a}, b={b}, x={x})")


def incomplete_beta(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta function I_x(a, b), for a, b > 0 and 0 <= x <= 1."""
    if a <= 0 or b <= 0:
        raise ValueError(f"incomplete_beta needs a, b > 0 (got a={a}, b={b})")
    if not 0.0 <= x <= 1.0:
        raise ValueError(f"incomplete_beta needs 0 <= x <= 1 (got {x})")
    if x == 0.0 or x == 1.0:
        return x
    log_front = (math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _beta_continued_fraction(a, b, x) / a
    return 1.0 - math.exp(log_front) * _beta_continued_fraction(b, a, 1.0 - x) / b


def t_upper_tail(t: float, df: float) -> float:
    """P(T > t) for Student's t with ``df`` degrees of freedom."""
    if df <= 0:
        raise ValueError(f"degrees of freedom must be positive (got {df})")
    if t == 0:
        return 0.5
    tail = 0.5 * incomplete_beta(df / 2.0, 0.5, df / (df + t * t))
    return tail if t > 0 else 1.0 - tail


def t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with ``df`` degrees of freedom."""
    return 1.0 - t_upper_tail(t, df)


def t_quantile(p: float, df: float) -> float:
    """The ``p`` quantile of Student's t with ``df`` degrees of freedom (``t_quantile(0.975, 2)`` = 4.3027),
    by bisection on the upper tail."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"t_quantile needs 0 < p < 1 (got {p})")
    if df <= 0:
        raise ValueError(f"degrees of freedom must be positive (got {df})")
    if p == 0.5:
        return 0.0
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    tail = 1.0 - p
    lo, hi = 0.0, 1.0
    while t_upper_tail(hi, df) > tail:
        lo, hi = hi, 2.0 * hi
        if hi > 1e300:
            raise ArithmeticError(f"t_quantile({p}, {df}) is out of range")
    for _ in range(400):
        mid = 0.5 * (lo + hi)
        if mid in (lo, hi):
            break
        if t_upper_tail(mid, df) > tail:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def mean_interval(values: Iterable[float], confidence: float = CONFIDENCE) -> tuple[float, float | None, int]:
    """(mean, half-width, n) of ``values``: the half-width of the two-sided ``confidence`` Student-t interval of
    the mean, t_{(1+confidence)/2, n-1} * s / sqrt(n) with s the sample standard deviation (ddof = 1); None for a
    single value. Raises ValueError for no value."""
    xs = [float(v) for v in values]
    n = len(xs)
    if n == 0:
        raise ValueError("mean_interval needs at least one value")
    mean = math.fsum(xs) / n
    if n == 1:
        return mean, None, 1
    s = statistics.stdev(xs)
    return mean, t_quantile(0.5 + confidence / 2.0, n - 1) * s / math.sqrt(n), n


def interval_text(values: Iterable[float | None], expected: int | None = None) -> str:
    """A table cell for fractions shown as percentages: "—" for no value, "12.34" for one, "12.34 ± 1.05 (n=3)"
    for several (None values, results missing for a seed, are left out). One value among ``expected`` > 1 seeds
    says so: "12.34 (n=1)"."""
    present = [v for v in values if v is not None]
    if not present:
        return DASH
    mean, half, n = mean_interval(present)
    if half is None:
        return pct(mean) if (expected or 1) <= 1 else f"{pct(mean)} (n=1)"
    return f"{pct(mean)} ± {100 * half:.2f} (n={n})"


# --- the runs of a grid ---------------------------------------------------------------------------------------------

def _int(v: object) -> int | None:
    n = number(v)
    return None if n is None else int(n)


def training_seed(run: Run) -> int | None:
    """The seed the run's hashing model was trained with, as the run recorded it: ``Run.info("seed")``
    (config.yaml of a trained run), else model.pt's training settings (which a defended model keeps from its
    origin)."""
    seed = _int(run.info("seed"))
    if seed is None:
        seed = _int(((run.metadata or {}).get("training") or {}).get("seed"))
    return seed


def _mode_rank(run: Run) -> int:
    """Defended runs of one model: the default mode before the parity mode."""
    return 1 if (run.defense or {}).get("mode") == "parity" else 0


@dataclass
class GridGroup:
    """The runs of one (dataset, backbone, hashing method): per role ("undefended", "atrdh", "saat"), one run per
    (bits, seed)."""

    dataset: str
    backbone: str
    method: str
    models: dict[str, dict[tuple[int | None, int | None], Run]] = field(default_factory=dict)
    left_out: list[str] = field(default_factory=list)

    @property
    def spans_grid(self) -> bool:
        return len(self.models.get(UNDEFENDED, {})) > 1

    def bits(self) -> list[int | None]:
        found = {b for role in self.models.values() for b, _ in role}
        return sorted(found, key=lambda b: (b is None, b or 0))

    def seeds(self, bits: int | None, role: str | None = None) -> list[int | None]:
        """The seeds at ``bits`` of one role, or of all roles."""
        roles = self.models.values() if role is None else [self.models.get(role, {})]
        return sorted({s for models in roles for b, s in models if b == bits}, key=lambda s: (s is None, s or 0))

    def runs_at(self, role: str, bits: int | None) -> list[Run]:
        return [run for (b, s), run in sorted(self.models.get(role, {}).items(), key=lambda kv: (
            kv[0][1] is None, kv[0][1] or 0)) if b == bits]


def grid_groups(runs: list[Run]) -> list[GridGroup]:
    """The runs grouped by (dataset, backbone, hashing method), in the order they first appear. A defended run
    (ATRDH or SAAT) takes what it does not record itself (bits, seed, ...) from its origin; of several runs at one
    (role, bits, seed), the first (a defense in its default mode first) is kept and the others are listed as left
    out."""
    groups: dict[tuple[str, str, str], GridGroup] = {}
    candidates: list[tuple[tuple[str, str, str], str, tuple[int | None, int | None], Run]] = []
    for run in runs:
        if run.defended and run.defense_method not in paper.TABLE2_DEFENSES:
            continue
        origin = origin_of(run, runs) if run.defended else None

        def recorded(key: str, run: Run = run, origin: Run | None = origin) -> object:
            v = run.info(key)
            return origin.info(key) if v is None and origin is not None else v

        key = (str(recorded("dataset") or "unknown dataset"), str(recorded("backbone") or "unknown backbone"),
               str(recorded("method") or "unknown method"))
        seed = training_seed(origin) if origin is not None else None
        if seed is None:
            seed = training_seed(run)
        role = str(run.defense_method) if run.defended else UNDEFENDED
        candidates.append((key, role, (_int(recorded("bits")), seed), run))
        groups.setdefault(key, GridGroup(*key))
    # Stable sort: in run order, the default mode first.
    for key, role, cell, run in sorted(candidates, key=lambda c: _mode_rank(c[3])):
        group = groups[key]
        kept = group.models.setdefault(role, {}).setdefault(cell, run)
        if kept is not run:
            group.left_out.append(f"{run.name} (same {_role_name(role)} model, bits and seed as {kept.name})")
    return list(groups.values())


# --- the section ----------------------------------------------------------------------------------------------------

def _role_name(role: str) -> str:
    return role if role == UNDEFENDED else f"{DEFENSE_NAMES.get(role, role)}-trained"


def _bits_text(bits: int | None) -> str:
    return "bits unknown" if bits is None else f"{bits} bits"


def _seeds_text(seeds: list[int | None]) -> str:
    return ", ".join("unknown" if s is None else str(s) for s in seeds)


def _paper_text(table: dict, row: str, dataset: str | None, bits: int | None) -> str:
    v = None if dataset is None or bits is None else paper.paper_value(table, row, dataset, bits)
    return DASH if v is None else f"{v:.2f}"


Value = Callable[[Run], float | None]


def _result(method: str, targeted: bool, eps: float | None, take: Callable[[AttackResult | None], object]) -> Value:
    """A run's value in an attack row: the result the report's Tables I and II pick, marked as used."""
    def value(run: Run) -> float | None:
        a = pick(run, method, targeted, eps)
        take(a)
        return None if a is None else a.adversarial
    return value


def _clean(run: Run) -> float | None:
    return run.clean_map


def _table(group: GridGroup, rows: list[tuple[str, str, Value, dict, str]], own: str | None, caption: str) -> Table:
    """rows: (label, role, value of a run, paper table, paper row)."""
    bits = group.bits()
    header = ["row"]
    for b in bits:
        header += [f"{_bits_text(b)}: ours"] + ([f"{_bits_text(b)}: paper"] if own else [])
    body = []
    for label, role, value, table, key in rows:
        cells = [label]
        for b in bits:
            cells.append(interval_text([value(run) for run in group.runs_at(role, b)], len(group.seeds(b))))
            if own:
                cells.append(_paper_text(table, key, own, b))
        body.append(cells)
    return Table(header, body, caption=caption)


def group_blocks(group: GridGroup, eps: float | None, take: Callable[[AttackResult | None], object]) -> list[Block]:
    """Table I (untargeted, targeted) and Table II of one group, with its seeds and a caption per table."""
    own = paper.paper_dataset(group.dataset)
    eps_txt = DASH if eps is None else f"{eps:g}/255"
    what = f"{group.dataset}, {group.backbone}, {group.method}"
    stats = "ours: mean ± half-width of the 95 % t-interval over n seeds (n per cell; one seed: its value)"
    stats += (f"; paper: Yuan et al. (TIFS 2023) at {own}, ε = 8/255" if own
              else " (not a paper dataset: no paper columns)")
    defenses = [d for d in paper.TABLE2_DEFENSES if group.models.get(d)]
    seeds = "; ".join(f"{_role_name(role)}: " + ", ".join(
        f"{_bits_text(b)} (seeds {_seeds_text(group.seeds(b, role))})" for b in group.bits() if group.seeds(b, role))
        for role in (UNDEFENDED, *defenses))
    blocks: list[Block] = [Heading(what, 3), Paragraph(f"Models: {seeds}.")]
    if group.left_out:
        blocks.append(Paragraph("Left out of these tables (one run per model, bits and seed): "
                                + "; ".join(group.left_out) + ".", note=True))
    untargeted = [("clean MAP", UNDEFENDED, _clean, paper.TABLE1_UNTARGETED, "clean")]
    untargeted += [(ATTACK_NAMES[m], UNDEFENDED, _result(m, False, eps, take), paper.TABLE1_UNTARGETED, m)
                   for m in TABLE1_ATTACKS[False]]
    blocks.append(_table(group, untargeted, own, f"{what}, Table I, untargeted: MAP (%) of the undefended models, "
                                                 f"clean and under attack, ε = {eps_txt} (lower = stronger attack); "
                                                 f"{stats}"))
    targeted = [(ATTACK_NAMES[m] + (" (t)" if m == "mainstay" else ""), UNDEFENDED, _result(m, True, eps, take),
                 paper.TABLE1_TARGETED, m) for m in TABLE1_ATTACKS[True]]
    blocks.append(_table(group, targeted, own, f"{what}, Table I, targeted: t-MAP (%) of the undefended models, "
                                               f"ε = {eps_txt} (higher = stronger attack); {stats}"))
    if defenses:
        rows = []
        for d in defenses:
            name = DEFENSE_NAMES.get(d, d)
            rows.append((f"{name}: clean MAP", d, _clean, paper.TABLE2[d], "clean"))
            rows += [(f"{name}: {ATTACK_NAMES[m]}", d, _result(m, False, eps, take), paper.TABLE2[d], m)
                     for m in TABLE2_ATTACKS]
        blocks.append(_table(group, rows, own, f"{what}, Table II: MAP (%) of the adversarially trained models, "
                                               f"clean and under attack, ε = {eps_txt} (higher = more robust); "
                                               f"{stats}"))
    missing = [DEFENSE_NAMES.get(d, d) for d in paper.TABLE2_DEFENSES if d not in defenses]
    if missing:
        blocks.append(Paragraph(f"{what}: no {' or '.join(missing)}-trained model in the report; Table II "
                                f"{'has no row for it' if len(missing) == 1 else 'is left out'}.", note=True))
    return blocks


def grid_section(runs: list[Run], eps_of: Callable[[Run], float | None],
                 take: Callable[[AttackResult | None], object]) -> list[Block]:
    """The section for every (dataset, backbone, hashing method) whose undefended runs cover more than one
    (bits, seed) pair; nothing when there is none. ``eps_of`` gives a run's main ε (/255), ``take`` marks a result
    as shown."""
    groups = [g for g in grid_groups(runs) if g.spans_grid]
    if not groups:
        return []
    blocks: list[Block] = [
        Heading(SECTION),
        Paragraph("The paper's Tables I and II for each dataset, backbone and hashing method whose undefended models "
                  "cover several (bit length, seed) pairs, one 'ours' column per bit length (and the paper's number "
                  "beside it for a paper dataset). An 'ours' cell aggregates the seeds of its bit length: one seed "
                  "gives its value; n ≥ 2 give 'mean ± h (n=...)', h = t(0.975, n-1) · s / √n, the half-width of "
                  "the 95 % Student-t interval of the mean (s: the sample standard deviation); a seed without the "
                  "result is left out and n counts the seeds present. Each run's result is the one the report's "
                  "Tables I and II pick at the dataset's main ε. A defended model sits at the bits and seed of the "
                  "model it was trained from; the groups, bits and seeds are those the runs recorded.")]
    for group in groups:
        anchor = next(iter(group.models[UNDEFENDED].values()))
        blocks += group_blocks(group, eps_of(anchor), take)
    return blocks
