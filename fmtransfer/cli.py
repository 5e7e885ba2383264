"""The `fmtransfer` command: parses options into a Config and calls `experiment`.

Imports no TensorFlow: `--help` and usage errors answer at once; the stages import it on use.
"""

from __future__ import annotations

import functools
import re
import sys
from pathlib import Path

import click

from fmtransfer import FmtError, UsageError, __version__

# option name -> config key, per option; shared by every subcommand that takes the option
OPTION_KEYS = {
    "data_dir": "data.dir", "b_classes": "data.b_classes", "b_train_size": "data.b_train_size",
    "valid_size": "data.valid_size", "arch": "model.arch", "hidden": "model.hidden",
    "activation": "model.activation", "batch_size": "batch_size", "seed": "seed",
    "a_epochs": "train_a.epochs", "a_learning_rate": "train_a.learning_rate",
    "b_epochs": "baseline.epochs", "b_learning_rate": "baseline.learning_rate",
    "reuse_layers": "transfer.reuse_layers", "freeze_epochs": "transfer.freeze_epochs",
    "fine_tune_epochs": "transfer.fine_tune_epochs", "frozen_learning_rate": "transfer.frozen_learning_rate",
    "fine_tune_learning_rate": "transfer.fine_tune_learning_rate", "unfreeze": "transfer.unfreeze",
    "pairs": "study.pairs", "b_train_sizes": "study.b_train_sizes",
    "study_reuse_layers": "study.reuse_layers", "presets": "study.presets",
    "cnn_dense": "model.cnn_dense", "method": "pretrain.method", "unlabelled_size": "pretrain.unlabelled_size",
    "p_epochs": "pretrain.epochs", "p_learning_rate": "pretrain.learning_rate",
}


def _option(name: str, key: str, type=str, help: str = ""):
    return click.option(name, key, type=type, default=None, help=help)


def common(f=None, *, run_default: str = "runs/default"):
    """--run, --config, --seed, --json, --verbose: every subcommand takes them."""
    if f is None:
        return functools.partial(common, run_default=run_default)
    for decorator in reversed([
        click.option("--run", "run_dir", default=run_default, show_default=True, type=click.Path(file_okay=False),
                     help="Run directory: holds the split, models, results and remembered settings."),
        click.option("--config", "config_path", type=click.Path(dir_okay=False),
                     help="TOML settings file (see configs/); options override it."),
        _option("--seed", "seed", int, "Seed for every random number generator."),
        click.option("--json", "as_json", is_flag=True, help="Print exactly one JSON object on stdout."),
        click.option("--verbose", is_flag=True, help="Show TensorFlow's own log lines."),
    ]):
        f = decorator(f)
    return f


data_options = [
    _option("--data-dir", "data_dir", help="Folder holding the four Fashion-MNIST .gz files."),
    _option("--b-classes", "b_classes", help="Task B's two classes, negative,positive  [5,6]."),
    _option("--b-train-size", "b_train_size", int, "Task-B training images kept  [200]."),
    _option("--valid-size", "valid_size", int, "Training images held out for validation  [5000]."),
    click.option("--no-verify", is_flag=True, help="Skip the SHA-256 check (for a dataset of your own)."),
]
model_options = [
    _option("--arch", "arch", click.Choice(["dense", "cnn"]), "Network family  [dense]."),
    _option("--hidden", "hidden", help="Hidden layer sizes (dense)  [300,100,50,50,50], "
                                      "or filters per conv-pool block (cnn)  [16,32,64]."),
    _option("--cnn-dense", "cnn_dense", int, "cnn: units of the dense block on the conv blocks, 0 for none  [64]."),
    _option("--activation", "activation", help="Hidden activation  [selu]."),
    _option("--batch-size", "batch_size", int, "Mini-batch size  [32]."),
]
transfer_options = [
    _option("--reuse-layers", "reuse_layers", help="How many of A's hidden layers to reuse, or all  [all]."),
    _option("--freeze-epochs", "freeze_epochs", int, "Phase 1 epochs, reused layers frozen  [4]."),
    _option("--fine-tune-epochs", "fine_tune_epochs", int, "Phase 2 epochs, unfrozen  [16]."),
    _option("--frozen-learning-rate", "frozen_learning_rate", float, "Phase 1 learning rate  [1e-2]."),
    _option("--fine-tune-learning-rate", "fine_tune_learning_rate", float, "Phase 2 learning rate  [1e-4]."),
    _option("--unfreeze", "unfreeze", help="Phase 2 unfreezes all reused layers, or top:K  [all]."),
]


