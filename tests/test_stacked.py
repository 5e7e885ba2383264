"""Seed-stacked training (`fmtransfer.stacked`, `study --stack`) against the unstacked reference.

Exact where it can be: each slice's initial weights, each seed's batch order, one SGD step.
Statistical where it cannot (reductions run in another order): a study's accuracies, paired.
"""

import dataclasses
import json
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO, assert_usage_error, run_cli, tiny_settings
from fmtransfer import ConfigError, contenders
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
    a_stacked = pipeline.train_models_a(cfgs, split)
    for c, (model, _) in zip(cfgs, a_stacked):
        reference, _ = pipeline.train_model_a(c, split)
        assert all(np.array_equal(x, y) for x, y in zip(model.get_weights(), reference.get_weights()))
    # Slices straight after stacking too, and at the plain model's scale (not a 3-D initializer's).
    plain = [_seeded(c, lambda: models.build_model_b(c.model)) for c in cfgs]
    stack = stacked.Stack(plain)
    for k, m in enumerate(plain):
        assert all(np.array_equal(x, y) for x, y in zip(stack.weights_of(k), m.get_weights()))
    transfer = contenders.get("transfer")
    quiet = Reporter(quiet=True)
    for (model, _), outcome, c in zip(a_stacked, transfer.fit_seeds(cfgs, split, [m for m, _ in a_stacked], quiet),
                                      cfgs):
        reference = transfer.fit(c, split, {"model_a": model}, quiet)
        assert outcome.test_accuracy == reference[1].test_accuracy and outcome.test_loss == reference[1].test_loss


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
    together = _plain_b_models(cfg)
    stacked.fit(together, x, y, task=training.BINARY, epochs=1, learning_rate=0.5, batch_size=batch, seeds=SEEDS)
    separate = _plain_b_models(cfg)
    for model, seed in zip(separate, SEEDS):
        training.fit(model, x, y, task=training.BINARY, epochs=1, learning_rate=0.5, batch_size=batch, seed=seed)
    for k, model in enumerate(separate):
        moved = max(np.abs(a - b).max() for a, b in zip(model.get_weights(), before[k]))
        assert moved > 1e-3  # the step is large against the tolerance below
        for got, want in zip(together[k].get_weights(), model.get_weights()):
            np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-4)
    if steps > 1:  # the same check fails when seed 0's slice is fed seed 1's batch order
        swapped = _plain_b_models(cfg)
        stacked.fit(swapped, x, y, task=training.BINARY, epochs=1, learning_rate=0.5, batch_size=batch,
                    seeds=[SEEDS[1], SEEDS[0], SEEDS[2]])
        assert not all(np.allclose(g, w, atol=1e-5, rtol=1e-4)
                       for g, w in zip(swapped[0].get_weights(), separate[0].get_weights()))


def test_a_diverging_seed_fails_as_unstacked_and_the_others_go_on(tiny):
    from fmtransfer import stacked, training
    from fmtransfer.errors import DivergedError

    cfg, split = tiny
    x, y = training.scaled_part(split.b_train)
    plain = _plain_b_models(cfg)
    plain[1].set_weights([w * 1e30 for w in plain[1].get_weights()])  # its loss is not finite at once
    reference = [m.get_weights() for m in plain]
    outcomes = stacked.fit(plain, x, y, task=training.BINARY, epochs=2, learning_rate=0.01, batch_size=8,
                           seeds=SEEDS, what="baseline B", key="baseline.learning_rate")
    unstacked = _plain_b_models(cfg)
    for k, model in enumerate(unstacked):
        model.set_weights(reference[k])
        try:
            history = training.fit(model, x, y, task=training.BINARY, epochs=2, learning_rate=0.01, batch_size=8,
                                   seed=SEEDS[k], what="baseline B", key="baseline.learning_rate")
        except DivergedError as e:
            assert isinstance(outcomes[k], DivergedError) and str(outcomes[k]) == str(e)
            continue
        assert [r.loss for r in outcomes[k]] == pytest.approx([r.loss for r in history], rel=1e-5)
    assert [isinstance(o, DivergedError) for o in outcomes] == [False, True, False]


