"""The `fmtransfer` command: options in, a Config built, a stage called, a table or JSON out.

The only module that knows option names and exit codes. Every option that sets a config key is
built from the key's field in `config` (its help text and its default), so `--help` shows the
defaults `Config()` really has. Imports no TensorFlow: `--help` and usage errors answer at once.

`--help` lists a command's options in groups (cloup's option groups), one per section: data,
model, model A, baseline, transfer, pretraining, study, one per contender with a section of its
own (titled after the contender, built from the registry, so an installed plug-in's section
gets its options and its group too), then the run directory and output.
"""

from __future__ import annotations

import functools
import os
import sys
import typing
from dataclasses import fields
from pathlib import Path

import click
import cloup

from fmtransfer import config, contenders, report, runtime
from fmtransfer import curves as learning_curves
from fmtransfer.config import MAX_STUDY_SEEDS, Config, field_info, merge, option_name, read_toml
from fmtransfer.errors import ConfigError, DivergedError, FmtError, UsageError, reason
from fmtransfer.io import output_file
from fmtransfer.needs import needs_of
from fmtransfer.rundir import RunDir
from fmtransfer.space import space_from_dict
from fmtransfer.tensorboard import check_target, write_run_dir
from fmtransfer.version import __version__

CFG = "cfg__"  # the click parameter names of config options: cfg__transfer__freeze_epochs
ALIAS = "alias__"  # an old name of a config option, kept for scripts: alias__train_a__epochs
# Every option name a command takes that is not a config key's own, so that a contender's section
# (a plug-in's) cannot take one: reserved before the first option is built, which loads the plug-ins.
OTHER_OPTIONS = ("--help", "--version", "--run", "--config", "--json", "--verbose", "--wide", "--no-verify",
                 "--epochs", "--learning-rate", "--reuse-layers", "--model-a", "--from", "--contender", "--plot",
                 "--no-plot", "--plots", "--no-plots", "--html", "--markdown", "--equivalence-margin", "--jobs",
                 "--shard", "--seeds", "--seed-list", "--data-seeds", "--data-seed-list", "--tensorboard", "--out",
                 "--csv")
config.reserve_options({name: "the command line itself" for name in OTHER_OPTIONS})


def show_default(value) -> str:
    """A config value as an option would take it: 5,6 for a pair, 5:6,0:2 for pairs, 0.001."""
    if isinstance(value, tuple):
        if value and isinstance(value[0], tuple):
            return ",".join(":".join(map(str, v)) for v in value)
        return ",".join(show_default(v) for v in value)
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _contenders_help() -> str:
    return f"Registered: {', '.join(contenders.names())}; `fmtransfer contenders` says what each builds on and reads."


def config_option(key: str, *, alias: str | None = None):
    """A click option setting config key `key`; help and shown default come from the field.

    `alias` is an older name of the same setting on this command, kept for scripts: documented
    in the option's help, and giving both is a usage error (`stage` checks), never last-wins."""
    f, hint, default = field_info(key)
    name = option_name(key)
    shown = f.metadata.get("show") or show_default(default)
    choices = typing.get_args(hint) if typing.get_origin(hint) is typing.Literal else None
    names = {int: "N", float: "X", str: "TEXT", bool: "BOOL"}
    metavar = names.get(hint, "LIST")
    if typing.get_origin(hint) is typing.Union:  # a number or a word: first|N, N|all
        metavar = "|".join("|".join(map(str, typing.get_args(a))) if typing.get_origin(a) is typing.Literal
                           else names.get(a, "LIST") for a in typing.get_args(hint) if a is not type(None))
    text = f.metadata["help"]
    if key == "contenders":  # the registry is open: say what is registered now
        text += " " + _contenders_help()
    if alias:
        text += f" Alias: {alias}."
    kind = dict(default=None, type=click.Choice(choices) if choices else None, metavar=None if choices else metavar)
    main = click.option(name, CFG + key.replace(".", "__"), help=f"{text}  [{shown}]", **kind)
    if not alias:
        return main
    old = click.option(alias, ALIAS + key.replace(".", "__"), hidden=True, **kind)
    return lambda f: old(main(f))


def group(title: str, *decorators):
    """The options `decorators` make, shown in `--help` under `title`."""
    return cloup.option_group(title, *decorators)


def options(*decorators):
    def wrap(f):
        for d in reversed(decorators):
            f = d(f)
        return f
    return wrap


def tensorboard_option(runs: str):
    """--tensorboard DIR, on every command that trains: an output, like --json, so no setting (and
    no fingerprint) depends on it. `runs`: how the command names its TensorBoard runs."""
    return click.option("--tensorboard", "tensorboard", type=click.Path(), metavar="DIR", default=None,
                        help="Also write each model's per-epoch loss, accuracy and validation scores, every phase, "
                             f"as TensorBoard event files: one run per model, {runs}. View them with "
                             "`tensorboard --logdir DIR` (pip install 'fmtransfer[tensorboard]').")


RUN_DIR_BOARD = "DIR/model_a, DIR/baseline, DIR/CONTENDER, DIR/pretrain_METHOD"


