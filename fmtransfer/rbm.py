"""Bernoulli-Bernoulli restricted Boltzmann machines, trained greedily with contrastive divergence.

The historical pretraining of ch. 11.2.2 (Hinton, Osindero & Teh 2006; Hinton & Salakhutdinov
2006): one RBM per hidden layer, the first on the pixel intensities read as probabilities, each
next one on the hidden probabilities of the one below (mean-field: the standard choice, and less
noisy than sampled states). The settings follow Hinton's "A practical guide to training
restricted Boltzmann machines" (2010, UTML TR 2010-003):

- CD-k: positive statistics from the hidden probabilities given the data; negative ones after k
  Gibbs steps, each sampling binary hiddens and then taking the visible *probabilities*; the last
  hidden statistics use probabilities too (sec. 3.2-3.3 of the guide: less sampling noise).
- weights ~ N(0, 0.01), hidden biases 0, visible biases log(p / (1 - p)) of the data's mean.
- momentum 0.5 for the first 5 epochs, then 0.9; L2 weight decay on the weights only.

An epoch is one `tf.function` call looping over the batches in-graph: `fmtransfer.loop`'s, which
every training shares; the step here is one CD-k update. Sampling uses stateless random ops
seeded from (seed, layer, epoch, step), so a run is reproducible to the bit whatever ran before it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fmtransfer import loop
from fmtransfer.errors import ConfigError
from fmtransfer.loop import Epoch
from fmtransfer.report import Reporter
from fmtransfer.runtime import import_keras

keras = import_keras()
import tensorflow as tf  # noqa: E402  (keras first: it pins the TensorFlow backend)

# Momentum stays low while the weights are still far from anything sensible (the guide, sec. 9).
INITIAL_MOMENTUM_EPOCHS = 5
# A pixel that is (almost) never or always on would get an infinite visible bias.
BIAS_CLIP = 1e-3
KEY = "rbm.learning_rate"


@dataclass
class Layer:
    """One trained RBM: weights (visible x hidden), hidden and visible biases, as numpy arrays."""

    weights: np.ndarray
    hidden_bias: np.ndarray
    visible_bias: np.ndarray


def initial(x: np.ndarray, hidden: int, seed: tuple[int, ...]) -> Layer:
    """The guide's starting point for an RBM with `hidden` units on data `x` (rows in [0, 1])."""
    rng = np.random.default_rng(seed)
    p = np.clip(x.mean(axis=0, dtype=np.float64), BIAS_CLIP, 1 - BIAS_CLIP)
    return Layer(rng.normal(0.0, 0.01, size=(x.shape[1], hidden)).astype(np.float32),
                 np.zeros(hidden, np.float32), np.log(p / (1 - p)).astype(np.float32))


def hidden_probabilities(x, weights, hidden_bias):
    """P(h = 1 | v = x): what the encoder's sigmoid Dense layer computes."""
    return tf.sigmoid(tf.matmul(tf.convert_to_tensor(x, tf.float32), weights) + hidden_bias)


def reconstruction_error(x, weights, hidden_bias, visible_bias) -> float:
    """Mean squared error per unit of the one-step mean-field reconstruction of `x`.

    One function for every RBM, this module's or scikit-learn's (its `components_` is the
    transposed weights), so their training can be compared on the same measure.
    """
    x = tf.convert_to_tensor(x, tf.float32)
    return float(_mean_field_error(x, tf.constant(weights, tf.float32), tf.constant(hidden_bias, tf.float32),
                                   tf.constant(visible_bias, tf.float32)))


def _mean_field_error(v, w, bh, bv):
    h = tf.sigmoid(tf.matmul(v, w) + bh)
    return tf.reduce_mean(tf.square(v - tf.sigmoid(tf.matmul(h, w, transpose_b=True) + bv)))


def train_layer(x: np.ndarray, hidden: int, settings, *, seed: int, layer: int, x_valid: np.ndarray | None = None,
                on_epoch=None, what: str = "RBM pretraining") -> tuple[Layer, list[Epoch]]:
    """Train one RBM with `hidden` units on `x` by CD-k; return it and one record per epoch.

    `settings` is the `rbm` config section. Each record has the mean reconstruction error over
    the epoch's batches (measured on each batch before its update) as `loss`, the epoch's
    momentum, `val_loss` on `x_valid` after the epoch when given, and the seconds it took. A
    non-finite loss or weight raises DivergedError naming rbm.learning_rate before anything is
    returned.
    """
    if settings.cd_k < 1:  # the config refuses it too; a direct caller gets the same message
        raise ConfigError("rbm.cd_k", f"CD-k needs at least 1 Gibbs step, got {settings.cd_k}")
    start = initial(x, hidden, (seed, layer))
    w = tf.Variable(start.weights)
    bh = tf.Variable(start.hidden_bias)
    bv = tf.Variable(start.visible_bias)
    velocities = [tf.Variable(tf.zeros_like(v)) for v in (w, bh, bv)]
    lr, decay, k = float(settings.learning_rate), float(settings.weight_decay), int(settings.cd_k)

    def step(indices, batch, x_all, momentum, epoch_seed):
        v0 = tf.gather(x_all, indices)
        seed_pair = tf.random.experimental.stateless_fold_in(epoch_seed, batch)
        size = tf.cast(tf.shape(v0)[0], tf.float32)
        ph0 = tf.sigmoid(tf.matmul(v0, w) + bh)
        error = tf.reduce_mean(tf.square(v0 - tf.sigmoid(tf.matmul(ph0, w, transpose_b=True) + bv)))
        ph = ph0
        for gibbs in range(k):  # k is small and fixed: unrolled in the graph
            h = _sample(ph, tf.random.experimental.stateless_fold_in(seed_pair, gibbs))
            pv = tf.sigmoid(tf.matmul(h, w, transpose_b=True) + bv)
            ph = tf.sigmoid(tf.matmul(pv, w) + bh)
        grads = [(tf.matmul(v0, ph0, transpose_a=True) - tf.matmul(pv, ph, transpose_a=True)) / size - decay * w,
                 tf.reduce_mean(ph0 - ph, axis=0),
                 tf.reduce_mean(v0 - pv, axis=0)]
        for var, velocity, grad in zip((w, bh, bv), velocities, grads):
            velocity.assign(momentum * velocity + lr * grad)
            var.assign_add(velocity)
        return (error * size,)

    def inputs(epoch, _):
        momentum = settings.initial_momentum if epoch <= INITIAL_MOMENTUM_EPOCHS else settings.momentum
        return ((tf.constant(momentum, tf.float32), tf.constant([seed, layer * 100_000 + epoch], tf.int64)),
                {"momentum": momentum})

    def finite():
        return tf.reduce_all([tf.reduce_all(tf.math.is_finite(v)) for v in (w, bh, bv)])

    valid = tf.constant(x_valid, tf.float32) if x_valid is not None and len(x_valid) else None

    def validate():
        return {"val_loss": float(_mean_field_error(valid, w, bh, bv))}

    history = loop.run(step, (tf.constant(x, tf.float32),), size=len(x), columns=("loss",), epochs=settings.epochs,
                       batch_size=int(settings.batch_size), seed=(seed, layer), what=what, key=KEY, inputs=inputs,
                       guard=finite, validate=validate if valid is not None else None, on_epoch=on_epoch)
    return Layer(w.numpy(), bh.numpy(), bv.numpy()), history


