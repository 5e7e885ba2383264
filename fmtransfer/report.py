"""What the user sees: progress while training, rich tables for results, JSON for machines.

Everything human goes to stderr, so `--json` leaves stdout holding exactly one JSON object.
"""

from __future__ import annotations

import math
import re
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable

from rich import box
from rich.cells import cell_len
from rich.console import Console, Group
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

from fmtransfer.config import CLASS_NAMES
from fmtransfer.errors import UsageError
from fmtransfer.io import atomic_path
from fmtransfer.io import to_json  # noqa: F401  (what the CLI prints with --json)


class Reporter:
    """Progress bars and messages for a stage; `quiet` shows nothing (library use, --json).

    On a terminal, live bars; off one (a pipe, a file, a Slurm log) a bar could only be printed
    once, cut to fit, so each bar is a plain line when it is done instead."""

    def __init__(self, quiet: bool = False, console: Console | None = None):
        self.quiet = quiet
        self.console = console or make_console(stderr=True)

    @property
    def live(self) -> bool:
        return self.console.is_terminal

    def info(self, message: str) -> None:
        if not self.quiet:
            self.console.print(message)

    def _progress(self, *columns) -> Progress:
        # markup=False: a label is a contender's or a run's name, text to show, never markup
        return Progress(TextColumn("{task.description}", style="bold", markup=False), BarColumn(),
                        MofNCompleteColumn(), *columns, console=self.console)

    @contextmanager
    def training(self, label: str, epochs: int):
        """Yield an on_epoch callback that advances a bar showing epoch, loss and accuracy."""
        if self.quiet or epochs == 0:
            yield None
            return
        if not self.live:
            yield from self._plain_training(label, epochs)
            return
        progress = self._progress(TextColumn("{task.fields[metrics]}", markup=False), TimeElapsedColumn())
        with progress:
            task = progress.add_task(label, total=epochs, metrics="epoch 0")

            def on_epoch(epoch: int, record) -> None:  # record: a loop.Epoch
                progress.update(task, completed=epoch, metrics=_metrics(record))

            try:
                yield on_epoch
            except BaseException:
                progress.remove_task(task)  # a failed stage leaves its one error line, not a half bar
                raise

    def _plain_training(self, label: str, epochs: int):
        start, last = time.monotonic(), {"epoch": 0, "metrics": ""}

        def on_epoch(epoch: int, record) -> None:
            last.update(epoch=epoch, metrics=_metrics(record))

        yield on_epoch  # a failed stage prints nothing here: its error line says it all
        metrics = f", {last['metrics']}" if last["metrics"] else ""
        self.console.print(Text(f"{label}: {last['epoch']}/{epochs} epochs{metrics} "
                                f"({time.monotonic() - start:.0f} s)"))

    @contextmanager
    def grid(self, label: str, total: int, done: int = 0):
        """Yield an advance(description) callback for a study's grid of runs."""
        if self.quiet:
            yield lambda *a, **k: None
            return
        if not self.live:  # a line per finished run: a log shows how far a study got
            count = [done]

            def line(now: str = "", step: int = 1) -> None:
                count[0] += step
                self.console.print(Text(f"{label} {count[0]}/{total}" + (f" {now}" if now else "")))

            yield line
            return
        progress = self._progress(TextColumn("{task.fields[now]}", markup=False), TimeElapsedColumn(),
                                  TextColumn("eta"), TimeRemainingColumn())
        with progress:
            task = progress.add_task(label, total=total, completed=done, now="")

            def advance(now: str = "", step: int = 1) -> None:
                progress.update(task, advance=step, now=now)

            yield advance


def _metrics(record) -> str:
    """An epoch's loss and accuracies (a loop.Epoch), as a bar or a log line shows them."""
    metrics = f"loss {record.loss:.4f}"
    if record.accuracy is not None:
        metrics += f"  acc {record.accuracy:.4f}"
    if record.val_accuracy is not None:
        metrics += f"  val_acc {record.val_accuracy:.4f}"
    return metrics