def common(f=None, *, run_default: str = "runs/default", tensorboard: str | None = None):
    """--run, --config, --seed, --json, --verbose: every subcommand takes them, in its last group;
    `tensorboard`, the runs' names where the command takes --tensorboard DIR (there too)."""
    if f is None:
        return functools.partial(common, run_default=run_default, tensorboard=tensorboard)
    return cloup.option_group(
        "Run and output",
        click.option("--run", "run_dir", default=run_default, show_default=True, type=click.Path(file_okay=False),
                     help="Run directory: holds the split, models, results and remembered settings."),
        click.option("--config", "config_path", type=click.Path(dir_okay=False),
                     help="TOML settings file (see configs/); options override it."),
        config_option("seed"),
        click.option("--json", "as_json", is_flag=True, help="Print exactly one JSON object on stdout."),
        click.option("--verbose", is_flag=True, help="Show TensorFlow's own log lines, and tracebacks."),
        *([tensorboard_option(tensorboard)] if tensorboard else []),
    )(f)


DATA = [config_option("data.dir"), config_option("data.b_classes"), config_option("data.b_train_size"),
        config_option("data.valid_size"), config_option("data.valid_from"), config_option("data.b_sample"),
        click.option("--no-verify", is_flag=True, help="Skip the SHA-256 check (for a dataset of your own).")]
MODEL = [config_option("model.arch"), config_option("model.hidden"), config_option("model.cnn_dense"),
         config_option("model.activation"), config_option("model.initializer"), config_option("batch_size")]
TRANSFER = [config_option(f"transfer.{k}") for k in ("reuse_layers", "freeze_epochs", "fine_tune_epochs",
                                                     "frozen_learning_rate", "fine_tune_learning_rate", "unfreeze")]
PRETRAIN = [config_option("pretrain.unlabelled_size"), config_option("pretrain.epochs"),
            config_option("pretrain.learning_rate")]
MODEL_A = [config_option("train_a.epochs"), config_option("train_a.learning_rate")]
BASELINE = [config_option("baseline.epochs"), config_option("baseline.learning_rate")]
TUNE = [config_option("tune.trials"), config_option("tune.on"), config_option("tune.sampler"),
        config_option("study.space")]


def contender_options(pretraining: bool | None = None) -> list:
    """One option group per contender with a section of its own ([gan], [l2_sp], ...), titled
    after it, of a --SECTION-KEY option per key: those of the pretraining methods, of the
    others, or (None) of all. A new contender's section, a plug-in's too, gets its options here
    without an edit: they come from the registry."""
    methods = contenders.pretraining_methods()
    groups, seen = [], set()
    for name in contenders.names():
        c = contenders.get(name)
        own = c.Settings
        if own is None or own.NAME in seen or not fields(own) \
                or (pretraining is not None and (name in methods) != pretraining):
            continue
        s = own.NAME
        seen.add(s)  # a subclass may share its parent's section: one group, under the first to own it
        groups.append(group(f"{c.title} [{s}]", *[config_option(f"{s}.{f.name}") for f in fields(own)]))
    return groups


# ----------------------------------------------------------------------------- errors

def _fail(message: str, code: int) -> None:
    click.echo(f"fmtransfer: error: {message}", err=True)
    sys.exit(code)


# Keys a command sets from options of its own, not config options: a study's seeds from --seed
# and --seeds (or --seed-list), its data seeds likewise, its cells' sizes and pairs from its lists, `transfer`'s contender
# from --contender or --from.
DERIVED = {
    "study.seeds": ("n_seeds", "seed_list", CFG + "seed"),
    "study.data_seeds": ("n_data_seeds", "data_seed_list"),
    "data.b_train_size": (CFG + "study__b_train_sizes",),
    "data.b_classes": (CFG + "study__pairs",),
    "transfer.reuse_layers": (CFG + "study__reuse_layers",),
    "contenders": ("contender", "source"),
}


def _params_for(key: str) -> list:
    """The current command's parameters that set config key `key`: its own option, then those a
    command derives the key from."""
    ctx = click.get_current_context(silent=True)
    by_name = {param.name: param for param in (ctx.command.params if ctx else [])}
    names = [CFG + key.replace(".", "__"), *DERIVED.get(key, ())]
    return [by_name[n] for n in names if n in by_name]


def _typed(key: str) -> list[str]:
    """The options setting `key` that the user typed on the command line (or in the environment)."""
    from click.core import ParameterSource

    ctx = click.get_current_context(silent=True)
    typed = (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)
    return [p.opts[0] for p in _params_for(key) if ctx and ctx.get_parameter_source(p.name) in typed]


def _option_for(key: str) -> str | None:
    """The current command's option that sets config key `key`, as the user would type it: one
    they typed, where they did."""
    ctx = click.get_current_context(silent=True)
    if ctx and ctx.params.get(ALIAS + key.replace(".", "__")) is not None:
        return _alias_for(key)  # the older name, where they typed that
    typed = _typed(key)
    if typed:
        return typed[0]
    found = _params_for(key)
    return found[0].opts[0] if found else None


def _alias_for(key: str) -> str | None:
    """The current command's older name of the option that sets `key`, if it keeps one."""
    ctx = click.get_current_context(silent=True)
    for param in ctx.command.params if ctx else []:
        if param.name == ALIAS + key.replace(".", "__"):
            return param.opts[0]
    return None


