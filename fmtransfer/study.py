"""`fmtransfer study`: is the transfer gain real? A grid of complete experiments, and its statistics.

A *run* is one complete experiment (model A, baseline B, model_B_on_A) at one point of the grid:
seed x task-B class pair x task-B training size x reuse depth x learning-rate preset. A *cell* is
every run sharing all axes but the seed; its statistics are paired over seeds, since baseline
and transfer of the same seed share the split, the seed and the test images.

Runs are grouped by (seed, pair): model A depends on nothing else, so it is trained once per
group, saved in the study directory, and reused by every run of the group (and by a resumed
study). Each finished run is appended as one JSON line, so an interrupted study resumes where it
stopped. `--shard I/N` gives each job of an array every N-th group, written to its own results
file, so jobs sharing a directory never write the same file; `report` merges them.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fmtransfer import UsageError
from fmtransfer.config import LR_PRESETS, Config
from fmtransfer.experiment import error_rate_ratio, fingerprint
from fmtransfer.report import Reporter, pyplot, save_figure

STUDY_JSON = "study.json"
BOOK = {"pair": (5, 6), "b_train_size": 200, "reuse_layers": "all", "preset": "book",
        "baseline": 0.9705, "transfer": 0.9925}  # Hands-On ML 2nd ed., 11.2.1


@dataclass(frozen=True)
class RunKey:
    seed: int
    pair: tuple[int, int]
    b_train_size: int
    reuse_layers: int | str
    preset: str

    @property
    def id(self) -> str:
        return (f"seed{self.seed}-pair{self.pair[0]}v{self.pair[1]}-n{self.b_train_size}"
                f"-reuse{self.reuse_layers}-{self.preset}")

    @property
    def cell(self) -> tuple:
        return (self.pair, self.b_train_size, self.reuse_layers, self.preset)

    @property
    def group(self) -> tuple[int, tuple[int, int]]:
        return (self.seed, self.pair)

    def config(self, base: Config) -> Config:
        frozen_lr, fine_tune_lr = LR_PRESETS[self.preset]
        return base.replace(**{"seed": self.seed, "data.b_classes": self.pair,
                               "data.b_train_size": self.b_train_size,
                               "transfer.reuse_layers": self.reuse_layers,
                               "transfer.frozen_learning_rate": frozen_lr,
                               "transfer.fine_tune_learning_rate": fine_tune_lr})


def grid(cfg: Config) -> list[RunKey]:
    """Every run of the study, those sharing model A next to each other."""
    s = cfg.study
    return [RunKey(seed, tuple(pair), size, reuse, preset)
            for seed, pair, size, reuse, preset
            in itertools.product(s.seeds, s.pairs, s.b_train_sizes, s.reuse_layers, s.presets)]


def parse_shard(text: str | None) -> tuple[int, int]:
    """`I/N` (I counted from 0, as Slurm array and Kubernetes indexed-job indices are) -> (I, N)."""
    if not text:
        return 0, 1
    head, _, tail = text.partition("/")
    if not (head.isdigit() and tail.isdigit()) or int(tail) < 1 or int(head) >= int(tail):
        raise UsageError(f"option --shard: expected I/N with 0 <= I < N (e.g. 0/4), got {text!r}")
    return int(head), int(tail)


def shard(keys: list[RunKey], index: int, count: int) -> list[RunKey]:
    """The index-th of `count` disjoint slices: whole (seed, pair) groups, dealt round-robin."""
    groups = list(dict.fromkeys(k.group for k in keys))
    mine = {g for i, g in enumerate(groups) if i % count == index}
    return [k for k in keys if k.group in mine]


def settings_fingerprint(cfg: Config) -> str:
    """What every run of a study shares: the config without the grid's axes."""
    d = cfg.to_dict()
    for section in ("study", "seed", "pretrain"):  # pretraining plays no part in a study's runs
        d.pop(section)
    for key in ("b_classes", "b_train_size", "dir"):  # where the files lie is no setting
        d["data"].pop(key)
    for key in ("reuse_layers", "frozen_learning_rate", "fine_tune_learning_rate"):
        d["transfer"].pop(key)
    return fingerprint(d)


def results_path(study_dir: Path, index: int, count: int) -> Path:
    return study_dir / ("results.jsonl" if count == 1 else f"results-{index}of{count}.jsonl")


