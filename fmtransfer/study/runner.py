"""Running a study: this shard's unfinished runs, in this process or in worker processes (`pool`), each
recorded as it finishes."""

from __future__ import annotations

import contextlib
import itertools
import math
import os
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from fmtransfer import contenders, fingerprints, runtime
from fmtransfer.config import Config
from fmtransfer.errors import ConfigError, DivergedError
from fmtransfer.io import locked, refuse_if_locked
from fmtransfer.needs import MODEL_A, needs_of
from fmtransfer.report import Reporter
from fmtransfer.resolver import train_models_a
from fmtransfer.study.axes import RunKey, check_grid, grid, parse_shard, shard, study_contenders
from fmtransfer.study.cache import Cache
from fmtransfer.study.pool import run_units
from fmtransfer.study.records import (
    RunRecord, append_record, check_study_dir, load_records, results_path, run_fingerprint,
)
from fmtransfer.study.reporting import StudyResult, report


# What a cached model's record holds that is no property of the run: its time here, and the digest of
# its file, which differs between two saves of the same weights (the archive stamps its time).
_NOT_RESULTS = ("seconds_here", "file_sha256")


def run_study(cfg: Config | None = None, study_dir: str | Path = "runs/study", *, shard_spec: str | None = None,
              jobs: int | str = 1, stack: int | str | None = None, progress: bool = False,
              reporter: Reporter | None = None) -> StudyResult:
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
            float precision, not bit for bit.
        progress: show a progress bar over the grid.

    Example:
        >>> cfg = load_config("configs/quick.toml", study={"seeds": [1, 2, 3]}, contenders=["transfer"])
        >>> result = run_study(cfg, "runs/study-quick")
        >>> result.cell("transfer").p_value
    """
    cfg = cfg or Config()
    if stack is not None:
        cfg = cfg.replace(**{"study.stack": stack})
    reporter = reporter or Reporter(quiet=not progress)
    index, count = parse_shard(shard_spec)
    jobs = parse_jobs(jobs, cfg.model.arch)
    check_grid(cfg)
    study_dir = Path(study_dir)
    # One unsharded study per directory; the shards of an array side by side, one process each;
    # and none of them while worker processes of an earlier one (whose parent was killed) live.
    lock = f".lock-{index}of{count}" if count > 1 else ".lock"
    refuse_if_locked(study_dir, [".lock-workers", f"{lock}-workers"] if count > 1
                     else [p.name for p in study_dir.glob(".lock*-workers")])
    with locked(study_dir, shared=count > 1), (locked(study_dir, lock) if count > 1 else contextlib.nullcontext()):
        return _run_study(cfg, study_dir, index, count, reporter, jobs, workers_lock=f"{lock}-workers")


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
    return n


# `study.stack = "auto"`: the seeds of a 10-seed cell as one graph. On the 2-core CPU that took
# 0.81x the serial time, and 0.84x of --jobs auto's with it (bench/README.md); a GPU, whose small
# steps leave it idle, is where stacking is meant to pay most.
STACK_AUTO = 10


def resolve_stack(stack: int | str) -> int:
    """`study.stack` as a number of seeds."""
    return STACK_AUTO if stack == "auto" else int(stack)


def _seeds_per_unit(stack: int | str, jobs: int, n_seeds: int) -> int:
    """How many seeds to deal as one unit: a stack's worth, but never so many that a worker idles."""
    return max(1, min(resolve_stack(stack), math.ceil(n_seeds / jobs)))


def _run_study(cfg: Config, study_dir: Path, index: int, count: int, reporter: Reporter, jobs: int = 1,
               workers_lock: str = ".lock-workers") -> StudyResult:
    check_study_dir(cfg, study_dir)
    chosen = study_contenders(cfg)
    keys = shard(grid(cfg), index, count)
    done = {r.id for r in load_records(study_dir, cfg)}
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
        seeds = [[*unit] for _, unit in itertools.groupby(todo, key=lambda k: k.seed)]
        per_unit = _seeds_per_unit(cfg.study.stack, jobs, len(seeds))
        units = [[k for unit in seeds[i:i + per_unit] for k in unit] for i in range(0, len(seeds), per_unit)]
        with reporter.grid("study", total=total, done=finished) as advance:
            if jobs == 1:
                for unit in units:
                    _run_unit(unit, cfg, chosen, raw, study_dir, out, done, advance, per_unit)
            else:
                _run_workers(units, min(jobs, len(units)), cfg, chosen, study_dir, out, done, advance, workers_lock)
    return report(study_dir)


def _checked_data(cfg: Config):
    """The dataset, with every pair's split made once: fail now, not hours into the grid."""
    from fmtransfer import data

    raw = data.load(cfg.data)
    for pair in cfg.study_pairs:
        for draw in cfg.study_data_seeds:
            data.make_split(raw, pair, max(cfg.study_sizes), cfg.data.valid_size, cfg.data.valid_from, draw)
    return raw