# Off a terminal the console is as wide as its longest line (so a table's numbers are never cut),
# and rich pads a block to the console's width: these are the spaces to drop before each newline.
_PADDING = re.compile(r"[ \t]+(?=\n)")


class _Unpadded:
    """A stream that is not a terminal, written to without the padding to the console's width."""

    def __init__(self, stream):
        self.stream = stream

    def write(self, text: str) -> int:
        return self.stream.write(_PADDING.sub("", text))

    def flush(self) -> None:
        self.stream.flush()

    def isatty(self) -> bool:
        return False


def make_console(stderr: bool = False) -> Console:
    """The one console every human line goes through (stdout's tables, stderr's progress).

    Markup is off: a path, a run's or a contender's name is printed as typed, never read as rich
    markup (`runs/x[/]y` is a directory name, not a closing tag); fmtransfer styles its own words
    with rich Text. On a terminal: its width, colour and live bars. Off one (a pipe, a file, a
    Slurm log): no colour, no live bars (see Reporter), and each line as wide as its content,
    neither cut nor wrapped to a guessed 80 columns, nor padded with spaces to the console's width.
    """
    import importlib.util

    probe = Console(stderr=stderr)
    if probe.is_jupyter:  # without ipywidgets, which rich's live bars need there: plain text
        if importlib.util.find_spec("ipywidgets") is None:
            return Console(stderr=stderr, force_jupyter=False, force_terminal=False, width=110, markup=False)
        return Console(stderr=stderr, markup=False)
    if probe.is_terminal:
        return Console(stderr=stderr, markup=False)
    return Console(file=_Unpadded(sys.stderr if stderr else sys.stdout), width=100_000, markup=False)


def plotting_available() -> bool:
    """Whether the optional [plot] extra (matplotlib) is installed, without importing it."""
    import importlib.util

    return importlib.util.find_spec("matplotlib") is not None


class Figures:
    """Makes matplotlib figures without pyplot: no global backend is chosen or switched, so a
    notebook's own plots keep working after fmtransfer has written its PNGs."""

    @staticmethod
    def subplots(*args, figsize=None, **kwargs):
        from matplotlib.figure import Figure

        fig = Figure(figsize=figsize)
        return fig, fig.subplots(*args, **kwargs)


def figures(option: str) -> Figures:
    """A figure factory; without the [plot] extra, a usage error naming the option (`--plot`:
    it then says how to do without) or the command (`curves`) that asked for a plot."""
    try:
        import matplotlib.figure  # noqa: F401
    except ImportError:
        if option.startswith("--"):
            raise UsageError(f"option {option} needs matplotlib: pip install 'fmtransfer[plot]' "
                             f"(or pass --no-{option[2:]})") from None
        raise UsageError(f"{option} needs matplotlib: pip install 'fmtransfer[plot]'") from None
    return Figures()


