"""`fmtransfer study`: is a gain real? A grid of complete experiments, and its statistics.

A *run* is one contender at one point of the grid: seed x task-B class pair x task-B training
size x reuse depth x learning-rate preset, paired with the baseline of the same seed, pair and
size (same split, same seed, same test images). A *cell* is every run sharing all but the seed;
its statistics are paired over seeds.

What runs share is made once and kept in the study directory: model A per (seed, pair), each
pretrained encoder per seed (pretraining never sees labels, so it does not depend on the pair),
the baseline per (seed, pair, size). Each finished run is appended as one JSON line, so an
interrupted study resumes where it stopped. `shard` gives each job of an array every N-th (seed,
pair) group, written to its own results file; `report` merges them.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fmtransfer import contenders
from fmtransfer.config import LR_PRESETS, Config, check_unfreeze, flatten, merge
from fmtransfer.errors import ConfigError, DataError, DivergedError, FmtError, UsageError
from fmtransfer.pipeline import error_rate_ratio
from fmtransfer.report import Reporter, figures, save_figure
from fmtransfer.io import fingerprint, locked, write_text_atomic

STUDY_JSON = "study.json"
BOOK = {"pair": (5, 6), "b_train_size": 200, "reuse_layers": "all", "preset": "book",
        "baseline": 0.9705, "transfer": 0.9925}  # Hands-On ML 2nd ed., 11.2.1


@dataclass(frozen=True)
class RunKey:
    """A grid point; each selected contender is one run there."""

    seed: int
    pair: tuple[int, int]
    b_train_size: int
    reuse_layers: int | str
    preset: str

    @property
    def id(self) -> str:
        return (f"seed{self.seed}-pair{self.pair[0]}v{self.pair[1]}-n{self.b_train_size}"
                f"-reuse{self.reuse_layers}-{self.preset}")

    def run_id(self, contender: str) -> str:
        return f"{self.id}-{contender}"

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


@dataclass
class Cell:
    """The paired statistics of one contender against the baseline over the seeds of one cell."""

    contender: str
    title: str
    pair: list[int]
    b_train_size: int
    reuse_layers: int | str
    preset: str
    seeds: list[int]
    n: int
    baseline_mean: float
    baseline_std: float | None
    transfer_mean: float  # the contender's mean test accuracy
    transfer_std: float | None
    mean_difference: float
    ci95: list[float] | None
    p_value: float | None
    error_rate_ratio: float
    wins: int
    ties: int
    losses: int
    diverged: int = 0  # runs of the contender that diverged, counted at chance accuracy
    baseline_diverged: int = 0
    p_holm: float | None = None  # p_value corrected for the contenders compared in the same setting
    linear_probe: float | None = None  # mean test-B accuracy of the probe on its pretrained features
    baseline_accuracies: list[float] = field(default_factory=list)  # per seed, in `seeds` order
    accuracies: list[float] = field(default_factory=list)  # the contender's, per seed
    book: dict | None = None

    @property
    def setting(self) -> tuple:
        """(pair, size, reuse, preset): the cells of one setting share their baseline runs."""
        return tuple(self.pair), self.b_train_size, str(self.reuse_layers), self.preset

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if d["book"] is None:
            del d["book"]
        return d


@dataclass
class StudyResult:
    """Every finished run of a study directory, summarised per cell."""

    study: str
    runs_finished: int
    runs_in_grid: int
    cells: list[Cell]
    config: dict
    plots: list[str] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)  # results lines left out, by reason

    def cell(self, contender: str = "transfer", **axes) -> Cell:
        """The first cell of `contender` matching `axes` (pair=(5, 6), b_train_size=200, ...)."""
        for c in self.cells:
            if c.contender == contender and all(
                    (list(v) if isinstance(v, tuple) else v) == getattr(c, k) for k, v in axes.items()):
                return c
        raise KeyError(f"no cell for {contender} with {axes}")

    def to_dict(self) -> dict[str, Any]:
        d = {"study": self.study, "runs_finished": self.runs_finished, "runs_in_grid": self.runs_in_grid,
             "cells": [c.to_dict() for c in self.cells], "config": self.config, "skipped": self.skipped}
        if self.plots:
            d["plots"] = self.plots
        return d


def grid(cfg: Config) -> list[RunKey]:
    """Every grid point of the study, those sharing model A next to each other."""
    s = cfg.study
    return [RunKey(seed, tuple(pair), size, reuse, preset)
            for seed, pair, size, reuse, preset
            in itertools.product(cfg.study_seeds, cfg.study_pairs, cfg.study_sizes, s.reuse_layers, s.presets)]


def study_contenders(cfg: Config) -> tuple[str, ...]:
    """The contenders a study pairs against the baseline (every selected one but the baseline)."""
    return tuple(c for c in cfg.selected_contenders if c != "baseline")


def check_grid(cfg: Config) -> None:
    """Settings every run of the grid must accept: `top:K` fits every reuse depth."""
    for reuse in cfg.study.reuse_layers:
        check_unfreeze(cfg.transfer, reuse, cfg.model.blocks)


def parse_shard(text: str | None, environ: dict | None = None) -> tuple[int, int]:
    """`I/N` (I counted from 0, as Slurm array and Kubernetes indexed-job indices are) -> (I, N).

    `auto` takes both from a Slurm job array (SLURM_ARRAY_TASK_ID less SLURM_ARRAY_TASK_MIN, and
    SLURM_ARRAY_TASK_COUNT); `auto/N` takes I from a Kubernetes Indexed Job's JOB_COMPLETION_INDEX
    (or Slurm's) and N as given.
    """
    if not text:
        return 0, 1
    if text == "auto" or text.startswith("auto/"):
        text = _shard_from_environment(text, os.environ if environ is None else environ)
    head, _, tail = text.partition("/")
    if not (head.isdigit() and tail.isdigit()) or int(tail) < 1 or int(head) >= int(tail):
        raise ConfigError("shard", f"expected I/N with 0 <= I < N (e.g. 0/4), got {text!r}")
    return int(head), int(tail)


def _shard_from_environment(text: str, env) -> str:
    count = text.partition("/")[2]
    if "SLURM_ARRAY_TASK_ID" in env:
        index = int(env["SLURM_ARRAY_TASK_ID"]) - int(env.get("SLURM_ARRAY_TASK_MIN", 0))
        count = count or env.get("SLURM_ARRAY_TASK_COUNT", "")
        if not count:
            raise ConfigError("shard", "SLURM_ARRAY_TASK_COUNT is not set; give the count: auto/N")
        return f"{index}/{count}"
    if "JOB_COMPLETION_INDEX" in env:
        if not count:
            raise ConfigError("shard", "a Kubernetes Indexed Job does not say how many shards there are; "
                                       "give the Job's completions: auto/N")
        return f"{env['JOB_COMPLETION_INDEX']}/{count}"
    raise ConfigError("shard", "auto needs a Slurm job array (SLURM_ARRAY_TASK_ID) or a Kubernetes Indexed "
                               "Job (JOB_COMPLETION_INDEX); outside one, give I/N")


def shard(keys: list[RunKey], index: int, count: int) -> list[RunKey]:
    """The index-th of `count` disjoint slices: whole (seed, pair) groups, dealt round-robin."""
    groups = list(dict.fromkeys(k.group for k in keys))
    mine = {g for i, g in enumerate(groups) if i % count == index}
    return [k for k in keys if k.group in mine]


def settings_fingerprint(cfg: Config) -> str:
    """What every run of a study shares: the settings that are not the grid's axes.

    Pretraining settings are fingerprinted apart (`pretrain_fingerprint`), so a study of
    transfer alone can later take pretraining contenders in.
    """
    d = cfg.to_dict()
    # A key added after 0.2.0 counts only away from its default, so older studies still resume.
    model = {k: v for k, v in d["model"].items() if (k, v) != ("initializer", "glorot_uniform")}
    shared = {"batch_size": d["batch_size"], "model": model, "train_a": d["train_a"], "baseline": d["baseline"],
              "data": {k: d["data"][k] for k in ("valid_size", "verify_checksums")
                       + (("valid_from",) if d["data"]["valid_from"] != "first" else ())},
              "transfer": {k: d["transfer"][k] for k in ("freeze_epochs", "fine_tune_epochs", "unfreeze")}}
    return fingerprint(shared)


def run_fingerprint(cfg: Config, contender: str) -> str:
    """What a results line carries: the settings its run depended on beyond the grid's axes
    (pretraining's too, for a contender built on a pretrained encoder), so a line made with other
    settings is never mixed in, whatever study.json says."""
    c = contenders.get(contender) if contender in contenders.names() else None
    pretrained = c is not None and any(n.startswith("encoder:") for n in c.needs)
    own = own_sections_fingerprint(cfg, contender)
    return fingerprint(settings_fingerprint(cfg), pretrain_fingerprint(cfg) if pretrained else None,
                       *([own] if own else []))


def own_sections_fingerprint(cfg: Config, contender: str) -> str | None:
    """The settings of a contender's own sections ([gan], [l2_sp], ...), None if it has none."""
    own = contenders.get(contender).own_sections() if contender in contenders.names() else ()
    d = cfg.to_dict()
    return fingerprint({s: d[s] for s in own}) if own else None


def pretrain_fingerprint(cfg: Config) -> str:
    return fingerprint({k: v for k, v in cfg.pretrain.to_dict().items() if k != "method"})


def encoder_fingerprint(cfg: Config, method: str) -> str:
    """What a cached encoder of `method` was made with: pretraining's settings and its own section's."""
    own = own_sections_fingerprint(cfg, method)
    return fingerprint(pretrain_fingerprint(cfg), *([own] if own else []))


def results_path(study_dir: Path, index: int, count: int) -> Path:
    return study_dir / ("results.jsonl" if count == 1 else f"results-{index}of{count}.jsonl")


def _normalised(record: Any) -> Any:
    """A results line of an older fmtransfer (transfer only, no contender field) in today's form."""
    if isinstance(record, dict) and "contender" not in record and isinstance(record.get("transfer"), dict) \
            and isinstance(record.get("id"), str):
        record = {**record, "contender": "transfer", "result": record["transfer"], "id": f"{record['id']}-transfer"}
    return record


def _problem(record: Any) -> str | None:
    """Why a results line is not a finished run, or None if it is one."""
    if not isinstance(record, dict):
        return "not a JSON object"

    def accuracy(part: Any) -> bool:
        return (isinstance(part, dict) and isinstance(part.get("test_accuracy"), (int, float))
                and not isinstance(part.get("test_accuracy"), bool) and 0 <= part["test_accuracy"] <= 1)

    checks = [("id", lambda v: isinstance(v, str)),
              ("seed", lambda v: isinstance(v, int) and not isinstance(v, bool)),
              ("pair", lambda v: isinstance(v, list) and len(v) == 2 and all(isinstance(k, int) for k in v)),
              ("b_train_size", lambda v: isinstance(v, int) and not isinstance(v, bool)),
              ("reuse_layers", lambda v: v == "all" or (isinstance(v, int) and not isinstance(v, bool))),
              ("preset", lambda v: v in LR_PRESETS), ("contender", lambda v: isinstance(v, str)),
              ("baseline", accuracy), ("result", accuracy)]
    for key, ok in checks:
        if key not in record or not ok(record[key]):
            return f"a bad or missing {key!r}"
    return None


def read_results(study_dir: Path, cfg: Config | None = None) -> tuple[list[dict], dict[str, int]]:
    """Every finished run in the directory, merged over shards, and how many lines were skipped, by reason.

    A line that is not a finished run (a torn last line, a wrong shape, another type) is skipped,
    and so is one made with other settings than `cfg`'s (its `run_fingerprint`); neither can hide
    a valid record of the same run, which is looked for in every line. Lines of an older
    fmtransfer, which carry no fingerprint, are taken as they are.
    """
    found: dict[str, dict] = {}
    skipped: dict[str, int] = {}
    for path in sorted(Path(study_dir).glob("results*.jsonl")):
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            if not line.strip():
                continue
            try:
                record = _normalised(json.loads(line))
            except (json.JSONDecodeError, TypeError, KeyError):
                record = None
            reason = "unreadable JSON" if record is None else _problem(record)
            if reason is None and cfg is not None and "settings" in record \
                    and record["settings"] != run_fingerprint(cfg, record["contender"]):
                reason = "made with other settings"
            if reason is not None:
                skipped[reason] = skipped.get(reason, 0) + 1
                continue
            found.setdefault(record["id"], record)
    return list(found.values()), skipped


def load_results(study_dir: Path, cfg: Config | None = None) -> list[dict]:
    """Every finished run in the directory (see `read_results`)."""
    return read_results(study_dir, cfg)[0]


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
    meta_path = study_dir / STUDY_JSON
    meta = {"settings_fingerprint": settings_fingerprint(cfg)}
    if any(contenders.get(c).needs != ("model_a",) and contenders.get(c).needs for c in study_contenders(cfg)):
        meta["pretrain_fingerprint"] = pretrain_fingerprint(cfg)
    d = cfg.to_dict()
    owned = {f"{section}_fingerprint": fingerprint(d[section])
             for c in study_contenders(cfg) for section in contenders.get(c).own_sections()}
    meta.update(owned)
    if meta_path.is_file():
        old = _read_meta(study_dir)
        checks = [("settings_fingerprint", "epochs, model, ..."), ("pretrain_fingerprint", "pretraining"),
                  *((key, f"[{key.removesuffix('_fingerprint')}]") for key in owned)]
        for key, what in checks:
            if key in old and key in meta and old[key] != meta[key]:
                raise UsageError(f"{study_dir} holds a study made with other settings ({what}); "
                                 "use another directory, or the same settings", path=study_dir)
            if key in old:
                meta.setdefault(key, old[key])
    # The grid's axes may grow between invocations; the latest grid is the one to report against.
    study_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(meta_path, json.dumps({**meta, "config": cfg.to_dict()}, indent=2))


def _read_meta(study_dir: Path) -> dict:
    path = study_dir / STUDY_JSON
    if not path.is_file():
        raise UsageError(f"{study_dir} is not a study directory (no {STUDY_JSON}); "
                         f"run `fmtransfer study --run {study_dir}` first", path=study_dir)
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(meta, dict) and isinstance(meta.get("config"), dict):
            return meta
    except (OSError, ValueError):
        pass
    raise DataError(f"{path} is unreadable; delete it and run the study again (finished runs are kept)", path=path)


def _config_from(d: dict, study_dir: Path | None = None) -> Config:
    """A study's stored config, keeping only the keys this version knows."""
    known = flatten(Config().to_dict())
    try:
        return merge([(None, {k: v for k, v in flatten(d).items() if k in known})])
    except ConfigError as e:
        where = Path(study_dir or ".") / STUDY_JSON
        raise DataError(f"{where}: unusable settings ({e}); delete it and run the study again "
                        "(finished runs are kept, and checked against the new settings)", path=where) from None


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
            collects results: it never imports TensorFlow or reads the dataset.
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
    # One unsharded study per directory; the shards of an array side by side, one process each.
    with locked(study_dir, shared=count > 1), \
            (locked(study_dir, f".lock-{index}of{count}") if count > 1 else contextlib.nullcontext()):
        return _run_study(cfg, study_dir, index, count, reporter, jobs)


def parse_jobs(jobs: int | str, arch: str) -> int:
    """A worker count: N >= 1, or "auto": the cores divided by the threads one run uses."""
    from fmtransfer import runtime

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


def _run_study(cfg: Config, study_dir: Path, index: int, count: int, reporter: Reporter, jobs: int = 1) -> StudyResult:
    _check_study_dir(cfg, study_dir)
    chosen = study_contenders(cfg)
    keys = shard(grid(cfg), index, count)
    done = {r["id"] for r in load_results(study_dir, cfg)}
    total = len(keys) * len(chosen)
    todo = [k for k in keys if any(k.run_id(c) not in done for c in chosen)]
    out = results_path(study_dir, index, count)
    finished = sum(k.run_id(c) in done for k in keys for c in chosen)
    reporter.info(f"study {study_dir}: shard {index}/{count} has {total} runs, {finished} already finished, "
                  f"{total - finished} to run")
    if todo:
        # Whole seeds go to one worker: model A and the encoders of a seed are made once; a
        # stack's worth of seeds at once, so that the worker can train them as one graph.
        if jobs == 1:  # TensorFlow is needed here, and first set up (asking it about a GPU starts it)
            from fmtransfer import runtime

            runtime.ensure_setup(cfg.model.arch)
        seeds = [[*unit] for _, unit in itertools.groupby(todo, key=lambda k: k.seed)]
        per_unit = _seeds_per_unit(cfg.study.stack, jobs, len(seeds))
        units = [[k for unit in seeds[i:i + per_unit] for k in unit] for i in range(0, len(seeds), per_unit)]
        with reporter.grid("study", total=total, done=finished) as advance:
            if jobs == 1:
                raw = _checked_data(cfg)
                for unit in units:
                    _run_unit(unit, cfg, chosen, raw, study_dir, out, done, advance, per_unit)
            else:
                _run_workers(units, min(jobs, len(units)), cfg, chosen, study_dir, out, done, advance)
    return report(study_dir)


def _checked_data(cfg: Config):
    """The dataset, with every pair's split made once: fail now, not hours into the grid."""
    from fmtransfer import data

    raw = data.load(cfg.data)
    for pair in cfg.study_pairs:
        data.make_split(raw, pair, max(cfg.study_sizes), cfg.data.valid_size, cfg.data.valid_from)
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


def _run_workers(units, jobs: int, cfg: Config, chosen, study_dir: Path, out: Path, done: set[str], advance) -> None:
    """Deal whole seeds to `jobs` spawned processes; each appends to its own results file, and
    tells this one each run it finished, for the progress bar over the whole grid."""
    import multiprocessing

    from fmtransfer import runtime

    ctx = multiprocessing.get_context("spawn")  # not fork: TensorFlow is running here
    tasks, events = ctx.Queue(), ctx.Queue()
    for unit in units:
        tasks.put(unit)
    for _ in range(jobs):
        tasks.put(None)
    # This process never set TensorFlow up: the workers apply the choice made for it.
    chosen_setup = runtime._configured or runtime._pending or {"arch": cfg.model.arch}
    setup = {**chosen_setup, "threads": runtime.threads(cfg.model.arch)}
    workers = [ctx.Process(target=_worker, daemon=True,
                           args=(cfg, chosen, str(study_dir), str(out.with_name(f"{out.stem}-job{k}.jsonl")),
                                 sorted(done), setup, tasks, events)) for k in range(jobs)]
    for w in workers:
        w.start()
    try:
        running = jobs
        while running:
            kind, payload = events.get()
            if kind == "run":
                advance(payload)
            elif kind == "done":
                running -= 1
            else:
                name, message, code, key = payload
                if key is not None:  # a setting the data refuses: said as the serial study says it
                    raise ConfigError(*key)
                error = (UsageError if code == 2 else FmtError)(f"a study worker failed: {message}")
                raise error if name != "DivergedError" else FmtError(message)
        for w in workers:
            w.join()
    finally:
        for w in workers:  # on an error, Ctrl-C or SIGTERM here: no worker outlives the study
            if w.is_alive():
                w.terminate()
                w.join(timeout=30)


def _worker(cfg: Config, chosen, study_dir: str, out: str, done: list[str], setup: dict, tasks, events) -> None:
    from fmtransfer import runtime

    try:
        runtime.setup(**setup)
        raw = _checked_data(cfg)
        stack = resolve_stack(cfg.study.stack)
        finished = set(done)
        while (unit := tasks.get()) is not None:
            _run_unit(unit, cfg, chosen, raw, Path(study_dir), Path(out), finished,
                      lambda run_id: events.put(("run", run_id)), stack)
        events.put(("done", None))
    except BaseException as e:  # reported to the parent, which stops the study with one line
        key = (e.key, e.problem) if isinstance(e, ConfigError) else None
        events.put(("error", (type(e).__name__, str(e) or type(e).__name__, getattr(e, "exit_code", 1), key)))


class _Cache:
    """Model A and pretrained encoders of a study, saved in its directory and loaded on resume."""

    def __init__(self, study_dir: Path, cfg: Config, split, pair: tuple[int, int], seed: int, train_a=None):
        self.dir, self.cfg, self.split, self.pair, self.seed = study_dir / "models", cfg, split, pair, seed
        self.info: dict[str, dict] = {}
        self.models: dict[str, Any] = {}
        # () -> (model A, ModelAResult, seconds or None); a stack trains its seeds' model A together.
        self.train_a = train_a or (lambda: (*_train_model_a(cfg, split), None))

    def path(self, need: str) -> Path:
        if need == "model_a":
            return self.dir / f"a-seed{self.seed}-pair{self.pair[0]}v{self.pair[1]}.keras"
        return self.dir / f"encoder-{need.partition(':')[2]}-seed{self.seed}.keras"

    def has(self, need: str) -> bool:
        """Whether `need` is made already (in memory or saved), so asking for it trains nothing."""
        return need in self.models or self._saved(need) is not None

    def _saved(self, need: str) -> dict | None:
        """The saved file's record, or None if there is none or it was made with other settings.

        Model A's settings are the whole study's, which the directory's fingerprints guard. An
        encoder's record carries its pretraining settings (`encoder_fingerprint`), so an encoder
        made before a method's section existed or changed is trained again, not reused. A record
        without one is from fmtransfer 0.3.0 or older; it is kept only for a method with no own
        section, whose settings the directory's pretraining fingerprint guarded when it was made.
        """
        path = self.path(need)
        meta = path.with_suffix(".json")
        if not (path.is_file() and meta.is_file()):
            return None
        try:
            info = json.loads(meta.read_text(encoding="utf-8"))
            if not isinstance(info, dict):
                raise ValueError("not a JSON object")
        except ValueError:
            raise DataError(f"{meta} is unreadable; delete it and {path.name}, and run the study again "
                            "(they are retrained)", path=meta) from None
        if need != "model_a":
            method = need.partition(":")[2]
            if "settings" in info:
                return info if info["settings"] == encoder_fingerprint(self.cfg, method) else None
            if contenders.get(method).own_sections():
                return None
        return info

    def __getitem__(self, need: str):
        from fmtransfer import models, pretraining

        if need in self.models:
            if isinstance(self.models[need], DivergedError):
                raise self.models[need]
            return self.models[need]
        path = self.path(need)
        meta = path.with_suffix(".json")
        started = time.perf_counter()
        info = self._saved(need)
        if info is not None:
            model = models.load_model(path, remedy=f"delete it and {meta.name}, and run the study again "
                                                   "(they are retrained)")
        else:
            try:
                if need == "model_a":
                    model, a, spent = self.train_a()
                    info = {"test_accuracy": a.test_accuracy, "seed": self.seed, "pair": list(self.pair)}
                    if spent is not None:  # this seed's share of a stack's time
                        started = time.perf_counter() - spent
                else:
                    method = need.partition(":")[2]
                    made = pretraining.pretrain(self.cfg, self.split, method)
                    model = made.encoder
                    info = {**made.scores, "seed": self.seed, "seconds": made.seconds,
                            "settings": encoder_fingerprint(self.cfg, method)}
            except DivergedError as e:  # every run built on it diverged too; do not train it again
                self.models[need] = e
                raise
            # Drop a stale record first: until the new one is written, a crash leaves a model file
            # with no record, which is made again rather than trusted.
            meta.unlink(missing_ok=True)
            models.save_model(model, path)
            write_text_atomic(meta, json.dumps(info))
        self.models[need], self.info[need] = model, {**info, "seconds_here": round(time.perf_counter() - started, 2)}
        return model


def _train_model_a(cfg: Config, split):
    from fmtransfer import pipeline

    return pipeline.train_model_a(cfg, split)


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
    """The runs sharing one (seed, pair): model A and encoders made or loaded once, each baseline
    once per size, then every unfinished contender. `together`: the stack this seed trains in."""
    from fmtransfer import data

    first = runs[0]
    split = data.make_split(raw, first.pair, max(r.b_train_size for r in runs), cfg.data.valid_size,
                            cfg.data.valid_from)
    cache = together.cache(first, split) if together else _Cache(study_dir, first.config(cfg), split, first.pair,
                                                                 first.seed)
    quiet = Reporter(quiet=True)
    for size, sized in itertools.groupby(runs, key=lambda k: k.b_train_size):
        split = data.make_split(raw, first.pair, size, cfg.data.valid_size, cfg.data.valid_from)
        if together:
            base, base_seconds = together.baseline(first, size, split)
        else:
            started = time.perf_counter()
            base = _scores(lambda: contenders.get("baseline").fit(first.config(cfg), split, {}, quiet)[1], split)
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
                record = {
                    "id": key.run_id(name), "seed": key.seed, "pair": list(key.pair),
                    "b_train_size": key.b_train_size, "reuse_layers": key.reuse_layers, "preset": key.preset,
                    "contender": name, "learning_rates": list(LR_PRESETS[key.preset]),
                    "settings": run_fingerprint(cfg, name),
                    "baseline": base, "result": result,
                    "built_on": {need: {k: v for k, v in cache.info[need].items() if k != "seconds_here"}
                                 for need in contender.needs if need in cache.info},
                    "seconds": {"baseline": base_seconds, "contender": seconds,
                                **{need: cache.info[need].pop("seconds_here", 0.0) for need in contender.needs
                                   if need in cache.info}},
                    "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
                }
                base_seconds = 0.0  # the baseline's time is counted once, with its first run
                append_result(out, record)
                done.add(record["id"])
                advance(record["id"])


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
        self.caches: dict[tuple, _Cache] = {}
        self.made: dict[tuple, Any] = {}  # (what, seed) -> what that seed's group will take
        self.said: set[str] = set()  # the contenders whose fallback to one seed at a time was said

    def takes(self, contender) -> bool:
        """Whether `contender` stacks; where it cannot, say so once, and `_run_group` trains it unstacked."""
        if contender.stack_unsupported is None:
            return True
        if contender.name not in self.said:
            import warnings

            self.said.add(contender.name)
            warnings.warn(f"study.stack: {contender.name} trains one seed at a time, since "
                          f"{contender.stack_unsupported}", stacklevel=2)
        return False

    def _seeds(self, keep) -> list[RunKey]:
        """The first key of each seed with a key that `keep` accepts, in seed order."""
        return list({k.seed: k for k in reversed(self.keys) if keep(k)}.values())[::-1]

    def cache(self, key: RunKey, split) -> _Cache:
        if (key.seed, key.pair) not in self.caches:
            self.caches[key.seed, key.pair] = _Cache(self.study_dir, key.config(self.cfg), split, key.pair, key.seed,
                                                     train_a=lambda: self._model_a(key, split))
        return self.caches[key.seed, key.pair]

    def _model_a(self, asking: RunKey, split):
        from fmtransfer import pipeline

        tag = ("model_a", asking.pair)
        if (tag, asking.seed) not in self.made:
            needs_a = {c for c in self.chosen if "model_a" in contenders.get(c).needs}
            peers = [k for k in self._seeds(lambda k: k.pair == asking.pair and any(
                k.run_id(c) not in self.done for c in needs_a)) if not self.cache(k, split).has("model_a")]
            peers = peers if any(k.seed == asking.seed for k in peers) else [asking, *peers]
            started = time.perf_counter()
            try:
                made = pipeline.train_models_a([k.config(self.cfg) for k in peers], split)
            except DivergedError as e:  # one seed alone raises, as unstacked
                made = [e]
            share = (time.perf_counter() - started) / len(peers)
            for k, outcome in zip(peers, made):
                self.made[tag, k.seed] = outcome if isinstance(outcome, BaseException) else (*outcome, share)
        return _raised(self.made.pop((tag, asking.seed)))

    def baseline(self, asking: RunKey, size: int, split) -> tuple[dict, float]:
        tag = ("baseline", asking.pair, size)
        if (tag, asking.seed) not in self.made:
            peers = self._seeds(lambda k: (k.pair, k.b_train_size) == (asking.pair, size))
            self._fit(contenders.get("baseline"), tag, peers, {k.seed: None for k in peers}, split)
        return self.made.pop((tag, asking.seed))

    def contender(self, asking: RunKey, contender, split) -> tuple[dict, float]:
        point = (asking.pair, asking.b_train_size, asking.reuse_layers, asking.preset)
        tag = (contender.name, *point)
        if (tag, asking.seed) not in self.made:
            peers = self._seeds(lambda k: (k.pair, k.b_train_size, k.reuse_layers, k.preset) == point
                                and k.run_id(contender.name) not in self.done)
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


def report(study_dir: str | Path) -> StudyResult:
    """Merge every finished run in `study_dir` and summarise each cell, per contender."""
    study_dir = Path(study_dir)
    meta = _read_meta(study_dir)
    config = _config_from(meta["config"], study_dir)
    results, skipped = read_results(study_dir, config)
    cells: dict[tuple, list[dict]] = {}
    order = {name: i for i, name in enumerate(contenders.names())}
    for r in sorted(results, key=lambda r: (r["pair"], r["b_train_size"], str(r["reuse_layers"]), r["preset"],
                                            order.get(r["contender"], 99), r["contender"], r["seed"])):
        cells.setdefault((tuple(r["pair"]), r["b_train_size"], r["reuse_layers"], r["preset"], r["contender"]),
                         []).append(r)
    summary = []
    book_settings = settings_fingerprint(config) == settings_fingerprint(Config())  # the book's epochs, model...
    for (pair, size, reuse, preset, name), runs in cells.items():
        title = contenders.get(name).title if name in contenders.names() else name
        base = [r["baseline"]["test_accuracy"] for r in runs]
        mine = [r["result"]["test_accuracy"] for r in runs]
        cell = Cell(contender=name, title=title, pair=list(pair), b_train_size=size, reuse_layers=reuse, preset=preset,
                    seeds=[r["seed"] for r in runs], **paired_stats(base, mine), baseline_accuracies=base,
                    accuracies=mine, diverged=sum("diverged" in r["result"] for r in runs),
                    baseline_diverged=sum("diverged" in r["baseline"] for r in runs))
        probes = [r["result"]["linear_probe"] for r in runs if isinstance(r["result"].get("linear_probe"), float)]
        cell.linear_probe = float(np.mean(probes)) if probes else None
        if name == "transfer" and book_settings and (pair, size, reuse, preset) == (
                BOOK["pair"], BOOK["b_train_size"], BOOK["reuse_layers"], BOOK["preset"]):
            cell.book = book_placement(runs)
        summary.append(cell)
    holm(summary)
    in_grid = {k.run_id(c) for k in grid(config) for c in study_contenders(config)}
    return StudyResult(str(study_dir), len(results), len(in_grid | {r["id"] for r in results}), summary,
                       meta["config"], skipped=skipped)


def holm(cells: list[Cell]) -> None:
    """Set each cell's `p_holm`: its p-value corrected by Holm's step-down method over the
    contenders compared in the same setting (pair, size, reuse, preset).

    Comparing ten contenders with the same baseline makes ten tests: at 5% each, one in two
    leaderboards would show a "significant" contender by chance alone. Holm's method keeps that
    family-wise error at 5% under any dependence between the tests (they share the baseline, so
    they are dependent), and is uniformly more powerful than Bonferroni's. Controlling the false
    discovery rate instead (Benjamini-Hochberg) would suit a screen of hundreds of tests; here
    the question is which of a few claims hold, so no false claim at all is the right guard.
    """
    families: dict[tuple, list[Cell]] = {}
    for c in cells:
        if c.p_value is not None:
            families.setdefault(c.setting, []).append(c)
    for family in families.values():
        m, running = len(family), 0.0
        for rank, c in enumerate(sorted(family, key=lambda c: c.p_value)):
            running = max(running, min(1.0, (m - rank) * c.p_value))
            c.p_holm = running


def leaderboard(result: "StudyResult") -> list[Cell]:
    """The cells ranked within each setting by mean paired gain over the baseline, best first."""
    return sorted(result.cells, key=lambda c: (*c.setting, -c.mean_difference))


def markdown(result: "StudyResult") -> str:
    """The leaderboard as a Markdown table, one per setting, ready for a README."""
    out, setting = [], None
    ranked = leaderboard(result)
    for c in ranked:
        if c.setting != setting:
            setting = c.setting
            # The baseline's line: from the contender with the most seeds, which has all of them.
            base = max((d for d in ranked if d.setting == setting), key=lambda d: d.n)
            out += ["", f"Classes {c.pair[0]} vs {c.pair[1]}, {c.b_train_size} images, reuse {c.reuse_layers}, "
                        f"{c.preset} rates; baseline {100 * base.baseline_mean:.2f}% ± "
                        f"{100 * (base.baseline_std or 0):.2f} over {base.n} seeds", "",
                    "| rank | contender | accuracy % | gain, points (95% CI) | W/T/L | p | p (Holm) | linear probe % |",
                    "|---:|---|---:|---|---:|---:|---:|---:|"]
            rank = 0
        rank += 1
        ci = f" ({100 * c.ci95[0]:+.2f}, {100 * c.ci95[1]:+.2f})" if c.ci95 else ""
        probe = "-" if c.linear_probe is None else f"{100 * c.linear_probe:.2f}"
        out.append(f"| {rank} | {c.title} | {100 * c.transfer_mean:.2f} ± {100 * (c.transfer_std or 0):.2f} | "
                   f"{100 * c.mean_difference:+.2f}{ci} | {c.wins}/{c.ties}/{c.losses} | "
                   f"{_p(c.p_value)} | {_p(c.p_holm)} | {probe} |")
    return "\n".join(out).strip() + "\n"


def _p(p: float | None) -> str:
    return "-" if p is None else f"{p:.2g}"


def book_placement(runs: list[dict]) -> dict:
    """Where the book's published 97.05% -> 99.25% falls among this cell's seeds."""
    book_gain = BOOK["transfer"] - BOOK["baseline"]
    gains = np.array([r["result"]["test_accuracy"] - r["baseline"]["test_accuracy"] for r in runs])
    ratios = np.array([error_rate_ratio(r["baseline"]["test_accuracy"], r["result"]["test_accuracy"]) for r in runs])
    book_ratio = error_rate_ratio(BOOK["baseline"], BOOK["transfer"])
    return {"baseline": BOOK["baseline"], "transfer": BOOK["transfer"], "gain": book_gain,
            "error_rate_ratio": book_ratio,
            "seeds_with_gain_at_least_book": int((gains >= book_gain - 1e-9).sum()),
            "seeds_with_ratio_at_least_book": int((ratios >= book_ratio - 1e-9).sum()),
            "n": len(runs)}


# ----------------------------------------------------------------------------- plots

def plot(study_dir: Path, summary: StudyResult) -> list[Path]:
    """Per cell, the paired accuracies seed by seed; the mean gain against task-B size; and, with
    more than one contender, every contender's gain with its confidence interval."""
    figs = figures("--plots")
    study_dir = Path(study_dir)
    out_dir = study_dir / "plots"
    out_dir.mkdir(exist_ok=True)
    results = load_results(study_dir, _config_from(summary.config))
    written = []
    for cell in (c.to_dict() for c in summary.cells):
        runs = sorted((r for r in results if (r["pair"], r["b_train_size"], r["reuse_layers"], r["preset"],
                                              r["contender"]) == (cell["pair"], cell["b_train_size"],
                                                                  cell["reuse_layers"], cell["preset"],
                                                                  cell["contender"])),
                      key=lambda r: r["seed"])
        fig, ax = figs.subplots(figsize=(6, 4))
        xs = np.arange(len(runs))
        base = [100 * r["baseline"]["test_accuracy"] for r in runs]
        trans = [100 * r["result"]["test_accuracy"] for r in runs]
        for x, b, t in zip(xs, base, trans):
            ax.plot([x, x], [b, t], color="green" if t > b else "red" if t < b else "grey", lw=1)
        ax.scatter(xs, base, label="baseline (from scratch)", marker="o", color="tab:blue", zorder=3)
        ax.scatter(xs, trans, label=cell["title"], marker="^", color="tab:orange", zorder=3)
        if "book" in cell:
            ax.axhline(100 * BOOK["baseline"], color="tab:blue", ls=":", lw=1, label="book baseline 97.05%")
            ax.axhline(100 * BOOK["transfer"], color="tab:orange", ls=":", lw=1, label="book transfer 99.25%")
        ax.set_xticks(xs, [str(r["seed"]) for r in runs], fontsize=7)
        ax.set_xlabel("seed")
        ax.set_ylabel("test B accuracy (%)")
        p = cell["p_value"]
        ax.set_title(f"{cell['title']}: classes {cell['pair'][0]} vs {cell['pair'][1]}, {cell['b_train_size']} images, "
                     f"reuse {cell['reuse_layers']}, {cell['preset']}\n"
                     f"W/T/L {cell['wins']}/{cell['ties']}/{cell['losses']}"
                     + (f", Wilcoxon p={p:.3g}" if p is not None else ""), fontsize=9)
        ax.legend(fontsize=7)
        fig.tight_layout()
        prefix = "" if cell["contender"] == "transfer" else f"{cell['contender']}-"
        path = out_dir / (f"paired-{prefix}pair{cell['pair'][0]}v{cell['pair'][1]}-n{cell['b_train_size']}"
                          f"-reuse{cell['reuse_layers']}-{cell['preset']}.png")
        save_figure(fig, path)
        written.append(path)
    fig, ax = figs.subplots(figsize=(6, 4))
    lines: dict[tuple, list[dict]] = {}
    for cell in (c.to_dict() for c in summary.cells):
        lines.setdefault((cell["title"], tuple(cell["pair"]), cell["reuse_layers"], cell["preset"]), []).append(cell)
    for (title, pair, reuse, preset), cells in lines.items():
        cells = sorted(cells, key=lambda c: c["b_train_size"])
        sizes = [c["b_train_size"] for c in cells]
        means = [100 * c["mean_difference"] for c in cells]
        lo = [100 * (c["mean_difference"] - c["ci95"][0]) if c["ci95"] else 0 for c in cells]
        hi = [100 * (c["ci95"][1] - c["mean_difference"]) if c["ci95"] else 0 for c in cells]
        ax.errorbar(sizes, means, yerr=[lo, hi], marker="o", capsize=3,
                    label=f"{title}: {pair[0]} vs {pair[1]}, reuse {reuse}, {preset}")
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("task-B training images")
    ax.set_ylabel("contender - baseline accuracy (points, mean, 95% CI)")
    ax.set_title("Gain over the baseline against task-B training size")
    ax.legend(fontsize=7)
    fig.tight_layout()
    path = out_dir / "gain-vs-size.png"
    save_figure(fig, path)
    written.append(path)
    if len({c.contender for c in summary.cells}) > 1:
        written.append(plot_contenders(out_dir, summary, figs))
    return written


def plot_contenders(out_dir: Path, summary: StudyResult, figs) -> Path:
    """The leaderboard: one row per contender, one panel per setting (pair, size, reuse, preset),
    each contender's mean gain over the baseline with its 95% CI; green or red where Holm's
    correction still finds a difference. A gain far below the others (a contender that fails)
    would squash the rest into a point: it is drawn at the panel's edge, its value written."""
    settings = sorted({c.setting for c in summary.cells})
    names = list(dict.fromkeys(c.title for c in summary.cells))
    mean_gain = {t: np.mean([c.mean_difference for c in summary.cells if c.title == t]) for t in names}
    names.sort(key=lambda t: mean_gain[t])
    los = [100 * (c.ci95[0] if c.ci95 else c.mean_difference) for c in summary.cells]
    his = [100 * (c.ci95[1] if c.ci95 else c.mean_difference) for c in summary.cells]
    left = max(min(los), -8.0)  # points: beyond it, a failing contender's row is written, not drawn
    right = max(max(his), 0.5) + 0.3
    fig, axes = figs.subplots(1, len(settings), figsize=(3.6 * len(settings) + 2.4, 0.4 * len(names) + 1.4),
                              squeeze=False, sharey=True)
    for ax, setting in zip(axes[0], settings):
        pair, size, reuse, preset = setting
        for y, title in enumerate(names):
            c = next((c for c in summary.cells if c.title == title and c.setting == setting), None)
            if c is None:
                continue
            lo, hi = (c.ci95 if c.ci95 else (c.mean_difference, c.mean_difference))
            p = c.p_holm if c.p_holm is not None else c.p_value
            colour = "tab:grey" if p is None or p >= 0.05 else "tab:green" if c.mean_difference > 0 else "tab:red"
            mean = 100 * c.mean_difference
            ax.plot([max(100 * lo, left), min(100 * hi, right)], [y, y], color=colour, lw=2)
            if mean < left:
                ax.annotate(f"{mean:+.1f}", (left, y), xytext=(3, -3), textcoords="offset points", fontsize=7,
                            color=colour)
            else:
                ax.plot(mean, y, "o", color=colour)
        ax.axvline(0, color="black", lw=0.8)
        ax.set_xlim(left - 0.3, right)
        ax.set_title(f"{pair[0]} vs {pair[1]}, n={size}, reuse {reuse}, {preset}", fontsize=8)
        ax.set_xlabel("gain, points (95% CI)", fontsize=8)
    axes[0][0].set_yticks(range(len(names)), names, fontsize=8)
    fig.suptitle("Contenders against the baseline, paired over seeds (colour: Holm-corrected p < 0.05)",
                 fontsize=9)
    fig.tight_layout()
    path = out_dir / "contenders.png"
    save_figure(fig, path)
    return path
