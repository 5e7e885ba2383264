"""BSS, batch spectral shrinkage (Chen et al., NeurIPS 2019): eta * sum_{i=1..k} sigma_{-i}^2 of
each batch's features, added to its loss.

The penalty is checked by hand on a 3x2 feature matrix, its place in an SGD step against the
paper's loss, a stack against seeds trained alone, and bad settings at the command line.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import assert_usage_error, run_cli, tiny_settings
from fmtransfer import contenders, load_config
from fmtransfer.config import Config
from fmtransfer.space import IntRange, LogUniform

pytestmark = pytest.mark.usefixtures("tensorflow_set_up")

# F^T F = [[2, 1], [1, 2]]: eigenvalues 3 and 1, so F's singular values are sqrt(3) and 1. The
# smallest one's right singular vector is v = (1, -1)/sqrt(2), its left one u = F v / 1 =
# (0, -1, 1)/sqrt(2), and d(sigma^2)/dF = 2 sigma u v^T = [[0, 0], [-1, 1], [1, -1]].
F = [[1.0, 1.0], [0.0, 1.0], [1.0, 0.0]]


@pytest.fixture(scope="module")
def setup(tiny_data):
    from fmtransfer import data, pipeline

    cfg = load_config(None, {**tiny_settings(tiny_data), "train_a.epochs": 2})
    split = data.split_of(data.load(cfg.data), cfg.data)
    return cfg, split, pipeline.train_model_a(cfg, split)[0]


def _fit(name, cfg, split, model_a):
    from fmtransfer.report import Reporter

    return contenders.get(name).fit(cfg, split, {"model_a": model_a}, Reporter(quiet=True))


# ----------------------------------------------------------------------------- the paper's term

@pytest.mark.parametrize("k, value, gradient", [
    (1, 1.0, [[0.0, 0.0], [-1.0, 1.0], [1.0, -1.0]]),
    (2, 3.0 + 1.0, [[2.0, 2.0], [0.0, 2.0], [2.0, 0.0]]),  # every sigma^2: ||F||^2, whose gradient is 2F
])
def test_the_penalty_is_eta_times_the_k_smallest_squared_singular_values_by_hand(k, value, gradient):
    from fmtransfer.contenders.bss import shrinkage
    from fmtransfer.training import tf

    features = tf.Variable(F)
    with tf.GradientTape() as tape:
        got = shrinkage(0.5, k)(features)
    assert float(got) == pytest.approx(0.5 * value, rel=1e-5)
    np.testing.assert_allclose(tape.gradient(got, features).numpy(), 0.5 * np.array(gradient), atol=1e-5)


def test_a_batch_with_fewer_singular_values_than_k_has_all_of_its_own_shrunk():
    """The last batch of an epoch may be shorter than k: two rows have two singular values."""
    from fmtransfer.contenders.bss import shrinkage
    from fmtransfer.training import tf

    assert float(shrinkage(1.0, 3)(tf.constant(F[:2]))) == pytest.approx(float(np.sum(np.square(F[:2]))), rel=1e-5)


def test_one_sgd_step_descends_the_data_loss_plus_the_shrinkage_of_the_batchs_features():
    """training.fit with the feature penalty: one batch of four, one step at rate 0.1, is
    w - 0.1 * d(BCE + eta * sigma_min(F)^2)/dw, F the hidden layer's output on the batch."""
    from fmtransfer import runtime, training
    from fmtransfer.contenders.bss import shrinkage
    from fmtransfer.training import keras, tf

    runtime.seed_everything(0)
    model = keras.Sequential([keras.Input((28, 28)), keras.layers.Flatten(), keras.layers.Dense(3, activation="tanh"),
                              keras.layers.Dense(1, activation="sigmoid")])
    rng = np.random.default_rng(0)
    x, y = rng.uniform(size=(4, 28, 28)).astype(np.float32), np.array([0.0, 1.0, 1.0, 0.0], np.float32)
    start = [w.numpy() for w in model.weights]
    eta = 0.3
    with tf.GradientTape() as tape:
        hidden = model.layers[1](model.layers[0](tf.constant(x)))
        s_min = tf.linalg.svd(hidden, compute_uv=True)[0][-1]
        data_loss = keras.losses.BinaryCrossentropy()(y, model.layers[2](hidden))
        loss = data_loss + eta * tf.square(s_min)
    assert float(s_min) == pytest.approx(np.linalg.svd(hidden.numpy(), compute_uv=False).min(), rel=1e-4)
    expected = [w - 0.1 * g.numpy() for w, g in zip(start, tape.gradient(loss, model.weights))]
    history = training.fit(model, x, y, task=training.BINARY, epochs=1, learning_rate=0.1, batch_size=4, seed=1,
                           feature_penalty=shrinkage(eta, 1))
    for got, want in zip(model.get_weights(), expected):
        np.testing.assert_allclose(got, want, atol=1e-6)
    assert history[0].loss == pytest.approx(float(data_loss), rel=1e-5)  # the data loss alone, as for every penalty