def save_figure(fig, path, dpi: int = 110) -> None:
    """Write `fig` as a PNG atomically."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight")


@dataclass(frozen=True)
class Column:
    """One column of a table that fits its terminal: a heading, a cell's text from a row, and
    whether it stays at any width. Only a name wraps; numbers are never cut."""

    heading: str
    text: Callable[[Any], str]
    essential: bool = False
    name: bool = False


def fitted(columns: list[Column], rows: list, *, width: int | None = None, wide: bool = False,
           title: str | None = None, notes: list[str] | None = None) -> Group:
    """A table of `rows` that fits in `width` columns: the optional columns are left out from the
    last one on until it does, and the caption says which (`wide`, or no width: all of them).
    Rich would otherwise cut every number to fit ('54…')."""
    shown = list(columns)
    while True:
        table = _table(shown, rows, title)
        optional = [c for c in shown if not c.essential]
        if wide or width is None or not optional or not _cut(table, width):
            break
        shown.remove(optional[-1])
    left = [c.heading for c in columns if c not in shown]
    caption = list(notes or [])
    if left:
        caption.append(f"Not shown at {width} columns: {', '.join(left)} (--wide shows every column).")
    table.caption = "\n".join(caption) or None
    return framed(table)


def framed(table: Table) -> Group:
    """`table` with its title above it and its caption below as lines of their own. Rich wraps a
    title or caption at the table's width, so a narrow table folds a path into a column of 20
    characters (in a pipe too); lines of their own wrap at the console's width, and off a
    terminal not at all."""
    title, caption = table.title, table.caption
    table.title = table.caption = None
    return Group(*([Text(str(title), style="table.title")] if title else []), table,
                 *([Text(str(caption), style="table.caption")] if caption else []))


def _table(columns: list[Column], rows: list, title: str | None) -> Table:
    table = Table(title=title, box=box.SIMPLE_HEAD, pad_edge=False, title_justify="left", caption_justify="left")
    for c in columns:
        if c.name:  # wraps between words, and folds none shorter than a line of its own
            words = [w for row in rows for w in c.text(row).split()] + c.heading.split()
            table.add_column(c.heading, overflow="fold", min_width=min(max(map(len, words), default=1), 24))
        else:  # as wide as its widest cell: a table too wide for its terminal measures so
            widest = max([cell_len(c.text(row)) for row in rows] + [cell_len(c.heading)])
            table.add_column(c.heading, justify="right", no_wrap=True, min_width=widest)
    for row in rows:  # as text: a name (a plug-in's title) is never read as markup
        table.add_row(*(Text(c.text(row)) for c in columns))
    return table


def _cut(table: Table, width: int) -> bool:
    """Whether `table` is wider than `width` columns at its narrowest: rich would cut its cells."""
    from rich.measure import Measurement

    console = Console(width=100_000, markup=False)  # rich clamps what it measures to the console's width
    return Measurement.get(console, console.options, table).minimum > width


def pct(x: float | None, digits: int = 2) -> str:
    return "-" if x is None else f"{100 * x:.{digits}f}%"


def split_table(result: dict) -> Group:
    """The split's sizes, with its title and data source as lines of their own: a table's title
    and caption wrap to its width, which is two short columns here."""
    neg, pos = result["b_classes"]
    table = Table()
    table.add_column("part")
    table.add_column("images", justify="right")
    for part, n in result["sizes"].items():
        table.add_row(part, f"{n:,}")
    table.title = (f"Split: task B is {CLASS_NAMES[neg]} (class {neg}, label 0) vs {CLASS_NAMES[pos]} "
                   f"(class {pos}, label 1); task A is the other 8 classes")
    table.caption = f"data: {result['source']}"
    return framed(table)


def history_table(title: str, result: dict) -> Group:
    table = Table(title=title, title_justify="left")
    table.add_column("phase")
    table.add_column("epochs", justify="right")
    table.add_column("learning rate", justify="right")
    table.add_column("train acc", justify="right")
    table.add_column("valid acc", justify="right")
    for phase in result.get("phases", [result]):
        last = phase["history"][-1] if phase["history"] else {}
        rate = phase.get("learning_rate")  # none for a step solved exactly (LP-FT's probe)
        table.add_row(phase.get("name", "train"), str(phase["epochs"]), "-" if rate is None else f"{rate:g}",
                      pct(last.get("accuracy", phase.get("train_accuracy"))), pct(last.get("val_accuracy")))
    table.caption = f"test accuracy {pct(result['test_accuracy'])}  ({result['seconds']:.1f} s)"
    return framed(table)


def compare_table(result: dict, width: int | None = None, wide: bool = False) -> Group:
    """The contenders on test B, baseline first; model A's own test accuracy, where one was
    reused, and the settings under it."""
    neg, pos = result["b_classes"]
    columns = [
        Column("model", lambda r: r[0], essential=True, name=True),
        Column("test accuracy", lambda r: pct(r[1]["test_accuracy"]), essential=True),
        Column("error rate", lambda r: pct(1 - r[1]["test_accuracy"])),
        Column("test loss", lambda r: f"{r[1]['test_loss']:.4f}"),
        Column("error divided by", lambda r: "-" if r[0] == "baseline" else ratio_text(r[1].get("error_rate_ratio")),
               essential=True),
        Column("linear probe", lambda r: "-" if r[1].get("linear_probe") is None else pct(r[1]["linear_probe"])),
    ]
    notes = []
    if (result.get("model_a") or {}).get("test_accuracy") is not None:
        notes.append(f"model A (task A, 8 classes): test accuracy {pct(result['model_a']['test_accuracy'])}")
    if not any(r.get("tuned") for r in result["contenders"].values()):  # tuned, each says its own below
        notes.append("  ".join(f"{k}={v}" for k, v in result["settings"].items()))
    if any(s.get("linear_probe") is not None for s in result["contenders"].values()):
        notes.append("linear probe: test accuracy of a logistic regression on the frozen pretrained "
                     "features B starts from, before any training")
    for title, r in result["contenders"].items():
        if r.get("tuned"):
            t = r["tuned"]
            drawn = "  ".join(f"{k}={_setting(v)}" for k, v in t["settings"].items())
            notes.append(f"{title}: trial {t['trial']} of {t['trials']}, selected on {t['on']} (validation accuracy "
                         f"{pct(t['valid_accuracy'])}, {t['steps']} SGD steps): {drawn}")
    smoke = result.get("smoke") or []
    if smoke:
        notes.insert(0, smoke_note(smoke))
    return fitted(columns, list(result["contenders"].items()), width=width, wide=wide, notes=notes,
                  title=smoke_title(smoke) + f"Task B test set: {CLASS_NAMES[neg]} vs {CLASS_NAMES[pos]} "
                                             f"({result['b_train_size']} training images)")


def _setting(value) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


SMOKE = "SMOKE TEST"


def smoke_title(smoke) -> str:
    """What a title starts with when its settings are below the chapter's: nothing otherwise."""
    return f"{SMOKE} (settings below the chapter's; its numbers say nothing about transfer): " if smoke else ""


