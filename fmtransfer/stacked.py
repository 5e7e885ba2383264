"""Seed-stacked training (`study --stack K`): up to K seeds of one network trained as one graph.

A batch-32 step of the book's small dense network is mostly fixed per-step cost; on a GPU, kernel
launch latency leaves the device idle. Stacking K seeds makes every dense layer one batched matmul
over weights of shape (K, in, out), each seed fed from its own shuffle. On the 2-core CPU it gains
nothing against worker processes (bench/README.md), so `study.stack` is 1 (off) by default there.

What keeps a stacked seed the same experiment as an unstacked one:
- Its initial weights are those of the plain Keras model built after the same `seed_everything`
  call as the unstacked path, copied into its slice. No Keras initializer ever sees a 3-D
  kernel: it would take K as part of the fan-in and shrink the scale.
- Its batches come from its own `np.random.default_rng(seed)` permutations, as `training.fit`'s.
- The loss is the sum over seeds of each seed's mean loss, so slice k's gradient is seed k's own
  gradient (a mean over seeds would divide every learning rate by K); Keras' SGD then moves each
  element on its own. Nothing couples seeds: no shared norm, clipping or optimizer state.
- After training each slice is written back into its plain model, which is evaluated, saved and
  reported exactly as unstacked. Histories, freezing and divergence are per seed; a seed whose loss
  stops being finite gets the same DivergedError as unstacked, and the others go on.
Numbers agree with unstacked runs to float precision, not bit for bit: reductions run in another
order. The unstacked path stays the reference (tests/test_stacked.py compares the two).

Stacked: dense model A, the baseline, and transfer from A (both phases). Everything else (cnn
models, the pretraining contenders, other fine-tuning schedules) trains unstacked.
"""

from __future__ import annotations

import math
import time

import numpy as np

from fmtransfer import models, probe, runtime, training
from fmtransfer.config import reuse_count
from fmtransfer.contenders.base import ContenderResult
from fmtransfer.contenders.transfer import TransferFromA
from fmtransfer.errors import ConfigError, DivergedError
from fmtransfer.runtime import import_keras

keras = import_keras()
import tensorflow as tf  # noqa: E402  (keras first: it pins the TensorFlow backend)

def supported(cfg) -> bool:
    """Whether runs of `cfg` can be stacked: dense networks only (a cnn falls back to unstacked)."""
    return cfg.model.arch == "dense"


def stackable(contender) -> bool:
    """Only the book's two-phase transfer; subclasses (pretraining, other schedules) may train otherwise."""
    return type(contender) is TransferFromA


class Stack:
    """K plain dense Keras models of one shape as one: kernels (K, in, out), biases (K, out).

    The plain models stay the owners of the experiment: their weights fill the slices, their
    layers' `trainable` flags say what trains, and `write_back` returns every slice to them.
    """

    def __init__(self, plain: list):
        self.models = plain
        self.layers = [[layer for layer in m.layers if layer.weights] for m in plain]
        for m in plain:
            if any(not isinstance(layer, (keras.layers.Dense, keras.layers.Flatten)) for layer in m.layers):
                raise ValueError(f"only Flatten + Dense models stack, got {m.name}")
        self.activations = [layer.activation for layer in self.layers[0]]
        # Values, not initializers: each slice is exactly its plain model's weights.
        self.kernels = [keras.Variable(np.stack([ls[i].kernel.numpy() for ls in self.layers]), name=f"kernel{i}")
                        for i in range(len(self.activations))]
        self.biases = [keras.Variable(np.stack([ls[i].bias.numpy() for ls in self.layers]), name=f"bias{i}")
                       for i in range(len(self.activations))]

    def __len__(self) -> int:
        return len(self.models)

    def trainable_variables(self) -> list:
        """The slices of the layers trainable now; every seed must freeze the same layers."""
        flags = [[layer.trainable for layer in ls] for ls in self.layers]
        if any(f != flags[0] for f in flags):
            raise ValueError("the seeds of a stack must freeze the same layers")
        return [v for i, on in enumerate(flags[0]) if on for v in (self.kernels[i], self.biases[i])]

    def __call__(self, x):
        """(K, B, 28, 28) images, one batch per seed, or (B, 28, 28) shared by every seed -> (K, B, out)."""
        shape = tf.shape(x)
        h = tf.reshape(x, tf.concat([shape[:-2], [shape[-2] * shape[-1]]], 0))
        if x.shape.rank == 3:
            h = h[None]  # broadcast over seeds by the batched matmul
        for kernel, bias, activation in zip(self.kernels, self.biases, self.activations):
            h = activation(tf.matmul(h, kernel) + bias[:, None, :])
        return h

    def weights_of(self, k: int) -> list[np.ndarray]:
        return [w for kernel, bias in zip(self.kernels, self.biases) for w in (kernel.numpy()[k], bias.numpy()[k])]

    def write_back(self) -> None:
        for k, m in enumerate(self.models):
            m.set_weights(self.weights_of(k))

    def silence(self, k: int) -> None:
        """Zero a diverged seed's slices, so its NaNs cannot reach any later sum."""
        for v in (*self.kernels, *self.biases):
            v.assign(tf.tensor_scatter_nd_update(v, [[k]], tf.zeros_like(v[k])[None]))


