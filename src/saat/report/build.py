"""``build_report``: runs, attacks and defenses → ``report.md``, a self-contained ``report.html`` and PNG figures."""

from __future__ import annotations

import datetime as _dt
import json
import os
from collections import Counter
from pathlib import Path
from typing import Any

from .._version import __version__
from ..attacks.methods import TABLE1_ATTACKS
from ..retrieval import format_ci
from ..runs import TrainRecord
from ..utils.io import atomic_write_json, atomic_write_text, check_writable
from . import examples as _examples
from . import paper
from .claims import (
    CLAIM_VS_ATRDH,
    CLAIM_VS_UNDEFENDED,
    FAR_MARGIN,
    NOT_MEASURED,
    ClaimCheck,
    attack_strength,
    defense_strength,
    defense_strength_over_seeds,
    pct,
)
from .collect import ATTACK_NAMES, AttackResult, Run, collect_runs, number
from .document import Block, Bullets, Figure, Heading, Paragraph, Table, to_html, to_markdown
from .examples import ExampleUnavailable, retrieval_example_figure
from .figures import card_curve_figure, eps_figure, heatmap_figure, retrieval_curve_figure
from .grid import UNDEFENDED, grid_groups, grid_section
from .select import (
    describe,
    eps_key,
    families,
    group_by_dataset,
    main_eps,
    pick,
    pick_matched,
    same_eps,
    signature,
)

TITLE = "SAAT report: deep hashing retrieval under attack and adversarial training"
DASH = "—"
UNTARGETED_COLUMNS = TABLE1_ATTACKS[False]
TARGETED_COLUMNS = TABLE1_ATTACKS[True]


def build_report(run_dirs: list[str | Path], out_dir: str | Path = "report", *, discover: bool = True,
                 examples: bool = True, overwrite: bool = False) -> dict[str, Any]:
    """Collect every result of ``run_dirs`` (trained runs, their attacks, defended runs) and write the report.

    With ``discover``, defended runs that sit beside a given run and name it as their origin are added too. With
    ``examples``, the retrieval-example figure opens each run's dataset (to show database images). A folder that
    holds a report of other runs (``report-inputs.json``), or other files than a report's, is refused unless
    ``overwrite``; a report of the same runs is rebuilt in place.

    Returns the paths written: ``{"markdown": Path, "html": Path, "figures": {name: Path}}``.

    Example::

        from saat.report import build_report
        paths = build_report(["runs/demo", "runs/demo-saat"], "report")
        print(paths["html"])
    """
    out = Path(out_dir)
    check_writable(out)
    # The runs relative to the report folder: a report moved or copied together with its runs stays the same report.
    inputs = {"runs": sorted(os.path.relpath(Path(r).resolve(), out.resolve()) for r in run_dirs),
              "discover": discover}
    manifest = out / "report-inputs.json"
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        previous = json.loads(manifest.read_text()) if manifest.is_file() else None
        foreign = [p.name for p in out.iterdir() if p.suffix not in (".md", ".html", ".png", ".json")]
        if foreign or (previous is not None and previous != inputs):  # no manifest: a report of an earlier saat
            what = "files that are not this report's" if foreign else "a report of other runs"
            raise FileExistsError(f"{out} holds {what}; choose another --out, or pass --overwrite to write there")
    runs = collect_runs(list(run_dirs), discover=discover)
    out.mkdir(parents=True, exist_ok=True)
    builder = _Builder(runs, out, examples)
    blocks = builder.build()
    md_path, html_path = out / "report.md", out / "report.html"
    atomic_write_text(md_path, to_markdown(TITLE, blocks, out))
    atomic_write_text(html_path, to_html(TITLE, blocks))
    atomic_write_json(manifest, inputs)
    return {"markdown": md_path, "html": html_path, "figures": dict(builder.figures)}


# --- formatting -----------------------------------------------------------------------------------------------------

def eps_text(a: AttackResult) -> str:
    return "unbounded" if a.eps_255 is None else f"ε {a.eps_255:g}/255"


def pct_ci(v: float | None, ci: list[float] | None) -> str:
    """A MAP in points with its 95 % interval over the queries: "15.70 [12.1, 19.6]" ("15.70" for a result
    written before intervals existed, "—" for none)."""
    return DASH if v is None else format_ci(v, ci, percent=True)


def frac_ci(v: Any, ci: Any, digits: int = 3) -> str:
    """The same for a fraction (the robustness cards and transfer matrices): "0.157 [0.121, 0.196]"; without an
    interval the value as the report always printed it."""
    n = number(v)
    if n is None:
        return DASH
    return format_ci(n, ci) if isinstance(ci, (list, tuple)) and len(ci) == 2 else fmt(n, digits)


def result_cell(a: AttackResult | None) -> str:
    """"3.32 [2.1, 4.6] (ε 32/255, 100 q, 50 it)" — the number with its interval and the settings it was measured
    at."""
    if a is None:
        return DASH
    parts = [eps_text(a), f"{a.queries} q" if a.queries is not None else None,
             f"{a.steps} it" if a.steps is not None else None]
    return f"{pct_ci(a.adversarial, a.adversarial_ci)} ({', '.join(p for p in parts if p)})"


