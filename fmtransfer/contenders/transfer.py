"""Transfer from model A (ch. 11.2.1): reuse its lower layers, train a new output, fine-tune.

The fine-tuning recipe is a schedule of phases over one model, not a new model. A strategy that
fine-tunes otherwise overrides one hook: `phases` (what trains, how long, how fast, per-layer
rates), `prepare` (what happens to model B before the phases: fit the head, re-initialise a
layer), `penalty` (a term of the weights added to every batch's loss), `feature_penalty` (a
term of each batch's features added to its loss) or `guide` (a term of the batch: its images,
labels and rows, e.g. on a head kept from model A beside B's, `source_head`).
"""

from __future__ import annotations

import time

from fmtransfer import runtime
from fmtransfer.config import reuse_count
from fmtransfer.contenders.base import Contender, ContenderResult, Phase, register
from fmtransfer.errors import ConfigError, DataError, DivergedError
from fmtransfer.needs import MODEL_A


@register
class TransferFromA(Contender):
    name = "transfer"
    title = "transfer from A"
    description = "Reuse model A's lower layers: a new output trained frozen, then fine-tuned (ch. 11.2.1)."
    needs = (MODEL_A,)
    sections = ("transfer",)
    artifact = "a"
    source = "model A"  # what progress bars and errors call the model B is built on
    order = 10
    stack_unsupported = None  # every subclass trains by phases too; one that cannot says why

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
        images; return records of what was done, shaped as phases. In a stack, each seed's plain
        model is prepared before its weights fill the stack."""
        return []

    def penalty(self, cfg, model, reused: int):
        """A callable `penalty(value)` giving a scalar added to every batch's loss, or None.

        `value(w)` is the tensor training moves for a weight `w` of `model`: `w` itself, or in a
        stack the seed's slice of it, so one penalty serves both; a stack adds every seed's."""
        return None

    def guide(self, cfg, model, base, reused: int, data: tuple):
        """A `training.Guide`, a term added to each batch's loss that depends on the batch, or None.

        `base` is what model B was built on (model A; never changed), `data` the (images, labels)
        of task B's training images in the order the guide's `indices` count them. A guide acts
        in the phases that train the reused layers; a contender with one sets `stack_unsupported`."""
        return None

    def feature_penalty(self, cfg, model, reused: int):
        """A callable `penalty(features)` giving a scalar added to each batch's loss, or None.

        `features` is that batch's input to the head's output layer, batch x width, of this
        seed's model alone (in a stack too, its own slice): a term that depends on the batch,
        not on the weights alone (BSS). Called once per seed, before the phases."""
        return None

    def fit(self, cfg, split, deps, reporter, source: str | None = None):
        """model B on a clone of `deps[needs[0]]`, which itself is never changed."""
        base = deps[self.needs[0]]  # may train it: seed after, so B's numbers never depend on how it came
        (made,) = self.train([cfg], split, [base], reporter, source)
        if isinstance(made, DivergedError):
            raise made
        return made

    def train(self, cfgs: list, split, bases: list, reporter, source: str | None = None,
              shuffles: list[int] | None = None) -> list:
        """Model B for each config on its base (`bases[k]`, cloned, never changed), through this
        contender's phases: alone, or stacked where the network allows it. Per config
        (model, result) or the DivergedError that stopped it; one config alone raises it.

        The configs may differ in their seed and in anything a slot of a stack holds on its own:
        each phase's learning rate, epochs and per-block rates, and the penalty or preparation
        strengths (L2-SP's alpha and beta, LP-FT's C). They may share one seed (the trials of a
        tuned study). Configs whose phases differ in `structure`, or in the layers reused or the
        batch size (a reinit depth, gradual's schedule where it changes the phases), train in a
        stack per group, in order of first appearance. `shuffles[k]`, where given, picks config
        k's shuffles of the training images: 0 (the default) its seed's own, j > 0 others, drawn
        from (seed, phase, j), with all else its seed's, model B's initial weights included (the
        ingredients of a greedy soup).

        Per config, in the order one config alone takes: seed, build B on its base, probe,
        `prepare`, `penalty`; then, group by group, the phases, each trained for every model of
        the group still going.
        """
        from fmtransfer import models, probe, training

        source = source or self.source
        x, y = training.scaled_part(split.b_train)
        valid = training.scaled_part(split.b_valid)
        x_test, y_test = training.scaled_part(split.b_test)
        plain, reused, probed, steps, penalties, guides, on_features = [], [], [], [], [], [], []
        failed: list = [None] * len(cfgs)
        started = time.perf_counter()
        for k, (cfg, base) in enumerate(zip(cfgs, bases)):
            runtime.seed_everything(cfg.seed)
            reused.append(reuse_count(cfg.transfer.reuse_layers, len(models.blocks(base)[1])))
            model = models.build_b_on_a(base, reused[-1], name=source)  # refuses more layers than `base` has
            # Scored before any training: how good the pretrained features are, whatever B makes of them.
            score, features = probe.linear_probe(model, x, y, x_test, y_test)
            plain.append(model)
            probed.append(score)
            try:
                prepared = self.prepare(cfg, model, reused[-1], (features, y))
            except DivergedError as e:  # what `prepare` computed is not finite: this seed is done
                if len(cfgs) == 1:
                    raise
                failed[k], prepared = e, []
            steps.append(prepared)
            penalties.append(self.penalty(cfg, model, reused[-1]))
            guides.append(self.guide(cfg, model, base, reused[-1], (x, y)))
            on_features.append(self.feature_penalty(cfg, model, reused[-1]))
        phases = [self.phases(c, r) for c, r in zip(cfgs, reused)]
        # What one stack must share: the layers reused and each phase's shape. Learning rates,
        # epochs, per-block rates and penalty strengths are each slot's own.
        for group in training.groups([(r, c.batch_size, structure(p)) for c, r, p in zip(cfgs, reused, phases)]):
            self._phases(group, [phases[k] for k in group], cfgs, plain, reused[group[0]],
                         (penalties, guides, on_features), failed, steps, (x, y), valid, reporter, source,
                         alone=len(cfgs) == 1, shuffles=shuffles or [0] * len(cfgs))
        seconds = round((time.perf_counter() - started) / len(cfgs), 3)
        made = []
        for k, (cfg, model) in enumerate(zip(cfgs, plain)):
            test = failed[k] or training.evaluated(model, split.b_test, training.BINARY)
            made.append(test if isinstance(test, DivergedError) else
                        (model, ContenderResult(self.name, self.title, test["accuracy"], test["loss"], phases=steps[k],
                                                seconds=seconds,
                                                details={"reuse_layers": reused[k], "unfreeze": cfg.transfer.unfreeze,
                                                         "linear_probe": probed[k]})))
        return made

    def _phases(self, group: list[int], phases: list[list[Phase]], cfgs: list, plain: list, reused: int,
                terms: tuple, failed: list, steps: list, data: tuple, valid: tuple, reporter, source: str,
                alone: bool, shuffles: list[int]) -> None:
        """The phases of the configs `group` indexes (`phases[j]` those of config `group[j]`, all of
        one `structure`), trained as one stack: each model's records go to `steps`, a divergence
        to `failed`. `terms`: per config, its penalty, guide and feature penalty; `shuffles`: per
        config, which shuffle of its seed (`train`)."""
        penalties, guides, on_features = terms
        from fmtransfer import models, training

        label = self.title  # what the tables call it
        for i, phase in enumerate(phases[0]):
            if phase.top is not None and phase.top > reused:
                raise ConfigError("transfer.unfreeze", f"top:{phase.top} asks for more than the {reused} reused "
                                                       f"layers of {source}")
            if phase.blocks is not None and not all(1 <= b <= reused for b in phase.blocks):
                raise ValueError(f"phase {phase.name!r} trains blocks {list(phase.blocks)} of {reused} reused")
            going = [j for j, k in enumerate(group) if failed[k] is None]
            mine = {group[j]: phases[j][i] for j in going}  # each model's own version of this phase
            for k in mine:
                models.set_reused_trainable(plain[k], phase.trainable, phase.top, phase.blocks)
            with reporter.training(f"{label}: {phase.name}", max(p.epochs for p in mine.values())) as on_epoch:
                outcomes = training.fit_models([plain[k] for k in mine], *data, task=training.BINARY,
                                               epochs=[p.epochs for p in mine.values()],
                                               learning_rate=[p.learning_rate for p in mine.values()],
                                               batch_size=cfgs[group[0]].batch_size,
                                               # Shuffle 0 is the seed's own, as it always was.
                                               seeds=[[cfgs[k].seed, i + 1, *([shuffles[k]] if shuffles[k] else [])]
                                                      for k in mine], validation=valid,
                                               on_epoch=on_epoch, what=f"{label}: {phase.name}",
                                               key=(phase.key, *self.strengths) if phase.key else self.strengths,
                                               penalties=[penalties[k] for k in mine],
                                               guides=[guides[k] if phase.trainable else None for k in mine],
                                               feature_penalties=[on_features[k] for k in mine],
                                               scales=[_scales(plain[k], p.rates) for k, p in mine.items()])
                if alone:
                    training.raise_alone(outcomes)
            for (k, p), outcome in zip(mine.items(), outcomes):
                if isinstance(outcome, DivergedError):
                    failed[k] = outcome
                    continue
                steps[k].append({"name": p.name, "epochs": p.epochs, "learning_rate": p.learning_rate,
                                 "trainable_weights": len(plain[k].trainable_weights),
                                 "history": training.records(outcome),
                                 **({"rates": list(p.rates)} if p.rates else {})})


def structure(phases: list[Phase]) -> tuple:
    """What the models of one stack must share of their phases: the names, what trains (all
    reused layers or the top K) and the learning rate's key, phase by phase. Epochs, learning
    rates and per-block rates may differ: each slot has its own (`stacked.fit`)."""
    return tuple((p.name, p.trainable, p.top, p.blocks, p.key) for p in phases)


def fine_tune_phase(t) -> Phase:
    """The book's phase 2, which other strategies keep: the reused layers (all, or the top K)
    unfrozen at the fine-tuning rate."""
    return Phase("fine-tune", t.fine_tune_epochs, t.fine_tune_learning_rate, trainable=True, top=t.unfreeze_top,
                 key="transfer.fine_tune_learning_rate")


def source_head(model, base, reused: int):
    """(source, head): model A's layers above the `reused` blocks and its output, cloned, as
    `head`, giving logits (A's softmax dropped); `source` runs them on model B's reused layers
    (shared with `model`, so training either moves both). LwF and Co-Tuning keep A's head so.

    Raises:
        DataError: model A's output is not a softmax over its classes, so it has no logits.
    """
    from fmtransfer import models

    stem, hidden = models.blocks(base)
    below = len(stem) + sum(len(block) for block in hidden[:reused])
    above = models.clone_with_weights(base).layers[below:]
    softmax = False  # a separate softmax layer above a linear output
    while above and isinstance(above[-1], models.OUTPUT_TAILS):
        tail = above.pop()
        softmax = softmax or isinstance(tail, models.layers.Softmax) or (
            isinstance(tail, models.layers.Activation) and tail.get_config()["activation"] == "softmax")
    output = above.pop() if above else None
    activation = output.get_config().get("activation") if output is not None else None
    if not (isinstance(output, models.layers.Dense) and (activation == "softmax" or (activation == "linear"
                                                                                      and softmax))):
        raise DataError("model A's output is not a softmax over its classes, whose logits the kept head "
                        "needs; use a model A trained by fmtransfer train-a")
    logits = models.layers.Dense.from_config({**output.get_config(), "activation": "linear", "name": "kept_output"})
    features = model.layers[:below]
    shape = models.keras.Sequential([models.keras.Input(models.INPUT_SHAPE), *features]).compute_output_shape(
        (None, *models.INPUT_SHAPE))[1:]
    head = models.keras.Sequential([models.keras.Input(shape), *above, logits], name="kept_head_of_A")
    logits.set_weights(output.get_weights())
    source = models.keras.Sequential([models.keras.Input(models.INPUT_SHAPE), *features, *head.layers],
                                     name="source")
    return source, head


def soft_label_guide(source, head, targets, temperature: float, weight: float):
    """A guide adding `weight` times the cross-entropy between `targets` (one row of class
    probabilities per training image) and the softmax of the kept head's logits divided by
    `temperature`, averaged over the batch: -weight/B sum_i sum_j t_ij log softmax(z_i / T)_j."""
    from fmtransfer import training
    from fmtransfer.training import tf

    recorded = tf.constant(targets, dtype=tf.float32)

    def loss(indices, x, y):
        wanted = tf.gather(recorded, indices)
        log_p = tf.nn.log_softmax(source(x, training=True) / temperature, axis=-1)
        return weight * tf.reduce_mean(-tf.reduce_sum(wanted * log_p, axis=-1))

    return training.Guide(loss, tuple(head.trainable_variables))


def _scales(model, rates: tuple[float, ...] | None) -> list[float] | None:
    """Per-variable gradient scales from per-reused-block rates (bottom block first); the head's is 1."""
    if rates is None:
        return None
    from fmtransfer import models

    by_variable = {id(w): rate for block, rate in zip(models.blocks(model)[1], rates)
                   for layer in block for w in layer.weights}
    return [by_variable.get(id(v), 1.0) for v in model.trainable_variables]