def explain(e: ConfigError, origins: dict[str, str]) -> str:
    """A setting's error as the user made it: the options they typed, or where the value came from
    (a config file, the run directory's config.json, the defaults) and how to change it."""
    typed = _typed(e.key)
    if typed:
        return f"option{'s' if len(typed) > 1 else ''} {' and '.join(typed)} ({e.key}): {e.problem}"
    option = _option_for(e.key)
    source = origins.get(e.key) or e.source
    hint = f"pass {option} to change it" if option else "set it in a --config file"
    if source and source.startswith("config file"):
        return f"{source}: config key {e.key}: {e.problem}" + (f" (or override it with {option})" if option else "")
    if source and source != "options":  # a run directory's config.json
        return (f"config key {e.key}: {e.problem} (remembered in {source}; {hint}, or run `fmtransfer split` "
                "in a new --run directory)")
    return f"config key {e.key}: {e.problem} ({hint})"


def execute(body, *, as_json: bool, verbose: bool, run_path: Path, origins: dict | None = None) -> None:
    """Run `body() -> (result, show)` and print its result as JSON or through `show`.

    Failures the user can act on become one line on stderr; Ctrl-C stops cleanly.
    """
    try:
        result, show = body()
    except ConfigError as e:
        _fail(explain(e, origins or {}), e.exit_code)
    except DivergedError as e:  # each setting that could have caused it, as the user would change it
        named = [f"{option} ({key})" if (option := _option_for(key)) else key for key in e.keys]
        _fail(f"{e.describe(named)}; nothing it trained was saved", e.exit_code)
    except FmtError as e:
        _fail(str(e), e.exit_code)
    except KeyboardInterrupt as e:
        how, code = ("terminated (SIGTERM)", 143) if isinstance(e, Terminated) else ("interrupted", 130)
        _fail(f"{how}; results already in {run_path} are intact", code)
    except Exception as e:  # a bug or an environment failure: one line, traceback on request
        if verbose:
            raise
        _fail(f"{type(e).__name__}: {reason(e)} (rerun with --verbose for the traceback)", 1)
    if as_json:
        click.echo(report.to_json(result.to_dict() if hasattr(result, "to_dict") else result))
    else:
        show(_console(), result.to_dict() if hasattr(result, "to_dict") else result)


def _console():
    """Where tables go: stdout, as report.make_console decides for a terminal or not."""
    return report.make_console()


def layers(run_dir: Path, config_path: str | None, given: dict):
    """The settings' layers, last wins: the run directory's remembered settings, --config FILE,
    the options; and which layer set each key."""
    rd = RunDir(run_dir)
    found = [(str(rd.path / rd.CONFIG), rd.remembered())]
    if config_path:
        found.append((f"config file {config_path}", read_toml(config_path)))
    found.append(("options", given))
    origins = {}
    for source, values in found:
        origins.update({k: source for k, v in values.items() if v is not None})
    return rd, found, origins


def stage(tensorflow: bool = True, prepare=None, events: bool = False):
    """Turn a subcommand into: resolve the config, set TensorFlow up, call the stage, print.

    `prepare(cfg, given, origins, **kwargs) -> cfg` adjusts the config from the command's own options.
    `events`: the command takes --tensorboard DIR (`common(tensorboard=...)`): the target is
    checked before anything trains, and once the stage has finished, the run directory's models
    are written there from their records (`fmtransfer.tensorboard`).
    """

    def decorate(f):
        @functools.wraps(f)
        def wrapper(run_dir, config_path, as_json, verbose, no_verify=False, **kwargs):
            if click.get_current_context().invoked_subcommand:  # a group's subcommand does the work
                return
            given = {k[len(CFG):].replace("__", "."): kwargs.pop(k) for k in list(kwargs) if k.startswith(CFG)}
            for k in [k for k in kwargs if k.startswith(ALIAS)]:
                key, value = k[len(ALIAS):].replace("__", "."), kwargs.pop(k)
                if value is not None and given.get(key) is not None:
                    _fail(f"options {option_name(key)} and {_alias_for(key)}: both set {key} ({_alias_for(key)} "
                          f"is the older name of {option_name(key)}); give one of them", 2)
                if value is not None:
                    given[key] = value
            if no_verify:
                given["data.verify_checksums"] = False
            origins: dict = {}
            board = kwargs.pop("tensorboard", None) if events else None

            def body():
                runtime.check_environment()
                if board is not None:
                    check_target(board)
                rd, found, where = layers(Path(run_dir), config_path, given)
                origins.update(where)
                cfg = merge(found)
                contenders.check(cfg)  # every contender named is registered, builds model.arch, takes its settings
                if prepare:
                    cfg = prepare(cfg, given, origins, **kwargs)
                if tensorflow:
                    asked = os.environ.get("KERAS_BACKEND", "tensorflow").strip().lower()
                    if asked not in ("", "tensorflow") and "keras" not in sys.modules:
                        click.echo(f"fmtransfer: note: KERAS_BACKEND={asked} ignored; fmtransfer trains with "
                                   "TensorFlow graphs, so it uses Keras' TensorFlow backend", err=True)
                    runtime.setup(arch=cfg.model.arch, quiet=not verbose, lazy=True)
                reporter = report.Reporter(quiet=as_json)
                done = f(cfg, rd, reporter, **kwargs)
                if board is not None:
                    written = write_run_dir(rd.path, board)
                    reporter.info(f"tensorboard: {len(written)} runs in {board}; view: tensorboard --logdir {board}")
                return done

            execute(body, as_json=as_json, verbose=verbose, run_path=Path(run_dir), origins=origins)

        return wrapper

    return decorate