# ----------------------------------------------------------------------------- every contender that stacks

STACKING = [n for n in contenders.names() if contenders.get(n).stack_unsupported is None]


@pytest.fixture(scope="module")
def schedule(tiny):
    """Rates and epochs large enough that every hook moves the weights well beyond the tolerance:
    three batches an epoch (the last partial), L2-SP's pulls strong, gradual's three phases."""
    cfg, split = tiny
    cfg = cfg.replace(**{"batch_size": 8, "baseline.epochs": 3, "baseline.learning_rate": 0.05,
                         "transfer.freeze_epochs": 2, "transfer.fine_tune_epochs": 2,
                         "transfer.frozen_learning_rate": 0.05, "transfer.fine_tune_learning_rate": 0.02,
                         "l2_sp.alpha": 2.0, "l2_sp.beta": 2.0})
    return [cfg.replace(seed=s) for s in SEEDS[:2]], split, {}


def _bases(contender, cfgs, split, made: dict) -> list:
    """Each seed's base, made serially as a study's cache makes it, and kept for the module."""
    from fmtransfer import pipeline, pretraining

    if not contender.needs:
        return [None] * len(cfgs)
    need = contender.needs[0]
    for cfg in cfgs:
        if (need, cfg.seed) not in made:
            made[need, cfg.seed] = (pipeline.train_model_a(cfg, split)[0] if need == "model_a" else
                                    pretraining.pretrain(cfg, split, need.method).encoder)
    return [made[need, cfg.seed] for cfg in cfgs]


def _serial(contender, cfg, split, base):
    from fmtransfer.report import Reporter

    return contender.fit(cfg, split, {contender.needs[0]: base} if contender.needs else {}, Reporter(quiet=True))


@pytest.mark.parametrize("name", STACKING)
def test_every_contender_that_stacks_trains_each_seed_of_a_stack_as_alone(schedule, name, monkeypatch):
    """Through the contender's own hooks (phases, prepare, penalty, rates), stacked: the weights
    of each seed's model B, every epoch's losses and the test scores agree with that seed
    trained alone, to the tolerance of the exact tests above."""
    from fmtransfer import stacked
    from fmtransfer.report import Reporter

    cfgs, split, made = schedule
    contender = contenders.get(name)
    bases = _bases(contender, cfgs, split, made)
    calls = []
    real_fit = stacked.fit
    monkeypatch.setattr(stacked, "fit", lambda plain, *a, **k: calls.append(len(plain)) or real_fit(plain, *a, **k))
    together = contender.train(cfgs, split, bases, Reporter(quiet=True))
    assert calls and set(calls) == {len(cfgs)}, "the seeds did not train as one stack"
    monkeypatch.undo()
    for cfg, base, (model, result) in zip(cfgs, bases, together):
        ref_model, ref = _serial(contender, cfg, split, base)
        for got, want in zip(model.get_weights(), ref_model.get_weights()):
            np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-4)
        assert [p["name"] for p in result.phases] == [p["name"] for p in ref.phases]
        assert [h["loss"] for h in result.history] == pytest.approx([h["loss"] for h in ref.history], rel=1e-5)
        assert [h["val_loss"] for h in result.history] == pytest.approx([h["val_loss"] for h in ref.history], rel=1e-5)
        assert result.test_loss == pytest.approx(ref.test_loss, rel=1e-4)
        assert result.test_accuracy == ref.test_accuracy
        assert result.details == ref.details  # the probe, on each seed's own base
    assert not all(np.array_equal(a, b) for a, b in zip(together[0][0].get_weights(), together[1][0].get_weights()))


