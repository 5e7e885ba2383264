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
import time
from pathlib import Path

from fmtransfer import contenders, data, runtime, stages
from fmtransfer.config import Config
from fmtransfer.errors import check_argument
from fmtransfer.needs import Encoder
from fmtransfer.report import Reporter
from fmtransfer.resolver import MemoryStore, Resolver, train_model_a, train_models_a  # noqa: F401  (re-exported)
from fmtransfer.results import (  # noqa: F401  (re-exported: the API's names since 0.1)
    ExperimentResult, ModelAResult, error_rate_ratio, paired_with_baseline,
)
from fmtransfer.rundir import RunDir


def run_experiment(cfg: Config | None = None, run_dir: str | Path | None = None, *, progress: bool = False,
                   reporter: Reporter | None = None) -> ExperimentResult:
    """Run the experiment: the split, model A if a contender needs it, every selected contender.

    Args:
        cfg: the settings (default: the book's); `cfg.contenders` selects what to compare.
        run_dir: if given, run the CLI's stages there and keep every artifact.
        progress: show progress bars (in a terminal or a notebook).
        reporter: where progress goes; overrides `progress`.

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
    cfg = cfg or Config()
    chosen = contenders.select(cfg)  # an unknown name fails here, before anything trains
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