def smoke_note(smoke) -> str:
    """The settings that make it a smoke test, for the note under a table or a report's header."""
    return f"{SMOKE}: below the chapter's settings: {', '.join(smoke)}"


def ratio_text(ratio: float | None) -> str:
    if ratio is None:
        return "-"
    if math.isinf(ratio):
        return "inf (no transfer errors)"
    return f"{ratio:.2f}x"


def mean_std(mean: float, std: float | None) -> str:
    return f"{100 * mean:.2f}" + ("" if std is None else f"±{100 * std:.2f}")


def pretrain_table(result: dict) -> Group:
    table = Table(title=f"Unsupervised pretraining: {result['method']} ({result['arch']}), "
                        f"{result['unlabelled_size']:,} unlabelled images", title_justify="left")
    table.add_column("step")
    table.add_column("trains")
    table.add_column("epochs", justify="right")
    table.add_column("train loss", justify="right")
    table.add_column("valid loss", justify="right")
    for step in result["steps"]:
        last = step["history"][-1] if step["history"] else {}
        trains = "every layer" if result["method"] == "autoencoder" else ", ".join(step["trains"])
        table.add_row(step.get("name") or f"depth {step['depth']}", trains, str(len(step["history"])),
                      _loss(last.get("loss")), _loss(last.get("val_loss")))
    scores = [f"{name.replace('_', ' ')} {result[name]:.4f}" for name in ("reconstruction_loss",)
              if isinstance(result.get(name), float)]
    lines = ["  ".join([*scores, f"({result['seconds']:.1f} s)"]), f"encoder: {result['encoder']}"]
    if result.get("picture"):
        lines.append(f"picture: {result['picture']}")
    table.caption = "\n".join(lines)
    return framed(table)


def _loss(x: float | None) -> str:
    return "-" if x is None else f"{x:.4f}"
