"""Running a study: this shard's unfinished runs, in this process or in worker processes (`pool`), each
recorded as it finishes."""

from __future__ import annotations

import contextlib
import functools
import itertools
import math
import os
import time
import warnings
from pathlib import Path
from dataclasses import dataclass
from typing import Any

import numpy as np

from fmtransfer import contenders, fingerprints, runtime, sampler
from fmtransfer import tensorboard as events
from fmtransfer.config import Config
from fmtransfer.errors import ConfigError, DivergedError, UsageError, check_argument
from fmtransfer.io import locked, refuse_if_locked
from fmtransfer.needs import MODEL_A, needs_of
from fmtransfer.report import Reporter
from fmtransfer.resolver import train_models_a
from fmtransfer.stages import SMALL_FILES, model_bytes
from fmtransfer.study.axes import RunKey, check_grid, grid, parse_shard, shard, study_contenders
from fmtransfer.study.cache import Cache
from fmtransfer.study.pool import run_units
from fmtransfer.study.records import (  # noqa: F401  (STACK_AUTO, resolve_stack: re-exported)
    STACK_AUTO, RunRecord, append_record, check_study_dir, how, load_records, resolve_stack, results_path,
    record_precision, run_fingerprint, slot, stacking, trained_with, write_baseline_predictions,
    write_result_predictions,
)
from fmtransfer.io import fingerprint
from fmtransfer.study import tuning
from fmtransfer.study.reporting import StudyResult, report


# What a cached model's record holds that is no property of the run: its time here, and the digest of
# its file, which differs between two saves of the same weights (the archive stamps its time).
_NOT_RESULTS = ("seconds_here", "file_sha256")


def run_study(cfg: Config | None = None, study_dir: str | Path = "runs/study", *, shard_spec: str | None = None,
              jobs: int | str = 1, stack: int | str | None = None, progress: bool = False,
              reporter: Reporter | None = None, tensorboard: str | Path | None = None) -> StudyResult:
    """Run this shard's unfinished runs, appending each as it finishes; return the merged report.

    Args:
        cfg: the settings; `cfg.study` is the grid, `cfg.contenders` what to pair against the baseline.
        study_dir: where models, results and the study's settings are kept; rerun to resume.
        shard_spec: "I/N" to run only the I-th of N slices (for job arrays); "auto" in one.
        jobs: worker processes, each training whole seeds with its own thread pools; "auto" is
            the machine's cores divided by the threads one run uses. Every run gives the same
            numbers as with one. With more than one, this process only deals seeds and
            collects results: it never imports TensorFlow or parses the dataset (it hashes
            the files, for study.json).
        stack: train up to this many seeds of a (pair, size) as one graph (`fmtransfer.stacked`;
            "auto": 10); None takes `cfg.study.stack`. Numbers agree with unstacked runs to
            float precision, not bit for bit; each seed trains in the same place of its stack
            (`records.slot`), so they are the same whatever `jobs` and `shard_spec`.
        progress: show a progress bar over the grid.
        tensorboard: a folder to write each run's models' per-epoch scores to as TensorBoard
            event files (`fmtransfer.tensorboard`): DIR/<cell>/<seed, draw>/<model>. Only the
            models this call trains; no number or fingerprint depends on it.

    Example:
        >>> cfg = load_config("configs/quick.toml", study={"seeds": [1, 2, 3]}, contenders=["transfer"])
        >>> result = run_study(cfg, "runs/study-quick")
        >>> result.cell("transfer").p_value
    """
    check_argument("run_study", "cfg", cfg, (Config, type(None)),
                   "a Config (fmtransfer.load_config(path) reads a file), or None for the book's")
    check_argument("run_study", "study_dir", study_dir, (str, os.PathLike), "a directory's path (str or os.PathLike)")
    check_argument("run_study", "progress", progress, bool, "True or False")
    check_argument("run_study", "reporter", reporter, (Reporter, type(None)), "a Reporter, or None")
    cfg = cfg or Config()
    if stack is not None:
        cfg = cfg.replace(**{"study.stack": stack})
    reporter = reporter or Reporter(quiet=not progress)
    index, count = parse_shard(shard_spec)
    jobs = parse_jobs(jobs, cfg.model.arch)
    threads = runtime.training_threads(cfg.model.arch)
    check_grid(cfg)
    check_tuning(cfg)  # before the study's folder is made
    if not study_contenders(cfg):  # a study of nothing would exit 0 having run nothing
        raise ConfigError("contenders", "a study pairs each contender with the baseline, which runs with every one; "
                                        "name at least one contender besides it, e.g. transfer")
    check_study_paths(Path(study_dir))
    if tensorboard is not None:
        events.check_target(tensorboard)
    study_dir = Path(study_dir)
    # One unsharded study per directory; the shards of an array side by side, one process each;
    # and none of them while worker processes of an earlier one (whose parent was killed) live.
    lock = f".lock-{index}of{count}" if count > 1 else ".lock"
    refuse_if_locked(study_dir, [".lock-workers", f"{lock}-workers"] if count > 1
                     else [p.name for p in study_dir.glob(".lock*-workers")])
    with locked(study_dir, shared=count > 1, need_bytes=_writes_at_most(cfg, count)), \
            (locked(study_dir, lock) if count > 1 else contextlib.nullcontext()):
        return _run_study(cfg, study_dir, index, count, reporter, jobs, workers_lock=f"{lock}-workers",
                          threads=threads, tensorboard=tensorboard)