@pytest.mark.parametrize("name", ["l2-sp", "gradual"])
def test_the_penalty_and_the_rates_move_a_stacked_seed_beyond_the_tolerance(schedule, name):
    """So the test above can fail: without L2-SP's penalty or gradual's per-layer rates, the
    stacked weights would be off by more than its tolerance."""
    from fmtransfer.report import Reporter

    cfgs, split, made = schedule
    contender = contenders.get(name)
    bases = _bases(contender, cfgs, split, made)
    hooked = contender.train(cfgs, split, bases, Reporter(quiet=True))
    plain = type(contender)()
    if name == "l2-sp":
        plain.penalty = lambda *a: None
    else:
        phases = contender.phases
        plain.phases = lambda *a: [dataclasses.replace(p, rates=None) for p in phases(*a)]
    unhooked = plain.train(cfgs, split, bases, Reporter(quiet=True))
    for (a, _), (b, _) in zip(hooked, unhooked):
        assert not all(np.allclose(x, y, atol=1e-5, rtol=1e-4) for x, y in zip(a.get_weights(), b.get_weights()))


def test_a_seed_diverging_in_a_stacked_phase_is_recorded_and_the_others_finish(schedule, monkeypatch):
    """Seed 1 diverges in the frozen phase (as if its loss had stopped being finite): it is
    recorded so, trains no further, and seed 0 goes on alone to the unstacked result."""
    from fmtransfer import stacked
    from fmtransfer.errors import DivergedError
    from fmtransfer.report import Reporter

    cfgs, split, made = schedule
    transfer = contenders.get("transfer")
    bases = _bases(transfer, cfgs, split, made)
    real_fit, trained = stacked.fit, []

    def fit(plain, *args, what, key, **kwargs):
        outcomes = real_fit(plain, *args, what=what, key=key, **kwargs)
        trained.append((what, len(plain)))
        return [outcomes[0], DivergedError(what, 1, key)] if len(trained) == 1 else outcomes

    monkeypatch.setattr(stacked, "fit", fit)
    outcomes = transfer.fit_seeds(cfgs, split, bases, Reporter(quiet=True))
    assert trained == [("transfer from A: frozen", 2)]  # the fine-tune phase had one seed left: trained alone
    assert isinstance(outcomes[1], DivergedError) and outcomes[1].key == "transfer.frozen_learning_rate"
    reference = _serial(transfer, cfgs[0], split, bases[0])[1]
    assert outcomes[0].test_loss == pytest.approx(reference.test_loss, rel=1e-4)


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


@pytest.mark.slow
def test_a_contender_that_cannot_stack_trains_one_seed_at_a_time_and_says_why(tiny_data, tmp_path, monkeypatch):
    """Under --stack, a contender declaring `stack_unsupported` is never stacked: a warning gives
    its reason once, and its runs are its unstacked `fit` on each seed's model A, to the bit."""
    import warnings

    from fmtransfer import data, models
    from fmtransfer.contenders.gradual import Gradual
    from fmtransfer.report import Reporter

    monkeypatch.setattr(Gradual, "stack_unsupported", "a test says it cannot")
    train_alone = Gradual.train

    def one_seed(self, cfgs, *args, **kwargs):
        if len(cfgs) > 1:
            pytest.fail("a contender that cannot stack was stacked")
        return train_alone(self, cfgs, *args, **kwargs)

    monkeypatch.setattr(Gradual, "train", one_seed)
    cfg = Config().replace(**tiny_settings(tiny_data), **{"study.seeds": [1, 2], "study.b_train_sizes": [20],
                                                           "study.reuse_layers": ["all"],
                                                           "contenders": ["transfer", "gradual"]})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        studies.run_study(cfg, tmp_path / "s", stack=2)
    said = [str(w.message) for w in caught if "one seed at a time" in str(w.message)]
    assert said == ["study.stack: gradual trains one seed at a time, since a test says it cannot"]
    raw = data.load(cfg.data)
    records = {r["id"]: r for r in studies.load_results(tmp_path / "s")}
    for key in studies.grid(cfg):
        split = data.make_split(raw, key.pair, key.b_train_size, cfg.data.valid_size, cfg.data.valid_from)
        saved = tmp_path / "s" / "models" / f"a-seed{key.seed}-pair{key.pair[0]}v{key.pair[1]}.keras"
        model_a = models.load_model(saved)
        _, alone = Gradual().fit(key.config(cfg), split, {"model_a": model_a}, Reporter(quiet=True))
        got = records[key.run_id("gradual")]["result"]
        assert (got["test_accuracy"], got["test_loss"]) == (alone.test_accuracy, alone.test_loss)


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
