"""The one epoch loop: every network fmtransfer trains (models A and B, the autoencoders, the GAN,
the RBMs, K seeds stacked as one graph) runs its epochs here.

`model.fit` runs a Python-level step for every batch; on the book's small networks that overhead
is most of the time (bench/ measures it). Here an epoch is one `tf.function` call looping over
the batches in-graph. The loop owns what every training shares:
- a fresh shuffle of the whole training set every epoch, from `np.random.default_rng(seed)` per
  model, the last partial batch kept (Keras fit's semantics);
- the sums over the epoch's batches, divided into means over its samples;
- the divergence check: a model whose loss (or any of its epoch's means, or its validation scores)
  stops being finite gets a `DivergedError` naming what trained and the setting to lower;
- one typed record per epoch (`Epoch`), and progress through `on_epoch`.

What one batch does, the *step*, is the caller's: SGD on a Keras model (`training.fit`), on a
stack of seeds (`stacked.fit`), the GAN's two players, an RBM's contrastive divergence.

Example (`step` sums each batch's loss times its size; `x` a tf tensor of n images):

    history = loop.run(step, (x,), size=n, columns=("loss",), epochs=5, batch_size=32, seed=42,
                       what="autoencoder", key="pretrain.learning_rate")
    history[-1].loss

Importing this module imports no TensorFlow, so a contender module can import it at the top.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from fmtransfer.errors import DivergedError

EVAL_BATCH = 2048  # a scoring pass does no backward pass, so larger batches are just faster


@dataclass(frozen=True)
class Epoch:
    """One epoch of training, as run directories and study records keep it.

    Args:
        epoch: which epoch, from 1.
        loss: the mean training loss over the epoch's samples (the data loss: no penalty).
        accuracy: the mean training accuracy, or None where the task has none (reconstruction).
        val_loss, val_accuracy: on the validation set after the epoch, when there is one.
        seconds: the epoch's wall time (a stacked seed's: its share of the stack's).
        extra: what else a method measures (the GAN's `g_loss`, an RBM's `momentum`), in order.

    Example:
        >>> Epoch(1, 0.5, accuracy=0.75, seconds=0.1).to_dict()
        {'epoch': 1, 'loss': 0.5, 'accuracy': 0.75, 'seconds': 0.1}
    """

    epoch: int
    loss: float
    accuracy: float | None = None
    val_loss: float | None = None
    val_accuracy: float | None = None
    seconds: float = 0.0
    extra: Mapping[str, float] = field(default_factory=dict, hash=False)  # a dict: hash the rest

    def __post_init__(self):
        if not isinstance(self.epoch, int) or self.epoch < 1:
            raise ValueError(f"epoch must be an integer from 1, got {self.epoch!r}")
        taken = set(self.extra) & (set(self.__dataclass_fields__) - {"extra"})
        if taken:
            raise ValueError(f"extra names fields of Epoch itself: {sorted(taken)}")

    def to_dict(self) -> dict[str, Any]:
        """The record's JSON form: epoch, loss, accuracy, the extras, validation, seconds; a
        score that was not measured is left out rather than written as null."""
        d: dict[str, Any] = {"epoch": self.epoch, "loss": self.loss}
        if self.accuracy is not None:
            d["accuracy"] = self.accuracy
        d.update(self.extra)
        for name in ("val_loss", "val_accuracy"):
            if getattr(self, name) is not None:
                d[name] = getattr(self, name)
        d["seconds"] = self.seconds
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Epoch":
        own = set(cls.__dataclass_fields__) - {"extra"}
        return cls(**{k: v for k, v in d.items() if k in own},
                   extra={k: v for k, v in d.items() if k not in own})

    @classmethod
    def of(cls, epoch: int, values: Mapping[str, float], seconds: float) -> "Epoch":
        """The record of named values: those named as Epoch's fields go there, the rest to `extra`."""
        own = set(cls.__dataclass_fields__) - {"extra", "epoch", "seconds"}
        return cls(epoch, seconds=seconds, **{k: v for k, v in values.items() if k in own},
                   extra={k: v for k, v in values.items() if k not in own})