# `--seeds auto`: a first batch as large as a fixed study's usual ten seeds, then five at a time.
AUTO_FIRST, AUTO_BATCH = 10, 5


@dataclass(frozen=True)
class Precision:
    """Where `run_until_precise` stopped: what study.json records as `seeds_auto`.

    Args:
        target_halfwidth: the half-width asked for, in accuracy points.
        max_seeds: the most seeds it could add.
        seeds: the seeds the grid ran, `cfg.seed` onwards: how many it needed.
        widest: the widest cell's 95% t-interval half-width, points, at those seeds.
        stopped: "precision" (every cell at or under the target) or "max_seeds".
        batches: how many times it ran the grid.
    """

    target_halfwidth: float
    max_seeds: int
    seeds: int
    widest: float
    stopped: str
    batches: int

    def to_dict(self) -> dict[str, Any]:
        return {"target_halfwidth": self.target_halfwidth, "max_seeds": self.max_seeds, "seeds": self.seeds,
                "widest_halfwidth": None if math.isinf(self.widest) else self.widest, "stopped": self.stopped,
                "batches": self.batches}


def widest_halfwidth(cfg: Config, study_dir: str | Path) -> float:
    """The largest 95% t-interval half-width (points) of the paired difference over the cells of
    `cfg`'s grid, each over `cfg`'s seeds only (a seed's gain its mean over the draws, the unit the
    report pairs on): what `--seeds auto` stops on (deterministic, so
    the same records always give the same decision). inf while a cell has fewer than two runs."""
    from fmtransfer.study.inference import t_halfwidth

    wanted = {k.run_id(c): (k.setting, c) for k in grid(cfg) for c in study_contenders(cfg)}
    cells: dict[tuple, dict[int, list[float]]] = {cell: {} for cell in wanted.values()}
    for r in load_records(Path(study_dir), cfg):
        if r.id in wanted:  # with several draws, a seed's unit is its mean over them
            cells[wanted[r.id]].setdefault(r.key.seed, []).append(r.gain)
    per_seed = [[sum(g) / len(g) for g in seeds.values()] for seeds in cells.values()]
    return max((t_halfwidth(d) if len(d) >= 2 else math.inf for d in per_seed), default=math.inf)


def run_until_precise(cfg: Config, study_dir: str | Path = "runs/study", *, jobs: int | str = 1,
                      stack: int | str | None = None, progress: bool = False, reporter: Reporter | None = None,
                      first: int = AUTO_FIRST, batch: int = AUTO_BATCH,
                      tensorboard: str | Path | None = None) -> StudyResult:
    """`--seeds auto`: run the grid on seeds `cfg.seed`, `cfg.seed + 1`, ..., first `first` of
    them, then `batch` more at a time to the whole grid at once (every cell keeps the same seeds,
    the units of its paired statistics), until every cell's 95% t-interval half-width of the
    paired difference is at most `cfg.study.target_halfwidth` points, or `cfg.study.max_seeds`.

    It stops on precision, never on significance: the rule never looks at a p-value, so it does
    not inflate false positives as "stop when p < 0.05" would. Rerun, it resumes as any study
    does (finished runs are kept) and reaches the same decision. How many seeds it needed is in
    study.json (`seeds_auto`) and the result's `seeds_auto`. Not with shards: each shard would
    see only its own seeds' runs and stop at another count.

    Raises:
        ConfigError: `study.target_halfwidth` is not set.
    """
    target, most = cfg.study.target_halfwidth, cfg.study.max_seeds
    if target is None:
        raise ConfigError("study.target_halfwidth", "is needed by --seeds auto: the 95% half-width, in accuracy "
                                                    "points, to add seeds until")
    if first < 1 or batch < 1:
        raise ValueError("first and batch must be at least 1 seed")
    n, batches = min(max(first, 2), most), 0
    while True:
        at = cfg.replace(**{"study.seeds": list(range(cfg.seed, cfg.seed + n))})
        result = run_study(at, study_dir, jobs=jobs, stack=stack, progress=progress, reporter=reporter,
                           tensorboard=tensorboard)
        batches += 1
        widest = widest_halfwidth(at.replace(**({"study.stack": stack} if stack is not None else {})), study_dir)
        if widest <= target or n >= most:
            break
        n = min(n + batch, most)
    done = Precision(float(target), most, n, widest, "precision" if widest <= target else "max_seeds", batches)
    record_precision(Path(study_dir), done)
    result.seeds_auto = done.to_dict()
    return result


