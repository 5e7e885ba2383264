"""A study's report: its cells summarised, ranked as a leaderboard, shown as a table, written as Markdown
and drawn."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fmtransfer import contenders
from fmtransfer.config import Config, below_chapter
from fmtransfer.errors import DataError, FmtError, check_argument
from fmtransfer.report import Column, figures, fitted, mean_std, pct, ratio_text, save_figure, smoke_note, smoke_title
from fmtransfer.study.axes import axis, cell_axes, grid, planned_contenders
from fmtransfer.study import inference, records
from fmtransfer.study import tuning
from fmtransfer.study.records import RunRecord, config_from, load_records, read_meta, read_records, settings_fingerprint
from fmtransfer.study.stats import (
    BOOK, FIRST, MIN_INTERVAL_UNITS, Cell, best_sets, book_placement, draw_order, holm, max_t_over_study, mc_seed,
    paired_stats, units,
)


@dataclass
class StudyResult:
    """Every finished run of a study directory, summarised per cell."""

    study: str
    runs_finished: int
    runs_in_grid: int
    cells: list[Cell]
    config: dict
    plots: list[str] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)  # results lines left out, by reason
    max_t: dict | None = None  # the study-wide max-T family: its seeds, method, Monte Carlo error
    best_sets: list[dict] = field(default_factory=list)  # per setting: the best contender, and those tied with it
    equivalence_margin: float | None = None  # points, the TOST margin the cells were judged with
    # Per cell (in `cells` order), its mean difference per seed over the draws: the unit every
    # comparison of cells pairs on (`claims`). Not in to_dict: the accuracies are.
    by_seed: list[dict] = field(default_factory=list, repr=False)
    seeds_auto: dict | None = None  # where `--seeds auto` stopped (`runner.Precision`), if it ran last
    # The settings below the chapter's (`config.below_chapter`): a smoke test where any, which
    # every output of the report says first.
    smoke: tuple[str, ...] = ()

    def cell(self, contender: str = "transfer", **axes) -> Cell:
        """The first cell of `contender` matching `axes` (pair=(5, 6), b_train_size=200, ...)."""
        for c in self.cells:
            if c.contender == contender and all(
                    (list(v) if isinstance(v, tuple) else v) == getattr(c, k) for k, v in axes.items()):
                return c
        raise KeyError(f"no cell for {contender} with {axes}")

    def to_dict(self) -> dict[str, Any]:
        d = {"study": self.study, "runs_finished": self.runs_finished, "runs_in_grid": self.runs_in_grid,
             "cells": [c.to_dict() for c in self.cells], "config": self.config, "skipped": self.skipped,
             "equivalence_margin": self.equivalence_margin, "max_t": self.max_t, "best_sets": self.best_sets}
        if self.plots:
            d["plots"] = self.plots
        if self.seeds_auto is not None:
            d["seeds_auto"] = self.seeds_auto
        d["smoke"] = list(self.smoke)
        return d


def report(study_dir: str | Path, *, equivalence_margin: float | None = None) -> StudyResult:
    """Merge every finished run in `study_dir` and summarise each cell, per contender.

    `equivalence_margin` (points) overrides the study's `study.equivalence_margin`; a
    non-positive one is a ConfigError of that key.
    """
    check_argument("report", "study_dir", study_dir, (str, os.PathLike),
                   "a study directory's path (str or os.PathLike)")
    check_argument("report", "equivalence_margin", equivalence_margin, (int, float, type(None)),
                   "a number of accuracy points, or None for the study's own")
    study_dir = Path(study_dir)
    meta = read_meta(study_dir)
    config = config_from(meta["config"], study_dir)
    if equivalence_margin is not None:
        config = config.replace(**{"study.equivalence_margin": equivalence_margin})
    margin = config.study.equivalence_margin
    results, skipped = read_records(study_dir, config)
    tune = meta["config"].get("tune") if isinstance(meta["config"].get("tune"), dict) else {}
    # A tuned study's cells pair the trial each unit selects on validation data (`tuning`).
    selected = tuning.select(results, tune.get("trials") or 0) if tuning.is_tuned(results) else None
    summary, by_seed = [], []
    book_settings = settings_fingerprint(config) == settings_fingerprint(Config())  # the book's epochs, model...
    book_point = grid(Config())[0].cell_point
    for (_, name), runs in _cells(selected.records if selected is not None else results).items():
        title = contenders.get(name).title if name in contenders.names() else recorded_title(meta, name)
        base = [r.baseline.test_accuracy for r in runs]
        mine = [r.result.test_accuracy for r in runs]
        seeds, draws = [r.key.seed for r in runs], [draw_of(r) for r in runs]
        point = runs[0].key.cell_point
        cell = Cell(contender=name, title=title, point=point, seeds=seeds, data_seeds=draws,
                    **paired_stats(base, mine, seeds=seeds, draws=draws, margin_points=margin,
                                   seed=mc_seed("cell", point, name)),
                    baseline_accuracies=base, accuracies=mine,
                    diverged=sum(r.result.diverged for r in runs),
                    baseline_diverged=sum(r.baseline.diverged for r in runs))
        probes = [r.result.linear_probe for r in runs if r.result.linear_probe is not None]
        cell.linear_probe = float(np.mean(probes)) if probes else None
        if name == "transfer":  # in every setting: is the book's result typical here?
            # The book's point is its first 200 images: a cell on drawn samples is another question.
            on_book_images = all(d == FIRST for d in draws)
            cell.book = {**book_placement(base, mine, seeds, draws),
                         "at_book_point": book_settings and cell.point == book_point and on_book_images
                         and selected is None}  # a tuned cell is not the book's recipe
        if selected is not None:
            cell.tuning = tuning.summary(selected, runs[0].key.setting, name, tune)
        u = units(base, mine, seeds, draws)
        cell.mcnemar, term = _test_image_tests(study_dir, runs)
        cell.test_images = _with_images(cell, u.matrix, term)
        summary.append(cell)
        by_seed.append(u.by_seed)
    holm(summary)
    identity = [[c.point, c.contender] for c in summary]
    family = max_t_over_study(summary, by_seed, seed=mc_seed("study", identity))
    tied = best_sets(summary, by_seed, seed=mc_seed("best", identity))
    # What the study ran: the contenders study.json names (a study of 0.5 or older names none) and
    # those with records; `all` is these, not what is registered today.
    ran = [*(meta["titles"] if isinstance(meta.get("titles"), dict) else {}), *(r.contender for r in results)]
    in_grid = {k.run_id(c) for k in grid(config) for c in planned_contenders(config, dict.fromkeys(ran))}
    return StudyResult(str(study_dir), len(results), len(in_grid | {r.id for r in results}), summary,
                       meta["config"], skipped=skipped, max_t=family, best_sets=tied, equivalence_margin=margin,
                       by_seed=by_seed,
                       seeds_auto=meta["seeds_auto"] if isinstance(meta.get("seeds_auto"), dict) else None,
                       smoke=below_chapter(meta["config"], contenders.sections_read({"baseline", *(c.contender
                                                                                               for c in summary)})))


def recorded_title(meta: dict, name: str) -> str:
    """What study.json says contender `name` was called (it is not installed now), else its name."""
    title = (meta.get("titles") if isinstance(meta.get("titles"), dict) else {}).get(name)
    return title if isinstance(title, str) and title.strip() and title.isprintable() else name


def draw_of(record: RunRecord) -> Any:
    """The record's draw of the labelled sample: its data seed, or "first" (the book's first N
    images) for a record made before study.data_seeds existed."""
    values = record.key.values
    return (values() if callable(values) else values).get("data_seed", FIRST)


def _test_image_tests(study_dir: Path, runs: list[RunRecord]) -> tuple[list[dict] | None, dict | None]:
    """From the runs' stored test predictions (`records.load_predictions`): each run's exact
    McNemar test, where every run of the cell has them (a column with gaps would read as
    complete), and the cell's test-image term (`inference.test_image_term`) over the runs that
    have them, with how many of the cell's runs those are (runs made before fmtransfer kept
    predictions, or whose model diverged, have none; fewer runs average less image noise away,
    so the term errs large). Predictions that contradict their records are a DataError
    (`load_predictions`), never a gap."""
    found = [(r, p) for r, p in ((r, records.load_predictions(study_dir, r)) for r in runs) if p is not None]
    if not found:
        return None, None
    for r, p in found:
        if not np.array_equal(p.y, found[0][1].y):  # one cell, one task B: the same test images
            raise DataError(f"{study_dir}: the stored test labels of run {r.id} are not those of run "
                           f"{found[0][0].id}, in the same cell; one of their baseline predictions files is "
                           "not the study's", path=study_dir)
    per_run = [{"seed": r.key.seed, "data_seed": draw_of(r), **inference.mcnemar(p.y, p.baseline, p.result).to_dict()}
               for r, p in found] if len(found) == len(runs) else None
    term = inference.test_image_term([p.baseline_correct for _, p in found], [p.result_correct for _, p in found])
    return per_run, {**term.to_dict(), "of": len(runs)}


def _with_images(cell: Cell, matrix: np.ndarray, term: dict | None) -> dict | None:
    """The test-image term beside the cell's interval: its share of the mean's variance and the
    95% CI with it added (t on the interval's degrees of freedom)."""
    if term is None or matrix.size < MIN_INTERVAL_UNITS:
        return term
    ci = inference.crossed_interval(matrix)
    if ci.standard_error is None or not ci.df:
        return term
    from scipy import stats

    total = ci.standard_error ** 2 + term["se"] ** 2
    half = float(stats.t.ppf(0.975, ci.df)) * total ** 0.5
    significant = None if cell.mcnemar is None else sum(r["p_value"] < 0.05 for r in cell.mcnemar)
    return {**term, "share_of_variance": term["se"] ** 2 / total if total > 0 else 0.0,
            "ci95_with_images": [ci.mean_difference - half, ci.mean_difference + half],
            "runs_mcnemar_below_05": significant}


def _cells(records: list[RunRecord]) -> dict[tuple, list[RunRecord]]:
    """The records of each cell, (setting, contender) -> runs, one per unit (seed, data seed): draw
    by draw, seeds in order within each; cells in the report's order."""
    order = {name: i for i, name in enumerate(contenders.names())}
    draw = axis("data_seed")
    cells: dict[tuple, list[RunRecord]] = {}
    for r in sorted(records, key=lambda r: (r.key.setting, order.get(r.contender, 99), r.contender,
                                            draw.order(r.key.data_seed), r.key.seed)):
        cells.setdefault((r.key.setting, r.contender), []).append(r)
    return cells


def _words(cell: Cell, sep: str = ", ", skip: tuple[str, ...] = ()) -> str:
    """A cell's grid point as the report's headings write it: "classes 5 vs 6, 200 images, ..."."""
    return sep.join(a.words(a.from_json(cell.point[a.name])) for a in shown_axes([_named(cell)])
                    if a.name not in skip)


def _label(cell: Cell, skip: tuple[str, ...] = ()) -> str:
    """A cell's grid point in a short label: "5 vs 6, n=200, reuse all, book"."""
    return ", ".join(a.short(a.from_json(cell.point[a.name])) for a in shown_axes([_named(cell)])
                     if a.name not in skip)


def _named(cell: Cell) -> dict:
    """What `shown_axes` reads of a cell: its point and whether it is tuned (not the whole
    `to_dict`, a copy of every list of the cell, for each heading)."""
    return {**cell.point, "tuning": cell.tuning}


def shown_axes(cells: list[dict]) -> list:
    """The axes the report names the cells (`Cell.to_dict()`s) by: those they have, but the
    learning-rate preset where every cell is tuned, since its trials draw the rates instead."""
    tuned = bool(cells) and all(c.get("tuning") for c in cells)
    return [a for a in cell_axes() if any(a.name in c for c in cells) and not (tuned and a.name == "preset")]


def leaderboard(result: "StudyResult") -> list[Cell]:
    """The cells ranked within each setting by mean paired gain over the baseline, best first."""
    return sorted(result.cells, key=lambda c: (*c.setting, -c.mean_difference))


def markdown(result: "StudyResult") -> str:
    """The leaderboard as Markdown tables, one per setting, ready for a README; under each, where
    the book's result falls, the variance components of a crossed design, and cells too small
    for an interval; a legend last."""
    out, setting, below = [], None, []
    if result.smoke:
        out += ["", f"**{smoke_note(result.smoke)}.** Its numbers say nothing about transfer."]
    ranked = leaderboard(result)
    margin = result.equivalence_margin
    for c in ranked:
        if c.setting != setting:
            out += [""] * bool(below) + below  # a blank line ends the table: else Markdown reads each note as a row
            below = []
            setting = c.setting
            # The baseline's line: from the contender with the most seeds, which has all of them.
            base = max((d for d in ranked if d.setting == setting), key=lambda d: d.n)
            where = _words(c)
            draws = f" x {base.n_draws} draws" if base.n_draws > 1 else ""
            out += ["", f"{where[:1].upper()}{where[1:]}; baseline {100 * base.baseline_mean:.2f}% ± "
                        f"{100 * (base.baseline_std or 0):.2f} over {base.n_seeds or base.n} seeds{draws}", "",
                    "| rank | contender | accuracy % | gain, points (95% CI) | W/T/L | p | p Wilcoxon | p (Holm) | "
                    "p (max-T) | P(win) (95% CI) | MDE, points | " + (f"±{margin:g} points | " if margin else
                                                                      "equivalence | ") + "≈ best | linear probe % |",
                    "|---:|---|---:|---|---:|---:|---:|---:|---:|---|---:|---|---|---:|"]
            rank = 0
        rank += 1
        ci = f" ({100 * c.ci95[0]:+.2f}, {100 * c.ci95[1]:+.2f})" if c.ci95 else ""
        probe = "-" if c.linear_probe is None else f"{100 * c.linear_probe:.2f}"
        sup = "-" if c.superiority is None else \
            f"{c.superiority['p']:.2f} ({c.superiority['ci95'][0]:.2f}, {c.superiority['ci95'][1]:.2f})"
        mde = "-" if c.mde_points is None else f"{c.mde_points:.2f}"
        tost = "-" if c.equivalence is None else c.equivalence["verdict"]
        best = "-" if c.in_best_set is None else "yes" if c.in_best_set else "no"
        out.append(f"| {rank} | {c.title} | {100 * c.transfer_mean:.2f} ± {100 * (c.transfer_std or 0):.2f} | "
                   f"{100 * c.mean_difference:+.2f}{ci} | {c.wins}/{c.ties}/{c.losses} | "
                   f"{_p_primary(c.p_value, c.p_method, c.p_mc_error)} | {_p(c.p_wilcoxon)} | {_p(c.p_holm)} | "
                   f"{_p(c.p_max_t)} | {sup} | {mde} | {tost} | {best} | {probe} |")
        if c.book:
            below.append(_book_words(c.title, c.book))
        if c.variance_components:
            v = c.variance_components
            below.append(f"- {c.title}: SD of a run's gain {v['draw_sd_points']:.2f} points from the draw, "
                         f"{v['seed_sd_points']:.2f} from the seed, {v['residual_sd_points']:.2f} residual "
                         f"({c.n_draws} draws x {c.n_seeds} seeds).")
        if c.test_images and "ci95_with_images" in c.test_images:
            t = c.test_images
            lo, hi = t["ci95_with_images"]
            some = f" (from the {t['runs']} of {t['of']} runs with stored predictions)" if t["runs"] < t["of"] else ""
            luck = "" if t["runs_mcnemar_below_05"] is None else \
                (f"; {t['runs_mcnemar_below_05']} of {t['runs']} runs beat or trail the baseline beyond test-image "
                 "luck (McNemar, 5%)")
            below.append(f"- {c.title}: test images: the mean gain's SE from resampling the {t['n_images']:,} test "
                         f"images is {t['se_points']:.2f} points{some}, {100 * t['share_of_variance']:.0f}% of its "
                         f"variance; with it the 95% CI is ({100 * lo:+.2f}, {100 * hi:+.2f}){luck}.")
        if c.no_interval:
            below.append(f"- {c.title}: no interval, TOST or MDE: {c.no_interval}.")
        below += [f"- {line}" for line in tuning.words(c.to_dict(), _label(c))]
        if c.runs_left_out:
            below.append(f"- {c.title}: {c.runs_left_out} runs of seeds without a run at every draw left out.")
    out += [""] * bool(below) + below
    if result.max_t and result.max_t.get("why"):
        out += ["", f"No max-T over the study: {result.max_t['why']}."]
    out += ["", "p: exact sign-flip test of the mean gain over seeds (whole seeds flipped across the draws); "
                "p Wilcoxon: signed-rank, exact; p (Holm): corrected over the setting's contenders; p (max-T): "
                "Westfall-Young, corrected over every cell of the study; P(win): chance of beating the baseline on "
                "a new seed; MDE: the gain the test detects with 80% power; "
                + (f"±{margin:g} points: TOST equivalence within that margin; " if margin else "")
                + "≈ best: cannot be told apart from the setting's best (max-T, 5%). "
                "docs/statistics.md explains each."]
    return "\n".join(out).strip() + "\n"


def _book_words(title: str, b: dict) -> str:
    """Where the book's result falls among a cell's runs, in a sentence."""
    def share(k: int, lo_hi: list | None) -> str:
        return f"{k} of {b['n']}" + (f" (95% CI {lo_hi[0]:.2f}-{lo_hi[1]:.2f})" if lo_hi else "")

    return (f"- {title}: the book's {pct(b['baseline'])} -> {pct(b['transfer'])} (gain {100 * b['gain']:+.2f} points, "
            f"error / {b['error_rate_ratio']:.1f}): {share(b['seeds_with_gain_at_least_book'], b.get('ci95_gain'))} "
            f"runs gain as much, {share(b['seeds_with_ratio_at_least_book'], b.get('ci95_ratio'))} divide the error "
            "rate as much.")


def _p_primary(p: float | None, method: str | None, se: float | None) -> str:
    return _p(p) + (f" ± {se:.1g}" if method == "monte-carlo" and se else "")


# The cell fields a column below shows, or that are no column (per-seed lists, the grid point,
# what the notes say); any other scalar field a Cell grows is a column too, shown where the
# width allows and always with --wide.
_SHOWN = {"contender", "title", "seeds", "n", "baseline_mean", "baseline_std", "transfer_mean", "transfer_std",
          "mean_difference", "ci95", "p_value", "error_rate_ratio", "wins", "ties", "losses", "diverged",
          "baseline_diverged", "p_holm", "linear_probe", "baseline_accuracies", "accuracies", "book", "data_seeds",
          "design", "n_seeds", "n_draws", "runs_left_out", "ci95_method", "no_interval", "p_method", "p_mc_error",
          "p_wilcoxon", "p_max_t", "in_best_set", "superiority", "mde_points", "equivalence", "variance_components",
          "mcnemar", "test_images"}


def gain_text(c: dict) -> str:
    """The mean gain in points with its 95% CI; a cell of too few seeds for one says so instead."""
    gain = f"{100 * c['mean_difference']:+.2f}"
    units = c.get("n_seeds") or c["n"]
    if c.get("no_interval") or units < MIN_INTERVAL_UNITS:
        return f"{gain} (no CI: n={units})"
    ci = c.get("ci95")
    return gain + (f" ({100 * ci[0]:+.2f}, {100 * ci[1]:+.2f})" if ci else "")


def _number(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return f"{v:.3g}"
    return str(v)


def columns(cells: list[dict]) -> list:
    """The study table's columns, the essential ones first: contender, gain with its CI, W/T/L,
    p and the adjusted p; then the rest, left out last-first where the width is short."""
    def opt(v, fmt=lambda v: f"{v:.2g}"):
        return "-" if v is None else fmt(v)

    cols = [
        Column("contender", lambda c: c["title"], essential=True, name=True),
        Column("gain, pts (95% CI)", gain_text, essential=True),
        Column("W/T/L", lambda c: f"{c['wins']}/{c['ties']}/{c['losses']}", essential=True),
        Column("p", lambda c: opt(c["p_value"]), essential=True),
        Column("p Holm", lambda c: opt(c.get("p_holm")), essential=True),
        Column("p max-T", lambda c: opt(c.get("p_max_t"))),
        Column("seeds", lambda c: f"{c['n_seeds']}x{c['n_draws']}" if c.get("n_draws", 1) > 1 else str(c["n"])),
        Column("contender acc", lambda c: mean_std(c["transfer_mean"], c["transfer_std"])),
        Column("baseline acc", lambda c: mean_std(c["baseline_mean"], c["baseline_std"])),
        Column("err ÷", lambda c: ratio_text(c["error_rate_ratio"])),
        Column("probe", lambda c: opt(c.get("linear_probe"), lambda v: f"{100 * v:.2f}")),
        Column("p Wilcoxon", lambda c: opt(c.get("p_wilcoxon"))),
        Column("P(win)", lambda c: opt(c.get("superiority"), lambda v: f"{v['p']:.2f}")),
        Column("MDE pts", lambda c: opt(c.get("mde_points"), lambda v: f"{v:.2f}")),
        Column("TOST", lambda c: opt(c.get("equivalence"), lambda v: v["verdict"])),
        Column("≈ best", lambda c: opt(c.get("in_best_set"), _number)),
    ]
    axes = {a.name for a in cell_axes()}
    extra = [k for c in cells for k, v in c.items()
             if k not in _SHOWN and k not in axes and (v is None or isinstance(v, (int, float, str)))]
    for k in dict.fromkeys(extra):
        cols.append(Column(k.replace("_", " "), lambda c, k=k: _number(c.get(k))))
    return cols


def table(summary: dict, width: int | None = None, wide: bool = False):
    """The report (`StudyResult.to_dict()`) for a terminal: one block per setting (the grid point
    but the seed, in words, with its baseline), its contenders ranked by gain; then the notes.
    At `width` columns the essential columns stay and the others go, last first, until the
    block fits: numbers are never cut. `wide` (or no width): every column."""
    from rich.console import Group
    from rich.text import Text

    shown = shown_axes(summary["cells"])

    def point(c: dict) -> tuple:
        return tuple(a.order(a.from_json(c[a.name])) if a.name in c else "" for a in shown)

    blocks: dict[tuple, list[dict]] = {}
    for c in sorted(summary["cells"], key=lambda c: (point(c), -c["mean_difference"])):
        blocks.setdefault(point(c), []).append(c)
    smoke = summary.get("smoke") or []
    parts: list = [Text(smoke_title(smoke) + f"Study {summary['study']}: {summary['runs_finished']} of "
                        f"{summary['runs_in_grid']} runs; test-B accuracy, paired over seeds", style="bold")]
    if smoke:
        parts.append(Text(smoke_note(smoke), style="bold"))
    cols = columns(summary["cells"])
    for cells in blocks.values():
        first = cells[0]
        where = ", ".join(a.words(a.from_json(first[a.name])) for a in shown if a.name in first)
        base = max(cells, key=lambda c: c["n"])  # the contender with the most seeds has every baseline run
        seeds = base.get("n_seeds") or base["n"]
        draws = f" x {base['n_draws']} draws" if base.get("n_draws", 1) > 1 else ""
        title = (f"{where[:1].upper()}{where[1:]}: baseline {mean_std(base['baseline_mean'], base['baseline_std'])}% "
                 f"over {seeds} seed{'s' if seeds != 1 else ''}{draws}")
        parts += [Text(""), fitted(cols, cells, width=width, wide=wide, title=title)]
    parts.append(Text("\n".join(notes(summary, shown))))
    return Group(*parts)


def notes(summary: dict, shown) -> list[str]:
    """What the table's numbers need said: the book's placement, divergences, skipped lines, the legend."""
    notes = []
    for c in summary["cells"]:
        if "book" in c and c["book"].get("at_book_point", True):
            b = c["book"]
            notes.append(f"The book's {pct(b['baseline'])} -> {pct(b['transfer'])} (gain {100 * b['gain']:+.2f} pts, "
                         f"error / {b['error_rate_ratio']:.1f}): {b['seeds_with_gain_at_least_book']} of {b['n']} "
                         f"seeds here gain as much, {b['seeds_with_ratio_at_least_book']} of {b['n']} divide the "
                         "error rate as much.")
    if (summary.get("max_t") or {}).get("why"):
        notes.append(f"No max-T over the study: {summary['max_t']['why']}.")
    if any(c.get("no_interval") for c in summary["cells"]):
        notes.append(f"No CI where a cell has fewer than {MIN_INTERVAL_UNITS} seeds: with 2, Student's t has one "
                     "degree of freedom; run more seeds (--seeds N).")
    for c in summary["cells"]:
        if c.get("diverged") or c.get("baseline_diverged"):
            where = ", ".join(a.short(a.from_json(c[a.name])) for a in shown if a.name in c)
            notes.append(f"{c['title']}, {where}: {c['diverged']} of {c['n']} runs diverged "
                         f"(baseline: {c['baseline_diverged']}), counted at chance accuracy.")
    for c in summary["cells"]:
        notes += tuning.words(c, ", ".join(a.short(a.from_json(c[a.name])) for a in shown if a.name in c))
    for reason, n in summary.get("skipped", {}).items():
        notes.append(f"Skipped {n} results line{'s' if n > 1 else ''}: {reason}.")
    notes.append("Ranked by gain within each setting. Accuracies in %, mean±sd over seeds. Gain = contender - "
                 "baseline; CI: Student t (crossed random effects with several draws); err ÷: baseline error / "
                 "contender error; p: exact sign-flip test of the mean gain; p Holm: corrected over the contenders "
                 "of the same setting; p max-T: corrected over every cell of the study; probe: linear probe on the "
                 "pretrained features; p Wilcoxon, P(win) (of beating the baseline on a new seed), MDE (the gain "
                 "detected with 80% power), TOST and ≈ best: docs/statistics.md. --wide shows every column.")
    return notes


def _p(p: float | None) -> str:
    return "-" if p is None else f"{p:.2g}"


def plot(study_dir: Path, summary: StudyResult) -> list[Path]:
    """Per cell, the paired accuracies seed by seed; the mean gain against task-B size; and, with
    more than one contender, every contender's gain with its confidence interval: PNGs in
    STUDY_DIR/plots."""
    out_dir = Path(study_dir) / "plots"
    made = list(study_figures(study_dir, summary))
    try:
        out_dir.mkdir(exist_ok=True)
    except OSError as e:  # a read-only study directory: the report is still the report
        raise FmtError(f"cannot write plots to {out_dir}: {e.strerror}", path=out_dir) from None
    written = []
    for name, fig in made:
        save_figure(fig, out_dir / name)
        written.append(out_dir / name)
    return written


def study_figures(study_dir: Path, summary: StudyResult, option: str = "--plots"):
    """(file name, matplotlib Figure) of each of the study's plots; `option` is named if the
    plot extra is missing."""
    figs = figures(option)
    found = load_records(Path(study_dir), config_from(summary.config))
    if tuning.is_tuned(found):  # a tuned cell's runs are the trials its units selected
        found = tuning.select(found, (summary.config.get("tune") or {}).get("trials") or 0).records
    runs_of = _cells(found)
    for cell in summary.cells:
        runs = runs_of.get((cell.setting, cell.contender), [])
        fig, ax = figs.subplots(figsize=(6, 4))
        xs = np.arange(len(runs))
        base = [100 * r.baseline.test_accuracy for r in runs]
        trans = [100 * r.result.test_accuracy for r in runs]
        for x, b, t in zip(xs, base, trans):
            ax.plot([x, x], [b, t], color="green" if t > b else "red" if t < b else "grey", lw=1)
        ax.scatter(xs, base, label="baseline (from scratch)", marker="o", color="tab:blue", zorder=3)
        ax.scatter(xs, trans, label=cell.title, marker="^", color="tab:orange", zorder=3)
        if cell.book is not None and cell.book.get("at_book_point"):
            ax.axhline(100 * BOOK["baseline"], color="tab:blue", ls=":", lw=1, label="book baseline 97.05%")
            ax.axhline(100 * BOOK["transfer"], color="tab:orange", ls=":", lw=1, label="book transfer 99.25%")
        drawn = any(r.key.data_seed != "first" for r in runs)
        ax.set_xticks(xs, [f"{r.key.seed}/{r.key.data_seed}" if drawn else str(r.key.seed) for r in runs], fontsize=7)
        ax.set_xlabel("seed / data seed" if drawn else "seed")
        ax.set_ylabel("test B accuracy (%)")
        p = cell.p_value
        ax.set_title(f"{cell.title}: {_words(cell)}\n"
                     f"W/T/L {cell.wins}/{cell.ties}/{cell.losses}"
                     + (f", sign-flip p={p:.3g}" if p is not None else ""), fontsize=9)
        ax.legend(fontsize=7)
        fig.tight_layout()
        prefix = "" if cell.contender == "transfer" else f"{cell.contender}-"
        point = "-".join(a.id(a.from_json(cell.point[a.name])) for a in cell_axes() if a.name in cell.point)
        yield f"paired-{prefix}{point}.png", fig
    yield from tuning.budget_figures(summary.cells, lambda c: (_label(c), "-".join(
        a.id(a.from_json(c.point[a.name])) for a in cell_axes() if a.name in c.point)))
    yield "gain-vs-size.png", gain_vs_size(summary, figs)
    if len({c.contender for c in summary.cells}) > 1:
        yield "contenders.png", contenders_figure(summary, figs)


def gain_vs_size(summary: StudyResult, figs):
    """The mean gain against the task-B training size, one line per contender and setting, with
    the 95% CI where a cell has the seeds for one. The size axis is ticked at the sizes used, the
    gain axis spans the data."""
    fig, ax = figs.subplots(figsize=(6, 4))
    size = axis("b_train_size")
    lines: dict[tuple, list[Cell]] = {}
    for cell in summary.cells:
        rest = tuple(str(cell.point.get(a.name)) for a in cell_axes() if a is not size)
        lines.setdefault((cell.title, rest), []).append(cell)
    used = sorted({c.point[size.name] for c in summary.cells})
    for (title, _), cells in lines.items():
        cells = sorted(cells, key=lambda c: c.point[size.name])
        sizes = [c.point[size.name] for c in cells]
        means = [100 * c.mean_difference for c in cells]
        shown = [c.ci95 for c in cells]  # None where the cell has too few seeds for one
        lo = [100 * (c.mean_difference - ci[0]) if ci else 0 for c, ci in zip(cells, shown)]
        hi = [100 * (ci[1] - c.mean_difference) if ci else 0 for c, ci in zip(cells, shown)]
        ax.errorbar(sizes, means, yerr=[lo, hi], marker="o", capsize=3,
                    label=f"{title}: {_label(cells[0], skip=(size.name,))}")
    ax.axhline(0, color="black", lw=0.8)
    if len(used) > 1 and used[-1] / used[0] >= 10:
        ax.set_xscale("log")
    ax.set_xticks(used, [str(n) for n in used])
    ax.minorticks_off()
    ax.set_xlabel("task-B training images")
    few = any(c.no_interval for c in summary.cells)
    ax.set_ylabel("contender - baseline accuracy (points, mean"
                  + (", 95% CI)" if not few else "; CI from 3 seeds)"))
    ax.set_title("Gain over the baseline against task-B training size")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def contenders_figure(summary: StudyResult, figs):
    """The leaderboard: one row per contender, one panel per setting (the axes but the seed),
    each contender's mean gain over the baseline with its 95% CI; green or red where Holm's
    correction still finds a difference. A gain far below the others (a contender that fails)
    would squash the rest into a point: it is drawn at the panel's edge, its value written."""
    settings = sorted({c.setting for c in summary.cells})
    names = list(dict.fromkeys(c.title for c in summary.cells))
    mean_gain = {t: np.mean([c.mean_difference for c in summary.cells if c.title == t]) for t in names}
    names.sort(key=lambda t: mean_gain[t])
    def ci(c):  # none below MIN_INTERVAL_UNITS seeds: a t interval on two points spans hundreds of points
        return c.ci95 or (c.mean_difference, c.mean_difference)

    los = [100 * ci(c)[0] for c in summary.cells]
    his = [100 * ci(c)[1] for c in summary.cells]
    left = max(min(los), -8.0)  # points: beyond it, a failing contender's row is written, not drawn
    right = max(max(his), 0.5) + 0.3
    fig, axes = figs.subplots(1, len(settings), figsize=(3.6 * len(settings) + 2.4, 0.4 * len(names) + 1.4),
                              squeeze=False, sharey=True)
    for ax, setting in zip(axes[0], settings):
        for y, title in enumerate(names):
            c = next((c for c in summary.cells if c.title == title and c.setting == setting), None)
            if c is None:
                continue
            lo, hi = ci(c)
            p = c.p_holm if c.p_holm is not None else c.p_value
            colour = "tab:grey" if p is None or p >= 0.05 else "tab:green" if c.mean_difference > 0 else "tab:red"
            mean = 100 * c.mean_difference
            ax.plot([max(100 * lo, left), min(100 * hi, right)], [y, y], color=colour, lw=2)
            if mean < left:
                ax.annotate(f"{mean:+.1f}", (left, y), xytext=(3, -3), textcoords="offset points", fontsize=7,
                            color=colour)
            else:
                ax.plot(mean, y, "o", color=colour)
        ax.axvline(0, color="black", lw=0.8)
        ax.set_xlim(left - 0.3, right)
        ax.set_title(_label(next(c for c in summary.cells if c.setting == setting)), fontsize=8)
        ax.set_xlabel("gain, points (95% CI)", fontsize=8)
    axes[0][0].set_yticks(range(len(names)), names, fontsize=8)
    fig.suptitle("Contenders against the baseline, paired over seeds (colour: Holm-corrected p < 0.05)",
                 fontsize=9)
    fig.tight_layout()
    return fig