def _run_unit(unit: list[RunKey], cfg, chosen, raw, study_dir: Path, out: Path, done: set[str], advance,
              stack: int = 1) -> None:
    """A unit's seeds, `stack` at a time: stacked where the network allows it (dense), else one by one."""
    from fmtransfer import stacked

    if not stacked.supported(cfg):
        stack = 1
    seeds = [[*runs] for _, runs in itertools.groupby(unit, key=lambda k: k.seed)]
    for i in range(0, len(seeds), stack):
        chunk = [k for runs in seeds[i:i + stack] for k in runs]
        together = _Stacked(chunk, cfg, chosen, study_dir, done) if len(seeds[i:i + stack]) > 1 else None
        for _, runs in itertools.groupby(chunk, key=lambda k: k.group):
            _run_group(list(runs), cfg, chosen, raw, study_dir, out, done, advance, together)


def _run_workers(units, jobs: int, cfg: Config, chosen, study_dir: Path, out: Path, done: set[str], advance,
                 workers_lock: str) -> None:
    """Deal whole seeds to `jobs` spawned processes (`pool.run_units`); each appends to its own
    results file, and tells this one each run it finished, for the progress bar over the whole grid."""
    # This process never set TensorFlow up: the workers apply the choice made for it.
    chosen_setup = runtime._configured or runtime._pending or {"arch": cfg.model.arch}
    setup = {**chosen_setup, "threads": runtime.threads(cfg.model.arch)}

    def pending(unit: list[RunKey]) -> list[str]:
        recorded = {r.id for r in load_records(study_dir, cfg)}
        return [k.run_id(c) for k in unit for c in chosen if k.run_id(c) not in recorded]

    run_units(units, jobs, prepare=_prepare_worker, prepare_args=(cfg, chosen, str(study_dir), str(out), sorted(done),
                                                                  setup),
              run=_run_in_worker, advance=advance, pending=pending, lock=(study_dir, workers_lock))


def _prepare_worker(job: int, cfg: Config, chosen, study_dir: str, out: str, done: list[str], setup: dict) -> dict:
    """A worker's TensorFlow and dataset, once; its results go to its own file, `...-job{job}.jsonl`."""
    runtime.setup(**setup)
    out_path = Path(out)
    return {"cfg": cfg, "chosen": chosen, "raw": _checked_data(cfg), "study_dir": Path(study_dir),
            "out": out_path.with_name(f"{out_path.stem}-job{job}.jsonl"), "finished": set(done),
            "stack": resolve_stack(cfg.study.stack)}


def _run_in_worker(state: dict, unit: list[RunKey], advance) -> None:
    _run_unit(unit, state["cfg"], state["chosen"], state["raw"], state["study_dir"], state["out"], state["finished"],
              advance, state["stack"])


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


