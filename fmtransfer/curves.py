"""Learning curves: every trained model's per-epoch scores, phase by phase, as its records keep them.

A run directory's records (model_a.json, pretrain_METHOD.json, baseline.json, transfer_*.json)
and a study's freshly trained models carry the same typed epochs (`loop.Epoch.to_dict`); here
they become one shape, `Curves` (a model's name and its phases), which `fmtransfer curves` plots
and `tensorboard` writes as event files. Reading them imports no TensorFlow and trains nothing.

Example:
    >>> found = of_run_dir(Path("runs/default"))
    >>> [c.name for c in found]
    ['model_a', 'baseline', 'transfer']
    >>> plot(found, Path("runs/default/curves.png"), "runs/default")
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from fmtransfer.errors import UsageError
from fmtransfer.report import figures as report_figures
from fmtransfer.report import save_figure

# An epoch's keys that are no score: its number, and its wall time (never the same twice).
NOT_SCORES = ("epoch", "seconds")


@dataclass(frozen=True)
class Phase:
    """One phase of a model's training (`train`, `frozen`, `fine-tune`, a greedy depth): its
    name, its learning rate where recorded, and its epochs as records keep them."""

    name: str
    history: tuple[dict, ...]
    learning_rate: float | None = None


@dataclass(frozen=True)
class Curves:
    """A model's phases, in training order; `name` is its run name (model_a, baseline, a contender,
    pretrain_METHOD)."""

    name: str
    phases: tuple[Phase, ...]

    def epochs(self) -> list[tuple[int, Phase, dict]]:
        """(step, phase, epoch record) over every phase: steps count the epochs from 1 across
        the phases, so that a fine-tuning phase continues where the frozen one ended."""
        out, step = [], 0
        for phase in self.phases:
            for record in phase.history:
                step += 1
                out.append((step, phase, record))
        return out

    def scores(self) -> list[str]:
        """The score names its epochs carry (loss, accuracy, val_loss, ...), in first-seen order."""
        seen: dict[str, None] = {}
        for _, _, record in self.epochs():
            seen.update({k: None for k, v in record.items() if k not in NOT_SCORES and is_number(v)})
        return list(seen)


def is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _history(value: Any) -> tuple[dict, ...] | None:
    if not isinstance(value, list) or not all(isinstance(e, dict) for e in value):
        return None
    return tuple(value)


def _rate(value: Any) -> float | None:
    return float(value) if is_number(value) else None


def from_phases(name: str, phases: Iterable[dict]) -> Curves | None:
    """A model's curves from phase records ({"name", "history", "learning_rate"}: a contender's
    `phases`, a pretraining's `steps`); None where none holds an epoch."""
    found = []
    for i, p in enumerate(phases):
        history = _history(p.get("history")) if isinstance(p, dict) else None
        if history:
            found.append(Phase(str(p.get("name") or f"phase {i + 1}"), history, _rate(p.get("learning_rate"))))
    return Curves(name, tuple(found)) if found else None


def from_record(name: str, record: dict) -> Curves | None:
    """A model's curves from its run-directory record: its `phases` (a contender), `steps` (a
    pretraining) or `history` (model A, the baseline: one phase, `train`)."""
    for key in ("phases", "steps"):
        if isinstance(record.get(key), list):
            return from_phases(name, record[key])
    if _history(record.get("history")):
        return from_phases(name, [{"name": "train", "history": record["history"],
                                   "learning_rate": record.get("learning_rate")}])
    return None


def of_run_dir(path: Path) -> list[Curves]:
    """The curves of every model a run directory's records describe: model A, each pretraining,
    the baseline, then each contender (its record's `contender`, else the file's name). A record
    that is unreadable or holds no epochs is left out."""
    path = Path(path)
    files = [("model_a", path / "model_a.json")]
    files += [(p.stem, p) for p in sorted(path.glob("pretrain_*.json"))]
    files += [("baseline", path / "baseline.json")]
    files += [(None, p) for p in sorted(path.glob("transfer_*.json"))]
    found = []
    for name, file in files:
        try:
            record = json.loads(file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if not isinstance(record, dict):
            continue
        if name is None:
            name = record["contender"] if isinstance(record.get("contender"), str) else file.stem
        curves = from_record(name, record)
        if curves is not None:
            found.append(curves)
    return found


def run_dir_curves(path: Path) -> list[Curves]:
    """`of_run_dir`, or a usage error naming the directory when it holds no trained model."""
    path = Path(path)
    if not path.is_dir():
        raise UsageError(f"{path} is not a run directory; give the --run directory of `fmtransfer run` (or its "
                         "stages)", path=path)
    found = of_run_dir(path)
    if not found:
        raise UsageError(f"{path} holds no trained model's history (model_a.json, baseline.json, transfer_*.json); "
                         f"run `fmtransfer run --run {path}` first", path=path)
    return found


def plot(found: list[Curves], path: Path, title: str, option: str = "curves") -> Path:
    """Loss and accuracy per epoch of every model in `found`, two panels side by side, written as
    one PNG at `path` (atomically). Validation is dashed, in its model's colour; a dotted line marks
    where each next phase begins. Needs matplotlib (the [plot] extra)."""
    figures = report_figures(option)  # before matplotlib's own modules are imported below
    from matplotlib.ticker import MaxNLocator

    fig, axes = figures.subplots(1, 2, figsize=(12, 4.5))
    colours = [f"C{i % 10}" for i in range(len(found))]
    for (panel, score), ax in zip((("loss", "loss"), ("accuracy", "accuracy")), axes):
        for curves, colour in zip(found, colours):
            epochs = curves.epochs()
            for key, style, label in ((score, "-", curves.name), (f"val_{score}", "--", f"{curves.name} (valid)")):
                points = [(step, r[key]) for step, _, r in epochs if is_number(r.get(key))]
                if points:
                    ax.plot(*zip(*points), style, color=colour, marker="." if len(points) < 30 else None,
                            label=label)
            step = 0
            for phase in curves.phases[:-1]:
                step += len(phase.history)
                ax.axvline(step + 0.5, color=colour, linestyle=":", linewidth=1)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(panel)
        ax.set_xlabel("epoch (across phases)")
        ax.set_ylabel(panel)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize="small")
    fig.suptitle(f"Learning curves: {title} (dashed: validation; dotted: a phase begins)")
    save_figure(fig, path)
    return Path(path)