def test_bss_at_eta_zero_is_transfer_from_a_to_the_bit(setup):
    cfg, split, model_a = setup
    plain = _fit("transfer", cfg, split, model_a)
    none = _fit("bss", cfg.replace(**{"bss.eta": 0.0}), split, model_a)
    assert all(np.array_equal(a, b) for a, b in zip(plain[0].get_weights(), none[0].get_weights()))
    shrunk = _fit("bss", cfg.replace(**{"bss.eta": 1.0, "transfer.fine_tune_learning_rate": 0.05}), split, model_a)
    assert not all(np.allclose(a, b, atol=1e-4) for a, b in zip(plain[0].get_weights(), shrunk[0].get_weights()))


def test_bss_trains_on_the_cnn_too(tiny_data):
    from fmtransfer import data, pipeline

    cfg = load_config(None, {**tiny_settings(tiny_data), "model.arch": "cnn", "model.hidden": [4, 4],
                             "model.cnn_dense": 6, "bss.k": 2})
    split = data.split_of(data.load(cfg.data), cfg.data)
    model, result = _fit("bss", cfg, split, pipeline.train_model_a(cfg, split)[0])
    assert [p["name"] for p in result.phases] == ["frozen", "fine-tune"]
    assert 0 <= result.test_accuracy <= 1


# ----------------------------------------------------------------------------- stacked

def test_a_stack_shrinks_each_seeds_own_batch_features_as_that_seed_alone(setup):
    """Three seeds, each fed its own batches: with a strong eta, the stacked weights agree with
    each seed trained alone, and differ from training without the penalty by far more."""
    from fmtransfer import models, runtime, stacked, training
    from fmtransfer.contenders.bss import shrinkage

    cfg, split, model_a = setup
    x, y = training.scaled_part(split.b_train)
    seeds = [3, 11, 42]

    def plain():
        made = []
        for s in seeds:
            runtime.seed_everything(s)
            made.append(models.build_b_on_a(model_a))
        return made

    kwargs = dict(task=training.BINARY, epochs=2, learning_rate=0.05, batch_size=8)
    together = plain()
    stacked.fit(together, x, y, seeds=seeds, feature_penalties=[shrinkage(2.0, 2)] * 3, **kwargs)
    for k, s in enumerate(seeds):
        alone, bare = plain()[k], plain()[k]
        training.fit(alone, x, y, seed=s, feature_penalty=shrinkage(2.0, 2), **kwargs)
        training.fit(bare, x, y, seed=s, **kwargs)
        for got, want in zip(together[k].get_weights(), alone.get_weights()):
            np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-4)
        assert max(np.abs(a - b).max() for a, b in zip(alone.get_weights(), bare.get_weights())) > 1e-3


# ----------------------------------------------------------------------------- its settings

def test_bss_is_listed_with_its_space():
    rows = {r["name"]: r for r in json.loads(run_cli("contenders", "--json").out)["contenders"]}
    assert rows["bss"]["space"]["bss.eta"] == {"kind": "log-uniform", "low": 1e-5, "high": 0.1}
    assert rows["bss"]["space"]["bss.k"]["kind"] == "int"
    assert contenders.get("bss").space(Config())["bss.eta"] == LogUniform(1e-5, 0.1)
    assert "bss.eta log-uniform 1e-5..0.1" in run_cli("contenders").out


def test_k_is_drawn_no_larger_than_a_batch_or_the_features():
    assert contenders.get("bss").space(Config())["bss.k"] == IntRange(1, 4)
    assert contenders.get("bss").space(Config(batch_size=2))["bss.k"] == IntRange(1, 2)
    narrow = Config().replace(**{"model.hidden": [300, 3]})
    assert contenders.get("bss").space(narrow)["bss.k"] == IntRange(1, 3)


@pytest.mark.parametrize("option, value, said", [
    ("--bss-eta", "-0.1", "bss.eta"),
    ("--bss-k", "0", "bss.k"),
    ("--bss-k", "33", "a batch has 32 images"),  # the batch
    ("--bss-k", "51", "the features are 50 wide"),  # the top reused layer of the book's network is 50 wide
])
def test_settings_bss_cannot_use_are_one_line_and_exit_2_before_training(tmp_path, option, value, said):
    extra = ["--batch-size", "64"] if said.startswith("the features") else []
    result = run_cli("run", "--run", tmp_path / "r", "--contenders", "bss", option, value, *extra)
    assert_usage_error(result, option, said)
    assert not (tmp_path / "r").exists()


def test_k_beyond_the_features_at_a_shallower_reuse_depth_is_refused(tmp_path):
    """Reusing one layer of hidden 16,8 leaves 16 features."""
    result = run_cli("run", "--run", tmp_path / "r", "--contenders", "bss", "--hidden", "16,8", "--reuse-layers", "1",
                     "--bss-k", "17")
    assert_usage_error(result, "--bss-k", "16 wide")
