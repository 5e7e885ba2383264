"""Stacked trials: the trials of one contender on one seed, each with its own learning rates,
epochs and penalty strengths, trained as one graph (`fmtransfer.stacked`), against each trial
trained alone. Exact to float precision, as tests/test_stacked.py checks seeds.
"""

import numpy as np
import pytest

from conftest import tiny_settings
from fmtransfer import contenders
from fmtransfer.config import Config

pytestmark = pytest.mark.usefixtures("tensorflow_set_up")
SEED = 7  # every trial of a tuned cell trains on one seed


@pytest.fixture(scope="module")
def tiny(tiny_data):
    """Quick settings on the tiny data, batches of 8 (three an epoch, the last partial), and
    model A for the seed, trained once."""
    from fmtransfer import data, pipeline

    cfg = Config().replace(**tiny_settings(tiny_data), **{"seed": SEED, "batch_size": 8})
    split = data.split_of(data.load(cfg.data), cfg.data)
    return cfg, split, pipeline.train_model_a(cfg, split)[0]


# Three trials that differ in every setting a slot holds on its own: each phase's learning rate
# and epochs, L2-SP's alpha and beta, LP-FT's C, gradual's factor, reinit's rates. Rates are
# large enough to move the weights well beyond the tolerance in a few steps.
TRIALS = [
    {"baseline.learning_rate": 0.05, "baseline.epochs": 3, "transfer.frozen_learning_rate": 0.05,
     "transfer.freeze_epochs": 2, "transfer.fine_tune_learning_rate": 0.02, "transfer.fine_tune_epochs": 2,
     "l2_sp.alpha": 2.0, "l2_sp.beta": 2.0, "lp_ft.c": 1.0, "gradual.factor": 2.6},
    {"baseline.learning_rate": 0.01, "baseline.epochs": 1, "transfer.frozen_learning_rate": 0.02,
     "transfer.freeze_epochs": 1, "transfer.fine_tune_learning_rate": 0.05, "transfer.fine_tune_epochs": 3,
     "l2_sp.alpha": 0.5, "l2_sp.beta": 0.1, "lp_ft.c": 0.05, "gradual.factor": 1.0},
    {"baseline.learning_rate": 0.1, "baseline.epochs": 2, "transfer.frozen_learning_rate": 0.1,
     "transfer.freeze_epochs": 3, "transfer.fine_tune_learning_rate": 0.01, "transfer.fine_tune_epochs": 1,
     "l2_sp.alpha": 5.0, "l2_sp.beta": 0.5, "lp_ft.c": 20.0, "gradual.factor": 5.0},
]


def _alone(contender, cfg, split, model_a):
    from fmtransfer.report import Reporter

    return contender.fit(cfg, split, {"model_a": model_a} if contender.needs else {}, Reporter(quiet=True))


def _same_weights(got, want) -> None:
    for g, w in zip(got.get_weights(), want.get_weights()):
        np.testing.assert_allclose(g, w, atol=1e-5, rtol=1e-4)


def _counting(monkeypatch):
    """The sizes of the stacks `stacked.fit` trains, call by call."""
    from fmtransfer import stacked

    calls, real = [], stacked.fit
    monkeypatch.setattr(stacked, "fit", lambda plain, *a, **k: calls.append(len(plain)) or real(plain, *a, **k))
    return calls


@pytest.mark.parametrize("name", ["baseline", "transfer", "l2-sp", "lp-ft", "gradual", "reinit"])
def test_trials_with_their_own_rates_epochs_and_strengths_train_as_one_stack_and_each_as_alone(
        tiny, name, monkeypatch):
    """Every phase trains the three trials as one stack of three; each trial's weights, each
    phase's epochs (its own count), training and validation losses, and its test scores are those
    of the trial trained alone."""
    from fmtransfer.report import Reporter

    cfg, split, model_a = tiny
    contender = contenders.get(name)
    cfgs = [cfg.replace(**trial) for trial in TRIALS]
    calls = _counting(monkeypatch)
    together = contender.train(cfgs, split, [model_a if contender.needs else None] * len(cfgs), Reporter(quiet=True))
    monkeypatch.undo()
    trained = sum(p["learning_rate"] is not None for p in together[0][1].phases)  # not a probe or a re-draw
    assert calls == [len(cfgs)] * trained, "the trials did not train as one stack"
    for c, (model, result) in zip(cfgs, together):
        ref_model, ref = _alone(contender, c, split, model_a)
        _same_weights(model, ref_model)
        assert [(p["name"], p["epochs"], p["learning_rate"], len(p["history"])) for p in result.phases] == \
            [(p["name"], p["epochs"], p["learning_rate"], len(p["history"])) for p in ref.phases]
        assert all(len(p["history"]) == p["epochs"] for p in result.phases)
        for column in ("loss", "val_loss", "val_accuracy"):
            assert [h[column] for h in result.history] == pytest.approx([h[column] for h in ref.history], rel=1e-5)
        assert result.test_loss == pytest.approx(ref.test_loss, rel=1e-4)
        assert result.test_accuracy == ref.test_accuracy
        assert result.details == ref.details
    # The trials share a seed: what tells them apart is their settings, and each slot used its own.
    assert not np.allclose(together[0][0].get_weights()[0], together[1][0].get_weights()[0], atol=1e-3)


