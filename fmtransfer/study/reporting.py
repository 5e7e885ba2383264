"""A study's report: its cells summarised, ranked as a leaderboard, written as Markdown and drawn."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fmtransfer import contenders
from fmtransfer.config import Config
from fmtransfer.report import figures, save_figure
from fmtransfer.study.axes import grid, study_contenders
from fmtransfer.study.records import config_from, load_results, read_meta, read_results, settings_fingerprint
from fmtransfer.study.stats import BOOK, Cell, book_placement, holm, paired_stats


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

    def cell(self, contender: str = "transfer", **axes) -> Cell:
        """The first cell of `contender` matching `axes` (pair=(5, 6), b_train_size=200, ...)."""
        for c in self.cells:
            if c.contender == contender and all(
                    (list(v) if isinstance(v, tuple) else v) == getattr(c, k) for k, v in axes.items()):
                return c
        raise KeyError(f"no cell for {contender} with {axes}")

    def to_dict(self) -> dict[str, Any]:
        d = {"study": self.study, "runs_finished": self.runs_finished, "runs_in_grid": self.runs_in_grid,
             "cells": [c.to_dict() for c in self.cells], "config": self.config, "skipped": self.skipped}
        if self.plots:
            d["plots"] = self.plots
        return d


def report(study_dir: str | Path) -> StudyResult:
    """Merge every finished run in `study_dir` and summarise each cell, per contender."""
    study_dir = Path(study_dir)
    meta = read_meta(study_dir)
    config = config_from(meta["config"], study_dir)
    results, skipped = read_results(study_dir, config)
    cells: dict[tuple, list[dict]] = {}
    order = {name: i for i, name in enumerate(contenders.names())}
    for r in sorted(results, key=lambda r: (r["pair"], r["b_train_size"], str(r["reuse_layers"]), r["preset"],
                                            order.get(r["contender"], 99), r["contender"], r["seed"])):
        cells.setdefault((tuple(r["pair"]), r["b_train_size"], r["reuse_layers"], r["preset"], r["contender"]),
                         []).append(r)
    summary = []
    book_settings = settings_fingerprint(config) == settings_fingerprint(Config())  # the book's epochs, model...
    for (pair, size, reuse, preset, name), runs in cells.items():
        title = contenders.get(name).title if name in contenders.names() else name
        base = [r["baseline"]["test_accuracy"] for r in runs]
        mine = [r["result"]["test_accuracy"] for r in runs]
        cell = Cell(contender=name, title=title, pair=list(pair), b_train_size=size, reuse_layers=reuse, preset=preset,
                    seeds=[r["seed"] for r in runs], **paired_stats(base, mine), baseline_accuracies=base,
                    accuracies=mine, diverged=sum("diverged" in r["result"] for r in runs),
                    baseline_diverged=sum("diverged" in r["baseline"] for r in runs))
        probes = [r["result"]["linear_probe"] for r in runs if isinstance(r["result"].get("linear_probe"), float)]
        cell.linear_probe = float(np.mean(probes)) if probes else None
        if name == "transfer" and book_settings and (pair, size, reuse, preset) == (
                BOOK["pair"], BOOK["b_train_size"], BOOK["reuse_layers"], BOOK["preset"]):
            cell.book = book_placement(runs)
        summary.append(cell)
    holm(summary)
    in_grid = {k.run_id(c) for k in grid(config) for c in study_contenders(config)}
    return StudyResult(str(study_dir), len(results), len(in_grid | {r["id"] for r in results}), summary,
                       meta["config"], skipped=skipped)


def leaderboard(result: "StudyResult") -> list[Cell]:
    """The cells ranked within each setting by mean paired gain over the baseline, best first."""
    return sorted(result.cells, key=lambda c: (*c.setting, -c.mean_difference))


def markdown(result: "StudyResult") -> str:
    """The leaderboard as a Markdown table, one per setting, ready for a README."""
    out, setting = [], None
    ranked = leaderboard(result)
    for c in ranked:
        if c.setting != setting:
            setting = c.setting
            # The baseline's line: from the contender with the most seeds, which has all of them.
            base = max((d for d in ranked if d.setting == setting), key=lambda d: d.n)
            out += ["", f"Classes {c.pair[0]} vs {c.pair[1]}, {c.b_train_size} images, reuse {c.reuse_layers}, "
                        f"{c.preset} rates; baseline {100 * base.baseline_mean:.2f}% ± "
                        f"{100 * (base.baseline_std or 0):.2f} over {base.n} seeds", "",
                    "| rank | contender | accuracy % | gain, points (95% CI) | W/T/L | p | p (Holm) | linear probe % |",
                    "|---:|---|---:|---|---:|---:|---:|---:|"]
            rank = 0
        rank += 1
        ci = f" ({100 * c.ci95[0]:+.2f}, {100 * c.ci95[1]:+.2f})" if c.ci95 else ""
        probe = "-" if c.linear_probe is None else f"{100 * c.linear_probe:.2f}"
        out.append(f"| {rank} | {c.title} | {100 * c.transfer_mean:.2f} ± {100 * (c.transfer_std or 0):.2f} | "
                   f"{100 * c.mean_difference:+.2f}{ci} | {c.wins}/{c.ties}/{c.losses} | "
                   f"{_p(c.p_value)} | {_p(c.p_holm)} | {probe} |")
    return "\n".join(out).strip() + "\n"


def _p(p: float | None) -> str:
    return "-" if p is None else f"{p:.2g}"


def plot(study_dir: Path, summary: StudyResult) -> list[Path]:
    """Per cell, the paired accuracies seed by seed; the mean gain against task-B size; and, with
    more than one contender, every contender's gain with its confidence interval."""
    figs = figures("--plots")
    study_dir = Path(study_dir)
    out_dir = study_dir / "plots"
    out_dir.mkdir(exist_ok=True)
    results = load_results(study_dir, config_from(summary.config))
    written = []
    for cell in (c.to_dict() for c in summary.cells):
        runs = sorted((r for r in results if (r["pair"], r["b_train_size"], r["reuse_layers"], r["preset"],
                                              r["contender"]) == (cell["pair"], cell["b_train_size"],
                                                                  cell["reuse_layers"], cell["preset"],
                                                                  cell["contender"])),
                      key=lambda r: r["seed"])
        fig, ax = figs.subplots(figsize=(6, 4))
        xs = np.arange(len(runs))
        base = [100 * r["baseline"]["test_accuracy"] for r in runs]
        trans = [100 * r["result"]["test_accuracy"] for r in runs]
        for x, b, t in zip(xs, base, trans):
            ax.plot([x, x], [b, t], color="green" if t > b else "red" if t < b else "grey", lw=1)
        ax.scatter(xs, base, label="baseline (from scratch)", marker="o", color="tab:blue", zorder=3)
        ax.scatter(xs, trans, label=cell["title"], marker="^", color="tab:orange", zorder=3)
        if "book" in cell:
            ax.axhline(100 * BOOK["baseline"], color="tab:blue", ls=":", lw=1, label="book baseline 97.05%")
            ax.axhline(100 * BOOK["transfer"], color="tab:orange", ls=":", lw=1, label="book transfer 99.25%")
        ax.set_xticks(xs, [str(r["seed"]) for r in runs], fontsize=7)
        ax.set_xlabel("seed")
        ax.set_ylabel("test B accuracy (%)")
        p = cell["p_value"]
        ax.set_title(f"{cell['title']}: classes {cell['pair'][0]} vs {cell['pair'][1]}, {cell['b_train_size']} images, "
                     f"reuse {cell['reuse_layers']}, {cell['preset']}\n"
                     f"W/T/L {cell['wins']}/{cell['ties']}/{cell['losses']}"
                     + (f", Wilcoxon p={p:.3g}" if p is not None else ""), fontsize=9)
        ax.legend(fontsize=7)
        fig.tight_layout()
        prefix = "" if cell["contender"] == "transfer" else f"{cell['contender']}-"
        path = out_dir / (f"paired-{prefix}pair{cell['pair'][0]}v{cell['pair'][1]}-n{cell['b_train_size']}"
                          f"-reuse{cell['reuse_layers']}-{cell['preset']}.png")
        save_figure(fig, path)
        written.append(path)
    fig, ax = figs.subplots(figsize=(6, 4))
    lines: dict[tuple, list[dict]] = {}
    for cell in (c.to_dict() for c in summary.cells):
        lines.setdefault((cell["title"], tuple(cell["pair"]), cell["reuse_layers"], cell["preset"]), []).append(cell)
    for (title, pair, reuse, preset), cells in lines.items():
        cells = sorted(cells, key=lambda c: c["b_train_size"])
        sizes = [c["b_train_size"] for c in cells]
        means = [100 * c["mean_difference"] for c in cells]
        lo = [100 * (c["mean_difference"] - c["ci95"][0]) if c["ci95"] else 0 for c in cells]
        hi = [100 * (c["ci95"][1] - c["mean_difference"]) if c["ci95"] else 0 for c in cells]
        ax.errorbar(sizes, means, yerr=[lo, hi], marker="o", capsize=3,
                    label=f"{title}: {pair[0]} vs {pair[1]}, reuse {reuse}, {preset}")
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("task-B training images")
    ax.set_ylabel("contender - baseline accuracy (points, mean, 95% CI)")
    ax.set_title("Gain over the baseline against task-B training size")
    ax.legend(fontsize=7)
    fig.tight_layout()
    path = out_dir / "gain-vs-size.png"
    save_figure(fig, path)
    written.append(path)
    if len({c.contender for c in summary.cells}) > 1:
        written.append(plot_contenders(out_dir, summary, figs))
    return written


