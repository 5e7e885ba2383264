"""What the user sees: progress while training, rich tables for results, JSON for machines.

Everything human goes to stderr, so `--json` leaves stdout holding exactly one JSON object.
"""

from __future__ import annotations

import math
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from fmtransfer.config import CLASS_NAMES
from fmtransfer.errors import UsageError
from fmtransfer.io import atomic_path
from fmtransfer.io import to_json  # noqa: F401  (what the CLI prints with --json)


class Reporter:
    """Progress bars and messages for a stage; `quiet` shows nothing (library use, --json)."""

    def __init__(self, quiet: bool = False, console: Console | None = None):
        self.quiet = quiet
        self.console = console or _console()

    def info(self, message: str) -> None:
        if not self.quiet:
            self.console.print(message)

    @contextmanager
    def training(self, label: str, epochs: int):
        """Yield an on_epoch callback that advances a bar showing epoch, loss and accuracy."""
        if self.quiet or epochs == 0:
            yield None
            return
        progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TextColumn("{task.fields[metrics]}"), TimeElapsedColumn(),
                            console=self.console, transient=False)
        with progress:
            task = progress.add_task(label, total=epochs, metrics="epoch 0")

            def on_epoch(epoch: int, record) -> None:  # record: a loop.Epoch
                metrics = f"loss {record.loss:.4f}"
                if record.accuracy is not None:
                    metrics += f"  acc {record.accuracy:.4f}"
                if record.val_accuracy is not None:
                    metrics += f"  val_acc {record.val_accuracy:.4f}"
                progress.update(task, completed=epoch, metrics=metrics)

            try:
                yield on_epoch
            except BaseException:
                progress.remove_task(task)  # a failed stage leaves its one error line, not a half bar
                raise

    @contextmanager
    def grid(self, label: str, total: int, done: int = 0):
        """Yield an advance(description) callback for a study's grid of runs."""
        if self.quiet:
            yield lambda *a, **k: None
            return
        progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TextColumn("{task.fields[now]}"), TimeElapsedColumn(), TextColumn("eta"),
                            TimeRemainingColumn(), console=self.console)
        with progress:
            task = progress.add_task(label, total=total, completed=done, now="")

            def advance(now: str = "", step: int = 1) -> None:
                progress.update(task, advance=step, now=now)

            yield advance


def _console() -> Console:
    """stderr; in Jupyter without ipywidgets (which rich's live bars need there), plain text that
    prints each bar once, when it is done, instead of a warning and nothing."""
    import importlib.util

    console = Console(stderr=True)
    if console.is_jupyter and importlib.util.find_spec("ipywidgets") is None:
        console = Console(stderr=True, force_jupyter=False, force_terminal=False, width=110)
    return console


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
    """A figure factory; without the [plot] extra, a usage error naming the option that asked
    for a plot."""
    try:
        import matplotlib.figure  # noqa: F401
    except ImportError:
        raise UsageError(f"option {option} needs matplotlib: pip install 'fmtransfer[plot]' "
                         f"(or pass --no-{option[2:]})") from None
    return Figures()


def save_figure(fig, path, dpi: int = 110) -> None:
    """Write `fig` as a PNG atomically."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight")


def pct(x: float | None, digits: int = 2) -> str:
    return "-" if x is None else f"{100 * x:.{digits}f}%"


def split_table(result: dict) -> Table:
    neg, pos = result["b_classes"]
    table = Table(title=f"Split: task B = {CLASS_NAMES[neg]} (0) vs {CLASS_NAMES[pos]} (1); task A = the other 8")
    table.add_column("part")
    table.add_column("images", justify="right")
    for part, n in result["sizes"].items():
        table.add_row(part, f"{n:,}")
    table.caption = f"data: {result['source']}"
    return table


def history_table(title: str, result: dict) -> Table:
    table = Table(title=title)
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
    return table


def compare_table(result: dict) -> Table:
    neg, pos = result["b_classes"]
    table = Table(title=f"Task B test set: {CLASS_NAMES[neg]} vs {CLASS_NAMES[pos]} "
                        f"({result['b_train_size']} training images)")
    table.add_column("model", no_wrap=True)  # the contenders' names are what the table is about
    table.add_column("test accuracy", justify="right")
    table.add_column("error rate", justify="right")
    table.add_column("test loss", justify="right")
    table.add_column("error divided by", justify="right")
    table.add_column("linear probe", justify="right")
    for name, scores in result["contenders"].items():
        ratio = scores.get("error_rate_ratio")
        probe = scores.get("linear_probe")
        table.add_row(name, pct(scores["test_accuracy"]), pct(1 - scores["test_accuracy"]),
                      f"{scores['test_loss']:.4f}", "-" if name == "baseline" else ratio_text(ratio),
                      "-" if probe is None else pct(probe))
    settings = result["settings"]
    table.caption = "  ".join(f"{k}={v}" for k, v in settings.items())
    if any(s.get("linear_probe") is not None for s in result["contenders"].values()):
        table.caption += ("\nlinear probe: test accuracy of a logistic regression on the frozen pretrained "
                          "features B starts from, before any training")
    return table


def ratio_text(ratio: float | None) -> str:
    if ratio is None:
        return "-"
    if math.isinf(ratio):
        return "inf (no transfer errors)"
    return f"{ratio:.2f}x"


def mean_std(mean: float, std: float | None) -> str:
    return f"{100 * mean:.2f}" + ("" if std is None else f"±{100 * std:.2f}")


def pretrain_table(result: dict) -> Table:
    table = Table(title=f"Unsupervised pretraining: {result['method']} ({result['arch']}), "
                        f"{result['unlabelled_size']:,} unlabelled images")
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
    return table


def _loss(x: float | None) -> str:
    return "-" if x is None else f"{x:.4f}"
