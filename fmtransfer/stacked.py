"""Seed-stacked training (`study --stack K`): up to K seeds of one network trained as one graph.

A batch-32 step of the book's small dense network is mostly fixed per-step cost; on a GPU, kernel
launch latency leaves the device idle. Stacking K seeds makes every dense layer one batched matmul
over weights of shape (K, in, out), each seed fed from its own shuffle. On the 2-core CPU it gains
nothing against worker processes (bench/README.md), so `study.stack` is 1 (off) by default there.

What keeps a stacked seed the same experiment as an unstacked one:
- Its initial weights are those of the plain Keras model built after the same `seed_everything`
  call as the unstacked path, copied into its slice. No Keras initializer ever sees a 3-D
  kernel: it would take K as part of the fan-in and shrink the scale. Whatever a contender does
  to a model before training (LP-FT's probe-fitted head, reinit's fresh layer) it does to each
  plain model, before its weights fill the stack.
- Its batches come from its own `np.random.default_rng(seed)` permutations: the same epoch loop
  (`fmtransfer.loop`) shuffles, checks and records a stack and a single model.
- The loss is the sum over seeds of each seed's mean loss, plus each seed's penalty on its own
  slices, so slice k's gradient is seed k's own gradient (a mean over seeds would divide every
  learning rate by K); per-layer gradient scales multiply each seed's slice of a layer's stacked
  variable. Keras' SGD then moves each element on its own. Nothing couples seeds: no shared norm, clipping or
  optimizer state.
- After training each slice is written back into its plain model, which is evaluated, saved and
  reported exactly as unstacked. Histories, freezing and divergence are per seed; a seed whose loss
  stops being finite gets the same DivergedError as unstacked, and the others go on.
Numbers agree with unstacked runs to float precision, not bit for bit: reductions run in another
order. The unstacked path stays the reference (tests/test_stacked.py compares the two).

Stacked trials. The slots of a stack may be the trials of a tuned study, of one seed or several:
each slot has its own learning rate and epochs (`fit` takes one for all or a list), besides its
own penalty and per-layer scales. The optimizer is SGD at rate 1, and slot k's slice of every
gradient is multiplied by rate_k, a graph argument of each epoch, so one trace serves every rate:
1 * (rate_k * g) is what SGD at rate_k subtracts, to the bit. The stack runs its slots' largest
number of epochs; past its own, a slot's rate is 0 (as a diverged slot's), so it stays where it
finished, its history holds its own epochs, and the permutation its generator still draws
changes no other slot's batches. Configs whose phases differ in shape are grouped by the
contenders that stack them (`TransferFromA.train`); tests/test_stacked_trials.py compares each
stacked trial with the same trial alone.

`training.fit_models` is the way in: it trains K plain models here when their network stacks
(Flatten and Dense layers only), else one by one. Every contender that trains model B by phases
on a base model goes through it, alone or stacked (`Contender.stack_unsupported` says why one
cannot); a cnn never stacks.
"""

from __future__ import annotations

import numpy as np

from fmtransfer import loop
from fmtransfer.runtime import import_keras

keras = import_keras()
import tensorflow as tf  # noqa: E402  (keras first: it pins the TensorFlow backend)


def unsupported(cfg) -> str | None:
    """Why runs of `cfg` cannot be stacked, or None: only dense networks stack."""
    if not cfg.model.stacks:
        return (f"a {cfg.model.arch} network does not stack: only Flatten and Dense layers become one batched "
                "matmul over K seeds")
    return None


def supported(cfg) -> bool:
    """Whether runs of `cfg` can be stacked: dense networks only (a cnn falls back to unstacked)."""
    return unsupported(cfg) is None


def stacks(model) -> bool:
    """Whether a plain model can join a stack: Flatten and Dense layers only."""
    return all(isinstance(layer, (keras.layers.Dense, keras.layers.Flatten)) for layer in model.layers)


