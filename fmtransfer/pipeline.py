"""The book's experiment in memory, top to bottom: split, model A, each contender, compared.

    import fmtransfer
    cfg = fmtransfer.load_config("configs/book.toml", seed=7)
    result = fmtransfer.run_experiment(cfg)
    result.baseline.test_accuracy
    result.contenders["transfer from A"].error_rate_ratio

Nothing is written to disk unless `run_dir=` is given; then the CLI's stages run instead, and
leave every artifact there, as `fmtransfer run --run DIR` does.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from fmtransfer import contenders, data, runtime, stages
from fmtransfer.study import load_records, run_study, tuning
from fmtransfer.config import Config
from fmtransfer.errors import check_argument
from fmtransfer.needs import Encoder
from fmtransfer.report import Reporter
from fmtransfer.resolver import MemoryStore, Resolver, train_model_a, train_models_a  # noqa: F401  (re-exported)
from fmtransfer.contenders import ContenderResult
from fmtransfer.results import (  # noqa: F401  (re-exported: the API's names since 0.1)
    ExperimentResult, ModelAResult, error_rate_ratio, paired_with_baseline,
)
from fmtransfer.rundir import RunDir


def run_experiment(cfg: Config | None = None, run_dir: str | Path | None = None, *, progress: bool = False,
                   reporter: Reporter | None = None, tune: int | None = None) -> ExperimentResult:
    """Run the experiment: the split, model A if a contender needs it, every selected contender.

    Args:
        cfg: the settings (default: the book's); `cfg.contenders` selects what to compare.
        run_dir: if given, run the CLI's stages there and keep every artifact.
        progress: show progress bars (in a terminal or a notebook).
        reporter: where progress goes; overrides `progress`.
        tune: tune the baseline and every contender with this many trials each (`tune.trials`;
            `run_tuned`): each reported result is the trial best on validation data, with its
            settings in `details["tuned"]`.

    Example:
        >>> result = run_experiment(load_config("configs/quick.toml"))
        >>> sorted(result.contenders)
        ['baseline', 'transfer from A']
    """
    check_argument("run_experiment", "cfg", cfg, (Config, type(None)),
                   "a Config (fmtransfer.load_config(path) reads a file), or None for the book's")
    check_argument("run_experiment", "run_dir", run_dir, (str, os.PathLike, type(None)),
                   "a directory's path (str or os.PathLike), or None to keep nothing on disk")
    check_argument("run_experiment", "progress", progress, bool, "True or False")
    check_argument("run_experiment", "reporter", reporter, (Reporter, type(None)), "a Reporter, or None")
    check_argument("run_experiment", "tune", tune, (int, type(None)), "a number of trials, or None untuned")
    cfg = cfg or Config()
    if tune is not None:
        cfg = cfg.replace(**{"tune.trials": tune})
    chosen = contenders.select(cfg)  # an unknown name fails here, before anything trains
    if cfg.tune.tuned:
        if run_dir is not None:
            return run_tuned(cfg, run_dir, reporter or Reporter(quiet=not progress))
        with tempfile.TemporaryDirectory(prefix="fmtransfer-tune-") as kept:
            return run_tuned(cfg, kept, reporter or Reporter(quiet=not progress))
    runtime.ensure_setup(cfg.model.arch)
    reporter = reporter or Reporter(quiet=not progress)
    if run_dir is not None:
        return stages.run(cfg, RunDir(run_dir), reporter)
    started = time.perf_counter()
    split = data.split_of(data.load(cfg.data), cfg.data)
    resolver = Resolver(cfg, split, MemoryStore(), reporter)
    results = {}
    for name in chosen:
        contender = contenders.get(name)
        _, results[contender.title] = contenders.checked_fit(name, contender.fit(
            cfg, split, {n: resolver[n] for n in contender.needs}, reporter))
    pretrained = {need.method: {"reconstruction_loss": made.reconstruction_loss, "seconds": made.seconds}
                  for need, made in resolver.made.items() if isinstance(need, Encoder)}
    return ExperimentResult(cfg, split.b_classes, split.sizes(), paired_with_baseline(results),
                            resolver.made.get("model_a"), pretrained, round(time.perf_counter() - started, 3))


def run_tuned(cfg: Config, run_dir: str | Path, reporter: Reporter | None = None) -> ExperimentResult:
    """The experiment as a careful practitioner runs it: the baseline and each contender tuned
    with `cfg.tune.trials` trials on one seed, each trial's settings drawn from the search spaces,
    the one best on validation data reported (`cfg.tune.on`). No test score chooses anything.

    The trials run as a one-seed study in `run_dir`/tuning (`study.run_study`): its results lines
    prove what each trial was, and a second call resumes it. Each result's `details["tuned"]`
    says which trial was selected, with what settings, validation accuracy and SGD steps.
    """
    started = time.perf_counter()
    reporter = reporter or Reporter(quiet=True)
    one = cfg.replace(**{"study.seeds": [cfg.seed], "study.pairs": [], "study.b_train_sizes": [],
                         "study.data_seeds": [], "study.reuse_layers": [cfg.transfer.reuse_layers]})
    study_dir = Path(run_dir) / "tuning"
    run_study(one, study_dir, reporter=reporter)
    selected = tuning.select(load_records(study_dir, one), cfg.tune.trials)
    results: dict[str, ContenderResult] = {}
    for record in selected.records:
        cell = (record.key.setting, record.contender)
        choice = selected.choices[cell][0]
        for name, scores, trial, side in (("baseline", record.baseline, choice["baseline_trial"], "baseline"),
                                          (record.contender, record.result, choice["trial"], "result")):
            title = contenders.get(name).title
            if title in results:
                continue
            prefix = "baseline_" if side == "baseline" else ""
            results[title] = ContenderResult(
                name, title, scores.test_accuracy, scores.test_loss if scores.test_loss is not None else float("nan"),
                details={**({"linear_probe": scores.linear_probe} if scores.linear_probe is not None else {}),
                         "tuned": {"trial": trial, "trials": cfg.tune.trials, "on": cfg.tune.on,
                                   "sampler": cfg.tune.sampler, "settings": choice[f"{prefix}settings"],
                                   "valid_accuracy": choice[f"{prefix}valid_accuracy"],
                                   "steps": choice[f"{prefix}steps"]}})
    split = data.make_split(data.load(cfg.data), cfg.data.b_classes, cfg.data.b_train_size, cfg.data.valid_size,
                            cfg.data.valid_from, cfg.data.b_sample)
    ordered = {contenders.get(n).title: results[contenders.get(n).title] for n in contenders.select(cfg)
               if contenders.get(n).title in results}
    return ExperimentResult(cfg, split.b_classes, split.sizes(), paired_with_baseline(ordered),
                            seconds=round(time.perf_counter() - started, 3))
