"""The grid: its points (`RunKey`), their order, and how shards deal them out."""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass

from fmtransfer import contenders
from fmtransfer.config import LR_PRESETS, Config, check_unfreeze
from fmtransfer.errors import ConfigError


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


def grid(cfg: Config) -> list[RunKey]:
    """Every grid point of the study, those sharing model A next to each other."""
    s = cfg.study
    return [RunKey(seed, tuple(pair), size, reuse, preset)
            for seed, pair, size, reuse, preset
            in itertools.product(cfg.study_seeds, cfg.study_pairs, cfg.study_sizes, s.reuse_layers, s.presets)]


def study_contenders(cfg: Config) -> tuple[str, ...]:
    """The contenders a study pairs against the baseline (every selected one but the baseline)."""
    return tuple(c for c in contenders.select(cfg) if c != "baseline")


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

