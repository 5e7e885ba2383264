"""One resolver of what contenders need: found in a store and checked, or made and saved there.

What a need is made from is `fingerprints.of`'s rule; a store says only whether what it holds is
that, and keeps what it is given:

- `MemoryStore`: the API's `run_experiment`; nothing outlives the call.
- `rundir.RunDirStore`: the CLI's stages. It never makes a need: a missing one is "run
  `fmtransfer train-a --run DIR` first", a stale one is refused in one line.
- `study.cache.StudyStore`: a study's models/ directory. A stale one is made again, its old record
  removed first.

Example:
    >>> resolver = Resolver(cfg, split, MemoryStore())
    >>> model_a = resolver["model_a"]          # trained now ...
    >>> resolver[MODEL_A] is model_a           # ... and kept
    True
"""

from __future__ import annotations

import time
from typing import Any, Callable, Protocol

from fmtransfer import fingerprints, pretraining
from fmtransfer.config import Config
from fmtransfer.errors import DivergedError
from fmtransfer.needs import MODEL_A, Encoder, Need, parse
from fmtransfer.report import Reporter
from fmtransfer.results import ModelAResult


class Store(Protocol):
    """Where made needs are kept, each with its record (`fingerprints.stamp`)."""

    def find(self, need: Need, made_from: dict) -> dict | None:
        """The record of the kept `need` if it is what `made_from` describes, else None: the
        resolver then makes it. A store that never makes one raises instead, saying why."""

    def load(self, need: Need, record: dict) -> Any:
        """The model `find` vouched for."""

    def save(self, need: Need, model: Any, record: dict, made_from: dict) -> dict:
        """Keep `model` with `record` stamped with `made_from`; return the stamped record."""


class MemoryStore:
    """Needs kept in this process only."""

    def __init__(self):
        self.kept: dict[Need, tuple] = {}  # need -> (model, stamped record)

    def find(self, need: Need, made_from: dict) -> dict | None:
        model, record = self.kept.get(need, (None, None))
        return record if record is not None and fingerprints.problem(record, made_from) is None else None

    def load(self, need: Need, record: dict) -> Any:
        return self.kept[need][0]

    def save(self, need: Need, model: Any, record: dict, made_from: dict) -> dict:
        record = fingerprints.stamp(record, made_from)
        self.kept[need] = (model, record)
        return record


def train_model_a(cfg: Config, split, reporter: Reporter | None = None):
    """Model A on task A's eight classes; returns (model, ModelAResult)."""
    (made,) = train_models_a([cfg], split, reporter)
    if isinstance(made, DivergedError):
        raise made
    return made


def train_models_a(cfgs: list[Config], split, reporter: Reporter | None = None) -> list:
    """`train_model_a` for each config's seed at once (stacked where the network allows it): per
    seed (model, ModelAResult) or the DivergedError that stopped it; one alone raises it. The
    configs differ in their seed only."""
    from fmtransfer import models, training

    a = cfgs[0].train_a
    n_classes = len(split.a_classes)
    made = training.train_from_scratch(cfgs, lambda cfg: models.build_model_a(cfg.model, n_classes=n_classes), a,
                                       training.MULTICLASS, (split.a_train, split.a_valid, split.a_test),
                                       reporter or Reporter(quiet=True), "model A")
    return [m if isinstance(m, DivergedError) else
            (m[0], ModelAResult(m[2]["accuracy"], m[2]["loss"], a.epochs, a.learning_rate, m[1]["history"],
                                m[1]["seconds"])) for m in made]


class Resolver:
    """The needs of contenders on one split under one config: each found or made once, then kept.

    Args:
        cfg: the settings the needs are made with (and checked against).
        split: the split they are made from; its `sha256` are the dataset files'.
        store: where they are kept (see the module's docstring).
        reporter: progress of what is made.
        train_a: () -> (model, ModelAResult, seconds or None), to make model A another way (a
            stack trains its seeds' together; seconds is this one's share).
        how: how the needs are trained beyond `cfg` (`fingerprints.How`: a study's threads, a
            seed's place in its stack), part of what they are made from.

    `info` holds each need's record (without `made_from`) and `seconds_here`, the time it took
    to load or make; `made` what making it returned (ModelAResult, pretraining.Pretrained). A
    need whose training diverged is not made again: asking for it raises the same error.
    """

    def __init__(self, cfg: Config, split, store: Store, reporter: Reporter | None = None, *,
                 train_a: Callable[[], tuple] | None = None, how: fingerprints.How = fingerprints.UNRECORDED):
        self.cfg, self.split, self.store, self.how = cfg, split, store, how
        self.reporter = reporter or Reporter(quiet=True)
        self.train_a = train_a
        self.models: dict[Need, Any] = {}  # need -> model, or the DivergedError making it raised
        self.info: dict[Need, dict] = {}
        self.made: dict[Need, Any] = {}
        self._found: dict[Need, dict | None] = {}  # need -> the store's verdict (record or None), asked once

    def made_from(self, need: "str | Need") -> dict:
        return fingerprints.of(need, self.cfg, self.split.sha256, self.how)

    def has(self, need: "str | Need") -> bool:
        """Whether `need` is at hand, in memory or in the store, so asking for it makes nothing."""
        return need in self.models or self._record(need) is not None

    def _record(self, need: Need) -> dict | None:
        need = parse(need)
        if need not in self._found:
            self._found[need] = self.store.find(need, self.made_from(need))
        return self._found[need]

    def __getitem__(self, need: "str | Need") -> Any:
        need = parse(need)
        if need in self.models:
            if isinstance(self.models[need], DivergedError):
                raise self.models[need]
            return self.models[need]
        started = time.perf_counter()
        record = self._record(need)
        if record is not None:
            model = self.store.load(need, record)
        else:
            try:
                model, record, spent = self._make(need)
            except DivergedError as e:  # whatever is built on it would diverge too
                self.models[need] = e
                raise
            if spent is not None:  # a share of a stack's time
                started = time.perf_counter() - spent
            record = self.store.save(need, model, record, self.made_from(need))
            self._found[need] = record
        self.models[need] = model
        self.info[need] = {**{k: v for k, v in record.items() if k != "made_from"},
                           "seconds_here": round(time.perf_counter() - started, 2)}
        return model

    def _make(self, need: Need) -> tuple[Any, dict, float | None]:
        """(model, record, seconds of a stack's share or None): model A trained, or an encoder pretrained."""
        if need == MODEL_A:
            model, a, spent = self.train_a() if self.train_a else (*train_model_a(self.cfg, self.split,
                                                                                  self.reporter), None)
            self.made[need] = a
            return model, {"test_accuracy": a.test_accuracy, "seed": self.cfg.seed,
                           "pair": list(self.split.b_classes)}, spent
        assert isinstance(need, Encoder)
        made = pretraining.pretrain(self.cfg, self.split, need.method, self.reporter)
        self.made[need] = made
        return made.encoder, {**made.scores, "seed": self.cfg.seed, "seconds": made.seconds}, None


def resolve(need: "str | Need", cfg: Config, split, store: Store, reporter: Reporter | None = None) -> Any:
    """`need` for `cfg` on `split`: found in `store` and checked, or made and saved there."""
    return Resolver(cfg, split, store, reporter)[need]