def options(decorators):
    def wrap(f):
        for d in reversed(decorators):
            f = d(f)
        return f
    return wrap


def _console():
    from rich.console import Console

    return Console()


def _fail(message: str, code: int) -> None:
    click.echo(f"fmtransfer: error: {message}", err=True)
    sys.exit(code)


def stage(f):
    """Turn a subcommand into: resolve the config, call the stage, print a table or JSON."""

    @functools.wraps(f)
    def wrapper(run_dir, config_path, as_json, verbose, no_verify=False, **kwargs):
        from fmtransfer import experiment
        from fmtransfer.report import Reporter

        if click.get_current_context().invoked_subcommand:  # a group's subcommand does the work
            return

        overrides = {key: kwargs.pop(name) for name, key in OPTION_KEYS.items() if name in kwargs}
        if no_verify:
            overrides["data.verify_checksums"] = False
        run_path = Path(run_dir)

        def body():
            cfg = experiment.resolve_config(run_path, config_path, overrides)
            if verbose:
                from fmtransfer import runtime

                runtime.start(verbose=True)
            return f(cfg, run_path, Reporter(quiet=as_json), **kwargs)

        execute(body, as_json=as_json, verbose=verbose, run_path=run_path, overrides=overrides)

    return wrapper


def execute(body, *, as_json: bool, verbose: bool, run_path: Path, overrides: dict | None = None) -> None:
    """Run `body() -> (result, show)` and print its result as JSON or through `show`.

    Failures the user can act on become one line on stderr; Ctrl-C stops cleanly.
    """
    try:
        result, show = body()
    except FmtError as e:
        _fail(_name_option(str(e), overrides or {}), e.exit_code)
    except KeyboardInterrupt:
        _fail(f"interrupted; results already in {run_path} are intact", 130)
    except Exception as e:  # a bug or an environment failure: one line, traceback on request
        if verbose:
            raise
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        _fail(f"{type(e).__name__}: {first} (rerun with --verbose for the traceback)", 1)
    from fmtransfer.report import to_json

    if as_json:
        click.echo(to_json(result))
    else:
        show(_console(), result)


def _name_option(message: str, overrides: dict) -> str:
    """Say which option set a bad value, as the user typed it, not only its config key."""
    match = re.match(r"config key ([\w.]+):", message)
    if not match or overrides.get(match.group(1)) is None:
        return message
    ctx = click.get_current_context(silent=True)
    names = {name for name, key in OPTION_KEYS.items() if key == match.group(1)}
    for param in ctx.command.params if ctx else []:
        if param.name in names:
            return f"option {param.opts[0]} ({message})"
    return message


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="fmtransfer")
def cli():
    """Run, and honestly audit, the Fashion-MNIST A->B transfer experiment (Hands-On ML, 11.2).

    \b
    fmtransfer run --config configs/book.toml     # everything, then the comparison
    fmtransfer split; fmtransfer train-a; fmtransfer transfer; fmtransfer compare
    fmtransfer pretrain --method greedy; fmtransfer transfer --from greedy   # ch. 11.2.2
    """


@cli.command()
@common
@options(data_options)
@stage
def split(cfg, run_dir, reporter):
    """Find and verify Fashion-MNIST, make the book's A/B split, save it in the run directory."""
    from fmtransfer import experiment, report

    result = experiment.split(cfg, run_dir, reporter)
    return result, lambda console, r: console.print(report.split_table(r))


