"""LwF, Learning without Forgetting (Li and Hoiem 2017): model A's head kept beside B's, distilled
toward the outputs it gave on B's images before training.

The loss against the paper's formula on a hand-computed case; the kept head is model A's own on
the shared layers, dense and cnn; settings that cannot work are one line before training.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest

from conftest import assert_usage_error, beside_transfer, run_cli, tiny_settings
from fmtransfer import contenders, load_config

pytestmark = pytest.mark.usefixtures("tensorflow_set_up")

LN2, LN3 = math.log(2), math.log(3)


def _fixed(logits):
    """A stand-in for the kept head on B's layers that answers `logits` whatever the images."""
    from fmtransfer.training import tf

    return lambda x, training=False: tf.constant(logits, dtype=tf.float32)


def test_the_distillation_loss_is_the_papers_cross_entropy_at_temperature_t_without_t_squared():
    """Recorded logits [0,0,0] and [2 ln 2, 0, 0] at T = 2 soften to (1/3, 1/3, 1/3) and
    (1/2, 1/4, 1/4); the current ones, swapped, to (1/2, 1/4, 1/4) and (1/3, 1/3, 1/3).
    L_old = -1/2 [1/3 (ln 1/2 + 2 ln 1/4) + ln 1/3] = (5/3 ln 2 + ln 3) / 2, times lambda_o."""
    from fmtransfer.contenders.lwf import softened
    from fmtransfer.contenders.transfer import soft_label_guide

    recorded = softened(np.array([[0.0, 0.0, 0.0], [2 * LN2, 0.0, 0.0]]), 2.0)
    np.testing.assert_allclose(recorded, [[1 / 3, 1 / 3, 1 / 3], [1 / 2, 1 / 4, 1 / 4]], rtol=1e-6)
    guide = soft_label_guide(_fixed([[2 * LN2, 0.0, 0.0], [0.0, 0.0, 0.0]]), SimpleNamespace(trainable_variables=[]),
                             recorded, temperature=2.0, weight=0.5)
    loss = float(guide.loss(np.array([0, 1]), None, None))
    assert loss == pytest.approx(0.5 * (5 / 3 * LN2 + LN3) / 2, rel=1e-6)
    # The batch's rows of what was recorded: the same images the other way round.
    swapped = soft_label_guide(_fixed([[0.0, 0.0, 0.0], [2 * LN2, 0.0, 0.0]]),
                               SimpleNamespace(trainable_variables=[]), recorded, temperature=2.0, weight=0.5)
    assert float(swapped.loss(np.array([1, 0]), None, None)) == pytest.approx(loss, rel=1e-6)


@pytest.mark.parametrize("arch, reuse", [("dense", 1), ("cnn", "all")])
def test_the_kept_head_on_bs_reused_layers_gives_model_as_own_outputs(arch, reuse):
    from fmtransfer import models, training
    from fmtransfer.contenders.lwf import softened
    from fmtransfer.contenders.transfer import source_head

    cfg = load_config(None, {"model.arch": arch, "model.hidden": [6, 4] if arch == "dense" else [2, 3]})
    model_a = models.build_model_a(cfg.model)
    x = np.random.default_rng(0).uniform(size=(5, 28, 28)).astype(np.float32)
    n = 1 if reuse == 1 else len(models.blocks(model_a)[1])
    model_b = models.build_b_on_a(model_a, reuse)
    source, head = source_head(model_b, model_a, n)
    np.testing.assert_allclose(softened(training.predict(source, x), 1.0), training.predict(model_a, x), atol=1e-6)
    shared = {id(w) for w in model_b.weights}
    assert all(id(w) in shared for w in source.weights if id(w) not in {id(v) for v in head.weights})
    assert not {id(w) for w in head.weights} & ({id(w) for w in model_a.weights} | shared)


def test_the_kept_head_and_its_distillation_train_on_the_cnn_and_lambda_zero_is_transfer_from_a(tiny_data):
    """With lambda_o 0 the kept head changes nothing of model B; with lambda_o 1 it does. (At the
    first step the kept head gives what was recorded, where the distillation's gradient is zero:
    it pulls only once B has moved, so the fine-tuning takes a few steps.)"""
    cfg = load_config(None, {**tiny_settings(tiny_data), "model.arch": "cnn", "model.hidden": [2, 3],
                             "model.cnn_dense": 4, "transfer.fine_tune_learning_rate": 0.05,
                             "transfer.fine_tune_epochs": 4, "data.b_train_size": 40, "batch_size": 8})
    plain, (off, result), on = beside_transfer(cfg, "lwf", "lwf.weight")
    for a, b in zip(plain, off.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    assert [p["name"] for p in result.phases] == ["frozen", "fine-tune"]
    assert any(not np.allclose(a, b) for a, b in zip(plain, on))


@pytest.mark.parametrize("option, value, key", [("--lwf-temperature", "0", "lwf.temperature"),
                                                ("--lwf-temperature", "-2", "lwf.temperature"),
                                                ("--lwf-weight", "-1", "lwf.weight")])
def test_a_temperature_of_zero_or_less_or_a_negative_lambda_is_one_line_before_training(tmp_path, option, value,
                                                                                         key):
    run = tmp_path / "r"
    assert_usage_error(run_cli("run", "--run", run, "--contenders", "lwf", option, value), option, key)
    assert not run.exists() or not any(run.glob("*.keras"))


def test_contenders_lists_lwf_with_its_space():
    result = run_cli("contenders")
    assert result.code == 0, result.err
    block = result.out.split("\nlwf ")[1].split("\n\n")[0]
    assert "--lwf-temperature 2" in block and "--lwf-weight 1" in block
    assert "lwf.temperature log-uniform 1..8" in block and "lwf.weight log-uniform 0.01..10" in block
    assert contenders.get("lwf").stack_unsupported


def test_a_model_a_with_a_separate_softmax_layer_keeps_its_logits_and_one_without_a_softmax_is_refused():
    from fmtransfer import models, training
    from fmtransfer.contenders.lwf import softened
    from fmtransfer.contenders.transfer import source_head
    from fmtransfer.errors import DataError

    keras, layers = models.keras, models.layers
    split_softmax = keras.Sequential([keras.Input(models.INPUT_SHAPE), layers.Flatten(), layers.Dense(5),
                                      layers.Dense(8), layers.Softmax()])
    x = np.random.default_rng(1).uniform(size=(3, 28, 28)).astype(np.float32)
    source, _ = source_head(models.build_b_on_a(split_softmax), split_softmax, 1)
    np.testing.assert_allclose(softened(training.predict(source, x), 1.0), training.predict(split_softmax, x),
                               atol=1e-6)
    sigmoid = keras.Sequential([keras.Input(models.INPUT_SHAPE), layers.Flatten(), layers.Dense(5),
                                layers.Dense(8, activation="sigmoid")])
    with pytest.raises(DataError, match="not a softmax"):
        source_head(models.build_b_on_a(sigmoid), sigmoid, 1)