EpochCallback = Callable[[int, Epoch], None]
# (indices, batch index, *data, *epoch inputs) -> one sum over the batch per column: scalars for
# one model, (K,) tensors for a stack of K.
Step = Callable[..., tuple]
# (epoch from 1, the shuffling generators, after this epoch's permutation) -> (extra graph
# arguments of this epoch, values to record with it).
Inputs = Callable[[int, list], tuple[tuple, dict]]


def run(step: Step, data: tuple, *, size: int, columns: Sequence[str], epochs: int, batch_size: int,
        seed, what: str, key: str | None = None, inputs: Inputs | None = None, guard: Callable | None = None,
        validate: Callable[[], Mapping[str, float]] | None = None,
        on_epoch: EpochCallback | None = None) -> list[Epoch]:
    """Train one model for `epochs`; return one record per epoch, or raise DivergedError.

    Args:
        step: what one batch does; returns its sums, one scalar per `columns` name.
        data: the tensors the step gathers its batches from: arguments of the graph, not
            constants captured in it (a captured constant lives as long as TensorFlow keeps the
            traced graph, which is the whole process).
        size: how many samples `data` holds; each epoch shuffles them all.
        columns: the names of the step's sums; their epoch means become the record's values
            ("loss", "accuracy", or extras such as "g_loss").
        seed: seeds the shuffle, `np.random.default_rng(seed)`.
        what, key: what the DivergedError calls the training, and the setting it says to lower.
        inputs: gives each epoch's extra graph arguments (a noise seed, a momentum) and values
            to record, after the epoch's permutation is drawn from the same generator.
        guard: an in-graph check run after the epoch's batches, a boolean tensor (e.g. that
            every weight is finite); False is divergence.
        validate: scores after each epoch, as {"val_loss": ...}; one not finite is divergence.
    """
    (outcome,) = _run(step, data, size=size, columns=columns, epochs=epochs, batch_size=batch_size, seeds=[seed],
                      stacked=False, what=what, key=key, inputs=inputs, guard=guard,
                      validate=None if validate is None else lambda: {k: [v] for k, v in validate().items()},
                      on_epoch=on_epoch)
    if isinstance(outcome, DivergedError):
        raise outcome
    return outcome


def run_stacked(step: Step, data: tuple, *, size: int, columns: Sequence[str], epochs: int | Sequence[int],
                batch_size: int, seeds: Sequence, what: str, key: str | None = None, inputs: Inputs | None = None,
                guard: Callable | None = None, validate: Callable[[], Mapping[str, Sequence[float]]] | None = None,
                on_diverged: Callable[[int], None] | None = None,
                on_epoch: EpochCallback | None = None) -> list[list[Epoch] | DivergedError]:
    """`run` for K models trained as one graph, one per seed of `seeds`: the step gets (K, B)
    indices, row k from seed k's own shuffle, and returns (K,) sums per column.

    `epochs` is one count for all, or one per model: the stack runs the largest, and model k's
    history holds its own first `epochs[k]` only; past them nothing of it is checked or
    recorded (the step must leave it in place: `stacked.fit` gives it a rate of 0). Every
    generator draws its permutation every epoch, so a finished model changes no other's
    batches, and its own batches were those it has alone. Seeds may repeat (the trials of one
    seed): each model has a generator of its own.

    Divergence is per model: the first epoch at which model k's means or scores stop being
    finite ends its history with a DivergedError, `on_diverged(k)` is called (to silence its
    slice of the stack), and the others go on. `validate` gives K scores per name; `guard` a
    scalar or (K,) booleans. Each record's seconds are the model's share of its epoch's time
    among the models that epoch trains; `on_epoch` follows the first model still training.

    Returns:
        per model, its records or the DivergedError that stopped it.
    """
    return _run(step, data, size=size, columns=columns, epochs=epochs, batch_size=batch_size, seeds=list(seeds),
                stacked=True, what=what, key=key, inputs=inputs, guard=guard, validate=validate,
                on_diverged=on_diverged, on_epoch=on_epoch)