class Stack:
    """K plain dense Keras models of one shape as one: kernels (K, in, out), biases (K, out).

    The plain models stay the owners of the experiment: their weights fill the slices, their
    layers' `trainable` flags say what trains, and `write_back` returns every slice to them.
    """

    def __init__(self, plain: list):
        self.models = plain
        self.layers = [[layer for layer in m.layers if layer.weights] for m in plain]
        for m in plain:
            if not stacks(m):
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
        return self.features_and_output(x)[1]

    def features_and_output(self, x):
        """As `__call__`, with what the output layer takes in, (K, B, width): each seed's batch
        features, as `training.features_and_output` gives one model's."""
        shape = tf.shape(x)
        h = tf.reshape(x, tf.concat([shape[:-2], [shape[-2] * shape[-1]]], 0))
        if x.shape.rank == 3:
            h = h[None]  # broadcast over seeds by the batched matmul
        features = h
        for kernel, bias, activation in zip(self.kernels, self.biases, self.activations):
            features = h
            h = activation(tf.matmul(h, kernel) + bias[:, None, :])
        return features, h

    def value_of(self, k: int):
        """For seed k, what `training.fit`'s penalties call `value`: a plain weight of model k ->
        its slice of the stack, the tensor training moves."""
        slots = {}
        for i, layer in enumerate(self.layers[k]):
            slots[id(layer.kernel)], slots[id(layer.bias)] = self.kernels[i], self.biases[i]

        def value(weight):
            return slots[id(weight)][k]

        return value

    def weights_of(self, k: int) -> list[np.ndarray]:
        return [w for kernel, bias in zip(self.kernels, self.biases) for w in (kernel.numpy()[k], bias.numpy()[k])]

    def write_back(self) -> None:
        for k, m in enumerate(self.models):
            m.set_weights(self.weights_of(k))

    def silence(self, k: int) -> None:
        """Zero a diverged seed's slices, so its NaNs cannot reach any later sum."""
        for v in (*self.kernels, *self.biases):
            v.assign(tf.tensor_scatter_nd_update(v, [[k]], tf.zeros_like(v[k])[None]))


def _per_sample_loss(task):
    """(K, B) labels and (K, B, out) predictions -> (K, B) losses, so that each seed's mean is
    taken over its own batch only."""
    loss = type(task.loss())(reduction=None)
    if task.name == "multiclass":
        return loss
    # Keras would squeeze (K, B, 1) predictions to match (K, B) labels, then average over the
    # batch axis as if it were the output axis; give the labels the output axis instead.
    return lambda y, p: loss(y[..., None], p)