# ----------------------------------------------------------------------------- commands

@cloup.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="fmtransfer")
def cli():
    """Run, and honestly audit, the Fashion-MNIST A->B transfer experiment (Hands-On ML, 11.2).

    \b
    fmtransfer run --config configs/book.toml     # everything, then the comparison
    fmtransfer split; fmtransfer train-a; fmtransfer transfer; fmtransfer compare
    fmtransfer pretrain --method greedy; fmtransfer transfer --from greedy   # ch. 11.2.2
    fmtransfer study --seeds 10 --contenders transfer,autoencoder           # is the gain real?
    fmtransfer study report runs/study --html study.html                    # one page to share
    fmtransfer contenders                       # every way to build model B, and its options
    """


@cli.command()
@group("Data", *DATA)
@common
@stage(tensorflow=False)
def split(cfg, rd, reporter):
    """Find and verify Fashion-MNIST, make the book's A/B split, save it in the run directory."""
    from fmtransfer import stages

    return stages.split(cfg, rd, reporter), lambda console, r: console.print(report.split_table(r))


@cli.command("train-a")
@group("Model A", config_option("train_a.epochs", alias="--epochs"),
       config_option("train_a.learning_rate", alias="--learning-rate"))
@group("Model", *MODEL)
@common(tensorboard=RUN_DIR_BOARD)
@stage(events=True)
def train_a(cfg, rd, reporter):
    """Train model A on the eight task-A classes and save it (.keras) with its history."""
    from fmtransfer import stages

    return stages.train_a(cfg, rd, reporter), lambda c, r: c.print(report.history_table("Model A (8 classes)", r))


def _sources() -> list[str]:
    return ["a", *contenders.pretraining_methods()]


@cli.command()
@group("Transfer",
       click.option("--model-a", type=click.Path(dir_okay=False),
                    help="Model A to reuse (.keras or legacy .h5, e.g. the book's my_model_A.h5)  "
                         "[RUN/model_a.keras]."),
       click.option("--from", "source", type=click.Choice(_sources()), default=None,
                    help="What to build B on: model A, or the encoder of `pretrain --method METHOD`  [a]."),
       click.option("--contender", default=None,
                    help="The contender to train (any but the baseline); --from a is transfer, --from METHOD is "
                         "METHOD."),
       *TRANSFER, config_option("data.b_sample"))
@options(*contender_options(pretraining=False))
@common(tensorboard=RUN_DIR_BOARD)
@stage(events=True)
def transfer(cfg, rd, reporter, model_a, source, contender):
    """Build model B on a clone of model A's (or a pretrained encoder's) lower layers; train
    frozen, then fine-tune."""
    from fmtransfer import stages

    by_source = "transfer" if source in (None, "a") else source
    if contender and source and contender != by_source:
        raise UsageError(f"options --from and --contender: --from {source} trains {by_source}, not {contender}; "
                         "give one of them")
    name = contender or by_source
    if model_a and source not in (None, "a"):  # a contender built on no model A is the stage's to refuse
        raise UsageError(f"option --model-a: only with --from a; --from {source} builds on "
                         f"{rd.pretrain_files(source)['encoder']}")
    result = stages.transfer(cfg, rd, reporter, contender=name, model_a_path=model_a)
    title = "model_B_on_A" if result["source"] == "a" else f"model_B_on_{result['source']}"
    return result, lambda console, r: console.print(report.history_table(title, r))


def _prepare_pretrain(cfg, given, origins, **_):
    """--epochs and --learning-rate are the autoencoder's; a method with its own section reads
    its own keys, so taking them silently would train with other settings than the user asked."""
    own = contenders.get(cfg.pretrain.method).own_sections()
    for key in ("pretrain.epochs", "pretrain.learning_rate"):
        name = key.partition(".")[2]
        if given.get(key) is not None and own:
            theirs = [option for s in own if (option := _option_for(f"{s}.{name}"))]
            instead = f"; use {theirs[0]}" if theirs else ""
            raise UsageError(f"option {_option_for(key)}: sets the autoencoder's {name.replace('_', ' ')}, "
                             f"which {cfg.pretrain.method} does not read{instead}")
    return cfg


@cli.command(short_help="Pretrain A's hidden stack on unlabelled images (ch. 11.2.2), for transfer --from.")
@group("Pretraining",
       config_option("pretrain.method"), PRETRAIN[0], config_option("pretrain.epochs", alias="--epochs"),
       config_option("pretrain.learning_rate", alias="--learning-rate"),
       click.option("--plot/--no-plot", default=None,
                    help="Write the method's picture: reconstructions_METHOD.png, samples_gan.png, filters_rbm.png "
                         "(needs fmtransfer[plot])  [if matplotlib is installed]."))
