"""What an experiment gives: model A's scores, every contender's against the baseline.

`pipeline` (in memory) and `stages` (a run directory) both return an `ExperimentResult`, built by
`paired_with_baseline`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from fmtransfer.config import Config, below_chapter
from fmtransfer.contenders import ContenderResult, sections_read


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
    # `compare` trains no model A: its test accuracy as the record of the contender built on it says.
    model_a_accuracy: float | None = None

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

    @property
    def smoke(self) -> tuple[str, ...]:
        """The settings of the contenders that ran that are below the chapter's
        (`config.below_chapter`): a smoke test, whose numbers say nothing about transfer, where any."""
        return below_chapter(self.config.to_dict(), sections_read([r.name for r in self.contenders.values()]))

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
            if r.details.get("tuned") is not None:  # `run --tune N`: the trial validation selected
                entry["tuned"] = r.details["tuned"]
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
            "smoke": list(self.smoke),
        }
        if self.model_a is not None:
            d["model_a"] = {"test_accuracy": self.model_a.test_accuracy, "seconds": self.model_a.seconds}
            d["stages"] = {"split": {"sizes": self.sizes}, "train_a": d["model_a"]}
            if main is not None:
                d["stages"]["transfer"] = {"test_accuracy": main.test_accuracy, "seconds": main.seconds}
        elif self.model_a_accuracy is not None:
            d["model_a"] = {"test_accuracy": self.model_a_accuracy}
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
