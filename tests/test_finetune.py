"""Fine-tuning strategies (lp-ft, l2-sp, gradual, reinit) and the linear probe.

Each strategy changes one thing about transfer from A; these tests pin that one thing down on
`tiny_data` (the paths and the arithmetic, not the accuracies, which the leaderboard study measures).
"""

from __future__ import annotations

import numpy as np
import pytest

from conftest import assert_usage_error, run_cli, tiny_settings
from fmtransfer import contenders, load_config
from fmtransfer.errors import ConfigError

pytestmark = pytest.mark.usefixtures("tensorflow_set_up")


@pytest.fixture(scope="module")
def setup(tiny_data):
    """(cfg, split, model A) on the tiny data, model A trained a few epochs."""
    from fmtransfer import data, pipeline

    cfg = load_config(None, {**tiny_settings(tiny_data), "train_a.epochs": 3})
    split = data.split_of(data.load(cfg.data), cfg.data)
    model_a, _ = pipeline.train_model_a(cfg, split)
    return cfg, split, model_a


def _fit(name, cfg, split, model_a):
    from fmtransfer.report import Reporter

    return contenders.get(name).fit(cfg, split, {"model_a": model_a}, Reporter(quiet=True))


# ----------------------------------------------------------------------------- the linear probe

def test_the_probe_is_scikit_learns_default_logistic_regression():
    from sklearn.linear_model import LogisticRegression

    from fmtransfer import probe

    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 12)) * rng.uniform(0.1, 10, size=12) + rng.normal(size=12)
    y = (x[:, :3].sum(axis=1) + rng.normal(size=300) > x[:, :3].sum(axis=1).mean()).astype(float)
    ours = probe.fit(x, y, c=0.5)
    z = (x - x.mean(axis=0)) / x.std(axis=0)
    theirs = LogisticRegression(C=0.5, tol=1e-10, max_iter=10_000).fit(z, y)
    np.testing.assert_allclose(ours.weights, theirs.coef_[0], rtol=1e-4, atol=1e-6)
    assert ours.bias == pytest.approx(theirs.intercept_[0], rel=1e-4, abs=1e-6)


def test_the_probe_as_a_dense_layer_on_raw_features_predicts_the_same():
    from fmtransfer import probe

    rng = np.random.default_rng(1)
    x = rng.normal(3.0, 2.0, size=(100, 5))
    fitted = probe.fit(x, (x[:, 0] > 3).astype(float))
    kernel, bias = fitted.as_dense()
    raw = 1 / (1 + np.exp(-(x @ kernel[:, 0].astype(np.float64) + bias[0])))
    np.testing.assert_allclose(raw, fitted.probability(x), rtol=1e-4)


def test_every_contender_on_pretrained_layers_reports_its_linear_probe(setup):
    cfg, split, model_a = setup
    _, result = _fit("transfer", cfg, split, model_a)
    probed = result.details["linear_probe"]
    assert 0.5 <= probed <= 1.0
    # The probe reads model A's features before training: every strategy sees the same ones.
    for name in ("lp-ft", "l2-sp", "gradual"):
        assert _fit(name, cfg, split, model_a)[1].details["linear_probe"] == probed


# ----------------------------------------------------------------------------- the strategies

def test_lp_ft_starts_fine_tuning_from_the_probe(setup, monkeypatch):
    from fmtransfer import models, probe, training

    cfg, split, model_a = setup
    lp_ft = contenders.get("lp-ft")
    model = models.build_b_on_a(model_a)
    x, y = training.scaled_part(split.b_train)
    features = probe.top_features(model, x)
    [record] = lp_ft.prepare(cfg, model, 2, (features, y))
    fitted = probe.fit(features, y, cfg.lp_ft.c)
    np.testing.assert_allclose(training.predict(model, x)[:, 0], fitted.probability(features), atol=1e-4)
    assert record["name"] == "linear probe" and record["train_accuracy"] == fitted.accuracy(features, y)
    # Then one phase: everything unfrozen at the fine-tuning rate.
    [phase] = lp_ft.phases(cfg, 2)
    assert phase.trainable and phase.top is None
    assert phase.learning_rate == cfg.transfer.fine_tune_learning_rate
    assert phase.epochs == cfg.transfer.fine_tune_epochs


