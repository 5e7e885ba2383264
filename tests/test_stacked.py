"""Seed-stacked training (`fmtransfer.stacked`, `study --stack`) against the unstacked reference.

Exact where it can be: each slice's initial weights, each seed's batch order, one SGD step.
Statistical where it cannot (reductions run in another order): a study's accuracies, paired.
"""

import json
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO, assert_usage_error, run_cli, tiny_settings
from fmtransfer import ConfigError
from fmtransfer import study as studies
from fmtransfer.config import Config

pytestmark = pytest.mark.usefixtures("tensorflow_set_up")
SEEDS = [3, 11, 42]


@pytest.fixture(scope="module")
def tiny(tiny_data):
    from fmtransfer import data

    cfg = Config().replace(**tiny_settings(tiny_data))
    return cfg, data.split_of(data.load(cfg.data), cfg.data)


def _seeded(cfg, build):
    from fmtransfer import runtime

    runtime.seed_everything(cfg.seed)
    return build()


# ----------------------------------------------------------------------------- exact

def test_each_slice_starts_with_the_weights_the_unstacked_path_gives_that_seed(tiny):
    """Zero epochs: what comes back is the initial weights, through the stack and back."""
    from fmtransfer import contenders, models, pipeline, stacked
    from fmtransfer.report import Reporter

    cfg, split = tiny
    cfgs = [cfg.replace(**{"seed": s, "train_a.epochs": 0, "baseline.epochs": 0, "transfer.freeze_epochs": 0,
                           "transfer.fine_tune_epochs": 0}) for s in SEEDS]
    a_stacked = stacked.train_models_a(cfgs, split)
    for c, (model, _) in zip(cfgs, a_stacked):
        reference, _ = pipeline.train_model_a(c, split)
        assert all(np.array_equal(x, y) for x, y in zip(model.get_weights(), reference.get_weights()))
    # Slices straight after stacking too, and at the plain model's scale (not a 3-D initializer's).
    plain = [_seeded(c, lambda: models.build_model_b(c.model)) for c in cfgs]
    stack = stacked.Stack(plain)
    for k, m in enumerate(plain):
        assert all(np.array_equal(x, y) for x, y in zip(stack.weights_of(k), m.get_weights()))
    for (model, _), outcome, c in zip(a_stacked, stacked.fit_transfers(contenders.get("transfer"), cfgs, split,
                                                                       [m for m, _ in a_stacked]), cfgs):
        reference = contenders.get("transfer").fit(c, split, {"model_a": model}, Reporter(quiet=True))
        assert outcome.test_accuracy == reference[1].test_accuracy and outcome.test_loss == reference[1].test_loss


def test_each_seed_draws_the_batch_order_of_its_own_unstacked_shuffle():
    from fmtransfer import stacked

    draws = stacked.orders([7, [7, 1]], 50)
    reference = [np.random.default_rng(7), np.random.default_rng([7, 1])]
    for _ in range(3):  # a fresh permutation every epoch, as training.fit draws them
        order = next(draws)
        assert np.array_equal(order[0], reference[0].permutation(50))
        assert np.array_equal(order[1], reference[1].permutation(50))


def _plain_b_models(cfg):
    from fmtransfer import models

    return [_seeded(cfg.replace(seed=s), lambda: models.build_model_b(cfg.model)) for s in SEEDS]


@pytest.mark.parametrize("steps", [1, 4])
def test_stacked_sgd_steps_equal_separate_steps_of_each_seed(tiny, steps):
    """One step proves the loss is the sum of each seed's mean (a mean over seeds would shrink
    every update K-fold) and that nothing couples seeds; four steps with a partial last batch,
    that each seed sees its own batches in its own order."""
    from fmtransfer import stacked, training

    cfg, split = tiny
    x, y = training.scaled_part(split.b_train)
    n = 32 if steps == 1 else 3 * 8 + 5
    x, y = np.concatenate([x] * 3)[:n], np.concatenate([y] * 3)[:n]
    batch = 32 if steps == 1 else 8
    before = [m.get_weights() for m in _plain_b_models(cfg)]
    stack = stacked.Stack(_plain_b_models(cfg))
    stacked.fit(stack, x, y, task=training.BINARY, epochs=1, learning_rate=0.5, batch_size=batch, seeds=SEEDS)
    separate = _plain_b_models(cfg)
    for model, seed in zip(separate, SEEDS):
        training.fit(model, x, y, task=training.BINARY, epochs=1, learning_rate=0.5, batch_size=batch, seed=seed)
    for k, model in enumerate(separate):
        moved = max(np.abs(a - b).max() for a, b in zip(model.get_weights(), before[k]))
        assert moved > 1e-3  # the step is large against the tolerance below
        for got, want in zip(stack.weights_of(k), model.get_weights()):
            np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-4)
    if steps > 1:  # the same check fails when seed 0's slice is fed seed 1's batch order
        swapped = stacked.Stack(_plain_b_models(cfg))
        stacked.fit(swapped, x, y, task=training.BINARY, epochs=1, learning_rate=0.5, batch_size=batch,
                    seeds=[SEEDS[1], SEEDS[0], SEEDS[2]])
        assert not all(np.allclose(g, w, atol=1e-5, rtol=1e-4) for g, w in zip(swapped.weights_of(0), separate[0].get_weights()))