def fmt(v: Any, digits: int = 4) -> str:
    n = number(v)
    return DASH if n is None else f"{n:.{digits}g}"


def value_text(key: str, v: Any) -> str:
    if isinstance(v, bool) or v is None:
        return str(v).lower()
    if isinstance(v, float):
        if key.split(".")[-1] in ("eps", "step") and 0 < v <= 1:
            return f"{v * 255:.4g}/255"
        return f"{v:.4g}"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(value_text(key, x) for x in v) + "]"
    return str(v)


def compact(mapping: Any, skip: tuple[str, ...] = (), prefix: str = "") -> str:
    """``key=value`` pairs of a (nested) mapping, nulls and empty values left out."""
    if not isinstance(mapping, dict):
        return DASH if mapping is None else str(mapping)
    parts = []
    for k, v in mapping.items():
        key = f"{prefix}{k}"
        if k in skip or v is None or v == {} or v == []:
            continue
        if isinstance(v, dict):
            inner = compact(v, skip, prefix=f"{key}.")
            if inner != DASH:
                parts.append(inner)
        else:
            parts.append(f"{key}={value_text(key, v)}")
    return ", ".join(parts) or DASH


def _bits(run: Run) -> int | None:
    b = number(run.info("bits"))
    return None if b is None else int(b)


# --- the report -----------------------------------------------------------------------------------------------------