@cli.command("train-a")
@common
@_option("--epochs", "a_epochs", int, "Epochs  [20].")
@_option("--learning-rate", "a_learning_rate", float, "SGD learning rate  [1e-3].")
@options(model_options)
@stage
def train_a(cfg, run_dir, reporter):
    """Train model A on the eight task-A classes and save it (.keras) with its history."""
    from fmtransfer import experiment, report

    result = experiment.train_a(cfg, run_dir, reporter)
    return result, lambda console, r: console.print(report.history_table("Model A (8 classes)", r))


@cli.command()
@common
@click.option("--model-a", type=click.Path(dir_okay=False),
              help="Model A to reuse (.keras or legacy .h5, e.g. the book's my_model_A.h5)  [RUN/model_a.keras].")
@click.option("--from", "source", type=click.Choice(["a", "autoencoder", "greedy"]), default="a", show_default=True,
              help="What to build B on: model A, or the encoder of `pretrain --method autoencoder|greedy`.")
@options(transfer_options)
@stage
def transfer(cfg, run_dir, reporter, model_a, source):
    """Build model B on a clone of model A's (or a pretrained encoder's) lower layers; train
    frozen, then fine-tune."""
    from fmtransfer import experiment, report

    if model_a and source != "a":
        raise UsageError(f"option --model-a: only with --from a; --from {source} builds on "
                         f"{run_dir / experiment.pretrain_paths(source)['encoder']}")
    result = experiment.transfer(cfg, run_dir, reporter, model_a_path=model_a, source=source)
    title = f"model_B_on_{'A' if source == 'a' else source}"
    return result, lambda console, r: console.print(report.history_table(title, r))


@cli.command()
@common
@click.option("--method", "method", type=click.Choice(["autoencoder", "greedy"]), default=None,
              help="autoencoder: train the whole stacked autoencoder at once; greedy: one hidden layer "
                   "at a time, the ones below frozen  [autoencoder].")
@_option("--unlabelled-size", "unlabelled_size", int,
         "Unlabelled images: the first N training images, labels ignored  [55000].")
@_option("--epochs", "p_epochs", int, "Epochs (per layer for greedy)  [10].")
@_option("--learning-rate", "p_learning_rate", float, "SGD learning rate  [0.1].")
@click.option("--plot/--no-plot", default=None,
              help="Write reconstructions_METHOD.png (needs fmtransfer[plot])  [if matplotlib is installed].")
@options(model_options)
@stage
def pretrain(cfg, run_dir, reporter, plot):
    """Pretrain A's hidden stack as an autoencoder on unlabelled images (ch. 11.2.2); save the
    encoder for `transfer --from METHOD`."""
    from fmtransfer import experiment, report

    result = experiment.pretrain(cfg, run_dir, reporter, plot=plot)
    return result, lambda console, r: console.print(report.pretrain_table(r))


@cli.command()
@common
@_option("--epochs", "b_epochs", int, "Baseline epochs  [20].")
@_option("--learning-rate", "b_learning_rate", float, "Baseline SGD learning rate  [1e-3].")
@options(model_options)
@stage
def compare(cfg, run_dir, reporter):
    """Train (or reuse) the from-scratch baseline of the run's architecture; compare it on test B
    with every model B built on pretrained layers (from A, autoencoder, greedy)."""
    from fmtransfer import experiment, report

    result = experiment.compare(cfg, run_dir, reporter)
    return result, lambda console, r: console.print(report.compare_table(r))


@cli.command()
@common
@options(data_options + model_options)
@_option("--a-epochs", "a_epochs", int, "Model A epochs  [20].")
@_option("--b-epochs", "b_epochs", int, "Baseline epochs  [20].")
@options(transfer_options)
@stage
def run(cfg, run_dir, reporter):
    """Run split, train-a, transfer and compare in order: the whole experiment."""
    from fmtransfer import experiment, report

    result = experiment.run(cfg, run_dir, reporter)
    return result, lambda console, r: console.print(report.compare_table(r))