def test_l2_sp_pulls_each_trial_with_its_own_alpha_and_beta(tiny):
    """So the test above can fail for L2-SP: trials that differ in alpha and beta alone end apart
    by more than its tolerance."""
    from fmtransfer.report import Reporter

    cfg, split, model_a = tiny
    cfgs = [cfg.replace(**{**TRIALS[0], "l2_sp.alpha": a, "l2_sp.beta": a}) for a in (0.01, 5.0)]
    (weak, _), (strong, _) = contenders.get("l2-sp").train(cfgs, split, [model_a] * 2, Reporter(quiet=True))
    assert not all(np.allclose(x, y, atol=1e-5, rtol=1e-4) for x, y in zip(weak.get_weights(), strong.get_weights()))


def test_a_slot_that_finished_early_rests_and_keeps_only_its_own_epochs(tiny):
    """Slots of one and three epochs on one seed: the short one equals its run of one epoch alone,
    its history is that one epoch with its validation scores, and it does not change the long
    one's batches (which equals its own run of three epochs alone)."""
    from fmtransfer import models, runtime, stacked, training

    cfg, split, _ = tiny
    x, y = training.scaled_part(split.b_train)
    valid = training.scaled_part(split.b_valid)

    def built():
        runtime.seed_everything(SEED)
        return models.build_model_b(cfg.model)

    plain = [built(), built()]
    outcomes = stacked.fit(plain, x, y, task=training.BINARY, epochs=[1, 3], learning_rate=[0.05, 0.02],
                           batch_size=8, seeds=[SEED, SEED], validation=valid)
    for model, history, epochs, rate in zip(plain, outcomes, (1, 3), (0.05, 0.02)):
        alone = built()
        reference = training.fit(alone, x, y, task=training.BINARY, epochs=epochs, learning_rate=rate, batch_size=8,
                                 seed=SEED, validation=valid)
        assert [e.epoch for e in history] == list(range(1, epochs + 1))
        for column in ("loss", "accuracy", "val_loss", "val_accuracy"):
            assert [getattr(e, column) for e in history] == \
                pytest.approx([getattr(e, column) for e in reference], rel=1e-5)
        _same_weights(model, alone)


def test_one_diverging_trial_leaves_the_others_as_alone(tiny):
    """A trial at a huge rate diverges in the stack as it does alone, with the same error; the
    trials beside it finish as they do alone."""
    from fmtransfer.errors import DivergedError
    from fmtransfer.report import Reporter

    cfg, split, _ = tiny
    baseline = contenders.get("baseline")
    cfgs = [cfg.replace(**TRIALS[0]), cfg.replace(**{**TRIALS[2], "baseline.learning_rate": 1e38}),
            cfg.replace(**TRIALS[2])]
    together = baseline.train(cfgs, split, [None] * 3, Reporter(quiet=True))
    with pytest.raises(DivergedError) as alone:
        _alone(baseline, cfgs[1], split, None)
    assert isinstance(together[1], DivergedError) and str(together[1]) == str(alone.value)
    for k in (0, 2):
        ref_model, ref = _alone(baseline, cfgs[k], split, None)
        _same_weights(together[k][0], ref_model)
        assert together[k][1].test_loss == pytest.approx(ref.test_loss, rel=1e-4)


def test_trials_whose_phases_differ_in_structure_train_in_a_stack_per_group(tiny, monkeypatch):
    """Reinit depths 1, 2, 1: the depth changes what the first phase trains, so the two depth-1
    trials stack and the depth-2 trial trains alone; each as it does alone, in the caller's order."""
    from fmtransfer import training
    from fmtransfer.report import Reporter

    cfg, split, model_a = tiny
    reinit = contenders.get("reinit")
    cfgs = [cfg.replace(**{**TRIALS[k], "reinit.depth": depth}) for k, depth in ((0, 1), (1, 2), (2, 1))]
    sizes, real = [], training.fit_models
    monkeypatch.setattr(training, "fit_models", lambda plain, *a, **k: sizes.append(len(plain)) or real(plain, *a, **k))
    together = reinit.train(cfgs, split, [model_a] * 3, Reporter(quiet=True))
    monkeypatch.undo()
    assert sizes == [2, 2, 1, 1]  # two phases of the depth-1 stack, then two of the depth-2 trial
    for c, (model, result) in zip(cfgs, together):
        ref_model, ref = _alone(reinit, c, split, model_a)
        _same_weights(model, ref_model)
        assert [p["name"] for p in result.phases] == [p["name"] for p in ref.phases]
        assert result.test_loss == pytest.approx(ref.test_loss, rel=1e-4)


def test_a_single_rate_and_epoch_count_is_every_slots():
    """The API callers had before trials: one learning rate and one epoch count for the stack."""
    from fmtransfer import loop

    assert loop.per_model(0.01, 3, "learning rates") == [0.01, 0.01, 0.01]
    assert loop.per_model([1, 2], 2, "epochs") == [1, 2]
    with pytest.raises(ValueError, match="2 epochs for 3 models"):
        loop.per_model([1, 2], 3, "epochs")