def plot_contenders(out_dir: Path, summary: StudyResult, figs) -> Path:
    """The leaderboard: one row per contender, one panel per setting (pair, size, reuse, preset),
    each contender's mean gain over the baseline with its 95% CI; green or red where Holm's
    correction still finds a difference. A gain far below the others (a contender that fails)
    would squash the rest into a point: it is drawn at the panel's edge, its value written."""
    settings = sorted({c.setting for c in summary.cells})
    names = list(dict.fromkeys(c.title for c in summary.cells))
    mean_gain = {t: np.mean([c.mean_difference for c in summary.cells if c.title == t]) for t in names}
    names.sort(key=lambda t: mean_gain[t])
    los = [100 * (c.ci95[0] if c.ci95 else c.mean_difference) for c in summary.cells]
    his = [100 * (c.ci95[1] if c.ci95 else c.mean_difference) for c in summary.cells]
    left = max(min(los), -8.0)  # points: beyond it, a failing contender's row is written, not drawn
    right = max(max(his), 0.5) + 0.3
    fig, axes = figs.subplots(1, len(settings), figsize=(3.6 * len(settings) + 2.4, 0.4 * len(names) + 1.4),
                              squeeze=False, sharey=True)
    for ax, setting in zip(axes[0], settings):
        pair, size, reuse, preset = setting
        for y, title in enumerate(names):
            c = next((c for c in summary.cells if c.title == title and c.setting == setting), None)
            if c is None:
                continue
            lo, hi = (c.ci95 if c.ci95 else (c.mean_difference, c.mean_difference))
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
        ax.set_title(f"{pair[0]} vs {pair[1]}, n={size}, reuse {reuse}, {preset}", fontsize=8)
        ax.set_xlabel("gain, points (95% CI)", fontsize=8)
    axes[0][0].set_yticks(range(len(names)), names, fontsize=8)
    fig.suptitle("Contenders against the baseline, paired over seeds (colour: Holm-corrected p < 0.05)",
                 fontsize=9)
    fig.tight_layout()
    path = out_dir / "contenders.png"
    save_figure(fig, path)
    return path