def orders(seeds: list, n: int):
    """Each epoch's (K, n) batch order: row k is what `training.fit` draws for seed k."""
    rngs = [np.random.default_rng(s) for s in seeds]
    while True:
        yield np.stack([rng.permutation(n) for rng in rngs])


def _per_sample_loss(task):
    """(K, B) labels and (K, B, out) predictions -> (K, B) losses, so that each seed's mean is
    taken over its own batch only."""
    loss = type(task.loss())(reduction=None)
    if task.name == "multiclass":
        return loss
    # Keras would squeeze (K, B, 1) predictions to match (K, B) labels, then average over the
    # batch axis as if it were the output axis; give the labels the output axis instead.
    return lambda y, p: loss(y[..., None], p)


def fit(stack: Stack, x: np.ndarray, y: np.ndarray, *, task, epochs: int, learning_rate: float, batch_size: int,
        seeds: list, validation: tuple | None = None, what: str = "training", key: str | None = None) -> list:
    """Train every seed of `stack` as `training.fit` trains one; per seed, its history (one
    record per epoch, as `training.fit` returns) or the DivergedError that stopped it."""
    variables = stack.trainable_variables()
    optimizer = keras.optimizers.SGD(learning_rate=learning_rate)
    optimizer.build(variables)
    per_sample = _per_sample_loss(task)
    n, k_seeds = len(x), len(stack)
    x_all, y_all = tf.constant(x, dtype=tf.float32), tf.constant(y)
    full_batches, rest = divmod(n, batch_size)

    def step(indices, x_all, y_all):
        xb, yb = tf.gather(x_all, indices), tf.gather(y_all, indices)
        with tf.GradientTape() as tape:
            pred = stack(xb)
            losses = tf.reduce_mean(per_sample(yb, pred), axis=1)
            total = tf.reduce_sum(losses)  # the sum, not the mean: each seed keeps its learning rate
        optimizer.apply(tape.gradient(total, variables), variables)
        size = tf.cast(tf.shape(indices)[1], tf.float32)
        return losses * size, tf.reduce_sum(task.correct(yb, pred), axis=1)

    @tf.function
    def run_epoch(order, x_all, y_all):
        loss_sum, correct = tf.zeros([k_seeds]), tf.zeros([k_seeds])
        for i in tf.range(full_batches):
            batch_loss, batch_correct = step(order[:, i * batch_size:(i + 1) * batch_size], x_all, y_all)
            loss_sum += batch_loss
            correct += batch_correct
        if rest:
            batch_loss, batch_correct = step(order[:, full_batches * batch_size:], x_all, y_all)
            loss_sum += batch_loss
            correct += batch_correct
        return loss_sum / n, correct / n

    valid = None
    if validation is not None and len(validation[0]):
        valid = (tf.constant(validation[0], dtype=tf.float32), tf.constant(validation[1]))
        score = tf.function(_scorer(stack, task, per_sample))
    histories: list = [[] for _ in range(k_seeds)]
    failed: list = [None] * k_seeds
    batches = orders(seeds, n)
    for epoch in range(epochs):
        started = time.perf_counter()
        loss, accuracy = (t.numpy() for t in run_epoch(tf.constant(next(batches), dtype=tf.int32), x_all, y_all))
        scores = [t.numpy().astype(np.float64) / len(validation[0]) for t in score(*valid)] if valid is not None else None
        seconds = round((time.perf_counter() - started) / k_seeds, 4)  # each seed's share
        for k in range(k_seeds):
            if failed[k] is not None:
                continue
            if not math.isfinite(loss[k]) or (scores is not None and not math.isfinite(scores[0][k])):
                failed[k] = DivergedError(what, epoch + 1, key)
                stack.silence(k)
                continue
            record = {"epoch": epoch + 1, "loss": float(loss[k])}
            if task is not training.RECONSTRUCTION:
                record["accuracy"] = float(accuracy[k])
            if scores is not None:
                record["val_loss"] = float(scores[0][k])
                if task is not training.RECONSTRUCTION:
                    record["val_accuracy"] = float(scores[1][k])
            record["seconds"] = seconds
            histories[k].append(record)
        if all(f is not None for f in failed):
            break
    return [f if f is not None else h for f, h in zip(failed, histories)]