def _run(step, data, *, size, columns, epochs, batch_size, seeds, stacked, what, key, inputs, guard, validate,
         on_epoch, on_diverged=None) -> list:
    import tensorflow as tf

    k_models = len(seeds)
    own = per_model(epochs, k_models, "epochs")
    run_epoch = _epoch_function(step, size, batch_size, len(columns), [k_models] if stacked else [], guard)
    rngs = [np.random.default_rng(s) for s in seeds]
    histories: list[list[Epoch]] = [[] for _ in seeds]
    failed: list[DivergedError | None] = [None] * k_models

    def fail(k: int, epoch: int) -> None:
        failed[k] = DivergedError(what, epoch, key)
        if on_diverged is not None:
            on_diverged(k)

    for epoch in range(1, max(own, default=0) + 1):
        started = time.perf_counter()
        order = np.stack([rng.permutation(size) for rng in rngs]) if stacked else rngs[0].permutation(size)
        args, noted = inputs(epoch, rngs) if inputs is not None else ((), {})
        out = [np.atleast_1d(t.numpy()) for t in run_epoch(tf.constant(order, dtype=tf.int32), *data, *args)]
        means, fine = out[:len(columns)], (out[len(columns)] if guard is not None else None)

        def training() -> list[int]:  # the models this epoch is one of their own, and still going
            return [k for k in _live(failed) if epoch <= own[k]]

        for k in training():
            ok = all(math.isfinite(m[k]) for m in means) and (fine is None or bool(fine[k if fine.size > 1 else 0]))
            if not ok:
                fail(k, epoch)
        if not training():
            break
        scores = {name: np.atleast_1d(v) for name, v in validate().items()} if validate is not None else {}
        for k in training():
            if not all(math.isfinite(v[k]) for v in scores.values()):
                fail(k, epoch)
        sharing = sum(epoch <= n for n in own) if stacked else 1
        seconds = round((time.perf_counter() - started) / sharing, 4)
        for k in training():
            values = {name: float(m[k]) for name, m in zip(columns, means)}
            values.update(noted)
            values.update({name: float(v[k]) for name, v in scores.items()})
            histories[k].append(Epoch.of(epoch, values, seconds))
        live = training()
        if not live:
            break
        if on_epoch is not None:
            on_epoch(epoch, histories[live[0]][-1])
    return [f if f is not None else h for f, h in zip(failed, histories)]


def per_model(value, k_models: int, name: str) -> list:
    """One value for each of `k_models` models: `value` itself K times, or its list as given."""
    if isinstance(value, (list, tuple)):
        if len(value) != k_models:
            raise ValueError(f"{len(value)} {name} for {k_models} models")
        return list(value)
    return [value] * k_models


def check_finite(arrays, what: str, key: str | tuple[str, ...] | None, cause: str) -> None:
    """Raise DivergedError unless every value of `arrays` is finite: for weights a method computes
    outside this loop (a probe's head, an initialisation), which no epoch's check would see."""
    if not all(np.all(np.isfinite(np.asarray(a, dtype=np.float64))) for a in arrays):
        raise DivergedError(what, 0, key, cause=cause)


def _live(failed: list) -> list[int]:
    return [k for k, f in enumerate(failed) if f is None]


def _epoch_function(step, size: int, batch_size: int, n_columns: int, shape: list, guard):
    """One epoch as one graph: the batches of `order` in turn, the last partial one kept."""
    import tensorflow as tf

    full_batches, rest = divmod(size, batch_size)

    def epoch(order, *args):
        sums = tuple(tf.zeros(shape) for _ in range(n_columns))
        for i in tf.range(full_batches):
            batch = step(order[..., i * batch_size:(i + 1) * batch_size], i, *args)
            sums = tuple(s + b for s, b in zip(sums, batch))
        if rest:
            batch = step(order[..., full_batches * batch_size:], full_batches, *args)
            sums = tuple(s + b for s, b in zip(sums, batch))
        means = tuple(s / size for s in sums)
        return means if guard is None else (*means, guard())

    return tf.function(epoch)
