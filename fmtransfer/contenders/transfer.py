"""Transfer from model A (ch. 11.2.1): reuse its lower layers, train a new output, fine-tune.

The fine-tuning recipe is a schedule of phases over one model, not a new model. A strategy that
fine-tunes otherwise overrides one hook: `phases` (what trains, how long, how fast, per-layer
rates), `prepare` (what happens to model B before the phases: fit the head, re-initialise a
layer) or `penalty` (a term added to every batch's loss).
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
    order = 10

    def phases(self, cfg, reused: int) -> list[Phase]:
        """The book's two phases: reused layers frozen, then unfrozen (all, or the top K) at the
        fine-tuning rate. Keras needs a compile between them; our loop reads the trainable
        variables afresh each phase, which is the same."""
        t = cfg.transfer
        return [Phase("frozen", t.freeze_epochs, t.frozen_learning_rate, trainable=False,
                      key="transfer.frozen_learning_rate"),
                fine_tune_phase(t)]

    def prepare(self, cfg, model, reused: int, features: tuple) -> list[dict]:
        """Change model B before its phases, given the (top features, labels) of task B's training
        images; return records of what was done, shaped as phases."""
        return []

    def penalty(self, cfg, model, reused: int):
        """A callable giving a scalar added to every batch's loss, or None."""
        return None

    def fit(self, cfg, split, deps, reporter, source: str | None = None):
        """model B on a clone of `deps[needs[0]]`, which itself is never changed."""
        from fmtransfer import models, probe, runtime, training

        source = source or self.source
        base = deps[self.needs[0]]  # may train it: seed after, so B's numbers never depend on how it came
        runtime.seed_everything(cfg.seed)
        started = time.perf_counter()
        reused = reuse_count(cfg.transfer.reuse_layers, len(models.blocks(base)[1]))
        model = models.build_b_on_a(base, reused, name=source)  # refuses more layers than `base` has
        x, y = training.scaled_part(split.b_train)
        valid = training.scaled_part(split.b_valid)
        # Scored before any training: how good the pretrained features are, whatever B makes of them.
        x_test, y_test = training.scaled_part(split.b_test)
        probed, features = probe.linear_probe(model, x, y, x_test, y_test)
        phases = self.prepare(cfg, model, reused, (features, y))
        penalty = self.penalty(cfg, model, reused)
        label = "B on A" if self.artifact == "a" else f"B on {self.artifact}"
        for i, phase in enumerate(self.phases(cfg, reused)):
            if phase.top is not None and phase.top > reused:
                raise ConfigError("transfer.unfreeze", f"top:{phase.top} asks for more than the {reused} reused "
                                                       f"layers of {source}")
            models.set_reused_trainable(model, phase.trainable, phase.top)
            with reporter.training(f"{label}: {phase.name}", phase.epochs) as on_epoch:
                history = training.fit(model, x, y, task=training.BINARY, epochs=phase.epochs,
                                       learning_rate=phase.learning_rate, batch_size=cfg.batch_size,
                                       seed=[cfg.seed, i + 1], validation=valid, on_epoch=on_epoch,
                                       what=f"{label}: {phase.name}", key=phase.key, penalty=penalty,
                                       scales=_scales(model, phase.rates))
            phases.append({"name": phase.name, "epochs": phase.epochs, "learning_rate": phase.learning_rate,
                           "trainable_weights": len(model.trainable_weights), "history": history,
                           **({"rates": list(phase.rates)} if phase.rates else {})})
        test = training.evaluate(model, x_test, y_test, task=training.BINARY)
        return model, ContenderResult(self.name, self.title, test["accuracy"], test["loss"], phases=phases,
                                      seconds=round(time.perf_counter() - started, 3),
                                      details={"reuse_layers": reused, "unfreeze": cfg.transfer.unfreeze,
                                               "linear_probe": probed})


def fine_tune_phase(t) -> Phase:
    """The book's phase 2, which other strategies keep: the reused layers (all, or the top K)
    unfrozen at the fine-tuning rate."""
    return Phase("fine-tune", t.fine_tune_epochs, t.fine_tune_learning_rate, trainable=True, top=t.unfreeze_top,
                 key="transfer.fine_tune_learning_rate")


def _scales(model, rates: tuple[float, ...] | None) -> list[float] | None:
    """Per-variable gradient scales from per-reused-block rates (bottom block first); the head's is 1."""
    if rates is None:
        return None
    from fmtransfer import models

    by_variable = {id(w): rate for block, rate in zip(models.blocks(model)[1], rates)
                   for layer in block for w in layer.weights}
    return [by_variable.get(id(v), 1.0) for v in model.trainable_variables]