@group("Model", *MODEL)
@options(*contender_options(pretraining=True))
@common(tensorboard=RUN_DIR_BOARD)
@stage(prepare=_prepare_pretrain, events=True)
def pretrain(cfg, rd, reporter, plot):
    """Pretrain A's hidden stack as an autoencoder on unlabelled images (ch. 11.2.2); save the
    encoder for `transfer --from METHOD`."""
    from fmtransfer import stages

    result = stages.pretrain(cfg, rd, reporter, plot=plot)
    return result, lambda console, r: console.print(report.pretrain_table(r))


def _compare_show(wide: bool):
    return lambda console, r: console.print(report.compare_table(r, width=console.width, wide=wide))


WIDE = click.option("--wide", is_flag=True, help="Every column of the tables, however wide the terminal.")


@cli.command()
@group("Baseline", config_option("baseline.epochs", alias="--epochs"),
       config_option("baseline.learning_rate", alias="--learning-rate"))
@group("Contenders", config_option("contenders"))
@group("Data", config_option("data.b_sample"))
@group("Model", *MODEL)
@common(tensorboard=RUN_DIR_BOARD)
@WIDE
@stage(events=True)
def compare(cfg, rd, reporter, wide):
    """Train (or reuse) the from-scratch baseline; compare it on test B with every contender
    trained in the run directory (or those --contenders names)."""
    from fmtransfer import stages

    return stages.compare(cfg, rd, reporter, chosen=contenders.select(cfg) if cfg.contenders else None), _compare_show(wide)


@cli.command()
@group("Data", *DATA)
@group("Model", *MODEL)
@group("Model A", *MODEL_A)
@group("Baseline", *BASELINE)
@group("Transfer", *TRANSFER)
@group("Contenders", config_option("contenders"))
@group("Tuning", *TUNE)
@group("Pretraining", *PRETRAIN)
@options(*contender_options())
@common(tensorboard=RUN_DIR_BOARD)
@WIDE
@stage(events=True)
def run(cfg, rd, reporter, wide):
    """Run every stage the contenders need, in order, then compare: the whole experiment.

    The default contenders are the book's pair: the baseline and transfer from model A.
    """
    from fmtransfer import pipeline, stages

    if cfg.tune.tuned:  # the trials run as a one-seed study in RUN/tuning
        return pipeline.run_tuned(cfg, rd.path, reporter), _compare_show(wide)
    return stages.run(cfg, rd, reporter), _compare_show(wide)


def contender_rows(cfg: Config | None = None) -> list[dict]:
    """Every registered contender as `fmtransfer contenders` lists it: name, title, what it builds
    on, its description, the options of its own section with their defaults, and the search
    space a trial of it draws (`cfg`'s `study.space` bounds; the declared ones by default)."""
    cfg = cfg or Config()
    rows = []
    for name in contenders.names():
        c = contenders.get(name)
        own = c.Settings
        keys = [f"{own.NAME}.{f.name}" for f in fields(own)] if own is not None else []
        on = ["model A" if str(n) == "model_a" else f"{n.method}'s encoder" for n in needs_of(c)]
        rows.append({"name": name, "title": c.title, "builds_on": on or ["nothing"], "description": c.description,
                     "archs": list(c.archs), "sections": list(c.sections),
                     "options": {option_name(k): show_default(field_info(k)[2]) for k in keys},
                     "space": {k: s.to_dict() for k, s in c.space(cfg).items()}})
    return rows


@cli.command()
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option("--out", "out", type=click.Path(dir_okay=False), default=None,
              help="The PNG to write  [RUN_DIR/curves.png].")
@click.option("--json", "as_json", is_flag=True, help="Print exactly one JSON object on stdout.")
def curves(run_dir, out, as_json):
    """Plot the learning curves of every model in RUN_DIR (model A, each pretraining, the baseline,
    each contender; every phase, validation dashed) to one PNG, from the run's records: nothing
    trains. Needs matplotlib (pip install 'fmtransfer[plot]')."""
    path = Path(run_dir)

    def body():
        found = learning_curves.run_dir_curves(path)
        # A file the user names goes through the one output guard: never over the records the
        # curves are read from, nor into a study; only the default lives in the run directory.
        target = output_file(out, keep_out=[path]) if out else path / "curves.png"
        written = learning_curves.plot(found, target, str(path), option="curves")
        result = {"png": str(written), "models": {c.name: [p.name for p in c.phases] for c in found}}
        return result, lambda console, r: console.print(f"curves: {r['png']} ({', '.join(r['models'])})")

    execute(body, as_json=as_json, verbose=False, run_path=path)


@cli.command("contenders")
@click.option("--json", "as_json", is_flag=True, help="Print exactly one JSON object on stdout.")
@click.option("--config", "config_path", type=click.Path(dir_okay=False),
              help="TOML settings file whose [study] space replaces declared search-space bounds.")