def _run_group(runs: list[RunKey], cfg: Config, chosen: tuple[str, ...], raw, study_dir: Path, out: Path,
               done: set[str], advance, together: "_Stacked | None" = None) -> None:
    """The runs sharing one (seed, pair): model A and encoders made or loaded once (whatever the
    draw: neither sees task B's images), each baseline once per (size, draw), then every
    unfinished contender. `together`: the stack this seed trains in."""
    from fmtransfer import data

    first = runs[0]
    split = data.make_split(raw, first.pair, max(r.b_train_size for r in runs), cfg.data.valid_size,
                            cfg.data.valid_from)
    cache = together.cache(first, split) if together else Cache(study_dir, first.config(cfg), split, first.pair,
                                                                 first.seed)
    quiet = Reporter(quiet=True)
    for _, sized in itertools.groupby(runs, key=lambda k: k.baseline_group):
        sized = list(sized)
        here = sized[0]
        split = data.make_split(raw, first.pair, here.b_train_size, cfg.data.valid_size, cfg.data.valid_from,
                                here.data_seed)
        b_rows = data.indices_sha256(split.indices["b_train"])
        if together:
            base, base_seconds = together.baseline(here, split)
        else:
            started = time.perf_counter()
            base = _scores(lambda: contenders.get("baseline").fit(here.config(cfg), split, {}, quiet)[1], split)
            base_seconds = round(time.perf_counter() - started, 2)
        for key in sized:
            for name in chosen:
                if key.run_id(name) in done:
                    continue
                contender = contenders.get(name)
                if together and together.takes(contender):
                    result, seconds = together.contender(key, contender, split)
                else:
                    started = time.perf_counter()
                    result = _scores(lambda: contender.fit(key.config(cfg), split, {need: cache[need] for need
                                                                                    in contender.needs}, quiet)[1],
                                     split)
                    seconds = round(time.perf_counter() - started, 2)
                record = RunRecord.made(
                    key, name, key.config(cfg), base, result, settings=run_fingerprint(cfg, name),
                    fingerprint=fingerprints.run(key.config(cfg), split.sha256, name),
                    built_on={str(need): {k: v for k, v in cache.info[need].items() if k not in _NOT_RESULTS}
                              for need in contender.needs if need in cache.info},
                    seconds={"baseline": base_seconds, "contender": seconds,
                             **{str(need): cache.info[need].pop("seconds_here", 0.0) for need in contender.needs
                                if need in cache.info}},
                    b_indices_sha256=b_rows)
                base_seconds = 0.0  # the baseline's time is counted once, with its first run
                append_record(out, record)
                done.add(record.id)
                advance(record.id)


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

    Times are each seed's share of the stack's. Divergence is per seed: a seed whose model A (or
    encoder) diverged gets the runs built on it recorded as diverged, as unstacked.
    """

    def __init__(self, keys: list[RunKey], cfg: Config, chosen: tuple[str, ...], study_dir: Path, done: set[str]):
        self.keys, self.cfg, self.chosen, self.study_dir, self.done = keys, cfg, chosen, study_dir, done
        self.caches: dict[tuple, Cache] = {}
        self.made: dict[tuple, Any] = {}  # (what, seed) -> what that seed's group will take
        self.said: set[str] = set()  # the contenders whose fallback to one seed at a time was said

    def takes(self, contender) -> bool:
        """Whether `contender` stacks; where it cannot, say so once, and `_run_group` trains it unstacked."""
        if contender.stack_unsupported is None:
            return True
        if contender.name not in self.said:
            self.said.add(contender.name)
            warnings.warn(f"study.stack: {contender.name} trains one seed at a time, since "
                          f"{contender.stack_unsupported}", stacklevel=2)
        return False

    def _seeds(self, keep) -> list[RunKey]:
        """The first key of each seed with a key that `keep` accepts, in seed order."""
        return list({k.seed: k for k in reversed(self.keys) if keep(k)}.values())[::-1]

    def cache(self, key: RunKey, split) -> Cache:
        if (key.seed, key.pair) not in self.caches:
            self.caches[key.seed, key.pair] = Cache(self.study_dir, key.config(self.cfg), split, key.pair, key.seed,
                                                     train_a=lambda: self._model_a(key, split))
        return self.caches[key.seed, key.pair]

    def _model_a(self, asking: RunKey, split):
        tag = ("model_a", asking.pair)
        if (tag, asking.seed) not in self.made:
            needs_a = {c for c in self.chosen if MODEL_A in needs_of(contenders.get(c))}
            peers = [k for k in self._seeds(lambda k: k.pair == asking.pair and any(
                k.run_id(c) not in self.done for c in needs_a)) if not self.cache(k, split).has("model_a")]
            peers = peers if any(k.seed == asking.seed for k in peers) else [asking, *peers]
            started = time.perf_counter()
            try:
                made = train_models_a([k.config(self.cfg) for k in peers], split)
            except DivergedError as e:  # one seed alone raises, as unstacked
                made = [e]
            share = (time.perf_counter() - started) / len(peers)
            for k, outcome in zip(peers, made):
                self.made[tag, k.seed] = outcome if isinstance(outcome, BaseException) else (*outcome, share)
        return _raised(self.made.pop((tag, asking.seed)))

    def baseline(self, asking: RunKey, split) -> tuple[dict, float]:
        tag = ("baseline", *asking.draw_group)  # the seeds of one stack train on the same images
        if (tag, asking.seed) not in self.made:
            peers = self._seeds(lambda k: k.draw_group == asking.draw_group)
            self._fit(contenders.get("baseline"), tag, peers, {k.seed: None for k in peers}, split)
        return self.made.pop((tag, asking.seed))

    def contender(self, asking: RunKey, contender, split) -> tuple[dict, float]:
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
                    self.made[tag, k.seed] = (_scores(lambda: _raised(failure), split), 0.0)
            self._fit(contender, tag, [k for k in peers if k.seed in bases], bases, split)
        return self.made.pop((tag, asking.seed))

    def _fit(self, contender, tag: tuple, peers: list[RunKey], bases: dict, split) -> None:
        """`contender` for every seed of `peers` at once, each on its base; keep each seed's scores."""
        if not peers:
            return
        started = time.perf_counter()
        made = contender.fit_seeds([k.config(self.cfg) for k in peers], split, [bases[k.seed] for k in peers],
                                   Reporter(quiet=True))
        share = round((time.perf_counter() - started) / len(peers), 2)
        for k, outcome in zip(peers, made):
            self.made[tag, k.seed] = (_scores(lambda: _raised(outcome), split), share)

