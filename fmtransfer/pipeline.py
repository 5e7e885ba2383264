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

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from fmtransfer.config import Config
from fmtransfer.contenders import ContenderResult
from fmtransfer.errors import DivergedError
from fmtransfer.report import Reporter


@dataclass
class ModelAResult:
    """Model A's scores on task A's test images and its training history."""

    test_accuracy: float
    test_loss: float
    epochs: int
    learning_rate: float
    history: list[dict]
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ExperimentResult:
    """One complete experiment: every contender's test-B scores, the baseline among them.

    `contenders` maps each contender's title to its result, the baseline first; every other
    result's `error_rate_ratio` is the baseline's error divided by its own.
    """

    config: Config
    b_classes: tuple[int, int]
    sizes: dict[str, int]
    contenders: dict[str, ContenderResult]
    model_a: ModelAResult | None = None
    pretrained: dict[str, dict] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def baseline(self) -> ContenderResult:
        return self.contenders["baseline"]

    @property
    def transfer(self) -> ContenderResult | None:
        """Transfer from A if it ran, else the first contender that is not the baseline."""
        others = [r for r in self.contenders.values() if r.name != "baseline"]
        return next((r for r in others if r.name == "transfer"), others[0] if others else None)

    @property
    def error_rate_ratio(self) -> float | None:
        return self.transfer.error_rate_ratio if self.transfer else None

    def to_dict(self) -> dict[str, Any]:
        """What `fmtransfer run --json` prints."""
        cfg = self.config
        t = cfg.transfer
        main = self.transfer
        contenders = {}
        for title, r in self.contenders.items():
            entry = {"name": r.name, "test_accuracy": r.test_accuracy, "test_loss": r.test_loss}
            if r.name != "baseline":
                entry["error_rate_ratio"] = r.error_rate_ratio
                entry["linear_probe"] = r.details.get("linear_probe")
            contenders[title] = entry
        d = {
            "stage": "compare",
            "baseline": {"test_accuracy": self.baseline.test_accuracy, "test_loss": self.baseline.test_loss},
            "transfer": None if main is None else {"test_accuracy": main.test_accuracy, "test_loss": main.test_loss},
            "error_rate_ratio": self.error_rate_ratio,
            "contenders": contenders,
            "b_classes": list(self.b_classes), "b_train_size": self.sizes.get("b_train"),
            "settings": {"arch": cfg.model.arch, "seed": cfg.seed, "baseline_epochs": cfg.baseline.epochs,
                         "baseline_lr": cfg.baseline.learning_rate,
                         "reuse_layers": main.details.get("reuse_layers") if main else None,
                         "freeze_epochs": t.freeze_epochs, "frozen_lr": t.frozen_learning_rate,
                         "fine_tune_epochs": t.fine_tune_epochs, "fine_tune_lr": t.fine_tune_learning_rate,
                         "unfreeze": t.unfreeze},
            "config": cfg.to_dict(),
        }
        if self.model_a is not None:
            d["model_a"] = {"test_accuracy": self.model_a.test_accuracy, "seconds": self.model_a.seconds}
            d["stages"] = {"split": {"sizes": self.sizes}, "train_a": d["model_a"]}
            if main is not None:
                d["stages"]["transfer"] = {"test_accuracy": main.test_accuracy, "seconds": main.seconds}
        if self.pretrained:
            d["pretrained"] = self.pretrained
        d["seconds"] = self.seconds
        return d


def error_rate_ratio(baseline_accuracy: float, accuracy: float) -> float:
    """By how much a contender divided the baseline's error rate: >1 a gain, <1 a loss, inf perfect."""
    base_err, err = 1 - baseline_accuracy, 1 - accuracy
    if err <= 0:
        return float("inf") if base_err > 0 else 1.0
    return base_err / err


def paired_with_baseline(results: dict[str, ContenderResult]) -> dict[str, ContenderResult]:
    """Set every contender's error-rate ratio against the baseline's; baseline first."""
    base = results["baseline"]
    for r in results.values():
        if r.name != "baseline":
            r.error_rate_ratio = error_rate_ratio(base.test_accuracy, r.test_accuracy)
    return {"baseline": base, **{k: v for k, v in results.items() if k != "baseline"}}


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


class Dependencies:
    """What contenders build on, made on first request and kept: model A, pretrained encoders."""

    def __init__(self, cfg: Config, split, reporter: Reporter):
        self.cfg, self.split, self.reporter = cfg, split, reporter
        self.models: dict[str, Any] = {}
        self.model_a: ModelAResult | None = None
        self.pretrained: dict[str, Any] = {}

    def __getitem__(self, need: str):
        if need not in self.models:
            if need == "model_a":
                self.models[need], self.model_a = train_model_a(self.cfg, self.split, self.reporter)
            elif need.startswith("encoder:"):
                from fmtransfer import pretraining

                made = pretraining.pretrain(self.cfg, self.split, need.partition(":")[2], self.reporter)
                self.models[need], self.pretrained[made.method] = made.encoder, made
            else:
                raise KeyError(need)
        return self.models[need]


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
    from fmtransfer import contenders, data, runtime

    cfg = cfg or Config()
    chosen = contenders.select(cfg)  # an unknown name fails here, before anything trains
    runtime.ensure_setup(cfg.model.arch)
    reporter = reporter or Reporter(quiet=not progress)
    if run_dir is not None:
        from fmtransfer import stages
        from fmtransfer.rundir import RunDir

        return stages.run(cfg, RunDir(run_dir), reporter)
    started = time.perf_counter()
    split = data.split_of(data.load(cfg.data), cfg.data)
    deps = Dependencies(cfg, split, reporter)
    results = {}
    for name in chosen:
        contender = contenders.get(name)
        _, results[contender.title] = contender.fit(cfg, split, deps, reporter)
    pretrained = {m: {"reconstruction_loss": p.reconstruction_loss, "seconds": p.seconds}
                  for m, p in deps.pretrained.items()}
    return ExperimentResult(cfg, split.b_classes, split.sizes(), paired_with_baseline(results), deps.model_a,
                            pretrained, round(time.perf_counter() - started, 3))