def test_l2_sp_without_its_penalties_is_transfer_from_a(setup):
    cfg, split, model_a = setup
    plain = _fit("transfer", cfg, split, model_a)
    none = _fit("l2-sp", cfg.replace(**{"l2_sp.alpha": 0.0, "l2_sp.beta": 0.0}), split, model_a)
    for a, b in zip(plain[0].get_weights(), none[0].get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_l2_sp_holds_the_reused_weights_near_model_a(setup):
    from fmtransfer import models

    cfg, split, model_a = setup
    cfg = cfg.replace(**{"transfer.fine_tune_epochs": 5, "transfer.fine_tune_learning_rate": 0.05})

    def drift(model):
        reused = [w for block in models.blocks(model)[1] for layer in block for w in layer.get_weights()]
        start = [w for block in models.blocks(model_a)[1] for layer in block for w in layer.get_weights()]
        return sum(float(np.sum((a - b) ** 2)) for a, b in zip(reused, start))

    free = drift(_fit("transfer", cfg, split, model_a)[0])
    # alpha 5 at rate 0.05: the pull's own step, rate * alpha, stays below 2, so it is stable.
    held = drift(_fit("l2-sp", cfg.replace(**{"l2_sp.alpha": 5.0}), split, model_a)[0])
    assert 0 < held < 0.5 * free


def test_gradual_unfreezes_one_layer_per_epoch_from_the_top_with_rates_divided_by_the_factor(tiny_data):
    cfg = load_config(None, {"transfer.freeze_epochs": 4, "transfer.fine_tune_epochs": 16})
    phases = contenders.get("gradual").phases(cfg, 5)
    assert [p.name for p in phases] == ["head", "top 1", "top 2", "top 3", "top 4", "top 5"]
    assert [p.epochs for p in phases] == [1, 1, 1, 1, 1, 15]  # as many epochs as the book's phases
    assert [p.top for p in phases] == [None, 1, 2, 3, 4, 5] and not phases[0].trainable
    assert phases[0].rates == pytest.approx(tuple(2.6 ** -k for k in (5, 4, 3, 2, 1)))
    assert {p.learning_rate for p in phases} == {cfg.transfer.frozen_learning_rate}


def test_a_gradient_scale_is_a_per_variable_learning_rate(setup):
    """Plain SGD with the gradient scaled by s moves a variable as the rate times s would."""
    from fmtransfer import models, training

    cfg, split, model_a = setup
    x, y = training.scaled_part(split.b_train)
    scaled, direct = models.build_b_on_a(model_a), models.build_b_on_a(model_a)
    direct.set_weights(scaled.get_weights())
    training.fit(scaled, x, y, task=training.BINARY, epochs=1, learning_rate=0.02, seed=3,
                 scales=[0.5] * len(scaled.trainable_variables))
    training.fit(direct, x, y, task=training.BINARY, epochs=1, learning_rate=0.01, seed=3)
    for a, b in zip(scaled.get_weights(), direct.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_gradual_moves_the_lower_layers_less(setup):
    from fmtransfer import models

    cfg, split, model_a = setup
    model, _ = _fit("gradual", cfg.replace(**{"transfer.fine_tune_epochs": 4, "gradual.factor": 100.0}),
                    split, model_a)
    (bottom, top) = [np.abs(b[0].get_weights()[0] - a[0].get_weights()[0]).mean()
                     for a, b in zip(models.blocks(model_a)[1], models.blocks(model)[1])]
    assert 0 <= bottom < top


def test_reinit_draws_the_top_reused_layer_afresh_and_keeps_the_others(setup):
    from fmtransfer import models

    cfg, split, model_a = setup
    model = models.build_b_on_a(model_a)
    contenders.get("reinit").prepare(cfg, model, 2, None)
    (b_low, b_top), (a_low, a_top) = models.blocks(model)[1], models.blocks(model_a)[1]
    for a, b in zip(a_low[0].get_weights(), b_low[0].get_weights()):
        np.testing.assert_array_equal(a, b)
    assert not np.allclose(a_top[0].get_weights()[0], b_top[0].get_weights()[0])
    assert np.all(b_top[0].get_weights()[1] == 0)  # a fresh bias


def test_reinit_depth_draws_the_top_k_reused_layers_afresh_and_trains_them_with_the_head(setup):
    from fmtransfer import models

    cfg, split, model_a = setup
    deeper = cfg.replace(**{"reinit.depth": 2})
    model = models.build_b_on_a(model_a)
    (step,) = contenders.get("reinit").prepare(deeper, model, 2, None)
    for a, b in zip(models.blocks(model_a)[1], models.blocks(model)[1]):
        assert not np.allclose(a[0].get_weights()[0], b[0].get_weights()[0])
        assert np.all(b[0].get_weights()[1] == 0)
    assert step["name"].count("hidden") == 2
    first = contenders.get("reinit").phases(deeper, 2)[0]
    assert (first.name, first.top, first.trainable) == ("head and top 2 layers", 2, True)
    with pytest.raises(ConfigError, match="re-initialises 3 layers, but only 2 are reused"):
        contenders.get("reinit").prepare(cfg.replace(**{"reinit.depth": 3}), models.build_b_on_a(model_a), 2, None)


# ----------------------------------------------------------------------------- through the CLI

def test_a_reinit_depth_beyond_the_reused_layers_is_one_line_before_anything_trains(tmp_path):
    run = tmp_path / "r"
    result = run_cli("run", "--run", run, "--contenders", "reinit", "--reuse-layers", 2, "--reinit-depth", 3)
    assert_usage_error(result, "--reinit-depth", "only 2 are reused")
    assert not any(run.glob("*.keras"))


def test_a_reinit_depth_beyond_one_of_a_studys_reuse_depths_is_refused_before_the_grid_starts(tiny_data, tmp_path):
    """Checked at every reuse depth of the grid, not when the run at depth 1 comes up, after
    the runs before it have trained."""
    study = tmp_path / "s"
    result = run_cli("study", "--run", study, "--contenders", "reinit", "--reuse-layers", "1,all",
                     "--reinit-depth", 2, "--seeds", 1, "--data-dir", tiny_data, "--no-verify")
    assert_usage_error(result, "--reinit-depth", "only 1 are reused")
    assert not (study / "results.jsonl").exists()


def test_run_trains_every_strategy_and_compare_lists_their_probes(tiny_data, tmp_path):
    result = run_cli("run", "--run", tmp_path / "r", "--data-dir", tiny_data, "--no-verify", "--valid-size", 100,
                     "--b-train-size", 20, "--hidden", "16,8", "--a-epochs", 1, "--b-epochs", 1,
                     "--freeze-epochs", 1, "--fine-tune-epochs", 1,
                     "--contenders", "transfer,lp-ft,l2-sp,gradual,reinit", "--json")
    assert result.code == 0, result.err
    shown = result.json()["contenders"]
    assert list(shown) == ["baseline", "transfer from A", "LP-FT", "L2-SP", "gradual unfreezing",
                           "re-initialised top"]
    probes = {title: c.get("linear_probe") for title, c in shown.items()}
    assert probes.pop("baseline") is None and len(set(probes.values())) == 1  # all on model A's features
    again = run_cli("compare", "--run", tmp_path / "r", "--json")
    assert again.code == 0, again.err
    assert {t: c.get("linear_probe") for t, c in again.json()["contenders"].items() if t != "baseline"} == probes


def test_strategy_settings_that_cannot_work_are_usage_errors(tmp_path):
    for option, value, key in (("--l2-sp-alpha", "-1", "l2_sp.alpha"), ("--gradual-factor", "0.5", "gradual.factor"),
                               ("--lp-ft-c", "0", "lp_ft.c")):
        result = run_cli("transfer", "--run", tmp_path / "nothing", option, value)
        assert_usage_error(result, option, key)


def test_transfer_shows_each_strategys_phases_in_a_table(tiny_data, tmp_path):
    """`transfer --contender NAME` without --json: the table lists the strategy's own steps, the
    exactly solved probe of LP-FT and the re-initialisation of reinit among them."""
    run = tmp_path / "r"
    for args in (("split", "--data-dir", tiny_data, "--no-verify", "--valid-size", 100, "--b-train-size", 20),
                 ("train-a", "--epochs", 1, "--hidden", "16,8")):
        assert run_cli(*args[:1], "--run", run, *args[1:]).code == 0
    for name, step in (("lp-ft", "linear probe"), ("reinit", "re-initialise"), ("gradual", "top 1")):
        result = run_cli("transfer", "--run", run, "--contender", name, "--freeze-epochs", 1, "--fine-tune-epochs", 2)
        assert result.code == 0, result.err
        assert step in result.out and "test accuracy" in result.out