def load_results(study_dir: Path) -> list[dict]:
    """Every finished run in the directory, merged over shards; a torn last line is ignored."""
    found: dict[str, dict] = {}
    for path in sorted(study_dir.glob("results*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # a run killed mid-write; it is simply run again
            if isinstance(record, dict) and "id" in record:
                found.setdefault(record["id"], record)
    return list(found.values())


def append_result(path: Path, record: dict) -> None:
    """Append one line durably; first end a line torn by a crash, so it cannot swallow this one."""
    with open(path, "a+b") as f:
        f.seek(0, os.SEEK_END)
        if f.tell():
            f.seek(-1, os.SEEK_END)
            if f.read(1) != b"\n":
                f.write(b"\n")
        f.write((json.dumps(record) + "\n").encode())
        f.flush()
        os.fsync(f.fileno())


def _check_study_dir(cfg: Config, study_dir: Path) -> None:
    """A directory holds one study: runs made with other fixed settings must not be mixed in."""
    from fmtransfer.data import write_text_atomic

    meta_path = study_dir / STUDY_JSON
    key = settings_fingerprint(cfg)
    if meta_path.is_file() and _read_meta(study_dir).get("settings_fingerprint") != key:
        raise UsageError(f"{study_dir} holds a study made with other settings (epochs, model, ...); "
                         "use another --run DIR, or the same settings")
    # The grid's axes may grow between invocations; the latest grid is the one to report against.
    study_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(meta_path, json.dumps({"settings_fingerprint": key, "config": cfg.to_dict()}, indent=2))


def _read_meta(study_dir: Path) -> dict:
    path = study_dir / STUDY_JSON
    if not path.is_file():
        raise UsageError(f"{study_dir} is not a study directory (no {STUDY_JSON}); "
                         f"run `fmtransfer study --run {study_dir}` first")
    try:
        meta = json.loads(path.read_text())
        if isinstance(meta, dict) and "config" in meta:
            return meta
    except (OSError, ValueError):
        pass
    raise UsageError(f"{path} is unreadable; delete it and run the study again (finished runs are kept)")


def run_study(cfg: Config, study_dir: Path, reporter: Reporter | None = None,
              shard_spec: str | None = None) -> dict:
    """Run this shard's unfinished runs, appending each as it finishes; return the merged report."""
    from fmtransfer.data import PUBLISHED_SHA256, find_data_dir, load_raw

    reporter = reporter or Reporter(quiet=True)
    index, count = parse_shard(shard_spec)
    study_dir = Path(study_dir)
    _check_study_dir(cfg, study_dir)
    keys = shard(grid(cfg), index, count)
    done = {r["id"] for r in load_results(study_dir)}
    todo = [k for k in keys if k.id not in done]
    out = results_path(study_dir, index, count)
    reporter.info(f"study {study_dir}: shard {index}/{count} has {len(keys)} runs, {len(keys) - len(todo)} "
                  f"already finished, {len(todo)} to run")
    if todo:
        from fmtransfer.data import make_split

        raw = load_raw(find_data_dir(cfg.data.dir or None), PUBLISHED_SHA256 if cfg.data.verify_checksums else None)
        for pair in cfg.study.pairs:  # fail now, not hours into the grid
            make_split(raw, pair, max(cfg.study.b_train_sizes), cfg.data.valid_size)
        quiet = Reporter(quiet=True)
        with reporter.grid("study", total=len(keys), done=len(keys) - len(todo)) as advance:
            for group, runs in itertools.groupby(todo, key=lambda k: k.group):
                _run_group(list(runs), cfg, raw, study_dir, out, quiet, advance)
    return report(study_dir)


def _run_group(runs: list[RunKey], cfg: Config, raw, study_dir: Path, out: Path, quiet: Reporter,
               advance) -> None:
    """The runs sharing one model A: train (or load) it once, then each baseline once per size."""
    from fmtransfer import experiment, models
    from fmtransfer.data import make_split, write_text_atomic

    first = runs[0]
    a_cfg = first.config(cfg)
    a_path = study_dir / "models" / f"a-seed{first.seed}-pair{first.pair[0]}v{first.pair[1]}.keras"
    a_meta_path = a_path.with_suffix(".json")
    started = time.perf_counter()
    split = make_split(raw, first.pair, max(r.b_train_size for r in runs), cfg.data.valid_size)
    if a_path.is_file() and a_meta_path.is_file():
        model_a = models.load_model(a_path)
        a_accuracy = json.loads(a_meta_path.read_text())["test_accuracy"]
    else:
        model_a, _, test = experiment.fit_model_a(a_cfg, split, quiet)
        a_accuracy = test["accuracy"]
        models.save_model(model_a, a_path)
        write_text_atomic(a_meta_path, json.dumps({"test_accuracy": a_accuracy, "seed": first.seed,
                                                   "pair": list(first.pair)}))
    a_seconds = time.perf_counter() - started
    for size, sized in itertools.groupby(runs, key=lambda k: k.b_train_size):
        split = make_split(raw, first.pair, size, cfg.data.valid_size)
        started = time.perf_counter()
        _, _, base = experiment.fit_baseline(first.config(cfg).replace(**{"data.b_train_size": size}), split, quiet)
        base_seconds = time.perf_counter() - started
        for key in sized:
            started = time.perf_counter()
            _, _, test, reused = experiment.fit_transfer(key.config(cfg), split, model_a, quiet)
            append_result(out, {
                "id": key.id, "seed": key.seed, "pair": list(key.pair), "b_train_size": key.b_train_size,
                "reuse_layers": key.reuse_layers, "preset": key.preset,
                "learning_rates": list(LR_PRESETS[key.preset]),
                "baseline": {"test_accuracy": base["accuracy"], "test_loss": base["loss"]},
                "transfer": {"test_accuracy": test["accuracy"], "test_loss": test["loss"]},
                "model_a_test_accuracy": a_accuracy,
                "seconds": {"model_a": round(a_seconds, 2), "baseline": round(base_seconds, 2),
                            "transfer": round(time.perf_counter() - started, 2)},
                "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
            })
            a_seconds = 0.0  # model A's time is counted once, with the group's first run
            advance(key.id)


# ----------------------------------------------------------------------------- statistics

def paired_stats(baseline: list[float], transfer: list[float]) -> dict:
    """Paired comparison of test accuracies over seeds.

    The p-value is Wilcoxon's signed-rank test (two-sided), not the paired t-test: accuracy
    differences on a fixed test set are discrete, bounded and often skewed, and with ten seeds
    normality cannot be checked. Its exact null distribution holds only without zero or tied
    differences; these are common (accuracies move in steps of 1/2000), so then the normal
    approximation with tie correction is used, keeping zeros in the ranking (Pratt's method)
    rather than dropping them, which would overstate the evidence. The confidence interval for
    the mean difference is Student's t, the usual summary.
    """
    from scipy import stats

    b, t = np.asarray(baseline, float), np.asarray(transfer, float)
    diff = np.round(t - b, 9)  # 0.995 - 0.990 and 0.990 - 0.985 must tie, whatever the float error
    n = len(diff)
    out = {
        "n": n,
        "baseline_mean": float(b.mean()), "baseline_std": float(b.std(ddof=1)) if n > 1 else None,
        "transfer_mean": float(t.mean()), "transfer_std": float(t.std(ddof=1)) if n > 1 else None,
        "mean_difference": float(diff.mean()), "ci95": None, "p_value": None,
        "error_rate_ratio": error_rate_ratio(float(b.mean()), float(t.mean())),
        "wins": int((diff > 0).sum()), "ties": int((diff == 0).sum()), "losses": int((diff < 0).sum()),
    }
    if n > 1:
        sd = diff.std(ddof=1)
        half = float(stats.t.ppf(0.975, n - 1) * sd / math.sqrt(n))
        out["ci95"] = [float(diff.mean()) - half, float(diff.mean()) + half]
        if np.any(diff != 0):
            nonzero = diff[diff != 0]
            exact = len(nonzero) == n and len(np.unique(np.abs(nonzero))) == n
            out["p_value"] = float(stats.wilcoxon(diff, zero_method="pratt", alternative="two-sided",
                                                  method="exact" if exact else "approx").pvalue)
        else:
            out["p_value"] = 1.0  # every seed tied: no evidence of any difference
    return out


def report(study_dir: Path) -> dict:
    """Merge every finished run in `study_dir` and summarise each cell."""
    study_dir = Path(study_dir)
    meta = _read_meta(study_dir)
    config = _config_from(meta["config"])
    results = load_results(study_dir)
    cells: dict[tuple, list[dict]] = {}
    for r in sorted(results, key=lambda r: (r["pair"], r["b_train_size"], str(r["reuse_layers"]), r["preset"], r["seed"])):
        cells.setdefault((tuple(r["pair"]), r["b_train_size"], r["reuse_layers"], r["preset"]), []).append(r)
    summary = []
    for (pair, size, reuse, preset), runs in cells.items():
        cell = {"pair": list(pair), "b_train_size": size, "reuse_layers": reuse, "preset": preset,
                "seeds": [r["seed"] for r in runs],
                **paired_stats([r["baseline"]["test_accuracy"] for r in runs],
                               [r["transfer"]["test_accuracy"] for r in runs])}
        if (pair, size, reuse, preset) == (BOOK["pair"], BOOK["b_train_size"], BOOK["reuse_layers"], BOOK["preset"]) \
                and settings_fingerprint(config) == settings_fingerprint(Config()):  # the book's epochs, model...
            cell["book"] = book_placement(runs)
        summary.append(cell)
    total = len({k.id for k in grid(config)} | {r["id"] for r in results})
    return {"study": str(study_dir), "runs_finished": len(results), "runs_in_grid": total,
            "cells": summary, "config": meta["config"]}


def _config_from(d: dict) -> Config:
    from fmtransfer.experiment import _flatten

    return Config().replace(**_flatten(d))


def book_placement(runs: list[dict]) -> dict:
    """Where the book's published 97.05% -> 99.25% falls among this cell's seeds."""
    book_gain = BOOK["transfer"] - BOOK["baseline"]
    gains = np.array([r["transfer"]["test_accuracy"] - r["baseline"]["test_accuracy"] for r in runs])
    ratios = np.array([error_rate_ratio(r["baseline"]["test_accuracy"], r["transfer"]["test_accuracy"]) for r in runs])
    book_ratio = error_rate_ratio(BOOK["baseline"], BOOK["transfer"])
    return {"baseline": BOOK["baseline"], "transfer": BOOK["transfer"], "gain": book_gain,
            "error_rate_ratio": book_ratio,
            "seeds_with_gain_at_least_book": int((gains >= book_gain - 1e-9).sum()),
            "seeds_with_ratio_at_least_book": int((ratios >= book_ratio - 1e-9).sum()),
            "n": len(runs)}


# ----------------------------------------------------------------------------- plots

def plot(study_dir: Path, summary: dict) -> list[Path]:
    """Per cell, the paired accuracies seed by seed; and the mean gain against task-B size."""
    plt = pyplot("--plots")
    study_dir = Path(study_dir)
    out_dir = study_dir / "plots"
    out_dir.mkdir(exist_ok=True)
    results = load_results(study_dir)
    written = []
    for cell in summary["cells"]:
        runs = sorted((r for r in results if (r["pair"], r["b_train_size"], r["reuse_layers"], r["preset"])
                       == (cell["pair"], cell["b_train_size"], cell["reuse_layers"], cell["preset"])),
                      key=lambda r: r["seed"])
        fig, ax = plt.subplots(figsize=(6, 4))
        xs = np.arange(len(runs))
        base = [100 * r["baseline"]["test_accuracy"] for r in runs]
        trans = [100 * r["transfer"]["test_accuracy"] for r in runs]
        for x, b, t in zip(xs, base, trans):
            ax.plot([x, x], [b, t], color="green" if t > b else "red" if t < b else "grey", lw=1)
        ax.scatter(xs, base, label="baseline (from scratch)", marker="o", color="tab:blue", zorder=3)
        ax.scatter(xs, trans, label="transfer from A", marker="^", color="tab:orange", zorder=3)
        if "book" in cell:
            ax.axhline(100 * BOOK["baseline"], color="tab:blue", ls=":", lw=1, label="book baseline 97.05%")
            ax.axhline(100 * BOOK["transfer"], color="tab:orange", ls=":", lw=1, label="book transfer 99.25%")
        ax.set_xticks(xs, [str(r["seed"]) for r in runs], fontsize=7)
        ax.set_xlabel("seed")
        ax.set_ylabel("test B accuracy (%)")
        p = cell["p_value"]
        ax.set_title(f"classes {cell['pair'][0]} vs {cell['pair'][1]}, {cell['b_train_size']} images, "
                     f"reuse {cell['reuse_layers']}, {cell['preset']}\n"
                     f"W/T/L {cell['wins']}/{cell['ties']}/{cell['losses']}"
                     + (f", Wilcoxon p={p:.3g}" if p is not None else ""), fontsize=9)
        ax.legend(fontsize=7)
        fig.tight_layout()
        path = out_dir / (f"paired-pair{cell['pair'][0]}v{cell['pair'][1]}-n{cell['b_train_size']}"
                          f"-reuse{cell['reuse_layers']}-{cell['preset']}.png")
        save_figure(fig, path)
        written.append(path)
    fig, ax = plt.subplots(figsize=(6, 4))
    lines: dict[tuple, list[dict]] = {}
    for cell in summary["cells"]:
        lines.setdefault((tuple(cell["pair"]), cell["reuse_layers"], cell["preset"]), []).append(cell)
    for (pair, reuse, preset), cells in lines.items():
        cells = sorted(cells, key=lambda c: c["b_train_size"])
        sizes = [c["b_train_size"] for c in cells]
        means = [100 * c["mean_difference"] for c in cells]
        lo = [100 * (c["mean_difference"] - c["ci95"][0]) if c["ci95"] else 0 for c in cells]
        hi = [100 * (c["ci95"][1] - c["mean_difference"]) if c["ci95"] else 0 for c in cells]
        ax.errorbar(sizes, means, yerr=[lo, hi], marker="o", capsize=3,
                    label=f"{pair[0]} vs {pair[1]}, reuse {reuse}, {preset}")
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("task-B training images")
    ax.set_ylabel("transfer - baseline accuracy (points, mean, 95% CI)")
    ax.set_title("Transfer gain against task-B training size")
    ax.legend(fontsize=7)
    fig.tight_layout()
    path = out_dir / "gain-vs-size.png"
    save_figure(fig, path)
    written.append(path)
    return written