def _sample(p, seed_pair):
    """Binary states with probabilities `p`, from a stateless generator: same seed, same states."""
    return tf.cast(tf.random.stateless_uniform(tf.shape(p), seed_pair) < p, tf.float32)


def digest(layer: Layer) -> str:
    from fmtransfer import models

    return models.weights_digest([layer.weights, layer.hidden_bias, layer.visible_bias])


def train_stack(x: np.ndarray, sizes, settings, *, seed: int, x_valid: np.ndarray | None = None,
                reporter=None) -> tuple[list[Layer], list[dict]]:
    """Train one RBM per size in `sizes`, greedily; return the RBMs and one step record per RBM.

    RBM i trains on the hidden probabilities of RBM i-1 given the data; the trained RBMs below it
    never change again. Each step records the digests of every RBM so far before and after it
    trains, so anyone can check that.
    """
    reporter = reporter or Reporter(quiet=True)
    trained: list[Layer] = []
    steps = []
    visible, visible_valid = x, x_valid
    for i, hidden in enumerate(sizes, start=1):
        before = [digest(r) for r in trained]
        label = f"RBM {i}/{len(sizes)}"
        with reporter.training(label, settings.epochs) as on_epoch:
            rbm, history = train_layer(visible, hidden, settings, seed=seed, layer=i, x_valid=visible_valid,
                                       on_epoch=on_epoch, what=f"RBM pretraining ({label})")
        steps.append({"name": f"rbm {i}", "depth": i, "trains": [f"hidden{i}"],
                      "visible": int(visible.shape[1]), "hidden": int(hidden),
                      "history": [e.to_dict() for e in history],
                      "block_digests_before": before,
                      "block_digests_after": [digest(r) for r in trained + [rbm]]})
        trained.append(rbm)
        # Mean-field: the next RBM sees probabilities, not sampled states.
        visible = _probabilities(visible, rbm)
        if visible_valid is not None:
            visible_valid = _probabilities(visible_valid, rbm)
    return trained, steps


def _probabilities(x: np.ndarray, rbm: Layer, batch: int = 8192) -> np.ndarray:
    """The hidden probabilities of `x`, in batches so the temporaries stay small."""
    if not len(x):
        return np.zeros((0, rbm.weights.shape[1]), np.float32)
    return np.concatenate([hidden_probabilities(x[i:i + batch], rbm.weights, rbm.hidden_bias).numpy()
                           for i in range(0, len(x), batch)])


def encoder(rbms: list[Layer]):
    """The RBM stack as a model A look-alike: Flatten, one sigmoid Dense per RBM (its weights as
    kernel, its hidden bias as bias), then an Identity `code` layer, as `models.build_encoder`."""
    from fmtransfer import models

    layers = keras.layers
    dense = [layers.Dense(r.weights.shape[1], activation="sigmoid", name=f"hidden{i + 1}") for i, r in enumerate(rbms)]
    model = keras.Sequential([keras.Input(models.INPUT_SHAPE), layers.Flatten(name="flatten"), *dense,
                              layers.Identity(name="code")], name="encoder")
    for layer, r in zip(dense, rbms):
        layer.set_weights([r.weights, r.hidden_bias])
    return model


def unrolled(encoder_model, rbms: list[Layer]):
    """The unrolled stack (Hinton & Salakhutdinov 2006): the encoder's layers (shared), then per
    RBM from the top a sigmoid Dense with the transposed weights and the visible biases."""
    from fmtransfer import models

    layers = keras.layers
    decoders = [layers.Dense(r.weights.shape[0], activation="sigmoid", name=f"decode{i + 1}")
                for i, r in enumerate(rbms)]
    model = keras.Sequential([keras.Input(models.INPUT_SHAPE), *encoder_model.layers[:-1], *reversed(decoders),
                              layers.Reshape(models.INPUT_SHAPE, name="reconstruction")], name="unrolled_rbm")
    for layer, r in zip(decoders, rbms):
        layer.set_weights([r.weights.T.copy(), r.visible_bias])
    return model