def test_a_diverging_seed_fails_as_unstacked_and_the_others_go_on(tiny):
    from fmtransfer import stacked, training
    from fmtransfer.errors import DivergedError

    cfg, split = tiny
    x, y = training.scaled_part(split.b_train)
    plain = _plain_b_models(cfg)
    plain[1].set_weights([w * 1e30 for w in plain[1].get_weights()])  # its loss is not finite at once
    reference = [m.get_weights() for m in plain]
    outcomes = stacked.fit(stacked.Stack(plain), x, y, task=training.BINARY, epochs=2, learning_rate=0.01,
                           batch_size=8, seeds=SEEDS, what="baseline B", key="baseline.learning_rate")
    unstacked = _plain_b_models(cfg)
    for k, model in enumerate(unstacked):
        model.set_weights(reference[k])
        try:
            history = training.fit(model, x, y, task=training.BINARY, epochs=2, learning_rate=0.01, batch_size=8,
                                   seed=SEEDS[k], what="baseline B", key="baseline.learning_rate")
        except DivergedError as e:
            assert isinstance(outcomes[k], DivergedError) and str(outcomes[k]) == str(e)
            continue
        assert [r["loss"] for r in outcomes[k]] == pytest.approx([r["loss"] for r in history], rel=1e-5)
    assert [isinstance(o, DivergedError) for o in outcomes] == [False, True, False]


# ----------------------------------------------------------------------------- settings

def test_stack_is_a_setting_of_the_study_with_auto():
    assert Config().study.stack == 1
    assert Config().replace(**{"study.stack": "auto"}).study.stack == "auto"
    assert Config().replace(**{"study.stack": "4"}).study.stack == 4
    for bad in (0, -2, "x", 1.5):
        with pytest.raises(ConfigError, match="study.stack"):
            Config().replace(**{"study.stack": bad})


def test_auto_stacks_a_ten_seed_cell_and_a_number_is_taken_as_given():
    assert studies.resolve_stack("auto") == studies.STACK_AUTO == 10
    assert studies.resolve_stack(3) == 3


@pytest.mark.parametrize("value", ["0", "x"])
def test_a_bad_stack_option_is_one_line_naming_it(tmp_path, value):
    assert_usage_error(run_cli("study", "--run", tmp_path / "s", "--stack", value), "--stack")
    assert not (tmp_path / "s").exists()


# ----------------------------------------------------------------------------- studies

def _study_config(tiny_data, seeds):
    return Config().replace(**tiny_settings(tiny_data), **{"study.seeds": seeds, "study.b_train_sizes": [20],
                                                           "study.reuse_layers": [1, "all"]})


@pytest.mark.slow
def test_a_stacked_study_gives_the_unstacked_accuracies_and_results_lines(tiny_data, tmp_path):
    """Paired over eight seeds, as bench/ pairs Keras with fmtransfer: no evidence of a
    difference, and in the same record format; resuming it redoes nothing."""
    cfg = _study_config(tiny_data, list(range(1, 9)))
    serial = studies.run_study(cfg, tmp_path / "serial")
    stacked = studies.run_study(cfg, tmp_path / "stacked", stack=5)  # stacks of 5 and 3 seeds
    for mine, ref in zip(stacked.cells, serial.cells):
        for got, want in ((mine.accuracies, ref.accuracies), (mine.baseline_accuracies, ref.baseline_accuracies)):
            stats = studies.paired_stats(want, got)
            assert abs(stats["mean_difference"]) <= 0.01 and stats["p_value"] > 0.05, stats
    lines = {r["id"]: r for r in studies.load_results(tmp_path / "stacked")}
    reference = {r["id"]: r for r in studies.load_results(tmp_path / "serial")}
    assert lines.keys() == reference.keys()
    for run_id, r in lines.items():
        assert set(r) == set(reference[run_id]) and set(r["seconds"]) == set(reference[run_id]["seconds"])
        assert r["built_on"]["model_a"].keys() == reference[run_id]["built_on"]["model_a"].keys()
    assert sorted(p.name for p in (tmp_path / "stacked" / "models").iterdir()) == \
        sorted(p.name for p in (tmp_path / "serial" / "models").iterdir())
    again = studies.run_study(cfg.replace(**{"study.seeds": list(range(1, 11))}), tmp_path / "stacked", stack=5)
    assert again.runs_finished == 20
    assert {r["id"]: r for r in studies.load_results(tmp_path / "stacked") if r["id"] in lines} == lines


_PARENT = """
import json, sys
from fmtransfer import study
from fmtransfer.config import Config
if __name__ == "__main__":
    cfg = Config().replace(**json.loads(sys.argv[1]))
    result = study.run_study(cfg, sys.argv[2], jobs=2, stack=int(sys.argv[3]))
    print(json.dumps({"tensorflow": "tensorflow" in sys.modules, "keras": "keras" in sys.modules,
                      "cells": [c.to_dict() for c in result.cells]}))
"""


@pytest.mark.slow
@pytest.mark.parametrize("stack", [1, 2])
def test_with_workers_the_parent_never_imports_tensorflow_and_results_are_unchanged(tiny_data, tmp_path, stack):
    """--jobs 2 (with and without --stack): the parent deals seeds and collects lines only."""
    cfg = _study_config(tiny_data, [1, 2, 3, 4])
    settings = {**tiny_settings(tiny_data), "study.seeds": [1, 2, 3, 4], "study.b_train_sizes": [20],
                "study.reuse_layers": [1, "all"]}
    script = tmp_path / "parent.py"
    script.write_text(_PARENT)
    done = subprocess.run([sys.executable, str(script), json.dumps(settings), str(tmp_path / "jobs"), str(stack)],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    parent = json.loads(done.stdout.strip().splitlines()[-1])
    assert parent["tensorflow"] is False and parent["keras"] is False
    reference = studies.run_study(cfg, tmp_path / "serial", stack=stack)
    assert parent["cells"] == [c.to_dict() for c in reference.cells]  # the same stacks: the same numbers