class _Builder:
    def __init__(self, runs: list[Run], out: Path, examples: bool):
        self.runs, self.out, self.examples = runs, out, examples
        self.figures: dict[str, Path] = {}
        self.groups = group_by_dataset(runs)
        self.main = {ds: main_eps(rs) for ds, rs in self.groups.items()}
        self._datasets: dict[tuple, Any] = {}
        self.used: set[int] = set()  # ids of the attack results shown in the tables and figures

    def take(self, a: AttackResult | None) -> AttackResult | None:
        if a is not None:
            self.used.add(id(a))
        return a

    def eps_of(self, run: Run) -> float | None:
        return self.main.get(str(run.info("dataset") or "unknown dataset"))

    def build(self) -> list[Block]:
        blocks: list[Block] = []
        for section in (self.overview, self.claims, self.table1, self.table2,
                        lambda: grid_section(self.runs, self.eps_of, self.take), self.robustness, self.figures_section,
                        self.perceptibility, self.all_results, self.configs, self.paper_tables):
            blocks += section()
        return blocks

    # overview ---------------------------------------------------------------------------------------------------
    def overview(self) -> list[Block]:
        now = _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
        blocks: list[Block] = [
            Paragraph(f"Generated by saat {__version__} on {now} from {len(self.runs)} run director"
                      f"{'y' if len(self.runs) == 1 else 'ies'}. MAP values are percentages (mAP x 100, as in the "
                      "paper's tables); ε is in /255 pixel levels; 'q' = attacked queries, 'it' = attack iterations. "
                      "A figure followed by brackets, '15.70 [12.1, 19.6]', carries its 95 % bootstrap interval over "
                      "the queries it was measured on (another draw of queries moves the figure that much); a figure "
                      "without brackets comes from a result written before intervals were kept. "
                      "Rows marked 'paper' are the published numbers of Yuan et al. (TIFS 2023), for context only: "
                      "they come from other datasets, models and budgets than ours unless the dataset matches."),
            Heading("Runs"),
        ]
        rows = []
        for r in self.runs:
            origin = r.origin or {}
            rows.append([r.name, str(r.path), "discovered beside a given run" if r.discovered else "given",
                         r.label, str(r.info("dataset") or DASH), str(r.info("method") or DASH),
                         str(r.info("backbone") or DASH), str(r.info("bits") or DASH), str(r.checkpoint_hash or DASH),
                         str(origin.get("run") or DASH), str(len(r.attacks)), pct_ci(r.clean_map, r.clean_map_ci)])
        blocks.append(Table(["run", "path", "source", "model", "dataset", "hashing", "backbone", "bits", "checkpoint",
                             "origin", "attack results", "clean mAP"], rows))
        for ds, eps in self.main.items():
            if eps is None:
                blocks.append(Paragraph(f"{ds}: no attack result with an ε budget; the tables below have no "
                                        "attack columns filled.", note=True))
            else:
                n = sum(1 for r in self.groups[ds] for a in r.attacks if same_eps(a, eps) and a.eps is not None)
                total = sum(1 for r in self.groups[ds] for a in r.attacks)
                blocks.append(Paragraph(
                    f"{ds}: main budget ε = {eps:g}/255 (shared by {n} of {total} attack results). The paper-style "
                    "tables show results at this budget; where several results exist for one attack the table uses "
                    "the default generator and mode, then the most queries, then the most iterations. Every result is "
                    "listed under 'All attack results'."))
        notes = [f"{r.name}: {n}" for r in self.runs for n in r.notes]
        if notes:
            blocks += [Paragraph("Missing or unreadable inputs (skipped):", note=True), Bullets(notes)]
        return blocks

    # claims -----------------------------------------------------------------------------------------------------
    def seed_checks(self) -> tuple[list, set[int]]:
        """The claims over several training seeds of one model (runs that differ only by their seed, grouped as the
        paper-layout section groups them): one check per (dataset, backbone, hashing method, bits) with two or more
        undefended seeds, each comparison's interval the hierarchical one over the seeds and their queries. Also
        the ids of the runs these checks cover (the per-model checks leave them out)."""
        checks, covered = [], set()
        for group in grid_groups(self.runs):
            for bits in group.bits():
                bases = {s: r for (b, s), r in group.models.get(UNDEFENDED, {}).items() if b == bits}
                if len(bases) < 2:
                    continue
                saat = {s: r for (b, s), r in group.models.get("saat", {}).items() if b == bits}
                atrdh = {s: r for (b, s), r in group.models.get("atrdh", {}).items() if b == bits}
                seeds = sorted(bases, key=lambda s: (s is None, s or 0))
                covered |= {id(r) for r in (*bases.values(), *saat.values(), *atrdh.values())}
                eps = self.eps_of(bases[seeds[0]])
                scope = (f"{group.dataset}, {group.backbone}, {group.method}, {bits} bits, seeds "
                         f"{', '.join(str(s) for s in seeds)}{f', ε {eps:g}/255' if eps is not None else ''}")
                runs = [bases[s] for s in seeds]
                checks.append(attack_strength(runs, eps, targeted=False, scope=scope))
                checks.append(attack_strength(runs, eps, targeted=True, scope=scope))
                if not saat:
                    for claim in (CLAIM_VS_ATRDH, CLAIM_VS_UNDEFENDED):
                        checks.append(ClaimCheck(claim, f"{scope} (defenses)", NOT_MEASURED,
                                                 "no SAAT-trained model of these runs is in the report."))
                    continue
                checks.append(defense_strength_over_seeds([(saat[s], atrdh[s]) for s in seeds if s in saat and s in
                                                           atrdh], eps, False, scope))
                checks.append(defense_strength_over_seeds([(saat[s], bases[s]) for s in seeds if s in saat], eps,
                                                          True, scope))
        return checks, covered

    def claims(self) -> list[Block]:
        checks, covered = self.seed_checks()
        for base, members in families(self.runs):
            if base is not None and id(base) in covered:
                continue
            members = [m for m in members if id(m) not in covered]
            if base is not None:
                eps = self.eps_of(base)
                checks.append(attack_strength(base, eps, targeted=False))
                checks.append(attack_strength(base, eps, targeted=True))
            saat_runs = [m for m in members if m.defense_method == "saat"]
            atrdh = [m for m in members if m.defense_method == "atrdh"]
            for s in saat_runs:
                eps = self.eps_of(s)
                checks.append(defense_strength(s, atrdh, eps, undefended=False))
                checks.append(defense_strength(s, [base] if base is not None else [], eps, undefended=True))
            if base is not None and not saat_runs:
                for claim in (CLAIM_VS_ATRDH, CLAIM_VS_UNDEFENDED):
                    checks.append(ClaimCheck(claim, f"{base.name} (defenses)", NOT_MEASURED,
                                             "no SAAT-trained model of this run is in the report."))
        blocks: list[Block] = [
            Heading("Claims check"),
            Paragraph("The paper's qualitative claims (docs/paper-results.md), checked automatically against the "
                      "numbers of this report at each dataset's main ε. Each comparison prints its margin — how many "
                      "MAP points the paper's side leads by — with the paired 95 % bootstrap interval over the same "
                      "queries in brackets (over several training seeds of one model: resampling the seeds, then the "
                      "queries within each). A comparison holds when the interval lies entirely on the claim's side "
                      f"(above 0; for 'far': at or above {FAR_MARGIN * 100:g} points), does not hold when it lies "
                      "entirely on the other side, and is undecided at 95 % otherwise; results written before "
                      "per-query APs were kept are compared by their values and say 'no interval (older result)'. "
                      "'holds' needs every comparison measured and holding; 'does not hold': one does not; "
                      "'undecided at 95 %': none fails but one is undecided; 'holds where measured': some comparison"
                      " is missing; 'not measured': the inputs are missing. Two models are compared under an attack "
                      "only when it ran with the same settings on both, and under the worst case when both have a "
                      "robustness card of one preset on the same queries. Lower MAP under attack = stronger "
                      "untargeted attack; higher t-MAP = stronger targeted attack; higher MAP under attack = "
                      "stronger defense."),
        ]
        if not checks:
            blocks.append(Paragraph("Nothing to check: no undefended or SAAT-trained run.", note=True))
        else:
            blocks.append(Table(["claim (paper)", "scope", "verdict", "our numbers (%)"],
                                [[c.claim, c.scope, c.status, c.evidence] for c in checks]))
        return blocks

    # Table I ------------------------------------------------------------------------------------------------------
    def table1(self) -> list[Block]:
        blocks: list[Block] = [Heading("Table I: attacks on undefended models")]
        bases = [r for r in self.runs if not r.defended]
        if not bases:
            return blocks + [Paragraph("No undefended run was given; Table I is empty.", note=True)]
        for ds, group in self.groups.items():
            group = [r for r in group if not r.defended]
            if not group:
                continue
            eps = self.main[ds]
            rows_u, rows_t = [], []
            for r in group:
                rows_u.append([r.name, str(_bits(r) or DASH), self.clean_cell(r)]
                              + [result_cell(self.take(pick(r, m, False, eps))) for m in UNTARGETED_COLUMNS])
                chosen = [self.take(pick(r, m, True, eps)) for m in TARGETED_COLUMNS]
                rows_t.append([r.name, str(_bits(r) or DASH), self.benign_t_cell(chosen)]
                              + [result_cell(a) for a in chosen])
            paper_u, paper_t = self.paper_rows1(ds, group)
            eps_txt = DASH if eps is None else f"{eps:g}/255"
            blocks.append(Table(
                ["model", "bits", "clean MAP", "HAG", "SDHA", "SAAT attack"], rows_u + paper_u,
                caption=f"{ds}, untargeted: MAP (%) under attack, ε = {eps_txt} (lower = stronger attack)",
                paper_rows=set(range(len(rows_u), len(rows_u) + len(paper_u)))))
            blocks.append(Table(
                ["model", "bits", "benign t-MAP", "P2P", "DHTA", "THA", "ProS-GAN", "SAAT attack (t)"],
                rows_t + paper_t,
                caption=f"{ds}, targeted: t-MAP (%), ε = {eps_txt} (higher = stronger attack)",
                paper_rows=set(range(len(rows_t), len(rows_t) + len(paper_t)))))
            if not any(r.attacks for r in group):
                blocks.append(Paragraph(f"{ds}: no attack results on these runs (run 'saat attack RUN --method all').",
                                        note=True))
        return blocks

    def clean_cell(self, r: Run) -> str:
        if r.clean_map is None:
            return DASH
        q = r.record.queries
        value = pct_ci(r.clean_map, r.clean_map_ci)
        return f"{value} ({q} q)" if q else value

    @staticmethod
    def benign_t_cell(chosen: list[AttackResult | None]) -> str:
        """The benign t-MAP of the SAAT attack's queries (else of the first targeted result shown)."""
        for a in [chosen[-1], *chosen[:-1]]:
            if a is not None and a.benign is not None:
                return (f"{pct_ci(a.benign, a.benign_ci)} ({a.queries} q, {ATTACK_NAMES.get(a.method, a.method)} "
                        "targets)")
        return DASH

    def paper_datasets(self, ds: str, runs: list[Run]) -> list[tuple[str, int]]:
        """Which paper columns to show beside a dataset: its own at our bits when it is a paper dataset, else the
        32-bit column of each paper dataset."""
        own = paper.paper_dataset(ds)
        if own:
            bits = sorted({b for b in (_bits(r) for r in runs) if b in paper.BITS}) or [32]
            return [(own, b) for b in bits]
        return [(d, 32) for d in paper.DATASETS]

    def paper_rows1(self, ds: str, runs: list[Run]) -> tuple[list[list[str]], list[list[str]]]:
        rows_u, rows_t = [], []
        for d, b in self.paper_datasets(ds, runs):
            label = f"paper (Table I): {d}, {b} bits"
            rows_u.append([label, str(b)] + [_p(paper.TABLE1_UNTARGETED, k, d, b)
                                             for k in ("clean", *UNTARGETED_COLUMNS)])
            rows_t.append([label, str(b), DASH] + [_p(paper.TABLE1_TARGETED, k, d, b) for k in TARGETED_COLUMNS])
        return rows_u, rows_t

    # Table II -----------------------------------------------------------------------------------------------------
    def table2(self) -> list[Block]:
        blocks: list[Block] = [Heading("Table II: adversarially trained models")]
        fams = [(b, m) for b, m in families(self.runs) if m or (b is not None and self._purified(b))]
        if not fams:
            return blocks + [Paragraph("No defended run (saat defend) and no purifier result is in the report; "
                                       "Table II is empty.", note=True)]
        for base, members in fams:
            models = ([base] if base is not None else []) + members
            eps = self.eps_of(models[0])
            columns = [pick_matched(models, m, False, eps) for m in UNTARGETED_COLUMNS]
            rows = [[r.label, r.name, pct_ci(r.clean_map, r.clean_map_ci)]
                    + [result_cell(self.take(col[i])) for col in columns]
                    for i, r in enumerate(models)]
            mixed = []
            for m, col in zip(UNTARGETED_COLUMNS, columns, strict=True):
                if len({signature(a) for a in col if a is not None}) > 1:
                    mixed.append(f"{ATTACK_NAMES[m]} (" + "; ".join(f"{r.name}: {describe(a)}" for r, a in
                                                                    zip(models, col, strict=True) if a) + ")")
            if base is not None:
                for purifier in self._purified(base):
                    results = [self.take(pick(base, m, False, eps, purifier)) for m in UNTARGETED_COLUMNS]
                    benign = next((a for a in results if a is not None and a.benign is not None), None)
                    rows.append([f"ComDefend purifier ({'adaptive' if 'adaptive' in purifier else 'non-adaptive'} "
                                 "attacker)", base.name, DASH if benign is None else pct_ci(benign.benign,
                                                                                            benign.benign_ci)]
                                + [result_cell(a) for a in results])
            ref = base if base is not None else members[0]
            ds = str(ref.info("dataset") or "unknown dataset")
            prow = []
            for d, b in self.paper_datasets(ds, [ref]):
                prow.append([f"paper (Table I): undefended, {d}, {b} bits", DASH]
                            + [_p(paper.TABLE1_UNTARGETED, k, d, b) for k in ("clean", *UNTARGETED_COLUMNS)])
                for defense in paper.TABLE2_DEFENSES:
                    prow.append([f"paper (Table II): {defense.upper()}, {d}, {b} bits", DASH]
                                + [_p(paper.TABLE2[defense], k, d, b) for k in ("clean", *UNTARGETED_COLUMNS)])
            title = f"origin {base.name}" if base is not None else "defended runs whose origin is not in the report"
            eps_txt = DASH if eps is None else f"{eps:g}/255"
            blocks.append(Table(["model", "run", "clean MAP", "HAG", "SDHA", "SAAT attack"], rows + prow,
                                caption=f"{ds}, {title}: MAP (%) clean and under attack, ε = {eps_txt} "
                                        "(higher = more robust)",
                                paper_rows=set(range(len(rows), len(rows) + len(prow)))))
            if mixed:
                blocks.append(Paragraph("Models attacked with different settings (compare these columns with care): "
                                        + "; ".join(mixed) + ".", note=True))
        return blocks

    # robustness cards and transfer ------------------------------------------------------------------------------
    def robustness(self) -> list[Block]:
        blocks: list[Block] = [Heading("Robustness card")]
        cards = [(r, c) for r in self.runs for c in r.cards]
        transfers = [t for r in self.runs for t in r.transfers]
        if not cards and not transfers:
            return blocks + [Paragraph("No robustness card (saat robustness) and no transfer matrix (saat transfer) "
                                       "is in the report.", note=True)]
        if cards:
            blocks.append(Paragraph(
                "Every query is attacked by each attack of an ensemble and keeps its worst case (lowest AP; "
                "targeted: highest t-AP); the worst-case figure is the mean of these per-query worst cases, never "
                "above the best single attack. Wins: the queries for which an attack gave the worst case. The "
                "sanity checks look for signs of gradient masking (docs/robustness.md). Figures are fractions (mAP or"
                " t-MAP), with their 95 % bootstrap interval over the queries in brackets where the card has one."))
            rows = []
            for run, card in cards:
                members = "; ".join(f"{name} {frac_ci(row.get('map'), row.get('map_ci'))} ({row.get('wins', 0)} wins)"
                                    for name, row in card.get("per_attack", {}).items())
                best = card.get("best_single") or {}
                raised = card.get("flags_raised") or [k for k, v in card.get("flags", {}).items()
                                                      if isinstance(v, dict) and v.get("raised")]
                rows.append([run.name, str(card.get("preset", DASH)), str(card.get("metric", "mAP")),
                             f"{number(card.get('eps', 0)) * 255:g}/255" if number(card.get("eps")) is not None
                             else DASH, str(card.get("queries", DASH)),
                             frac_ci(card.get("clean_map"), card.get("clean_map_ci")),
                             frac_ci(card.get("robust_map"), card.get("robust_map_ci")),
                             f"{best.get('attack', DASH)} {frac_ci(best.get('map'), best.get('map_ci'))}",
                             members, ", ".join(raised) if raised else "none"])
            blocks.append(Table(["run", "preset", "measure", "ε", "queries", "clean", "worst case", "best single",
                                 "per attack (wins)", "flags raised"], rows,
                                caption="Robustness cards: the worst case over the attack ensemble"))
            items = []
            for run, card in cards:
                where = f"{run.name} ({card.get('preset', '')} preset)"
                flags = {k: v for k, v in card.get("flags", {}).items() if isinstance(v, dict)}
                if not flags:
                    items.append(f"{where}: sanity checks not run (ensemble only)")
                    continue
                passed = [k for k, v in flags.items() if not v.get("raised")]
                if passed:
                    items.append(f"{where}: {', '.join(passed)} — ok")
                items += [f"{where}: {k} RAISED — {v.get('detail', '')}" for k, v in flags.items() if v.get("raised")]
            if items:
                blocks += [Heading("Sanity checks in words", 3), Bullets(items)]
            lines = [(f"{run.name} ({card.get('preset', '')})", [(number(c.get("eps_255")) or 0.0, number(c.get("map")))
                                                                  for c in card.get("eps_curve", [])
                                                                  if number(c.get("map")) is not None])
                     for run, card in cards if card.get("eps_curve")]
            if lines:
                path = card_curve_figure(self.out / "robustness-eps.png", "Robustness cards: the monotone check",
                                         lines, "mAP / t-MAP")
                self.figures[path.stem] = path
                blocks.append(Figure(path, "Each card's ε curve: the mainstay APGD attack at ε × 0, ¼, ½, 1, 2, 4; a "
                                           "curve that rises with ε (untargeted) means the attack is failing."))
        for i, t in enumerate(transfers):
            names = [str(n) for n in t["models"]]
            path = heatmap_figure(self.out / f"transfer-{i}.png", f"Transfer: mainstay attack, ε "
                                  f"{(number(t.get('eps')) or 0) * 255:g}/255, {t.get('queries')} queries", names,
                                  [number(v) or 0.0 for v in t["clean"]],
                                  [[number(v) or 0.0 for v in row] for row in t["matrix"]])
            self.figures[path.stem] = path
            blocks.append(Figure(path, f"Transfer matrix ({t.get('dataset', '')}): row = the model the attack was "
                                       "crafted on, column = the model it is evaluated on (mAP); the diagonal is the "
                                       "white-box attack, the first row the clean mAP."))
            blocks.append(self.transfer_table(t, names))
        return blocks

    @staticmethod
    def transfer_table(t: dict, names: list[str]) -> Table:
        """The transfer matrix's numbers, each with its 95 % interval over the queries where the matrix has them."""
        def at(rows: Any, *index: int) -> Any:
            for i in index:
                if not isinstance(rows, list) or i >= len(rows):
                    return None
                rows = rows[i]
            return rows

        body = [["(clean)"] + [frac_ci(v, at(t.get("clean_ci"), j)) for j, v in enumerate(t["clean"])]]
        for i, row in enumerate(t["matrix"]):
            label = names[i] if i < len(names) else DASH
            body.append([label] + [frac_ci(v, at(t.get("matrix_ci"), i, j)) for j, v in enumerate(row)])
        return Table(["crafted on (row) / evaluated on (column)", *names], body,
                     caption=f"Transfer matrix ({t.get('dataset', '')}): mAP, with the 95 % bootstrap interval over "
                             "the queries in brackets where the matrix has one")

    @staticmethod
    def _purified(run: Run) -> list[str]:
        return sorted({a.purifier for a in run.attacks if a.purifier and not a.targeted})

    # figures ------------------------------------------------------------------------------------------------------
    def figures_section(self) -> list[Block]:
        blocks: list[Block] = [Heading("Figures")]
        blocks += self.curve_figures()
        blocks += self.eps_figures()
        blocks += self.example_figures()
        return blocks

    def shown_attacks(self, run: Run) -> list[AttackResult]:
        eps = self.eps_of(run)
        chosen = [pick(run, m, False, eps) for m in (*UNTARGETED_COLUMNS, "cgat")]
        chosen += [pick(run, m, True, eps) for m in (*TARGETED_COLUMNS, "cgat")]
        return [self.take(a) for a in chosen if a is not None]

    def curve_figures(self) -> list[Block]:
        blocks: list[Block] = [Heading("Precision-recall and P@N: benign vs each attack (paper Fig. 3-4)", 3)]
        for run in self.runs:
            attacks = self.shown_attacks(run)
            for kind, what in (("pr", "precision-recall"), ("pn", "precision@N")):
                path, missing = retrieval_curve_figure(self.out / f"{kind}-{run.slug}.png", run, attacks, kind)
                if path is None:
                    blocks.append(Paragraph(f"{run.name}: no {what} curve (no clean metrics and no attack with "
                                            "stored curves).", note=True))
                    continue
                self.figures[path.stem] = path
                eps = self.eps_of(run)
                blocks.append(Figure(path, f"{what[0].upper()}{what[1:]} of {run.name} ({run.label}): benign queries "
                                           f"vs the attacks of Table I (ε {DASH if eps is None else f'{eps:g}'}/255)."))
                if missing:
                    blocks.append(Paragraph(f"{run.name}: no stored {what} curve for {', '.join(missing)}.", note=True))
        return blocks

    def eps_figures(self) -> list[Block]:
        blocks: list[Block] = [Heading("MAP vs ε under the untargeted SAAT attack", 3)]
        for base, members in families(self.runs):
            runs = ([base] if base is not None else []) + members
            results = {id(r): [a for a in r.attacks if a.method == "mainstay" and not a.targeted and not a.purifier
                               and a.eps is not None and a.adversarial is not None] for r in runs}
            budgets = {eps_key(a.eps_255) for rs in results.values() for a in rs}
            name = base.name if base is not None else "defended runs without origin"
            if len(budgets) < 2:
                blocks.append(Paragraph(f"{name}: MAP-vs-ε figure skipped, untargeted SAAT-attack results exist at "
                                        f"{len(budgets)} budget{'s' if len(budgets) != 1 else ''} (needs 2 or more).",
                                        note=True))
                continue
            # One line per model, drawn from results with one setting (the one covering most budgets and models) so
            # that a line never mixes attack strengths.
            shared = Counter(signature(a) for rs in results.values() for a in rs)
            lines = []
            for r in runs:
                own = Counter(signature(a) for a in results[id(r)])
                if not own:
                    continue
                sig = max(own, key=lambda g: (shared[g], own[g]))
                points, benign = [], None
                for k in sorted({eps_key(a.eps_255) for a in results[id(r)] if signature(a) == sig}):
                    a = max((a for a in results[id(r)] if signature(a) == sig and eps_key(a.eps_255) == k),
                            key=AttackResult.preference)
                    points.append((a.eps_255, a.adversarial))
                    benign = a.benign if benign is None else benign
                if benign is not None:
                    points.append((0.0, benign))
                example = next(a for a in results[id(r)] if signature(a) == sig)
                lines.append((f"{r.label}: {r.name} ({describe(example)})", r.defense_method or "undefended", points))
            slug = base.slug if base is not None else "orphans"
            path = eps_figure(self.out / f"eps-{slug}.png", f"MAP under the SAAT attack vs ε: {name}", lines)
            self.figures[path.stem] = path
            blocks.append(Figure(path, f"MAP (fraction) of {name} and its adversarially trained versions under the "
                                       "untargeted SAAT attack at each measured ε, each line with one attack setting; "
                                       "ε = 0 is the benign MAP of the same queries."))
        return blocks

    def example_figures(self) -> list[Block]:
        blocks: list[Block] = [Heading("Retrieval examples (paper Fig. 5)", 3)]
        if not self.examples:
            return blocks + [Paragraph("Retrieval examples not drawn (disabled).", note=True)]
        for run in self.runs:
            eps = self.eps_of(run)
            cands = [a for a in run.attacks if a.adversarial is not None and not a.purifier]
            cands.sort(key=lambda a: (a.method == "mainstay" and not a.targeted, not a.targeted,
                                      same_eps(a, eps), a.preference()), reverse=True)
            reasons = Counter()
            drawn = False
            for a in cands:
                if not a.files.examples_npz.is_file():
                    reasons["examples.npz missing"] += 1
                    continue
                try:
                    path = retrieval_example_figure(self.out / f"examples-{run.slug}.png", run, a,
                                                    dataset=self.dataset_for(run))
                except ExampleUnavailable as exc:
                    reasons[str(exc)] += 1
                    continue
                self.figures[path.stem] = path
                blocks.append(Figure(path, f"{run.name} ({run.label}): top-10 database items for benign and "
                                           f"adversarial queries of '{a.name}' ({eps_text(a)}); green frame = "
                                           "relevant, red = irrelevant."))
                drawn = True
                break
            if not drawn:
                why = "; ".join(f"{k} ({n} result{'s' if n > 1 else ''})" for k, n in reasons.items()) or (
                    "no attack results")
                blocks.append(Paragraph(f"{run.name}: no retrieval example: {why}.", note=True))
        return blocks

    def dataset_for(self, run: Run):
        """The run's dataset, opened once per (dataset, input size, seed); an error is raised as unavailable."""
        training = (run.metadata or {}).get("training") or {}
        key = (str(run.info("dataset")), (run.metadata or {}).get("input_size"), training.get("seed"),
               training.get("dataset_dir"))
        if key not in self._datasets:
            try:
                self._datasets[key] = _examples.open_run_dataset(run.path)
            except Exception as exc:  # noqa: BLE001 - a missing dataset only skips the figure
                self._datasets[key] = ExampleUnavailable(f"dataset not available ({type(exc).__name__}: {exc})")
        ds = self._datasets[key]
        if isinstance(ds, ExampleUnavailable):
            raise ds
        return ds

    # perceptibility and timing ------------------------------------------------------------------------------------
    def perceptibility(self) -> list[Block]:
        rows = []
        for r in self.runs:
            for a in r.attacks:
                p = a.perceptibility
                rows.append([r.name, a.name, a.display, eps_text(a), fmt(p.get("linf_mean_255"), 4),
                             fmt(number(p.get("linf_max")) * 255 if number(p.get("linf_max")) is not None else None),
                             fmt(p.get("l2_mean")), fmt(p.get("mse_mean")), fmt(p.get("psnr_mean")),
                             str(p.get("images", a.queries or DASH)), fmt(a.record.seconds),
                             fmt(a.record.images_per_s), str(a.record.device or DASH)])
        blocks: list[Block] = [Heading("Perceptibility and attack time")]
        if rows:
            blocks.append(Table(["run", "result", "attack", "budget", "L∞ mean (/255)", "L∞ max (/255)", "L2",
                                 "MSE", "PSNR (dB)", "images", "seconds", "images/s", "device"], rows,
                                caption="Per attack result: mean perturbation size over the attacked queries, time"))
        else:
            blocks.append(Paragraph("No attack results.", note=True))
        blocks += [Heading("Training time", 3), self.training_table()]
        return blocks

    def training_table(self) -> Table:
        rows = []
        for r in self.runs:
            epochs = r.epoch_seconds()
            m = r.record or TrainRecord()
            per_epoch = getattr(m, "seconds_per_epoch", None)
            if per_epoch is None and epochs:
                per_epoch = sum(epochs) / len(epochs)
            ratio, source = getattr(m, "epoch_time_ratio_to_plain_training", None), "metrics.json"
            origin = next((o for o in self.runs if not o.defended and r.defended and o is not r
                           and (r.origin or {}).get("checkpoint") == o.checkpoint_hash), None)
            if ratio is None and per_epoch is not None and origin is not None and origin.epoch_seconds():
                plain = origin.epoch_seconds()
                ratio, source = per_epoch / (sum(plain) / len(plain)), f"train logs of {r.name} and {origin.name}"
            total = m.training_seconds_this_session
            rows.append([r.name, r.label, str(len(epochs) or m.epochs or DASH), fmt(per_epoch),
                         fmt(sum(epochs)) if epochs else fmt(total),
                         DASH if not r.defended else (f"{ratio:.1f}x ({source})" if ratio is not None else DASH)])
        return Table(["run", "model", "epochs", "seconds / epoch", "training seconds", "epoch time vs plain training"],
                     rows, caption="From train_log.jsonl (epoch records) and metrics.json")

    # all results ----------------------------------------------------------------------------------------------------
    def all_results(self) -> list[Block]:
        blocks: list[Block] = [Heading("All attack results")]
        rows = []
        for r in self.runs:
            eps = self.eps_of(r)
            for a in sorted(r.attacks, key=lambda a: (a.targeted, a.method, a.eps_255 or 0, a.name)):
                used = "yes" if id(a) in self.used else ("ε differs" if not same_eps(a, eps) else "")
                rows.append([r.name, a.name, a.display, "targeted" if a.targeted else "untargeted",
                             a.purifier or DASH, eps_text(a), str(a.queries or DASH), str(a.steps or DASH),
                             a.generator or DASH, pct_ci(a.benign, a.benign_ci),
                             pct_ci(a.adversarial, a.adversarial_ci), pct(a.theory),
                             pct(a.record.random_ranking_map), "yes" if a.curve("pr_curve", "recall") else "no", used])
        if not rows:
            return blocks + [Paragraph("No attack results in these runs.", note=True)]
        blocks.append(Paragraph("benign = MAP of the same benign queries (t-MAP with the target labels for targeted "
                                "attacks); adversarial = MAP (t-MAP) of the adversarial queries; theory = MAP of the "
                                "attack's ideal codes; random = MAP of a random ranking. 'in tables' = used in Tables "
                                "I/II and the curve figures."))
        blocks.append(Table(["run", "result", "attack", "kind", "purifier", "budget", "queries", "iterations",
                             "generator", "benign", "adversarial", "theory", "random", "curves", "in tables"], rows))
        return blocks

    # configuration ----------------------------------------------------------------------------------------------
    def configs(self) -> list[Block]:
        rows = []
        for r in self.runs:
            if r.config is not None:
                rows.append([r.name, "config.yaml", compact(r.config)])
            if r.defense_config is not None:
                dc = r.defense_config
                rows.append([r.name, "defense.yaml", compact({"source_run": dc.get("source_run"),
                                                              "source_checkpoint": dc.get("source_checkpoint"),
                                                              "settings": dc.get("settings")})])
            elif r.defense is not None:
                rows.append([r.name, "model.pt defense", compact(r.defense)])
            if r.config is None and r.defense_config is None and r.metadata and r.metadata.get("training"):
                rows.append([r.name, "model.pt training", compact(r.metadata["training"])])
        attack_rows = [[r.name, a.name, compact(a.settings, skip=("name",))] for r in self.runs for a in r.attacks]
        blocks: list[Block] = [Heading("Configuration")]
        blocks.append(Table(["run", "file", "settings (nulls omitted)"], rows) if rows
                      else Paragraph("No configuration files found.", note=True))
        if attack_rows:
            blocks.append(Table(["run", "attack result", "settings"], attack_rows, caption="Attack settings"))
        return blocks

    # the paper --------------------------------------------------------------------------------------------------
    def paper_tables(self) -> list[Block]:
        head = ["paper row"] + [f"{d} ({'/'.join(map(str, paper.BITS))} bits)" for d in paper.DATASETS]

        def row(label: str, table: dict, key: str) -> list[str]:
            return [label] + [" / ".join(f"{v:.2f}" for v in table[key][d]) for d in paper.DATASETS]

        t1 = [row("clean (no attack)", paper.TABLE1_UNTARGETED, "clean")]
        t1 += [row(ATTACK_NAMES[k], paper.TABLE1_UNTARGETED, k) for k in UNTARGETED_COLUMNS]
        t1 += [row(f"{ATTACK_NAMES[k]} (t)", paper.TABLE1_TARGETED, k) for k in TARGETED_COLUMNS]
        t2 = [row(f"{d.upper()} {'clean' if k == 'clean' else 'vs ' + ATTACK_NAMES[k]}", paper.TABLE2[d], k)
              for d in paper.TABLE2_DEFENSES for k in ("clean", *UNTARGETED_COLUMNS)]
        return [Heading("The paper's numbers (for context)"),
                Paragraph(f"Published in {paper.SOURCE}. MAP % (t-MAP % for targeted rows), ε = 8/255. These are "
                          "the paper's numbers, not measured here.", note=True),
                Table(head, t1, caption="Paper, Table I: attacks on undefended models", paper_rows=set(range(len(t1)))),
                Table(head, t2, caption="Paper, Table II: adversarially trained models",
                      paper_rows=set(range(len(t2))))]


def _p(table: dict, key: str, dataset: str, bits: int) -> str:
    v = paper.paper_value(table, key, dataset, bits)
    return DASH if v is None else f"{v:.2f}"
