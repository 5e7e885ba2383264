"""Co-Tuning (You et al. 2020): model A's head kept as the source head and trained on soft source
labels p(A's class | B's label), the relation learned from A's softmax on held-out images of B.

The relation and the loss against the paper's formulas on hand-made tables; the held-out part;
training with a partly reused dense network; settings that cannot work are one line before training.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest

from conftest import assert_usage_error, beside_transfer, run_cli, tiny_settings
from fmtransfer import contenders, load_config

pytestmark = pytest.mark.usefixtures("tensorflow_set_up")


def test_the_relation_is_model_as_softmax_averaged_over_each_target_classs_images():
    from fmtransfer.contenders.co_tuning import relationship

    softmax_table = np.array([[0.6, 0.3, 0.1],   # class 0
                              [0.1, 0.1, 0.8],   # class 1
                              [0.2, 0.5, 0.3],   # class 0
                              [0.3, 0.3, 0.4]])  # class 1
    relation = relationship(softmax_table, np.array([0, 1, 0, 1]))
    np.testing.assert_allclose(relation, [[0.4, 0.4, 0.2], [0.2, 0.2, 0.6]], rtol=1e-6)
    np.testing.assert_allclose(relation.sum(axis=1), 1.0, rtol=1e-6)  # each row a distribution over A's classes


def test_a_target_class_without_held_out_images_gets_the_mean_over_all():
    from fmtransfer.contenders.co_tuning import relationship

    relation = relationship(np.array([[1.0, 0.0], [0.0, 1.0]]), np.array([0, 0]))
    np.testing.assert_allclose(relation, [[0.5, 0.5], [0.5, 0.5]])


def test_the_held_out_part_is_the_fraction_of_each_class_and_at_least_one_image_of_each():
    from fmtransfer.contenders.co_tuning import held_out

    y = np.array([0] * 10 + [1] * 3)
    chosen = held_out(y, 0.2, np.random.default_rng(0))
    assert np.sum(y[chosen] == 0) == 2 and np.sum(y[chosen] == 1) == 1
    assert len(set(chosen)) == len(chosen)
    np.testing.assert_array_equal(chosen, held_out(y, 0.2, np.random.default_rng(0)))  # drawn from the seed


def test_the_source_loss_is_lambda_times_the_cross_entropy_of_as_head_on_the_soft_labels_of_each_label():
    """Relation rows (1/2, 1/4, 1/4) for label 0 and (1/3, 1/3, 1/3) for label 1; images labelled
    1 and 0 whose source logits soften to (1/2, 1/4, 1/4) and (1/3, 1/3, 1/3):
    CE = [-(1/3)(ln 1/2 + 2 ln 1/4) - ln 1/3] / 2 = (5/3 ln 2 + ln 3) / 2, times lambda 2.3."""
    from fmtransfer.contenders.transfer import soft_label_guide
    from fmtransfer.training import tf

    relation = np.array([[1 / 2, 1 / 4, 1 / 4], [1 / 3, 1 / 3, 1 / 3]])
    y = np.array([1, 0])
    logits = [[math.log(2), 0.0, 0.0], [0.0, 0.0, 0.0]]
    guide = soft_label_guide(lambda x, training=False: tf.constant(logits), SimpleNamespace(trainable_variables=[]),
                             relation[y], temperature=1.0, weight=2.3)
    assert float(guide.loss(np.array([0, 1]), None, None)) == pytest.approx(
        2.3 * (5 / 3 * math.log(2) + math.log(3)) / 2, rel=1e-6)


def test_co_tuning_trains_the_kept_head_on_a_partly_reused_dense_network_and_lambda_zero_is_transfer(tiny_data):
    cfg = load_config(None, {**tiny_settings(tiny_data), "transfer.reuse_layers": 1, "data.b_train_size": 40,
                             "batch_size": 8, "transfer.fine_tune_epochs": 2,
                             "transfer.fine_tune_learning_rate": 0.05})
    plain, (off, result), on = beside_transfer(cfg, "co-tuning", "co_tuning.weight")
    for a, b in zip(plain, off.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    assert result.details["reuse_layers"] == 1
    # Unlike LwF's, the soft labels are not A's own outputs: the source term pulls from the first step.
    assert any(not np.allclose(a, b) for a, b in zip(plain, on))


@pytest.mark.parametrize("option, value, key", [("--co-tuning-weight", "-1", "co_tuning.weight"),
                                                ("--co-tuning-held-out", "0", "co_tuning.held_out"),
                                                ("--co-tuning-held-out", "1.5", "co_tuning.held_out")])
def test_a_negative_lambda_or_a_held_out_fraction_outside_0_to_1_is_one_line_before_training(tmp_path, option,
                                                                                          value, key):
    run = tmp_path / "r"
    assert_usage_error(run_cli("run", "--run", run, "--contenders", "co-tuning", option, value), option, key)
    assert not run.exists() or not any(run.glob("*.keras"))


def test_contenders_lists_co_tuning_with_its_space():
    result = run_cli("contenders")
    assert result.code == 0, result.err
    block = result.out.split("\nco-tuning ")[1].split("\n\n")[0]
    assert "--co-tuning-weight 2.3" in block and "--co-tuning-held-out 0.2" in block
    assert "co_tuning.weight log-uniform 0.01..10" in block and "co_tuning.held_out" not in block.split("tunes:")[1]
    assert contenders.get("co-tuning").stack_unsupported
