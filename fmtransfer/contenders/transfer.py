"""Transfer from model A (ch. 11.2.1): reuse its lower layers, train a new output, fine-tune.

The fine-tuning recipe is a schedule of phases over one model, not a new model: a strategy that
schedules differently (linear probing first, gradual unfreezing) overrides `phases`.
"""

from __future__ import annotations

import time

from fmtransfer.config import reuse_count
from fmtransfer.contenders.base import Contender, ContenderResult, Phase, register
from fmtransfer.errors import ConfigError


@register
class TransferFromA(Contender):
    name = "transfer"
    title = "transfer from A"
    description = "Reuse model A's lower layers: a new output trained frozen, then fine-tuned (ch. 11.2.1)."
    needs = ("model_a",)
    sections = ("transfer",)
    artifact = "a"
    source = "model A"  # what progress bars and errors call the model B is built on

    def phases(self, cfg) -> list[Phase]:
        """The book's two phases: reused layers frozen, then unfrozen (all, or the top K) at the
        fine-tuning rate. Keras needs a compile between them; our loop reads the trainable
        variables afresh each phase, which is the same."""
        t = cfg.transfer
        return [Phase("frozen", t.freeze_epochs, t.frozen_learning_rate, trainable=False,
                      key="transfer.frozen_learning_rate"),
                Phase("fine-tune", t.fine_tune_epochs, t.fine_tune_learning_rate, trainable=True,
                      top=t.unfreeze_top, key="transfer.fine_tune_learning_rate")]

    def fit(self, cfg, split, deps, reporter, source: str | None = None):
        """model B on a clone of `deps[needs[0]]`, which itself is never changed."""
        from fmtransfer import models, runtime, training

        source = source or self.source
        base = deps[self.needs[0]]  # may train it: seed after, so B's numbers never depend on how it came
        runtime.seed_everything(cfg.seed)
        started = time.perf_counter()
        reused = reuse_count(cfg.transfer.reuse_layers, len(models.blocks(base)[1]))
        model = models.build_b_on_a(base, reused, name=source)  # refuses more layers than `base` has
        x, y = training.scaled_part(split.b_train)
        valid = training.scaled_part(split.b_valid)
        phases = []
        for i, phase in enumerate(self.phases(cfg)):
            if phase.top is not None and phase.top > reused:
                raise ConfigError("transfer.unfreeze", f"top:{phase.top} asks for more than the {reused} reused "
                                                       f"layers of {source}")
            models.set_reused_trainable(model, phase.trainable, phase.top)
            label = "B on A" if self.artifact == "a" else f"B on {self.artifact}"
            with reporter.training(f"{label}: {phase.name}", phase.epochs) as on_epoch:
                history = training.fit(model, x, y, task=training.BINARY, epochs=phase.epochs,
                                       learning_rate=phase.learning_rate, batch_size=cfg.batch_size,
                                       seed=[cfg.seed, i + 1], validation=valid, on_epoch=on_epoch,
                                       what=f"{label}: {phase.name}", key=phase.key)
            phases.append({"name": phase.name, "epochs": phase.epochs, "learning_rate": phase.learning_rate,
                           "trainable_weights": len(model.trainable_weights), "history": history})
        test = training.evaluate(model, *training.scaled_part(split.b_test), task=training.BINARY)
        return model, ContenderResult(self.name, self.title, test["accuracy"], test["loss"], phases=phases,
                                      seconds=round(time.perf_counter() - started, 3),
                                      details={"reuse_layers": reused, "unfreeze": cfg.transfer.unfreeze})
