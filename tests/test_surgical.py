"""Surgical fine-tuning (Lee et al., ICLR 2023): after the head alone, one chosen reused block
fine-tunes with the head; every other reused block keeps model A's weights, bit for bit.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import assert_usage_error, run_cli, tiny_settings
from fmtransfer import contenders, load_config
from fmtransfer.config import Config
from fmtransfer.space import IntRange

pytestmark = pytest.mark.usefixtures("tensorflow_set_up")


@pytest.fixture(scope="module")
def setup(tiny_data):
    """(cfg, split, model A) with three reused blocks, the phases fast enough to move weights."""
    from fmtransfer import data, pipeline

    cfg = load_config(None, {**tiny_settings(tiny_data), "model.hidden": [16, 12, 8], "train_a.epochs": 1,
                             "transfer.fine_tune_learning_rate": 0.05, "batch_size": 8})
    split = data.split_of(data.load(cfg.data), cfg.data)
    return cfg, split, pipeline.train_model_a(cfg, split)[0]


def _fit(cfg, split, model_a):
    from fmtransfer.report import Reporter

    return contenders.get("surgical").fit(cfg, split, {"model_a": model_a}, Reporter(quiet=True))


def _reused(model) -> list[list]:
    """Each reused block's weights, bottom first."""
    from fmtransfer import models

    return [[w.numpy() for layer in block for w in layer.weights] for block in models.blocks(model)[1]]


@pytest.mark.parametrize("block", [1, 2, 3])
def test_only_the_chosen_block_and_the_head_change_the_others_stay_model_as_bit_for_bit(setup, block):
    cfg, split, model_a = setup
    model, result = _fit(cfg.replace(**{"surgical.block": block}), split, model_a)
    before, after = _reused(model_a), _reused(model)
    for i, (a, b) in enumerate(zip(before, after), start=1):
        same = all(np.array_equal(x, y) for x, y in zip(a, b))
        assert same == (i != block), f"block {i} {'did not change' if same else 'changed'} with block {block} chosen"
    assert [p["name"] for p in result.phases] == ["frozen", f"block {block}"]
    # Phase 2 trains the block's kernel and bias and the head's.
    assert [p["trainable_weights"] for p in result.phases] == [2, 4]


def test_the_phases_are_the_books_with_one_block_moving_in_the_second(setup):
    from fmtransfer.contenders.base import Phase

    cfg, _, _ = setup
    t = cfg.transfer
    assert contenders.get("surgical").phases(cfg.replace(**{"surgical.block": 2}), 3) == [
        Phase("frozen", t.freeze_epochs, t.frozen_learning_rate, trainable=False, key="transfer.frozen_learning_rate"),
        Phase("block 2", t.fine_tune_epochs, t.fine_tune_learning_rate, trainable=True, blocks=(2,),
              key="transfer.fine_tune_learning_rate")]


def test_a_stack_of_seeds_moves_the_same_one_block_as_each_seed_alone(setup):
    from fmtransfer import pipeline
    from fmtransfer.report import Reporter

    cfg, split, _ = setup
    cfgs = [cfg.replace(**{"seed": s, "surgical.block": 2}) for s in (3, 11)]
    bases = [pipeline.train_model_a(c, split)[0] for c in cfgs]
    together = contenders.get("surgical").train(cfgs, split, bases, Reporter(quiet=True))
    for c, base, (model, result) in zip(cfgs, bases, together):
        alone, ref = _fit(c, split, base)
        for got, want in zip(model.get_weights(), alone.get_weights()):
            np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-4)
        assert result.test_accuracy == ref.test_accuracy
        kept = [_reused(base)[i] for i in (0, 2)], [_reused(model)[i] for i in (0, 2)]
        assert all(np.array_equal(x, y) for a, b in zip(*kept) for x, y in zip(a, b))


def test_surgical_trains_on_the_cnn_too(tiny_data):
    """A conv block chosen: the block's filters move, the others and the dense block stay."""
    from fmtransfer import data, pipeline

    cfg = load_config(None, {**tiny_settings(tiny_data), "model.arch": "cnn", "model.hidden": [4, 4],
                             "model.cnn_dense": 6, "surgical.block": 2, "transfer.fine_tune_learning_rate": 0.05})
    split = data.split_of(data.load(cfg.data), cfg.data)
    model_a = pipeline.train_model_a(cfg, split)[0]
    model, _ = _fit(cfg, split, model_a)
    changed = [not all(np.array_equal(x, y) for x, y in zip(a, b)) for a, b in zip(_reused(model_a), _reused(model))]
    assert changed == [False, True, False]


# ----------------------------------------------------------------------------- its settings

def test_surgical_is_listed_with_its_space_never_above_the_reused_depth():
    rows = {r["name"]: r for r in json.loads(run_cli("contenders", "--json").out)["contenders"]}
    assert rows["surgical"]["space"]["surgical.block"] == {"kind": "int", "low": 1, "high": 5, "log": False}
    assert "surgical.block integers 1..5" in run_cli("contenders").out
    shallow = Config().replace(**{"transfer.reuse_layers": 2})
    assert contenders.get("surgical").space(shallow)["surgical.block"] == IntRange(1, 2)


def test_a_block_past_the_reused_depth_is_one_line_and_exit_2_before_training(tmp_path):
    result = run_cli("run", "--run", tmp_path / "r", "--contenders", "surgical", "--surgical-block", "6")
    assert_usage_error(result, "--surgical-block", "only 5 are reused")
    result = run_cli("run", "--run", tmp_path / "r", "--contenders", "surgical", "--surgical-block", "3",
                     "--reuse-layers", "2")
    assert_usage_error(result, "--surgical-block", "only 2 are reused")
    assert_usage_error(run_cli("run", "--run", tmp_path / "r", "--contenders", "surgical", "--surgical-block", "0"),
                       "--surgical-block")
    assert not (tmp_path / "r").exists()


def test_a_block_past_one_of_a_studys_reuse_depths_is_refused_before_the_grid_starts(tiny_data, tmp_path):
    study = tmp_path / "s"
    result = run_cli("study", "--run", study, "--contenders", "surgical", "--reuse-layers", "1,all",
                     "--surgical-block", 2, "--seeds", 1, "--data-dir", tiny_data, "--no-verify")
    assert_usage_error(result, "--surgical-block", "only 1 are reused")
    assert not (study / "results.jsonl").exists()
