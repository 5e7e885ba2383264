"""Training and evaluation: Keras' own SGD and losses, through the one in-graph epoch loop.

Everything that defines the experiment is kept: the same optimizer object
(keras.optimizers.SGD), losses, batch size, a fresh shuffle of the whole training set every epoch
with the last partial batch kept (fit's semantics), and metrics averaged over the epoch's
samples as fit reports them. `fmtransfer.loop` runs the epochs; this module says what one batch
of SGD on a Keras model does, and `fit_models` trains K models of one network: one by one, or
as one stacked graph (`fmtransfer.stacked`) where the network allows it.

Evaluation likewise scores a whole set in one graph call, traced once per model. What was tried
besides, and what it measured, is in bench/README.md.
"""

from __future__ import annotations

import math
import time
import weakref
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from fmtransfer import loop, runtime, stacked
from fmtransfer.errors import DivergedError
from fmtransfer.loop import EVAL_BATCH, Epoch, EpochCallback
from fmtransfer.runtime import import_keras

keras = import_keras()
import tensorflow as tf  # noqa: E402  (keras first: it pins the TensorFlow backend)


@dataclass(frozen=True)
class Task:
    """What a model predicts: its loss and how a prediction counts as correct."""

    name: str  # multiclass | binary | reconstruction

    def loss(self):
        return {"multiclass": keras.losses.SparseCategoricalCrossentropy(),
                "binary": keras.losses.BinaryCrossentropy(),
                "reconstruction": keras.losses.BinaryCrossentropy()}[self.name]

    def correct(self, y, p):
        if self.name == "multiclass":
            return tf.cast(tf.equal(tf.argmax(p, axis=-1, output_type=tf.int64), tf.cast(y, tf.int64)), tf.float32)
        if self.name == "binary":
            return tf.cast(tf.equal(tf.cast(p[..., 0] > 0.5, tf.float32), tf.cast(y > 0.5, tf.float32)), tf.float32)
        return tf.zeros(tf.shape(p)[:1])  # reconstruction has no accuracy

    @property
    def columns(self) -> tuple[str, ...]:
        """What an epoch of training reports: the loss, and the accuracy where there is one."""
        return ("loss",) if self.name == "reconstruction" else ("loss", "accuracy")


MULTICLASS, BINARY, RECONSTRUCTION = Task("multiclass"), Task("binary"), Task("reconstruction")


def _itself(weight):
    return weight


@dataclass(frozen=True)
class Guide:
    """A term of the loss that depends on the batch, not on the weights alone (a penalty's).

    `loss(indices, x, y)` gives a scalar added to the batch's loss (the history reports the data
    loss alone): `indices` are the batch's rows of the training set, so a guide can gather what
    it recorded per training image before training (LwF's outputs of model A, Co-Tuning's soft
    labels). `variables` train beside the model's own (a head kept from model A), at the same rate.
    """

    loss: Callable
    variables: tuple = ()


