"""fmtransfer.loop: the one epoch loop every training shares, and its typed epoch record.

The steps here are toys that record what the loop gives them, so each property of the skeleton
(shuffling, the last partial batch, means, divergence, per-epoch inputs) is checked on its own.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from fmtransfer import DivergedError
from fmtransfer.loop import Epoch

pytestmark = pytest.mark.usefixtures("tensorflow_set_up")


# ----------------------------------------------------------------------------- the record

def test_an_epoch_writes_the_keys_run_directories_have_always_had():
    record = Epoch(3, 0.25, accuracy=0.5, val_loss=0.75, val_accuracy=0.625, seconds=0.01)
    assert list(record.to_dict()) == ["epoch", "loss", "accuracy", "val_loss", "val_accuracy", "seconds"]
    # What was not measured is left out, not written as null: a reconstruction has no accuracy.
    assert list(Epoch(1, 0.1, val_loss=0.2, seconds=0.0).to_dict()) == ["epoch", "loss", "val_loss", "seconds"]


def test_a_methods_own_measures_go_between_the_training_and_validation_scores():
    gan = Epoch.of(1, {"loss": 0.7, "g_loss": 0.8, "real_accuracy": 0.5, "fake_accuracy": 0.4,
                       "val_real_accuracy": 0.45}, 0.5)
    assert list(gan.to_dict()) == ["epoch", "loss", "g_loss", "real_accuracy", "fake_accuracy", "val_real_accuracy",
                                   "seconds"]
    assert gan.accuracy is None and gan.extra["g_loss"] == 0.8
    rbm = Epoch.of(2, {"loss": 0.05, "momentum": 0.5, "val_loss": 0.06}, 0.1)
    assert list(rbm.to_dict()) == ["epoch", "loss", "momentum", "val_loss", "seconds"]
    assert rbm.val_loss == 0.06 and rbm.extra == {"momentum": 0.5}


def test_an_epoch_round_trips_through_json_and_checks_itself():
    record = Epoch.of(4, {"loss": 0.1, "accuracy": 0.9, "momentum": 0.9, "val_loss": 0.2}, 0.3)
    assert Epoch.from_dict(json.loads(json.dumps(record.to_dict()))) == record
    assert len({record, Epoch.from_dict(record.to_dict())}) == 1  # a value: equal records hash alike
    with pytest.raises(ValueError, match="epoch"):
        Epoch(0, 0.1)
    with pytest.raises(ValueError, match="loss"):
        Epoch(1, 0.1, extra={"loss": 0.2})
    with pytest.raises(Exception):  # frozen: a record is what happened
        record.loss = 0.0


# ----------------------------------------------------------------------------- the loop

def _recording_step(n: int, stacked: bool = False):
    """A step that stores every index it is given, in order, sums them as its 'loss', and gives
    its batch's size squared as 'batch' (a mean weighted by batch size, as a mean loss is)."""
    import tensorflow as tf

    seen = tf.Variable(tf.zeros([3, n] if stacked else [n], tf.int32))
    cursor = tf.Variable(0)

    def step(indices, batch, values):
        width = tf.shape(indices)[-1]
        if stacked:
            seen[:, cursor:cursor + width].assign(indices)
        else:
            seen[cursor:cursor + width].assign(indices)
        cursor.assign_add(width)
        picked = tf.gather(values, indices)
        return (tf.reduce_sum(picked, axis=-1), tf.cast(tf.fill(tf.shape(picked)[:-1], width * width), tf.float32))

    return step, seen, cursor


def test_every_epoch_shuffles_all_samples_afresh_and_keeps_the_last_partial_batch():
    import tensorflow as tf

    from fmtransfer import loop

    n = 23  # two batches of 10, then 3
    step, seen, cursor = _recording_step(n)
    values = tf.range(n, dtype=tf.float32)
    reference = np.random.default_rng([5, 1])
    orders = []

    def on_epoch(epoch, record):
        orders.append(seen.numpy().copy())
        cursor.assign(0)

    history = loop.run(step, (values,), size=n, columns=("loss", "batch"), epochs=3, batch_size=10, seed=[5, 1],
                       what="toy", on_epoch=on_epoch)
    for order in orders:
        assert np.array_equal(order, reference.permutation(n))
    assert [r.epoch for r in history] == [1, 2, 3]
    # Means over the epoch's samples: the indices 0..22 sum to 253; batch widths 10, 10, 3.
    assert history[0].loss == pytest.approx(253 / n)
    assert history[0].extra["batch"] == pytest.approx((10 * 10 + 10 * 10 + 3 * 3) / n)


