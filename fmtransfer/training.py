"""Training and evaluation: Keras' own SGD and losses, driven one whole epoch per graph call.

`model.fit` runs a Python-level step for every batch; on this small network that overhead is
most of the time (bench/ measures it). Here an epoch is one `tf.function` call looping over the
batches in-graph. Everything that defines the experiment is kept: the same optimizer object
(keras.optimizers.SGD), losses, batch size, a fresh shuffle of the whole training set every epoch
with the last partial batch kept (fit's semantics), and metrics averaged over the epoch's
samples as fit reports them.

Evaluation likewise scores a whole set in one graph call, traced once per model. What was tried
besides, and what it measured, is in bench/README.md.
"""

from __future__ import annotations

import math
import time
import weakref
from dataclasses import dataclass
from typing import Callable

import numpy as np

from fmtransfer.errors import DivergedError
from fmtransfer.runtime import import_keras

keras = import_keras()
import tensorflow as tf  # noqa: E402  (keras first: it pins the TensorFlow backend)

EVAL_BATCH = 2048  # evaluation does no backward pass, so larger batches are just faster


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


MULTICLASS, BINARY, RECONSTRUCTION = Task("multiclass"), Task("binary"), Task("reconstruction")
EpochCallback = Callable[[int, dict], None]


def fit(model, x: np.ndarray, y: np.ndarray, *, task: Task, epochs: int, learning_rate: float,
        batch_size: int = 32, seed: int | list[int] = 42, validation: tuple[np.ndarray, np.ndarray] | None = None,
        on_epoch: EpochCallback | None = None, what: str = "training", key: str | None = None,
        penalty: Callable | None = None, scales: list[float] | None = None) -> list[dict]:
    """Train `model` in place with SGD; return one record per epoch (loss, accuracy, validation).

    Only the variables trainable now move: freeze or unfreeze layers before calling. A loss that
    stops being finite raises DivergedError naming `what` and the learning-rate `key` at once:
    a diverged model is never scored or saved.

    `penalty()`, a scalar tensor, is added to every batch's loss (the history reports the data
    loss alone). `scales`, one per trainable variable, multiply its gradient: with plain SGD that
    is a per-variable learning rate, learning_rate * scale.
    """
    variables = model.trainable_variables
    if scales is not None and len(scales) != len(variables):
        raise ValueError(f"{len(scales)} gradient scales for {len(variables)} trainable variables")
    optimizer = keras.optimizers.SGD(learning_rate=learning_rate)
    optimizer.build(variables)
    loss_fn = task.loss()
    n = len(x)
    x_all, y_all = _tensors(x, y)
    full_batches, rest = divmod(n, batch_size)

    # The data are arguments of the graph, not constants captured in it: a captured constant
    # lives as long as TensorFlow keeps the traced graph, which is the whole process.
    def step(indices, x_all, y_all):
        xb, yb = tf.gather(x_all, indices), tf.gather(y_all, indices)
        with tf.GradientTape() as tape:
            pred = model(xb, training=True)
            loss = loss_fn(yb, pred)
            objective = loss + penalty() if penalty is not None else loss
        gradients = tape.gradient(objective, variables)
        if scales is not None:
            gradients = [g * s for g, s in zip(gradients, scales)]
        optimizer.apply(gradients, variables)
        size = tf.cast(tf.shape(indices)[0], tf.float32)
        return loss * size, tf.reduce_sum(task.correct(yb, pred))

    @tf.function
    def run_epoch(order, x_all, y_all):
        loss_sum, correct = tf.constant(0.0), tf.constant(0.0)
        for i in tf.range(full_batches):
            batch_loss, batch_correct = step(order[i * batch_size:(i + 1) * batch_size], x_all, y_all)
            loss_sum += batch_loss
            correct += batch_correct
        if rest:
            batch_loss, batch_correct = step(order[full_batches * batch_size:], x_all, y_all)
            loss_sum += batch_loss
            correct += batch_correct
        return loss_sum / n, correct / n

    # Converted once: the validation set is scored after every epoch.
    valid = _tensors(*validation) if validation is not None and len(validation[0]) else None
    rng = np.random.default_rng(seed)
    history = []
    for epoch in range(epochs):
        started = time.perf_counter()
        loss, accuracy = run_epoch(tf.constant(rng.permutation(n), dtype=tf.int32), x_all, y_all)
        if not math.isfinite(float(loss)):
            raise DivergedError(what, epoch + 1, key)
        record = {"epoch": epoch + 1, "loss": float(loss)}
        if task is not RECONSTRUCTION:
            record["accuracy"] = float(accuracy)
        if valid is not None:
            scores = _evaluate_tensors(model, *valid, task=task, check=False)
            if not math.isfinite(scores["loss"]):
                raise DivergedError(what, epoch + 1, key)
            record.update({f"val_{k}": v for k, v in scores.items()})
        record["seconds"] = round(time.perf_counter() - started, 4)
        history.append(record)
        if on_epoch:
            on_epoch(epoch + 1, record)
    return history


def scaled_part(part: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """A split part's (uint8 images, labels) as (float32 images in [0, 1], labels)."""
    return part[0].astype(np.float32) / 255.0, part[1]


def train_from_scratch(model, section, cfg, task: Task, train: tuple, valid: tuple, reporter, label: str) -> dict:
    """Train a freshly built model for `section.epochs` at `section.learning_rate` (model A, the
    baseline); return the phase record: epochs, learning rate, history, seconds."""
    started = time.perf_counter()
    with reporter.training(label, section.epochs) as on_epoch:
        history = fit(model, *scaled_part(train), task=task, epochs=section.epochs,
                      learning_rate=section.learning_rate, batch_size=cfg.batch_size, seed=cfg.seed,
                      validation=scaled_part(valid), on_epoch=on_epoch, what=label,
                      key=f"{section.NAME}.learning_rate")
    return {"name": "train", "epochs": section.epochs, "learning_rate": section.learning_rate,
            "history": history, "seconds": round(time.perf_counter() - started, 3)}


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