@config_option("study.space")
def list_contenders(as_json, config_path, **given):
    """List every contender --contenders takes: what it builds on, its own options with defaults,
    and the search space a tuned trial of it draws."""
    from rich.padding import Padding
    from rich.text import Text

    def own_sections(row):
        return contenders.get(row["name"]).own_sections()

    origins: dict = {}

    def body():
        found = [(f"config file {config_path}", read_toml(config_path))] if config_path else []
        found.append(("options", {k[len(CFG):].replace("__", "."): v for k, v in given.items()}))
        for source, values in found:
            origins.update({k: source for k, v in values.items() if v is not None})
        rows = contender_rows(merge(found))

        def show(console, r):  # a block per contender: it reads at any width, names wrapped, none cut
            console.print(Text.assemble(("Contenders", "bold"),
                                        " (--contenders NAME,...; all: every one that builds --arch)"))
            for row in r["contenders"]:
                shared = [f"[{s}]" for s in row["sections"] if s not in own_sections(row)]
                options = "  ".join(f"{k} {v}" for k, v in row["options"].items())
                reads = "; ".join(x for x in (options, "and the keys of " + ", ".join(shared) if shared else "") if x)
                console.print()
                console.print(Text.assemble((row["name"], "bold"), f"  {row['title']}, builds on "
                                            f"{', '.join(row['builds_on'])}"))
                console.print(Padding(row["description"], (0, 0, 0, 2)))
                if reads:
                    console.print(Padding(reads, (0, 0, 0, 2)))
                tuned = "; ".join(f"{k} {space_from_dict(s).describe()}" for k, s in row["space"].items())
                console.print(Padding(f"tunes: {tuned}" if tuned else "tunes: nothing", (0, 0, 0, 2)))

        return {"contenders": rows}, show

    execute(body, as_json=as_json, verbose=False, run_path=Path("."), origins=origins)


def _prepare_study(cfg, given, origins, n_seeds=None, seed_list=None, n_data_seeds=None, data_seed_list=None,
                   shard=None, **_):
    """--seeds N runs N seeds from --seed; --seed-list exact ones; --seed alone, that one seed.
    --data-seeds N draws task B's images with data seeds 0..N-1; --data-seed-list exact ones."""
    if n_data_seeds is not None and data_seed_list:
        raise UsageError("options --data-seeds and --data-seed-list: give one of them, not both")
    if n_data_seeds is not None and not 1 <= n_data_seeds <= MAX_STUDY_SEEDS:  # a list is made of them
        raise UsageError(f"option --data-seeds: must be from 1 to {MAX_STUDY_SEEDS}, got {n_data_seeds}")
    if n_data_seeds is not None:
        cfg = cfg.replace(**{"study.data_seeds": list(range(n_data_seeds))})
    if data_seed_list:
        try:
            cfg = cfg.replace(**{"study.data_seeds": data_seed_list})
        except ConfigError as e:
            raise UsageError(f"option --data-seed-list ({e.problem})") from None
    return _prepare_seeds(cfg, given, origins, n_seeds, seed_list, shard)


def _prepare_seeds(cfg, given, origins, n_seeds=None, seed_list=None, shard=None):
    """--seeds auto as many as precision needs (see `study.run_until_precise`)."""
    if n_seeds is not None and seed_list:
        raise UsageError("options --seeds and --seed-list: give one of them, not both")
    if isinstance(n_seeds, str) and n_seeds.strip().lower() == "auto":
        if cfg.study.target_halfwidth is None:
            raise UsageError("option --seeds auto: needs --target-halfwidth W, the 95% interval half-width "
                             "(accuracy points) to add seeds until, e.g. --target-halfwidth 0.5")
        if shard:
            raise UsageError("option --shard: not with --seeds auto, which decides how many seeds to run from "
                             "every cell's runs; run it unsharded (--jobs N runs it in parallel)")
        return cfg
    for key in ("study.target_halfwidth", "study.max_seeds"):  # typed, they would be dropped unread
        for option in _typed(key):
            raise UsageError(f"option {option}: only --seeds auto reads it (it decides how many seeds to run); "
                             "give --seeds auto, or leave it out")
    if n_seeds is not None:
        try:
            n_seeds = int(n_seeds)
        except ValueError:
            raise UsageError(f"option --seeds: expected a number of seeds or auto, got {n_seeds!r}") from None
    if n_seeds is not None and not 1 <= n_seeds <= MAX_STUDY_SEEDS:  # a list is made of them
        raise UsageError(f"option --seeds: must be from 1 to {MAX_STUDY_SEEDS}, got {n_seeds}")
    if n_seeds is not None:
        return cfg.replace(**{"study.seeds": list(range(cfg.seed, cfg.seed + n_seeds))})
    if seed_list:
        try:
            return cfg.replace(**{"study.seeds": seed_list})
        except ConfigError as e:
            raise UsageError(f"option --seed-list ({e.problem})") from None
    if "seed" in given and given["seed"] is not None and origins.get("study.seeds"):
        raise UsageError(f"option --seed: {origins['study.seeds']} sets study.seeds; give --seeds N to run N "
                         "seeds from --seed, or --seed-list")
    return cfg


