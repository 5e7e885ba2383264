"""fmtransfer.training: SGD training that is reproducible, and evaluation as Keras reports it.

The seed fixes every random number (weights' initialisation, each epoch's shuffle): the same seed
gives bit-identical weights and history in the same process; another seed gives other numbers.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from fmtransfer import models, runtime, training
from fmtransfer.config import ModelConfig
from fmtransfer.data import scaled

pytestmark = pytest.mark.usefixtures("tensorflow_set_up")

SMALL = ModelConfig(hidden=(64, 32))


@pytest.fixture(scope="module")
def task_b(real_split):
    """The real task-B training images (200) and the first 300 validation images, scaled."""
    (x, y), (xv, yv) = real_split.b_train, real_split.b_valid
    return scaled(x), y, scaled(xv[:300]), yv[:300]


def _train(task_b, seed: int, epochs: int = 2):
    x, y, xv, yv = task_b
    runtime.seed_everything(seed)
    model = models.build_model_b(SMALL)
    history = training.fit(model, x, y, task=training.BINARY, epochs=epochs, learning_rate=1e-2,
                           batch_size=32, seed=seed, validation=(xv, yv))
    # Wall time is the only thing allowed to differ.
    return model.get_weights(), [dataclasses.replace(record, seconds=0.0) for record in history]


@pytest.fixture(scope="module")
def seed_42(task_b):
    """One training with seed 42: (weights, history)."""
    return _train(task_b, 42)


@pytest.mark.slow
def test_same_seed_gives_bit_identical_weights_and_history(task_b, seed_42):
    """Two trainings with seed 42 agree exactly: every weight and every history value."""
    w1, h1 = seed_42
    w2, h2 = _train(task_b, 42)
    assert len(w1) == len(w2)
    assert all(np.array_equal(a, b) for a, b in zip(w1, w2))
    assert h1 == h2
    assert [r.epoch for r in h1] == [1, 2]
    assert {"loss", "accuracy", "val_loss", "val_accuracy"} <= set(h1[0].to_dict())


@pytest.mark.slow
def test_different_seed_gives_different_results(task_b, seed_42):
    """Seed 43 gives other weights and another history than seed 42."""
    w1, h1 = seed_42
    w2, h2 = _train(task_b, 43)
    assert not all(np.array_equal(a, b) for a, b in zip(w1, w2))
    assert h1 != h2


@pytest.mark.slow
def test_shuffle_seed_alone_changes_training(task_b):
    """With the same initial weights, another shuffle seed gives other trained weights."""
    x, y, _, _ = task_b
    runtime.seed_everything(0)
    first = models.build_model_b(SMALL)
    second = models.clone_with_weights(first)
    for model, seed in ((first, 1), (second, 2)):
        training.fit(model, x, y, task=training.BINARY, epochs=1, learning_rate=1e-2, seed=seed)
    assert not all(np.array_equal(a, b) for a, b in zip(first.get_weights(), second.get_weights()))


def test_zero_epochs_changes_nothing(task_b):
    """epochs=0 returns an empty history and leaves the weights as they were."""
    x, y, _, _ = task_b
    runtime.seed_everything(0)
    model = models.build_model_b(SMALL)
    before = [w.copy() for w in model.get_weights()]
    assert training.fit(model, x, y, task=training.BINARY, epochs=0, learning_rate=1e-2) == []
    assert all(np.array_equal(a, b) for a, b in zip(model.get_weights(), before))


@pytest.mark.slow
def test_training_lowers_the_loss(seed_42):
    """SGD does its job: the second epoch's loss is below the first's."""
    _, history = seed_42
    assert history[1].loss < history[0].loss


def test_evaluate_matches_keras_evaluate(task_b):
    """evaluate() reports the loss and accuracy Keras' own model.evaluate reports."""
    import keras

    _, _, xv, yv = task_b
    runtime.seed_everything(0)
    model = models.build_model_b(SMALL)
    ours = training.evaluate(model, xv, yv, task=training.BINARY)
    model.compile(loss=keras.losses.BinaryCrossentropy(), metrics=["binary_accuracy"])
    loss, accuracy = model.evaluate(xv, yv, batch_size=64, verbose=0)
    assert ours["loss"] == pytest.approx(loss, rel=1e-4)
    assert ours["accuracy"] == pytest.approx(accuracy, abs=1e-6)
    predicted = (training.predict(model, xv)[:, 0] > 0.5).astype(np.float32)
    assert ours["accuracy"] == pytest.approx(float(np.mean(predicted == yv)))


def test_multiclass_accuracy_counts_argmax_hits(real_split):
    """For model A, accuracy is the share of images whose highest-probability class is the label."""
    x, y = scaled(real_split.a_test[0][:500]), real_split.a_test[1][:500]
    runtime.seed_everything(0)
    model = models.build_model_a(SMALL)
    scores = training.evaluate(model, x, y, task=training.MULTICLASS)
    expected = float(np.mean(np.argmax(training.predict(model, x), axis=1) == y))
    assert scores["accuracy"] == pytest.approx(expected)