def fit(plain: list, x: np.ndarray, y: np.ndarray, *, task, epochs: int | list[int], learning_rate: float | list[float],
        batch_size: int, seeds: list, validation: tuple | None = None, on_epoch=None, what: str = "training",
        key: str | None = None, penalties: list | None = None, scales: list | None = None,
        feature_penalties: list | None = None) -> list:
    """Train K plain models of one dense network as one stack, model k as `training.fit` trains
    it with `seeds[k]`, `epochs[k]`, `learning_rate[k]`, `penalties[k]`, `scales[k]` and
    `feature_penalties[k]` (on slot k's own batch features; a single epochs or learning rate is
    every model's), and write each slice back into its model; per model, its records or the
    DivergedError that stopped it.

    Slot k's update is rate_k * (scale * g_k), what SGD at learning rate rate_k makes of its
    scaled gradient: the optimizer runs at rate 1 and each slot's slice of a gradient is
    multiplied by its own rate, a graph argument of each epoch (so the traced epoch serves
    every rate). Past its epochs a slot's rate is 0, and so is a diverged slot's: it stays put.
    """
    k_models = len(plain)
    stack = Stack(plain)
    variables = stack.trainable_variables()
    own_epochs = loop.per_model(epochs, k_models, "epochs")
    rates = np.asarray(loop.per_model(learning_rate, k_models, "learning rates"), dtype=np.float32)
    scale = _slot_scales(scales, k_models, variables)
    # Rate 1: Keras' SGD subtracts 1 * (rate_k * g), which is rate_k * g to the bit.
    optimizer = keras.optimizers.SGD(learning_rate=1.0)
    optimizer.build(variables)
    per_sample = _per_sample_loss(task)
    terms = [(p, stack.value_of(k)) for k, p in enumerate(penalties or []) if p is not None]
    on_features = [(k, p) for k, p in enumerate(feature_penalties or []) if p is not None]
    x_all, y_all = tf.constant(x, dtype=tf.float32), tf.constant(y)
    with_accuracy = len(task.columns) > 1
    stopped = np.zeros(k_models, dtype=bool)  # diverged: silenced, never moved again

    def step(indices, _, x_all, y_all, rate):
        xb, yb = tf.gather(x_all, indices), tf.gather(y_all, indices)
        with tf.GradientTape() as tape:
            features, pred = stack.features_and_output(xb)
            losses = tf.reduce_mean(per_sample(yb, pred), axis=1)
            total = tf.reduce_sum(losses)  # the sum, not the mean: each slot keeps its own gradient
            if terms:  # each slot's penalty on its own slices: their sum moves each slice by its own
                total += tf.add_n([penalty(value) for penalty, value in terms])
            if on_features:  # each seed's on its own batch's features
                total += tf.add_n([penalty(features[k]) for k, penalty in on_features])
        gradients = tape.gradient(total, variables)
        if scale is not None:
            gradients = [g * s for g, s in zip(gradients, scale)]
        moved = []
        for g in gradients:
            r = tf.reshape(rate, [-1] + [1] * (len(g.shape) - 1))
            # where, not a product alone: a resting slot's gradient may not be finite, and 0 * inf is NaN
            moved.append(tf.where(r > 0, g * r, tf.zeros_like(g)))
        optimizer.apply(moved, variables)
        size = tf.cast(tf.shape(indices)[1], tf.float32)
        sums = losses * size
        return (sums, tf.reduce_sum(task.correct(yb, pred), axis=1)) if with_accuracy else (sums,)

    def epoch_rates(epoch, _rngs):
        going = np.array([epoch <= n for n in own_epochs]) & ~stopped
        return (tf.constant(np.where(going, rates, np.float32(0))),), {}

    def diverged(k):
        stopped[k] = True
        stack.silence(k)

    valid = None
    if validation is not None and len(validation[0]):
        valid = (tf.constant(validation[0], dtype=tf.float32), tf.constant(validation[1]))
        score = tf.function(_scorer(stack, task, per_sample))

    def validate():
        loss, correct = (t.numpy().astype(np.float64) / len(validation[0]) for t in score(*valid))
        return {"val_loss": loss, "val_accuracy": correct} if with_accuracy else {"val_loss": loss}

    outcomes = loop.run_stacked(step, (x_all, y_all), size=len(x), columns=task.columns, epochs=own_epochs,
                                batch_size=batch_size, seeds=seeds, what=what, key=key, inputs=epoch_rates,
                                validate=validate if valid is not None else None, on_diverged=diverged,
                                on_epoch=on_epoch)
    stack.write_back()
    return outcomes


def _slot_scales(scales: list | None, k_models: int, variables: list) -> list | None:
    """Per trainable variable, its slots' gradient scales as a (K, 1, ...) tensor, or None where
    no slot scales: a slot without scales has 1 for every variable."""
    per_slot = loop.per_model(scales if scales else None, k_models, "gradient scales")
    if all(s is None for s in per_slot):
        return None
    for s in per_slot:
        if s is not None and len(s) != len(variables):
            raise ValueError(f"{len(s)} gradient scales for {len(variables)} trainable variables")
    table = np.array([s if s is not None else [1.0] * len(variables) for s in per_slot], dtype=np.float32)
    return [tf.constant(table[:, i].reshape([k_models] + [1] * (len(v.shape) - 1))) for i, v in enumerate(variables)]


def _scorer(stack: Stack, task, per_sample):
    """Per seed, the loss and correct-prediction sums over a whole set shared by every seed."""
    k_seeds = len(stack)

    def score(x, y):
        loss_sum, correct = tf.zeros([k_seeds]), tf.zeros([k_seeds])
        for i in tf.range(0, tf.shape(x)[0], loop.EVAL_BATCH):
            xb, yb = x[i:i + loop.EVAL_BATCH], y[i:i + loop.EVAL_BATCH]
            pred = stack(xb)
            ys = tf.tile(yb[None], [k_seeds, *([1] * (len(yb.shape)))])
            loss_sum += tf.reduce_sum(per_sample(ys, pred), axis=1)
            correct += tf.reduce_sum(task.correct(ys, pred), axis=1)
        return loss_sum, correct

    return score