def _scorer(stack: Stack, task, per_sample):
    """Per seed, the loss and correct-prediction sums over a whole set shared by every seed."""
    k_seeds = len(stack)

    def score(x, y):
        loss_sum, correct = tf.zeros([k_seeds]), tf.zeros([k_seeds])
        for i in tf.range(0, tf.shape(x)[0], training.EVAL_BATCH):
            xb, yb = x[i:i + training.EVAL_BATCH], y[i:i + training.EVAL_BATCH]
            pred = stack(xb)
            ys = tf.tile(yb[None], [k_seeds, *([1] * (len(yb.shape)))])
            loss_sum += tf.reduce_sum(per_sample(ys, pred), axis=1)
            correct += tf.reduce_sum(task.correct(ys, pred), axis=1)
        return loss_sum, correct

    return score


# ----------------------------------------------------------------------------- the experiment's models

def _built(cfgs: list, build) -> list:
    """One plain model per config, each built right after its seed, as the unstacked path does."""
    plain = []
    for cfg in cfgs:
        runtime.seed_everything(cfg.seed)
        plain.append(build(cfg))
    return plain


def _from_scratch(plain: list, cfgs: list, section, task, train: tuple, valid: tuple, label: str) -> list:
    """`training.train_from_scratch` for a stack: per seed its phase record or DivergedError."""
    started = time.perf_counter()
    cfg = cfgs[0]
    stack = Stack(plain)
    outcomes = fit(stack, *training.scaled_part(train), task=task, epochs=section.epochs,
                   learning_rate=section.learning_rate, batch_size=cfg.batch_size, seeds=[c.seed for c in cfgs],
                   validation=training.scaled_part(valid), what=label, key=f"{section.NAME}.learning_rate")
    stack.write_back()
    seconds = round((time.perf_counter() - started) / len(cfgs), 3)
    return [o if isinstance(o, DivergedError) else
            {"name": "train", "epochs": section.epochs, "learning_rate": section.learning_rate,
             "history": o, "seconds": seconds} for o in outcomes]


def _tested(model, part, task):
    try:
        return training.evaluate(model, *training.scaled_part(part), task=task)
    except DivergedError as e:
        return e