@cli.group(invoke_without_command=True)
@group("Study",
       click.option("--seeds", "n_seeds", metavar="N|auto",
                    help="Run this many seeds: --seed, --seed + 1, ...; auto: 10, then 5 more at a time until "
                         "every cell's 95% half-width is at most --target-halfwidth, or --max-seeds  [1]"),
       config_option("study.target_halfwidth"), config_option("study.max_seeds"),
       click.option("--seed-list", help="Run exactly these seeds, e.g. 42,7,1."),
       click.option("--data-seeds", "n_data_seeds", type=int,
                    help="Cross the seeds with this many random draws of task B's training images: data seeds "
                         "0..N-1 (model A and the encoders are shared by a seed's draws)  [--b-sample]"),
       click.option("--data-seed-list", help="Draw task B's training images with exactly these data seeds, "
                                              "e.g. 3,7,11."),
       config_option("study.pairs"), config_option("study.b_train_sizes"),
       config_option("study.reuse_layers", alias="--reuse-layers"), config_option("study.presets"),
       click.option("--shard", help="Run only slice I of N (I from 0), e.g. 3/10; auto in a Slurm job array; auto/N "
                                    "in a Kubernetes Indexed Job of N completions."),
       click.option("--jobs", default="1", show_default=True,
                    help="Worker processes, each training whole seeds with its own thread pools; auto: the cores "
                         "divided by the threads one run uses. The same numbers as one."),
       config_option("study.stack"), config_option("study.equivalence_margin"),
       click.option("--plots/--no-plots", default=None,
                    help="Write PNG plots (needs fmtransfer[plot])  [if installed]."))
@group("Contenders", config_option("contenders"))
@group("Tuning", *TUNE)
@group("Model A", *MODEL_A)
@group("Baseline", *BASELINE)
# The grid's axes set the rest of [transfer] (reuse depths, the presets' rates) and of [data].
@group("Transfer", TRANSFER[1], TRANSFER[2], TRANSFER[5])
@group("Data", DATA[0], DATA[3], DATA[4], DATA[5], DATA[6])
@group("Model", *MODEL)
@group("Pretraining", *PRETRAIN)
@options(*contender_options())
@common(run_default="runs/study", tensorboard="DIR/CELL/seedN[-drawD]/MODEL, CELL being the run id without its seed "
                                              "and draw (pair5v6-n200-reuseall-book)")
@WIDE
@stage(prepare=_prepare_study)
def study(cfg, rd, reporter, n_seeds, seed_list, n_data_seeds, data_seed_list, shard, jobs, plots, wide,
          tensorboard):
    """Is a gain real? Run a grid of experiments (seeds x draws x pairs x sizes x reuse x presets),
    each contender paired with the baseline of the same seed and draw.

    \b
    fmtransfer study --seeds 10 --pairs 5:6,0:2,7:9      # resumes where it stopped
    fmtransfer study --seeds auto --target-halfwidth 0.5 # seeds until every 95% CI is +-0.5 points
    fmtransfer study --seeds 10 --contenders transfer,autoencoder,greedy
    fmtransfer study --shard $SLURM_ARRAY_TASK_ID/10 ... # one slice per array job
    fmtransfer study report runs/study                   # merge what has finished
    """
    from fmtransfer import study as studies

    try:
        if isinstance(n_seeds, str) and n_seeds.strip().lower() == "auto":
            result = studies.run_until_precise(cfg, rd.path, jobs=jobs, reporter=reporter, tensorboard=tensorboard)
        else:
            result = studies.run_study(cfg, rd.path, shard_spec=shard, jobs=jobs, reporter=reporter,
                                       tensorboard=tensorboard)
    except ConfigError as e:
        if e.key in ("shard", "jobs"):
            raise UsageError(f"option --{e.key}: {e.problem}") from None
        if e.key == "data.b_train_size" and cfg.study.b_train_sizes:  # the size came from the grid
            raise UsageError(f"data.b_train_size, from {_option_for('study.b_train_sizes')} "
                             f"(study.b_train_sizes): {e.problem}") from None
        raise
    return _with_plots(result, rd.path, plots, wide)


def _with_plots(result, study_dir: Path, plots: bool | None, wide: bool = False):
    from fmtransfer import study as studies

    if plots is None:
        plots = report.plotting_available()
    if plots and result.cells:
        try:
            result.plots = [str(p) for p in studies.plot(study_dir, result)]
        except FmtError as e:  # plots are extras: the report is printed, and the plots' failure said once
            click.echo(f"fmtransfer: note: no plots written ({e})", err=True)

    def show(console, r):
        console.print(studies.table(r, width=console.width, wide=wide))
        for p in r.get("plots", []):
            console.print(f"plot: {p}")

    return result, show