def fit(model, x: np.ndarray, y: np.ndarray, *, task: Task, epochs: int, learning_rate: float,
        batch_size: int = 32, seed: int | list[int] = 42, validation: tuple[np.ndarray, np.ndarray] | None = None,
        on_epoch: EpochCallback | None = None, what: str = "training", key: str | None = None,
        penalty: Callable | None = None, scales: list[float] | None = None,
        guide: Guide | None = None, feature_penalty: Callable | None = None) -> list[Epoch]:
    """Train `model` in place with SGD; return one record per epoch (loss, accuracy, validation).

    Only the variables trainable now move: freeze or unfreeze layers before calling. A loss that
    stops being finite raises DivergedError naming `what` and the learning-rate `key` at once:
    a diverged model is never scored or saved.

    `penalty(value)`, a scalar tensor, is added to every batch's loss (the history reports the
    data loss alone); `value(w)` is the tensor training moves for the model's weight `w`, here `w`
    itself (a stack passes its slice). `feature_penalty(features)`, a scalar tensor, is added
    too, from the batch's features: the input of the model's last layer, batch x width (BSS
    shrinks their singular values). `scales`, one per trainable variable, multiply its
    gradient: with plain SGD that is a per-variable learning rate, learning_rate * scale.
    `guide` (`Guide`) adds its batch's term, and its variables move at the learning rate.
    """
    variables = model.trainable_variables
    if scales is not None and len(scales) != len(variables):
        raise ValueError(f"{len(scales)} gradient scales for {len(variables)} trainable variables")
    if guide is not None:
        scales = scales + [1.0] * len(guide.variables) if scales is not None else None
        variables = [*variables, *guide.variables]
    optimizer = keras.optimizers.SGD(learning_rate=learning_rate)
    optimizer.build(variables)
    loss_fn = task.loss()
    x_all, y_all = _tensors(x, y)
    with_accuracy = len(task.columns) > 1

    def step(indices, _, x_all, y_all):
        xb, yb = tf.gather(x_all, indices), tf.gather(y_all, indices)
        with tf.GradientTape() as tape:
            if feature_penalty is None:
                pred = model(xb, training=True)
            else:
                features, pred = features_and_output(model, xb)
            loss = loss_fn(yb, pred)
            objective = loss + penalty(_itself) if penalty is not None else loss
            if guide is not None:
                objective += guide.loss(indices, xb, yb)
            if feature_penalty is not None:
                objective += feature_penalty(features)
        gradients = tape.gradient(objective, variables)
        if scales is not None:
            gradients = [g * s for g, s in zip(gradients, scales)]
        optimizer.apply(gradients, variables)
        size = tf.cast(tf.shape(indices)[0], tf.float32)
        return (loss * size, tf.reduce_sum(task.correct(yb, pred))) if with_accuracy else (loss * size,)

    # Converted once: the validation set is scored after every epoch.
    valid = _tensors(*validation) if validation is not None and len(validation[0]) else None

    def validate():
        return {f"val_{k}": v for k, v in _evaluate_tensors(model, *valid, task=task, check=False).items()}

    return loop.run(step, (x_all, y_all), size=len(x), columns=task.columns, epochs=epochs, batch_size=batch_size,
                    seed=seed, what=what, key=key, validate=validate if valid is not None else None,
                    on_epoch=on_epoch)


def fit_models(plain: list, x: np.ndarray, y: np.ndarray, *, task: Task, epochs: int | list[int],
               learning_rate: float | list[float], batch_size: int, seeds: list, validation: tuple | None = None,
               on_epoch: EpochCallback | None = None, what: str = "training", key: str | None = None,
               penalties: list | None = None, scales: list | None = None, guides: list | None = None,
               feature_penalties: list | None = None) -> list[list[Epoch] | DivergedError]:
    """`fit` for K models of one network, model k with `seeds[k]`, `epochs[k]`, `learning_rate[k]`,
    `penalties[k]`, `scales[k]`, `guides[k]`, `feature_penalties[k]` (one epochs or learning rate
    is every model's; seeds may repeat, as the trials of one seed do); per model, its records or
    the DivergedError that stopped it.

    One model trains by `fit` itself, so its numbers are the unstacked ones to the bit. More
    train as one stacked graph when the network stacks (`stacked.stacks`) and no model has a
    guide (a stack has no per-seed batch term), else one by one.
    """
    epochs = loop.per_model(epochs, len(plain), "epochs")
    rates = loop.per_model(learning_rate, len(plain), "learning rates")
    penalties = penalties or [None] * len(plain)
    scales = scales or [None] * len(plain)
    guides = guides or [None] * len(plain)
    feature_penalties = feature_penalties or [None] * len(plain)
    if len(plain) > 1 and all(stacked.stacks(m) for m in plain) and not any(guides):
        return stacked.fit(plain, x, y, task=task, epochs=epochs, learning_rate=rates,
                           batch_size=batch_size, seeds=seeds, validation=validation, on_epoch=on_epoch, what=what,
                           key=key, penalties=penalties, scales=scales, feature_penalties=feature_penalties)
    outcomes = []
    for model, seed, n, rate, penalty, scale, guide, on_features in zip(plain, seeds, epochs, rates, penalties,
                                                                        scales, guides, feature_penalties):
        try:
            outcomes.append(fit(model, x, y, task=task, epochs=n, learning_rate=rate,
                                batch_size=batch_size, seed=seed, validation=validation, on_epoch=on_epoch,
                                what=what, key=key, penalty=penalty, scales=scale, guide=guide,
                                feature_penalty=on_features))
        except DivergedError as e:
            outcomes.append(e)
    return outcomes


