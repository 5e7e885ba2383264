"""Training and evaluation: Keras' own SGD and losses, driven one whole epoch per graph call.

`model.fit` runs a Python-level step for every batch; on this small network that overhead is
most of the time (bench/ measures it). Here an epoch is one `tf.function` call looping over the
batches in-graph. Everything that defines the experiment is kept: the same optimizer object
(keras.optimizers.SGD), losses, batch size, a fresh shuffle of the whole training set every epoch
with the last partial batch kept (fit's semantics), and metrics averaged over the epoch's
samples as fit reports them.
"""

from __future__ import annotations

import time
import weakref
from dataclasses import dataclass
from typing import Callable

import numpy as np

from fmtransfer.runtime import start

keras = start()
import tensorflow as tf  # noqa: E402  (after the quiet start above)

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
            return tf.cast(tf.equal(tf.cast(p[:, 0] > 0.5, tf.float32), tf.cast(y > 0.5, tf.float32)), tf.float32)
        return tf.zeros(tf.shape(p)[:1])  # reconstruction has no accuracy


MULTICLASS, BINARY, RECONSTRUCTION = Task("multiclass"), Task("binary"), Task("reconstruction")
EpochCallback = Callable[[int, dict], None]


def fit(model, x: np.ndarray, y: np.ndarray, *, task: Task, epochs: int, learning_rate: float,
        batch_size: int = 32, seed: int | list[int] = 42, validation: tuple[np.ndarray, np.ndarray] | None = None,
        on_epoch: EpochCallback | None = None) -> list[dict]:
    """Train `model` in place with SGD; return one record per epoch (loss, accuracy, validation).

    Only the variables trainable now move: freeze or unfreeze layers before calling.
    """
    variables = model.trainable_variables
    optimizer = keras.optimizers.SGD(learning_rate=learning_rate)
    optimizer.build(variables)
    loss_fn = task.loss()
    n = len(x)
    x_all = tf.constant(x, dtype=tf.float32)
    y_all = tf.constant(y)
    full_batches, rest = divmod(n, batch_size)

    def step(indices):
        xb, yb = tf.gather(x_all, indices), tf.gather(y_all, indices)
        with tf.GradientTape() as tape:
            pred = model(xb, training=True)
            loss = loss_fn(yb, pred)
        optimizer.apply(tape.gradient(loss, variables), variables)
        size = tf.cast(tf.shape(indices)[0], tf.float32)
        return loss * size, tf.reduce_sum(task.correct(yb, pred))

    @tf.function
    def run_epoch(order):
        loss_sum, correct = tf.constant(0.0), tf.constant(0.0)
        for i in tf.range(full_batches):
            batch_loss, batch_correct = step(order[i * batch_size:(i + 1) * batch_size])
            loss_sum += batch_loss
            correct += batch_correct
        if rest:
            batch_loss, batch_correct = step(order[full_batches * batch_size:])
            loss_sum += batch_loss
            correct += batch_correct
        return loss_sum / n, correct / n

    rng = np.random.default_rng(seed)
    history = []
    for epoch in range(epochs):
        started = time.perf_counter()
        loss, accuracy = run_epoch(tf.constant(rng.permutation(n), dtype=tf.int32))
        record = {"epoch": epoch + 1, "loss": float(loss)}
        if task is not RECONSTRUCTION:
            record["accuracy"] = float(accuracy)
        if validation is not None and len(validation[0]):
            scores = evaluate(model, *validation, task=task)
            record.update({f"val_{k}": v for k, v in scores.items()})
        record["seconds"] = round(time.perf_counter() - started, 4)
        history.append(record)
        if on_epoch:
            on_epoch(epoch + 1, record)
    return history


def predict(model, x: np.ndarray) -> np.ndarray:
    forward = _forward(model)
    return np.concatenate([forward(tf.constant(x[i:i + EVAL_BATCH], dtype=tf.float32)).numpy()
                           for i in range(0, len(x), EVAL_BATCH)]) if len(x) else np.zeros((0,))


def evaluate(model, x: np.ndarray, y: np.ndarray, *, task: Task) -> dict[str, float]:
    """Mean loss and accuracy over the whole set, as `model.evaluate` reports them."""
    forward = _forward(model)
    loss_fn = task.loss()
    loss_sum = correct = 0.0
    for i in range(0, len(x), EVAL_BATCH):
        xb = tf.constant(x[i:i + EVAL_BATCH], dtype=tf.float32)
        yb = tf.constant(y[i:i + EVAL_BATCH])
        pred = forward(xb)
        loss_sum += float(loss_fn(yb, pred)) * len(xb)
        correct += float(tf.reduce_sum(task.correct(yb, pred)))
    scores = {"loss": loss_sum / len(x)}
    if task is not RECONSTRUCTION:
        scores["accuracy"] = correct / len(x)
    return scores


def _forward(model):
    """A compiled inference call, cached on the model (retracing per call costs more than it runs)."""
    forward = _FORWARDS.get(model)
    if forward is None:
        forward = _FORWARDS[model] = tf.function(lambda xb: model(xb, training=False), reduce_retracing=True)
    return forward


_FORWARDS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