@study.command("report")
@click.argument("study_dir", type=click.Path(file_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print exactly one JSON object on stdout.")
@click.option("--plots/--no-plots", default=None, help="Write PNG plots (needs fmtransfer[plot])  [if installed].")
@click.option("--markdown", is_flag=True, help="Print the leaderboard as Markdown tables (for a README).")
@click.option("--equivalence-margin", "margin", type=str, default=None, metavar="X",
              help=field_info("study.equivalence_margin")[0].metadata["help"]
              + f"  [the study's: {show_default(field_info('study.equivalence_margin')[2])}]")
@WIDE
@click.option("--html", "html_path", type=click.Path(),  # checked after the report is printed
              help="Also write the report as one self-contained HTML page (tables, per-seed points, plots, "
                   "settings, versions) to this file.")
def study_report(study_dir, as_json, plots, markdown, margin, wide, html_path):
    """Merge every finished run in STUDY_DIR (all shards) and print the statistics, each setting's
    contenders ranked by their gain over the baseline."""
    from fmtransfer import study as studies

    run_path = Path(study_dir)

    made = []

    def body():
        result, show = _with_plots(studies.report(run_path, equivalence_margin=_margin(margin)), run_path, plots,
                                   wide)
        made.append(result)
        if markdown:
            return result, lambda console, r: click.echo(studies.markdown(result), nl=False)
        return result, show

    execute(body, as_json=as_json, verbose=False, run_path=run_path)
    if html_path:  # after the report is printed: a page that cannot be written loses nothing
        from fmtransfer.study import html_report

        try:
            written = html_report.write(made[0], run_path, html_path, plots=plots)
        except UsageError as e:
            _fail(f"option --html: {e}", 2)
        click.echo(f"html: {written}", err=True)


@study.command("export")
@click.argument("study_dir", type=click.Path(file_okay=False))
@click.option("--csv", "csv_path", required=True, type=click.Path(dir_okay=False, allow_dash=True), metavar="FILE",
              help="Write one row per run (every axis, score and fingerprint, the data's hashes) as CSV to FILE; "
                   "- for stdout.")
def study_export(study_dir, csv_path):
    """Export every run in STUDY_DIR (all shards) as one tidy table: pandas.read_csv or a
    spreadsheet reads it as it is. Columns: docs/study.md."""
    from fmtransfer.study import export

    run_path = Path(study_dir)

    def body():
        if csv_path == "-":
            text, count = export.to_csv(run_path)
            return {"rows": count}, lambda console, r: click.echo(text, nl=False)
        count = export.export_csv(run_path, csv_path)
        click.echo(f"csv: {csv_path} ({count} runs)", err=True)
        return {"rows": count, "csv": csv_path}, lambda console, r: None

    execute(body, as_json=False, verbose=False, run_path=run_path)


def _margin(text: str | None) -> float | None:
    """--equivalence-margin as typed, checked by the config key it overrides."""
    if text is None:
        return None
    try:
        return Config().replace(**{"study.equivalence_margin": text}).study.equivalence_margin
    except ConfigError as e:
        raise UsageError(f"option --equivalence-margin ({e.key}): {e.problem}") from None


@study.command("claims")
@click.argument("study_dirs", nargs=-1, required=True, type=click.Path(file_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the claims as one JSON list on stdout.")
@click.option("--markdown", is_flag=True, help="Print the claims as a Markdown table (for a README).")
@click.option("--equivalence-margin", "margin", type=str, default=None, metavar="X",
              help=field_info("study.equivalence_margin")[0].metadata["help"]
              + f"  [each study's: {show_default(field_info('study.equivalence_margin')[2])}]")
def study_claims(study_dirs, as_json, markdown, margin):
    """Judge the chapter's claims (11.2) on the studies in STUDY_DIRS by the rules of
    docs/claims.md (exploratory: written after the committed studies were seen): supported,
    contradicted, equivalent or no evidence. Give a dense and a cnn
    study together to judge the claims that compare the two."""
    from fmtransfer.study import claims

    paths = [Path(d) for d in study_dirs]
    if as_json and markdown:
        _fail("options --json and --markdown: give one of them, not both", 2)

    def body():
        found = claims.judge(paths, equivalence_margin=_margin(margin))  # its to_dict() is the --json list
        if as_json and not found.claims:  # `[]` alone would not say why: the table's notes, on stderr
            needs = "; ".join(f"{k} {why}" for k, why in found.not_judged.items())
            click.echo(f"fmtransfer: note: no claim could be judged on {', '.join(map(str, paths))}: {needs}",
                       err=True)
        if markdown:
            return found, lambda console, r: click.echo(claims.markdown(found), nl=False)
        return found, lambda console, r: console.print(claims.table(found))

    execute(body, as_json=as_json, verbose=False, run_path=paths[0])


class Terminated(KeyboardInterrupt):
    """SIGTERM (what Slurm and Kubernetes send at a time limit or preemption), handled as Ctrl-C
    is: the stage stops, its temporary files go, earlier artifacts stay."""


def _terminate(signum, frame):
    raise Terminated()


def main(argv: list[str] | None = None) -> None:
    """Entry point: click's own usage errors are shortened to one line, exit code 2."""
    import signal

    signal.signal(signal.SIGTERM, _terminate)
    try:
        cli.main(args=argv, prog_name="fmtransfer", standalone_mode=False)
    except click.exceptions.NoArgsIsHelpError as e:  # pragma: no cover - click >= 8.2
        click.echo(e.ctx.get_help())
        sys.exit(0)
    except click.ClickException as e:
        _fail(e.format_message(), e.exit_code)
    except Terminated:
        _fail("terminated (SIGTERM)", 143)
    except click.exceptions.Abort:
        _fail("interrupted", 130)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)


if __name__ == "__main__":  # pragma: no cover
    main()