def features_and_output(model, x, training: bool = True):
    """(features, prediction) of a Sequential `model` on `x`: the features are what its last
    layer (the head's output) takes in, computed once on the way to the prediction."""
    h = x
    for layer in model.layers[:-1]:
        h = layer(h, training=training)
    return h, model.layers[-1](h, training=training)


def groups(keys: list) -> list[list[int]]:
    """The indices of `keys` grouped by equal key, each group in order, groups in order of first
    appearance: which configs of one call can train as one stack."""
    found: dict = {}
    for i, key in enumerate(keys):
        found.setdefault(key, []).append(i)
    return list(found.values())


def scaled_part(part: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """A split part's (uint8 images, labels) as (float32 images in [0, 1], labels)."""
    return part[0].astype(np.float32) / 255.0, part[1]


def train_from_scratch(cfgs: list, build: Callable, section, task: Task, parts: tuple, reporter,
                       label: str) -> list[tuple[Any, dict, dict] | DivergedError]:
    """Models built by `build(cfg)` right after each config's seed, trained for `section.epochs`
    at `section.learning_rate` (model A, the baseline), alone or stacked, then scored on the test
    part of `parts` (train, valid, test: split parts of uint8 images).

    `section` is every config's, or a list of one per config: configs may differ in their seed,
    their section's epochs and learning rate (the trials of a tuned study, which may share one
    seed), and stack all the same; configs of another batch size train in a stack of their own.

    Per config: (model, phase record, test scores) or the DivergedError that stopped it; the
    phase record has the epochs, learning rate, history and seconds (a stacked model's share).
    A model trained alone raises it, as `fit` does.
    """
    sections = loop.per_model(section, len(cfgs), "sections")
    plain = []
    for cfg in cfgs:
        runtime.seed_everything(cfg.seed)
        plain.append(build(cfg))
    train, valid, test = parts
    outcomes: list = [None] * len(cfgs)
    seconds: list = [None] * len(cfgs)
    for group in groups([c.batch_size for c in cfgs]):
        started = time.perf_counter()
        with reporter.training(label, max(sections[k].epochs for k in group)) as on_epoch:
            made = fit_models([plain[k] for k in group], *scaled_part(train), task=task,
                              epochs=[sections[k].epochs for k in group],
                              learning_rate=[sections[k].learning_rate for k in group],
                              batch_size=cfgs[group[0]].batch_size, seeds=[cfgs[k].seed for k in group],
                              validation=scaled_part(valid), on_epoch=on_epoch, what=label,
                              key=f"{sections[group[0]].NAME}.learning_rate")
            if len(cfgs) == 1:
                raise_alone(made)
        share = round((time.perf_counter() - started) / len(group), 3)
        for k, outcome in zip(group, made):
            outcomes[k], seconds[k] = outcome, share
    result = []
    for model, outcome, sec, n in zip(plain, outcomes, sections, seconds):
        scores = outcome if isinstance(outcome, DivergedError) else evaluated(model, test, task)
        result.append(scores if isinstance(scores, DivergedError) else
                      (model, {"name": "train", "epochs": sec.epochs, "learning_rate": sec.learning_rate,
                               "history": records(outcome), "seconds": n}, scores))
    return result


def raise_alone(outcomes: list) -> None:
    """One model alone fails as `fit` does, inside the progress bar it stops: a stack reports each
    seed's failure instead, and the others go on."""
    if len(outcomes) == 1 and isinstance(outcomes[0], DivergedError):
        raise outcomes[0]


def records(history: list[Epoch]) -> list[dict]:
    """A history as run directories and study records keep it."""
    return [e.to_dict() for e in history]


def evaluated(model, part: tuple, task: Task) -> dict[str, float] | DivergedError:
    """`evaluate` on a split part (uint8 images), or the DivergedError of a model whose predictions
    are not finite, as an outcome."""
    try:
        return evaluate(model, *scaled_part(part), task=task)
    except DivergedError as e:
        return e


def predict(model, x: np.ndarray) -> np.ndarray:
    if not len(x):
        return np.zeros((0,))
    forward = _compiled(model, "predict", lambda m: lambda xb: m(xb, training=False),
                        tf.TensorSpec([None, *x.shape[1:]], tf.float32))
    return np.concatenate([forward(tf.constant(x[i:i + EVAL_BATCH], dtype=tf.float32)).numpy()
                           for i in range(0, len(x), EVAL_BATCH)])


def evaluate(model, x: np.ndarray, y: np.ndarray, *, task: Task) -> dict[str, float]:
    """Mean loss and accuracy over the whole set, as `model.evaluate` reports them."""
    return _evaluate_tensors(model, *_tensors(x, y), task=task)


def _tensors(x: np.ndarray, y: np.ndarray) -> tuple:
    x_tensor = tf.constant(x, dtype=tf.float32)
    # An autoencoder's targets are its inputs: one copy, not two (55,000 images are 172 MB).
    return x_tensor, x_tensor if y is x else tf.constant(y)


def _evaluate_tensors(model, x, y, *, task: Task, check: bool = True) -> dict[str, float]:
    n = int(x.shape[0])
    score = _compiled(model, f"evaluate:{task.name}", lambda m: _scorer(m, task),
                      tf.TensorSpec([None, *x.shape[1:]], x.dtype), tf.TensorSpec([None, *y.shape[1:]], y.dtype))
    loss_sum, correct = score(x, y)
    scores = {"loss": float(loss_sum) / n}
    if check and not math.isfinite(scores["loss"]):  # NaN predictions would score as class 0, not as failure
        raise DivergedError("the model", 0)
    if task is not RECONSTRUCTION:
        scores["accuracy"] = float(correct) / n
    return scores


def _scorer(model, task: Task):
    """Loss and correct-prediction sums over a whole set in one graph call.

    Batches of EVAL_BATCH keep memory flat; summing each batch's mean loss times its size gives
    the per-sample mean `model.evaluate` reports, without a Python round trip per batch.
    """
    loss_fn = task.loss()

    def score(x, y):
        loss_sum, correct = tf.constant(0.0), tf.constant(0.0)
        for i in tf.range(0, tf.shape(x)[0], EVAL_BATCH):
            xb, yb = x[i:i + EVAL_BATCH], y[i:i + EVAL_BATCH]
            pred = model(xb, training=False)
            loss_sum += loss_fn(yb, pred) * tf.cast(tf.shape(xb)[0], tf.float32)
            correct += tf.reduce_sum(task.correct(yb, pred))
        return loss_sum, correct

    return score


def _compiled(model, kind: str, make: Callable, *specs: tf.TensorSpec):
    """`make(model)` as a graph for inputs of `specs`, traced once per model, kind and specs.

    Specs leave the batch size open, so the validation set, the test set and the last partial
    batch share one trace: tracing costs more than a call. The cache holds the model weakly (also
    inside the function), so the models a long study drops are freed with their graphs.
    """
    per_model = _COMPILED.setdefault(model, {})
    if kind not in per_model:
        ref = weakref.ref(model)

        def call(*args):
            return make(ref())(*args)

        per_model[kind] = tf.function(call)
    return per_model[kind].get_concrete_function(*specs)


_COMPILED: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