def parse_jobs(jobs: int | str, arch: str) -> int:
    """A worker count: N >= 1, or "auto": the cores divided by the threads one run uses."""
    if isinstance(jobs, str) and jobs.strip().lower() == "auto":
        cores = os.cpu_count() or 1
        per_run = runtime.threads(arch)[0] or cores  # 0: TensorFlow's choice, every core
        return max(1, cores // per_run)
    try:
        n = int(jobs)
    except (TypeError, ValueError):
        n = 0
    if n < 1 or isinstance(jobs, bool):
        raise ConfigError("jobs", f"expected a number of worker processes (1 or more) or auto, got {jobs!r}")
    if n > runtime.max_threads():  # each worker is a process with its own TensorFlow
        raise ConfigError("jobs", f"at most {runtime.max_threads()} worker processes on this machine of "
                                  f"{os.cpu_count() or 1} cores (auto: as many as the cores hold), got {jobs!r}")
    return n


def _units(todo: list[RunKey], stack: int) -> list[list[RunKey]]:
    """The runs to deal to workers, whole seeds per unit. Unstacked, one seed a unit. Stacked,
    the seeds whose slots (`records.slot`) make one stack, seed // stack, so that no stack needs a
    filler below its lowest seed's slot; a stack is never split to keep a worker busy, which
    would make each half train its slots from 0 again."""
    seeds = [[*unit] for _, unit in itertools.groupby(todo, key=lambda k: k.seed)]
    if stack == 1:
        return seeds
    chunks: dict[int, list[RunKey]] = {}
    for unit in seeds:
        chunks.setdefault(unit[0].seed // stack, []).extend(unit)
    return list(chunks.values())


def _writes_at_most(cfg: Config, count: int) -> int:
    """What a shard of a study writes at most: its share of the models it keeps (model A and each
    encoder per seed and pair; models B are not kept), and a results line per run."""
    kept = 1 + len({n for c in study_contenders(cfg) for n in needs_of(contenders.get(c)) if n != MODEL_A})
    groups = math.ceil(len(cfg.study_seeds) * len(cfg.study_pairs) / count)
    return groups * kept * model_bytes(cfg) + SMALL_FILES


def check_study_paths(study_dir: Path) -> None:
    """The folders a study writes into are folders, or absent: found out when the first model is
    saved, it would be after model A had trained."""
    for folder in (study_dir, study_dir / "models"):
        if folder.exists() and not folder.is_dir():
            raise UsageError(f"{folder} is a file, but the study keeps its {'models' if folder != study_dir else 'runs'} "
                             "in a folder of that name; move the file away, or choose another study directory",
                             path=folder)


def _run_study(cfg: Config, study_dir: Path, index: int, count: int, reporter: Reporter, jobs: int = 1,
               workers_lock: str = ".lock-workers", threads: tuple[int, int] | None = None,
               tensorboard: str | Path | None = None) -> StudyResult:
    threads = threads or runtime.training_threads(cfg.model.arch)
    check_study_dir(cfg, study_dir, threads[0])
    chosen = study_contenders(cfg)
    k = stacking(cfg)
    # Stacked, a shard takes whole stacks, as a worker does: seeds that share a stack stay together.
    keys = shard(grid(cfg), index, count, by=(lambda key: key.seed // k) if k > 1 else None)
    recorded = load_records(study_dir, cfg)
    done = {r.id for r in recorded}
    total = len(keys) * len(chosen)
    todo = [k for k in keys if any(k.run_id(c) not in done for c in chosen)]
    # In one process, the data's refusals (too few images to draw N) come before anything is said or trained.
    raw = _checked_data(cfg) if todo and jobs == 1 else None
    out = results_path(study_dir, index, count)
    finished = sum(k.run_id(c) in done for k in keys for c in chosen)
    reporter.info(f"study {study_dir}: shard {index}/{count} has {total} runs, {finished} already finished, "
                  f"{total - finished} to run")
    if todo:
        # Whole seeds go to one worker: model A and the encoders of a seed are made once; a
        # stack's worth of seeds at once, so that the worker can train them as one graph.
        if jobs == 1:  # TensorFlow is needed here, and first set up (asking it about a GPU starts it)
            runtime.ensure_setup(cfg.model.arch)
        units = _units(todo, k)
        with reporter.grid("study", total=total, done=finished) as advance:
            if jobs == 1:
                said: set[str] = set()
                board = _board(tensorboard)
                draws = tuning.Draws(cfg, recorded, sampler.journal_path(study_dir, index, count))
                for unit in units:
                    _run_unit(unit, cfg, chosen, raw, study_dir, out, done, advance, threads[0], said, board, draws)
            else:
                _run_workers(units, min(jobs, len(units)), cfg, chosen, study_dir, out, done, advance, workers_lock,
                             threads, tensorboard)
    return report(study_dir)


def check_tuning(cfg: Config) -> None:
    """What a tuned study needs, refused before anything trains: the sampler's library, and
    under cv:K at least K images of each class in every labelled sample of the grid's sizes
    (the book's first N images; a drawn sample's counts are checked when it is drawn)."""
    if not cfg.tune.tuned:
        return
    if stacking(cfg) > 1 and cfg.tune.sampler != "random":
        raise ConfigError("study.stack", f"{cfg.tune.sampler}'s trials depend on the trials before them, so they "
                                         "cannot train as one stack: leave --stack out")
    if cfg.tune.sampler == "tpe" and not sampler.available():
        raise ConfigError(sampler.KEY, sampler.MISSING)
    folds = cfg.tune.folds
    if folds and min(cfg.study_sizes) < 2 * folds:
        raise ConfigError("tune.on", f"cv:{folds} needs at least {folds} training images of each class of task B, "
                                     f"and a sample of {min(cfg.study_sizes)} images holds at most "
                                     f"{min(cfg.study_sizes) // 2} of one; use fewer folds, or more images")


def _board(tensorboard: str | Path | None):
    """Where this process writes its runs' TensorBoard events, or None."""
    return None if tensorboard is None else events.Board(tensorboard)


def _checked_data(cfg: Config):
    """The dataset, with every pair's split made once: fail now, not hours into the grid."""
    from fmtransfer import data

    raw = data.load(cfg.data)
    for pair in cfg.study_pairs:
        for draw in cfg.study_data_seeds:
            data.make_split(raw, pair, max(cfg.study_sizes), cfg.data.valid_size, cfg.data.valid_from, draw)
    return raw


def _run_unit(unit: list[RunKey], cfg, chosen, raw, study_dir: Path, out: Path, done: set[str], advance,
              threads: int, said: set | None = None, board=None, draws: "tuning.Draws | None" = None) -> None:
    """A unit's seeds: stacked where the study stacks (`records.stacking`), each seed in its slot,
    even a seed alone (a stack of one seed and a filler); else one by one."""
    k = stacking(cfg)
    draws = draws or tuning.Draws(cfg)
    together = _Stacked(unit, cfg, chosen, study_dir, done, threads, k, said) if k > 1 and not cfg.tune.tuned else None
    trials = _Trials(cfg, k, draws, said) if k > 1 and cfg.tune.tuned else None
    for _, runs in itertools.groupby(unit, key=lambda key: key.group):
        _run_group(list(runs), cfg, chosen, raw, study_dir, out, done, advance, together, threads, board, draws,
                   trials)


def _run_workers(units, jobs: int, cfg: Config, chosen, study_dir: Path, out: Path, done: set[str], advance,
                 workers_lock: str, threads: tuple[int, int], tensorboard: str | Path | None = None) -> None:
    """Deal whole seeds to `jobs` spawned processes (`pool.run_units`); each appends to its own
    results file, and tells this one each run it finished, for the progress bar over the whole grid."""
    # This process never set TensorFlow up: the workers apply the choice made for it, and the
    # threads a serial study would train with, which its fingerprints record.
    chosen_setup = runtime._configured or runtime._pending or {"arch": cfg.model.arch}
    setup = {**chosen_setup, "threads": threads}

    def pending(unit: list[RunKey]) -> list[str]:
        recorded = {r.id for r in load_records(study_dir, cfg)}
        return [k.run_id(c) for k in unit for c in chosen if k.run_id(c) not in recorded]

    run_units(units, jobs, prepare=_prepare_worker, prepare_args=(cfg, chosen, str(study_dir), str(out), sorted(done),
                                                                  setup, None if tensorboard is None else str(tensorboard)),
              run=_run_in_worker, advance=advance, pending=pending, lock=(study_dir, workers_lock))


def _prepare_worker(job: int, cfg: Config, chosen, study_dir: str, out: str, done: list[str], setup: dict,
                    tensorboard: str | None = None) -> dict:
    """A worker's TensorFlow and dataset, once; its results go to its own file, `...-job{job}.jsonl`."""
    runtime.setup(**setup)
    out_path = Path(out)
    journal = sampler.journal_path(Path(study_dir)).with_name(f"tpe-{out_path.stem}-job{job}.journal")
    return {"cfg": cfg, "chosen": chosen, "raw": _checked_data(cfg), "study_dir": Path(study_dir),
            "out": out_path.with_name(f"{out_path.stem}-job{job}.jsonl"), "finished": set(done),
            "threads": runtime.training_threads(cfg.model.arch)[0], "said": set(), "board": _board(tensorboard),
            "draws": tuning.Draws(cfg, load_records(Path(study_dir), cfg), journal)}


def _run_in_worker(state: dict, unit: list[RunKey], advance) -> None:
    _run_unit(unit, state["cfg"], state["chosen"], state["raw"], state["study_dir"], state["out"], state["finished"],
              advance, state["threads"], state["said"], state.get("board"), state.get("draws"))


def chance_accuracy(split) -> float:
    """What a model that predicts nothing scores: the majority class's share of test B."""
    positives = float(np.mean(split.b_test[1]))
    return max(positives, 1.0 - positives)


def _scores(fit, split) -> dict:
    """A run's test-B scores; a run that diverged is recorded as such, at chance accuracy.

    Divergence is a real outcome of a setting (the book's phase-1 rate with few images), so it
    stays in the statistics rather than being dropped, which would flatter the setting: it enters
    as a model that predicts nothing, the majority-class accuracy, with no loss.
    """
    try:
        r = fit()
    except DivergedError as e:
        return {"test_accuracy": chance_accuracy(split), "test_loss": None, "diverged": str(e)}
    scores = {"test_accuracy": r.test_accuracy, "test_loss": r.test_loss}
    if r.details.get("linear_probe") is not None:
        scores["linear_probe"] = r.details["linear_probe"]
    return scores


def _predicted(model, split):
    """A model's P(label 1) on test B's images, or None where it gives no one such number per image."""
    from fmtransfer import training

    p = training.predict(model, training.scaled_part(split.b_test)[0])
    p = p.reshape(len(p), -1) if p.ndim > 1 else p.reshape(-1, 1)
    return p[:, 0] if p.shape[1] == 1 and np.all(np.isfinite(p)) else None


def _fitted(fit, split, name: str, score_on: tuple | None = None) -> tuple[dict, Any, list | None]:
    """`fit()` -> (model, result) of contender `name`, as a run's scores (see `_scores`), its test
    predictions and its phases' records (each None for a diverged model). What it gave back is
    checked first (`contenders.checked_fit`): a result no model can have is a ContenderError,
    never a record. `score_on`: images and labels to score the model on besides test B, as
    `valid_accuracy` and `valid_loss` (what a tuned study selects by)."""
    made: list = []

    def result():
        made.append(contenders.checked_fit(name, fit()))
        return made[0][1]

    scores = _scores(result, split)
    if score_on is not None:
        scores.update(_validation_scores(made[0][0] if made and "diverged" not in scores else None, score_on))
    if not made or "diverged" in scores:
        return scores, None, None
    return scores, _predicted(made[0][0], split), made[0][1].phases


def _validation_scores(model, part: tuple) -> dict:
    """A trial's scores on held-out labelled images: a diverged model (None) scores as one that
    predicts nothing, the majority class's share, with no loss, as on test B (`_scores`)."""
    from fmtransfer import training

    scored = training.evaluated(model, part, training.BINARY) if model is not None else None
    if scored is None or isinstance(scored, DivergedError):
        share = float(np.mean(part[1]))
        return {"valid_accuracy": max(share, 1.0 - share), "valid_loss": None}
    return {"valid_accuracy": scored["accuracy"], "valid_loss": scored["loss"]}


def _trained(fits, split, name: str, cfg: Config) -> list[tuple[dict, Any, list | None]]:
    """`_fitted` of each run `fits(part)` makes on `split`: per run (a trial of a stack, or the
    one), a callable giving (model, result) or raising the DivergedError that stopped it. In a
    tuned study (`cfg.tune`), with what selects among the trials, measured on labelled images
    only: each model's scores on task B's validation images (`tune.on` valid), or the mean over
    K models each trained on K-1 folds of the labelled sample and scored on the fold left out
    (cv:K; the run's model is then trained on the whole sample). `steps`: the SGD steps that made
    the run's model; under cv:K, `tuning_steps` adds the folds' (a pretraining contender's
    encoder is counted apart, in its record)."""
    from fmtransfer import data

    def on(part, score_on=None) -> list:
        return [_fitted(fit, part, name, score_on=score_on) for fit in fits(part)]

    tune = cfg.tune
    if not tune.tuned:
        return on(split)
    per_epoch = math.ceil(len(split.b_train[1]) / cfg.batch_size)
    if tune.folds is None:
        return [({**scores, "steps": _epochs(phases) * per_epoch}, p, phases)
                for scores, p, phases in on(split, split.b_valid)]
    folds = data.folds(split, tune.folds)
    held = [on(fold, fold.b_valid) for fold in folds]  # per fold, per run
    made = []
    for i, (scores, p, phases) in enumerate(on(split)):
        mine = [runs[i][0] for runs in held]
        spent = sum(_epochs(runs[i][2]) * math.ceil(len(fold.b_train[1]) / cfg.batch_size)
                    for runs, fold in zip(held, folds))
        losses = [s["valid_loss"] for s in mine]
        steps = _epochs(phases) * per_epoch
        made.append(({**scores, "valid_accuracy": float(np.mean([s["valid_accuracy"] for s in mine])),
                      "valid_loss": None if None in losses else float(np.mean(losses)), "folds": tune.folds,
                      "steps": steps, "tuning_steps": steps + spent}, p, phases))
    return made


def _epochs(phases: list | None) -> int:
    """The epochs a model trained, over its phases (none for a diverged one: what it spent is unknown)."""
    return sum(len(p.get("history", ())) for p in phases or ())


def _run_group(runs: list[RunKey], cfg: Config, chosen: tuple[str, ...], raw, study_dir: Path, out: Path,
               done: set[str], advance, together: "_Stacked | None" = None, threads: int | None = None,
               board=None, draws: "tuning.Draws | None" = None, trials: "_Trials | None" = None) -> None:
    """The runs sharing one (seed, pair): model A and encoders made or loaded once (whatever the
    draw: neither sees task B's images), each baseline once per (size, draw), then every
    unfinished contender. `together`: the stack this seed trains in."""
    from fmtransfer import data

    first = runs[0]
    split = data.make_split(raw, first.pair, max(r.b_train_size for r in runs), cfg.data.valid_size,
                            cfg.data.valid_from)
    cache = together.cache(first, split) if together else Cache(study_dir, first.config(cfg), split, first.pair,
                                                                 first.seed, how=how(cfg, threads, "baseline",
                                                                                     first.seed))
    quiet = Reporter(quiet=True)
    draws = draws or tuning.Draws(cfg)
    for _, sized in itertools.groupby(runs, key=lambda k: k.baseline_group):
        sized = list(sized)
        here = sized[0]
        split = data.make_split(raw, first.pair, here.b_train_size, cfg.data.valid_size, cfg.data.valid_from,
                                here.data_seed)
        b_rows = data.indices_sha256(split.indices["b_train"])
        base_drawn = draws.drawn(here, "baseline")
        base_config = here.config(cfg, "baseline", base_drawn)
        if together:
            base, base_seconds, base_p, base_phases = together.baseline(here, split)
        elif trials is not None and trials.takes(contenders.get("baseline")):
            base, base_seconds, base_p, base_phases = trials.run(here, contenders.get("baseline"), split, cache)
        else:
            started = time.perf_counter()
            ((base, base_p, base_phases),) = _trained(lambda part: [lambda: contenders.get("baseline").fit(
                base_config, part, {}, quiet)], split, "baseline", cfg)
            base_seconds = round(time.perf_counter() - started, 2)
        if base_drawn is not None:
            draws.add(here, "baseline", base_drawn["baseline"], base)
        base_file = None
        if base_p is not None:  # once per group, for all its contenders; written before any line names it
            base_how = how(cfg, threads, "baseline", here.seed, here.trial)
            base_file = write_baseline_predictions(
                study_dir, here, fingerprint(fingerprints.contender(base_config, split.sha256, "baseline", {},
                                                                    base_how)), split.b_test[1], base_p)
        for key in sized:
            for name in chosen:
                if key.run_id(name) in done:
                    continue
                contender = contenders.get(name)
                drawn = draws.drawn(key, name)
                run_config = key.config(cfg, name, drawn)
                if together and together.takes(contender):
                    result, seconds, mine_p, phases = together.contender(key, contender, split)
                elif trials is not None and trials.takes(contender):
                    result, seconds, mine_p, phases = trials.run(key, contender, split, cache)
                else:
                    started = time.perf_counter()
                    ((result, mine_p, phases),) = _trained(lambda part: [lambda: contender.fit(run_config, part, {
                        need: cache[need] for need in contender.needs}, quiet)], split, name, cfg)
                    seconds = round(time.perf_counter() - started, 2)
                trained = how(cfg, threads, name, key.seed, key.trial)
                if drawn is not None:
                    draws.add(key, name, drawn["result"], result)
                run_fp = fingerprints.run(run_config, split.sha256, name, trained)
                kept = None
                if base_file is not None and mine_p is not None:
                    kept = {"baseline": base_file,
                            "result": write_result_predictions(study_dir, key.run_id(name), run_fp, mine_p)}
                record = RunRecord.made(
                    key, name, run_config, base, result, settings=run_fingerprint(cfg, name), drawn=drawn,
                    fingerprint=run_fp, trained_with=trained_with(trained), predictions=kept,
                    built_on={str(need): {k: v for k, v in cache.info[need].items() if k not in _NOT_RESULTS}
                              for need in contender.needs if need in cache.info},
                    seconds={"baseline": base_seconds, "contender": seconds,
                             **{str(need): cache.info[need].pop("seconds_here", 0.0) for need in contender.needs
                                if need in cache.info}},
                    b_indices_sha256=b_rows)
                base_seconds = 0.0  # the baseline's time is counted once, with its first run
                append_record(out, record)
                if board is not None:  # after the line: events never describe a run the study lacks
                    board.run(key, name, phases, base_phases,
                              {need: cache.made[need] for need in contender.needs if need in cache.made})
                done.add(record.id)
                advance(record.id)


class _Trials:
    """A tuned study's trials of one seed, stacked (`study.stack` K): trials u of the baseline, or
    of a contender that stacks, at one point train as one graph of up to K slots, each with its
    own settings (`Contender.train`), trial u in slot u % K of the stack of trials K * (u // K)
    to K * (u // K) + K - 1, whichever of them are pending: a trial's numbers depend on its slot,
    on nothing else of its stack, so they are the same with `--jobs`, `--shard`, on resuming and
    with a grown budget. A stack of one trial gets a filler, a copy whose results are dropped.
    An adaptive sampler's trials depend on those before them, and never stack (`check_tuning`).
    """

    def __init__(self, cfg: Config, stack: int, draws: "tuning.Draws", said: set | None = None):
        self.cfg, self.stack, self.draws = cfg, stack, draws
        self.said: set[str] = set() if said is None else said
        self.made: dict[str, tuple] = {}  # run id -> (scores, seconds, predictions, phases)

    def takes(self, contender) -> bool:
        """Whether `contender`'s trials stack; where not, say so once (they train one by one)."""
        return _stacks(contender, self.said, "trial")

    def run(self, key: RunKey, contender, split, cache) -> tuple[dict, float, Any, list | None]:
        """Trial `key.trial` of `contender` at `key`'s point: trained with its stack at first ask."""
        name = contender.name
        if key.run_id(name) not in self.made:
            low = key.trial - key.trial % self.stack
            chunk = [key.at_trial(u) for u in range(low, min(low + self.stack, self.cfg.tune.trials))]
            cfgs = [k.config(self.cfg, name, self.draws.drawn(k, name)) for k in chunk]
            slots = cfgs + cfgs[:1] * (len(cfgs) < 2)  # a filler: two slots at least, as every stack
            started = time.perf_counter()
            try:
                base = cache[contender.needs[0]] if contender.needs else None
            except DivergedError as e:  # every trial built on it diverged too, as unstacked
                failure = e
                made = _trained(lambda part: [functools.partial(_raised, failure)] * len(cfgs), split, name, self.cfg)
            else:
                def fits(part):
                    return [functools.partial(_raised, o) for o in contender.train(
                        slots, part, [base] * len(slots), Reporter(quiet=True))[:len(cfgs)]]

                made = _trained(fits, split, name, self.cfg)
            share = round((time.perf_counter() - started) / len(chunk), 2)
            for k, (scores, predicted, phases) in zip(chunk, made):
                self.made[k.run_id(name)] = (scores, share, predicted, phases)
        return self.made.pop(key.run_id(name))


def _stacks(contender, said: set[str], what: str) -> bool:
    """Whether `contender` trains in a stack; where it cannot, say why once per study (or worker)."""
    if contender.stack_unsupported is None:
        return True
    if contender.name not in said:
        said.add(contender.name)
        warnings.warn(f"study.stack: {contender.name} trains one {what} at a time, since "
                      f"{contender.stack_unsupported}", stacklevel=3)
    return False


def _raised(outcome):
    if isinstance(outcome, BaseException):
        raise outcome
    return outcome


class _Stacked:
    """The seeds of one stack (`fmtransfer.stacked`): the first seed to ask for model A, a
    baseline or a run of a contender that stacks has it trained for every seed of the stack that
    still needs it; each seed's group then takes its own, and writes its results lines as an
    unstacked one does. A contender that cannot stack (`stack_unsupported`) trains one seed at a
    time, as unstacked, and a warning says why, once per contender.

    Each seed trains in its own slot, `records.slot(seed, stack)`, whichever seeds share the
    stack: a seed's numbers depend on its place in a stack (its slices' alignment in memory), on
    nothing else of it. A slot no seed of this stack needs gets a filler, a copy of a seed that
    does, whose results are dropped; a stack has two slots at least, so that a seed alone trains
    stacked too.

    Times are each seed's share of the stack's. Divergence is per seed: a seed whose model A (or
    encoder) diverged gets the runs built on it recorded as diverged, as unstacked.
    """

    def __init__(self, keys: list[RunKey], cfg: Config, chosen: tuple[str, ...], study_dir: Path, done: set[str],
                 threads: int | None = None, stack: int = 2, said: set | None = None):
        self.keys, self.cfg, self.chosen, self.study_dir, self.done = keys, cfg, chosen, study_dir, done
        self.threads, self.stack = threads, stack
        self.caches: dict[tuple, Cache] = {}
        self.made: dict[tuple, Any] = {}  # (what, seed) -> what that seed's group will take
        # The contenders whose fallback to one seed at a time was said, in this study (or worker).
        self.said: set[str] = set() if said is None else said

    def takes(self, contender) -> bool:
        """Whether `contender` stacks; where it cannot, say so once, and `_run_group` trains it unstacked."""
        return _stacks(contender, self.said, "seed")

    def _seeds(self, keep) -> list[RunKey]:
        """The first key of each seed with a key that `keep` accepts, in seed order."""
        return list({k.seed: k for k in reversed(self.keys) if keep(k)}.values())[::-1]

    def cache(self, key: RunKey, split) -> Cache:
        if (key.seed, key.pair) not in self.caches:
            self.caches[key.seed, key.pair] = Cache(self.study_dir, key.config(self.cfg), split, key.pair, key.seed,
                                                     train_a=lambda: self._model_a(key, split),
                                                     how=how(self.cfg, self.threads, "baseline", key.seed))
        return self.caches[key.seed, key.pair]

    def _slotted(self, peers: list[RunKey]) -> list[list[RunKey]]:
        """`peers` as stacks, each a list indexed by slot: a peer in its own slot, a filler (the
        first peer of that stack) in the others. Peers sharing a slot go to separate stacks."""
        stacks: list[dict[int, RunKey]] = []
        for k in peers:
            place = slot(k.seed, self.stack)
            free = next((s for s in stacks if place not in s), None)
            if free is None:
                stacks.append(free := {})
            free[place] = k
        return [[s.get(i, next(iter(s.values()))) for i in range(max(2, max(s) + 1))] for s in stacks]

    def _in_slots(self, peers: list[RunKey]):
        """(stack, [(peer, its index in the stack)]) for each stack `_slotted` makes of `peers`."""
        for stack in self._slotted(peers):
            yield stack, [(k, slot(k.seed, self.stack)) for k in dict.fromkeys(stack)]

    def _model_a(self, asking: RunKey, split):
        tag = ("model_a", asking.pair)
        if (tag, asking.seed) not in self.made:
            needs_a = {c for c in self.chosen if MODEL_A in needs_of(contenders.get(c))}
            peers = [k for k in self._seeds(lambda k: k.pair == asking.pair and any(
                k.run_id(c) not in self.done for c in needs_a)) if not self.cache(k, split).has("model_a")]
            peers = peers if any(k.seed == asking.seed for k in peers) else [asking, *peers]
            for stack, placed in self._in_slots(peers):
                started = time.perf_counter()
                made = train_models_a([k.config(self.cfg) for k in stack], split)  # two or more: never raises
                share = (time.perf_counter() - started) / len(placed)
                for k, i in placed:
                    outcome = made[i]
                    self.made[tag, k.seed] = outcome if isinstance(outcome, BaseException) else (*outcome, share)
        return _raised(self.made.pop((tag, asking.seed)))

    def baseline(self, asking: RunKey, split) -> tuple[dict, float, Any, list | None]:
        tag = ("baseline", *asking.draw_group)  # the seeds of one stack train on the same images
        if (tag, asking.seed) not in self.made:
            peers = self._seeds(lambda k: k.draw_group == asking.draw_group)
            self._fit(contenders.get("baseline"), tag, peers, {k.seed: None for k in peers}, split)
        return self.made.pop((tag, asking.seed))

    def contender(self, asking: RunKey, contender, split) -> tuple[dict, float, Any, list | None]:
        point = (asking.setting, asking.data_seed)  # every axis but the seed
        tag = (contender.name, *point)
        if (tag, asking.seed) not in self.made:
            peers = self._seeds(lambda k: (k.setting, k.data_seed) == point and k.run_id(contender.name) not in self.done)
            bases = {}
            for k in peers:
                try:  # what it builds on: model A, or its own encoder, made (or loaded) per seed
                    bases[k.seed] = self.cache(k, split)[contender.needs[0]] if contender.needs else None
                except DivergedError as e:  # every run built on it diverged too, as unstacked
                    failure = e
                    self.made[tag, k.seed] = (_scores(lambda: _raised(failure), split), 0.0, None, None)
            self._fit(contender, tag, [k for k in peers if k.seed in bases], bases, split)
        return self.made.pop((tag, asking.seed))

    def _fit(self, contender, tag: tuple, peers: list[RunKey], bases: dict, split) -> None:
        """`contender` for every seed of `peers` at once, each on its base; keep each seed's scores
        and test predictions."""
        for stack, placed in self._in_slots(peers):
            started = time.perf_counter()
            # Two slots or more: `train` gives each seed's outcome, and raises for none.
            made = contender.train([k.config(self.cfg) for k in stack], split, [bases[k.seed] for k in stack],
                                   Reporter(quiet=True))
            share = round((time.perf_counter() - started) / len(placed), 2)
            for k, i in placed:
                outcome = made[i]
                scores, predicted, phases = _fitted(lambda: _raised(outcome), split, contender.name)
                self.made[tag, k.seed] = (scores, share, predicted, phases)