def test_a_stack_gives_each_model_the_order_of_its_own_seed():
    import tensorflow as tf

    from fmtransfer import loop

    n, seeds = 17, [7, [7, 1], 3]
    step, seen, cursor = _recording_step(n, stacked=True)
    references = [np.random.default_rng(s) for s in seeds]

    def check(epoch, record):
        for k, reference in enumerate(references):
            assert np.array_equal(seen.numpy()[k], reference.permutation(n))
        cursor.assign(0)

    outcomes = loop.run_stacked(step, (tf.range(n, dtype=tf.float32),), size=n, columns=("loss", "batch"), epochs=2,
                                batch_size=5, seeds=seeds, what="toy", on_epoch=check)
    assert [len(h) for h in outcomes] == [2, 2, 2]


def test_inputs_are_drawn_after_the_shuffle_from_the_same_generator_and_recorded():
    import tensorflow as tf

    from fmtransfer import loop

    def step(indices, batch, values, offset):
        return (tf.reduce_sum(tf.gather(values, indices)) + offset,)

    def inputs(epoch, rngs):
        draw = float(rngs[0].integers(0, 100))
        return (tf.constant(draw),), {"draw": draw, "half": epoch / 2}

    history = loop.run(step, (tf.zeros([6]),), size=6, columns=("loss",), epochs=2, batch_size=6, seed=9,
                       what="toy", inputs=inputs)
    reference = np.random.default_rng(9)
    for record in history:
        reference.permutation(6)
        draw = float(reference.integers(0, 100))
        assert record.extra == {"draw": draw, "half": record.epoch / 2}
        assert record.loss == pytest.approx(draw / 6)


def test_a_loss_or_guard_or_score_that_is_not_finite_raises_naming_the_setting():
    import tensorflow as tf

    from fmtransfer import loop

    def step_with(value):
        return lambda indices, batch, values: (tf.reduce_sum(tf.gather(values, indices)) * value,)

    common = dict(size=4, columns=("loss",), epochs=3, batch_size=2, seed=0, what="toy", key="toy.learning_rate")
    data = (tf.ones([4]),)
    with pytest.raises(DivergedError, match="toy diverged at epoch 1.*toy.learning_rate"):
        loop.run(step_with(math.inf), data, **common)
    with pytest.raises(DivergedError, match="at epoch 1"):
        loop.run(step_with(1.0), data, guard=lambda: tf.constant(False), **common)
    scores = iter([0.5, math.nan])
    with pytest.raises(DivergedError, match="at epoch 2"):
        loop.run(step_with(1.0), data, validate=lambda: {"val_loss": next(scores)}, **common)
    assert len(loop.run(step_with(1.0), data, **common)) == 3


def test_in_a_stack_only_the_diverging_model_stops_and_is_silenced():
    import tensorflow as tf

    from fmtransfer import loop

    scale = tf.Variable([1.0, 1.0, 1.0])
    silenced = []

    def step(indices, batch, values):
        return (tf.reduce_sum(tf.gather(values, indices), axis=1) * scale,)

    def inputs(epoch, rngs):
        if epoch == 2:
            scale.assign([1.0, math.nan, 1.0])  # model 1's loss stops being finite at epoch 2
        return (), {}

    def on_diverged(k):
        silenced.append(k)
        scale.assign(tf.tensor_scatter_nd_update(scale, [[k]], [0.0]))

    outcomes = loop.run_stacked(step, (tf.ones([4]),), size=4, columns=("loss",), epochs=3, batch_size=2,
                                seeds=[1, 2, 3], what="baseline B", key="baseline.learning_rate", inputs=inputs,
                                on_diverged=on_diverged)
    assert silenced == [1]
    assert isinstance(outcomes[1], DivergedError)
    assert (outcomes[1].epoch, outcomes[1].key) == (2, "baseline.learning_rate")
    assert [len(outcomes[0]), len(outcomes[2])] == [3, 3]