@cli.group(invoke_without_command=True)
@common(run_default="runs/study")
@click.option("--seeds", "n_seeds", type=int, help="Run this many seeds: --seed, --seed + 1, ...")
@click.option("--seed-list", help="Run exactly these seeds, e.g. 42,7,1.")
@click.option("--pairs", help="Task-B class pairs, e.g. 5:6,0:2,7:9  [5:6].")
@click.option("--b-train-sizes", help="Task-B training sizes, e.g. 50,200,1000  [200].")
@click.option("--reuse-layers", "study_reuse_layers", help="Reuse depths, e.g. 1,3,all  [all].")
@click.option("--presets", help="Learning-rate presets: book (1e-2, 1e-4), notebook (1e-3, 1e-3)  [book].")
@click.option("--shard", help="Run only slice I of N (I from 0), e.g. $SLURM_ARRAY_TASK_ID/10.")
@click.option("--plots/--no-plots", default=None, help="Write PNG plots (needs fmtransfer[plot])  [if installed].")
@_option("--a-epochs", "a_epochs", int, "Model A epochs  [20].")
@_option("--b-epochs", "b_epochs", int, "Baseline epochs  [20].")
@_option("--freeze-epochs", "freeze_epochs", int, "Phase 1 epochs  [4].")
@_option("--fine-tune-epochs", "fine_tune_epochs", int, "Phase 2 epochs  [16].")
@options([data_options[0], data_options[3], data_options[4]] + model_options)
@stage
def study(cfg, run_dir, reporter, n_seeds, seed_list, shard, plots):
    """Is the gain real? Run a grid of experiments (seeds x pairs x sizes x reuse x presets).

    \b
    fmtransfer study --seeds 10 --pairs 5:6,0:2,7:9      # resumes where it stopped
    fmtransfer study --shard $SLURM_ARRAY_TASK_ID/10 ... # one slice per array job
    fmtransfer study report runs/study                   # merge what has finished
    """
    from fmtransfer import study as studies

    if n_seeds is not None and seed_list:
        raise UsageError("options --seeds and --seed-list: give one of them, not both")
    if n_seeds is not None and n_seeds < 1:
        raise UsageError(f"option --seeds: must be at least 1, got {n_seeds}")
    if n_seeds is not None:
        cfg = cfg.replace(**{"study.seeds": list(range(cfg.seed, cfg.seed + n_seeds))})
    elif seed_list:
        try:
            cfg = cfg.replace(**{"study.seeds": seed_list})
        except UsageError as e:
            raise UsageError(f"option --seed-list ({e})") from None
    summary = studies.run_study(cfg, run_dir, reporter, shard)
    return _with_plots(summary, run_dir, plots)


def _with_plots(summary: dict, study_dir: Path, plots: bool | None):
    from fmtransfer import report
    from fmtransfer import study as studies

    if plots is None:
        plots = report.plotting_available()
    if plots and summary["cells"]:
        summary["plots"] = [str(p) for p in studies.plot(study_dir, summary)]

    def show(console, r):
        console.print(report.study_table(r))
        for p in r.get("plots", []):
            console.print(f"plot: {p}")

    return summary, show


@study.command("report")
@click.argument("study_dir", type=click.Path(file_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print exactly one JSON object on stdout.")
@click.option("--plots/--no-plots", default=None, help="Write PNG plots (needs fmtransfer[plot])  [if installed].")
def study_report(study_dir, as_json, plots):
    """Merge every finished run in STUDY_DIR (all shards) and print the statistics."""
    from fmtransfer import study as studies

    run_path = Path(study_dir)
    execute(lambda: _with_plots(studies.report(run_path), run_path, plots),
            as_json=as_json, verbose=False, run_path=run_path)


def main(argv: list[str] | None = None) -> None:
    """Entry point: click's own usage errors are shortened to one line, exit code 2."""
    try:
        cli.main(args=argv, prog_name="fmtransfer", standalone_mode=False)
    except click.exceptions.NoArgsIsHelpError as e:  # pragma: no cover - click >= 8.2
        click.echo(e.ctx.get_help())
        sys.exit(0)
    except click.ClickException as e:
        _fail(e.format_message(), e.exit_code)
    except click.exceptions.Abort:
        _fail("interrupted", 130)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)


if __name__ == "__main__":  # pragma: no cover
    main()
