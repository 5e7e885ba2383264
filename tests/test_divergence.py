"""A model whose loss stops being finite is a failure, never a result: the stage stops at once,
names the stage, the epoch and the setting to lower, keeps the previous good artifact, and a
study records the run as diverged, at chance accuracy.

Runs on `tiny_data`, with learning rates large enough to make these small networks diverge in
their first epoch.
"""

from __future__ import annotations

import numpy as np
import pytest

import fmtransfer
from conftest import run_cli, snapshot, tiny_settings
from fmtransfer import DivergedError

TINY = ["--valid-size", "100", "--no-verify", "--b-train-size", "20"]


def _diverges(result, *names):
    assert result.code == 1, result.err
    assert result.out == ""
    lines = result.err_lines
    assert len(lines) == 1 and "Traceback" not in result.err, lines
    assert "diverged at epoch 1" in lines[0] and "nothing it trained was saved" in lines[0]
    for name in names:
        assert name in lines[0], (name, lines[0])


@pytest.fixture
def run(tiny_data, tmp_path):
    assert run_cli("split", "--run", tmp_path, "--data-dir", tiny_data, *TINY).code == 0
    assert run_cli("train-a", "--run", tmp_path, "--epochs", "1", "--hidden", "16,8").code == 0
    return tmp_path


def test_train_a_that_diverges_keeps_the_good_model_a(run):
    before = snapshot(run)
    _diverges(run_cli("train-a", "--run", run, "--epochs", "1", "--hidden", "16,8", "--learning-rate", "1e4", "--json"),
              "model A", "--learning-rate", "train_a.learning_rate")
    assert snapshot(run) == before


def test_a_transfer_phase_that_diverges_names_its_learning_rate(run):
    before = snapshot(run)
    _diverges(run_cli("transfer", "--run", run, "--freeze-epochs", "1", "--fine-tune-epochs", "1",
                      "--fine-tune-learning-rate", "1e38", "--json"), "B on A: fine-tune", "--fine-tune-learning-rate")
    assert snapshot(run) == before and not (run / "model_b_on_a.keras").exists()


def test_no_accuracy_is_computed_from_nan_predictions(tiny_data):
    from fmtransfer import models, training
    from fmtransfer.config import ModelConfig

    fmtransfer.setup()
    model = models.build_model_b(ModelConfig(hidden=(4,)))
    model.set_weights([np.full_like(w, np.nan) for w in model.get_weights()])
    with pytest.raises(DivergedError):
        training.evaluate(model, np.zeros((8, 28, 28), np.float32), np.ones(8, np.float32), task=training.BINARY)


def test_a_study_records_diverged_runs_at_chance_accuracy(tiny_data, tmp_path):
    cfg = fmtransfer.load_config(None, {**tiny_settings(tiny_data), "study.seeds": [1, 2],
                                        "study.b_train_sizes": [20], "train_a.learning_rate": 1e8,
                                        "contenders": ["transfer", "autoencoder"]})
    result = fmtransfer.run_study(cfg, tmp_path)
    transfer = result.cell("transfer")
    assert transfer.diverged == 2 and transfer.baseline_diverged == 0  # model A diverged: so did B on A
    assert transfer.accuracies == [0.5, 0.5]  # sandal vs shirt's test images are balanced
    assert result.cell("autoencoder").diverged == 0  # the encoder does not depend on model A
    records = fmtransfer.study.load_results(tmp_path)
    assert all("model A diverged" in r["result"]["diverged"] for r in records if r["contender"] == "transfer")