def train_models_a(cfgs: list, split) -> list:
    """`pipeline.train_model_a` for each config's seed at once: per seed (model, ModelAResult) or
    the DivergedError unstacked training would have raised."""
    from fmtransfer.pipeline import ModelAResult

    a = cfgs[0].train_a
    plain = _built(cfgs, lambda cfg: models.build_model_a(cfg.model, n_classes=len(split.a_classes)))
    phases = _from_scratch(plain, cfgs, a, training.MULTICLASS, split.a_train, split.a_valid, "model A")
    out = []
    for model, phase in zip(plain, phases):
        test = phase if isinstance(phase, DivergedError) else _tested(model, split.a_test, training.MULTICLASS)
        out.append(test if isinstance(test, DivergedError) else
                   (model, ModelAResult(test["accuracy"], test["loss"], a.epochs, a.learning_rate,
                                        phase["history"], phase["seconds"])))
    return out


def fit_baselines(contender, cfgs: list, split) -> list:
    """The baseline contender's `fit` for each config's seed at once: per seed a ContenderResult
    or a DivergedError."""
    plain = _built(cfgs, lambda cfg: models.build_model_b(cfg.model))
    phases = _from_scratch(plain, cfgs, cfgs[0].baseline, training.BINARY, split.b_train, split.b_valid,
                           "baseline B")
    out = []
    for model, phase in zip(plain, phases):
        test = phase if isinstance(phase, DivergedError) else _tested(model, split.b_test, training.BINARY)
        out.append(test if isinstance(test, DivergedError) else
                   ContenderResult(contender.name, contender.title, test["accuracy"], test["loss"],
                                   phases=[phase], seconds=phase["seconds"]))
    return out


def fit_transfers(contender: TransferFromA, cfgs: list, split, bases: list) -> list:
    """`TransferFromA.fit` for each config's seed, on its model A (`bases`), at once: per seed a
    ContenderResult or a DivergedError. The model A's are cloned, never changed."""
    started = time.perf_counter()
    plain, reused = [], []
    for cfg, base in zip(cfgs, bases):
        runtime.seed_everything(cfg.seed)
        reused.append(reuse_count(cfg.transfer.reuse_layers, len(models.blocks(base)[1])))
        plain.append(models.build_b_on_a(base, reused[-1], name=contender.source))
    stack = Stack(plain)
    x, y = training.scaled_part(split.b_train)
    valid = training.scaled_part(split.b_valid)
    x_test, y_test = training.scaled_part(split.b_test)
    # As unstacked: each seed's probe on its model A's features, before any training.
    probed = [probe.linear_probe(m, x, y, x_test, y_test)[0] for m in plain]
    failed: list = [None] * len(cfgs)
    phases: list = [[] for _ in cfgs]
    cfg = cfgs[0]
    for i, phase in enumerate(contender.phases(cfg, reused[0])):
        if phase.top is not None and phase.top > reused[0]:
            raise ConfigError("transfer.unfreeze", f"top:{phase.top} asks for more than the {reused[0]} reused "
                                                   f"layers of {contender.source}")
        for model in plain:
            models.set_reused_trainable(model, phase.trainable, phase.top)
        label = f"B on A: {phase.name}"
        outcomes = fit(stack, x, y, task=training.BINARY, epochs=phase.epochs, learning_rate=phase.learning_rate,
                       batch_size=cfg.batch_size, seeds=[[c.seed, i + 1] for c in cfgs], validation=valid,
                       what=label, key=phase.key)
        for k, outcome in enumerate(outcomes):
            if failed[k] is None and isinstance(outcome, DivergedError):
                failed[k] = outcome
            phases[k].append({"name": phase.name, "epochs": phase.epochs, "learning_rate": phase.learning_rate,
                              "trainable_weights": len(plain[k].trainable_weights), "history": outcome})
    stack.write_back()
    seconds = round((time.perf_counter() - started) / len(cfgs), 3)
    out = []
    for k, (cfg, model) in enumerate(zip(cfgs, plain)):
        test = failed[k] or _tested(model, split.b_test, training.BINARY)
        out.append(test if isinstance(test, DivergedError) else
                   ContenderResult(contender.name, contender.title, test["accuracy"], test["loss"],
                                   phases=phases[k], seconds=seconds,
                                   details={"reuse_layers": reused[k], "unfreeze": cfg.transfer.unfreeze,
                                            "linear_probe": probed[k]}))
    return out
