"""Greedy soup (Wortsman et al., ICML 2022): K fine-tunings of transfer from A that differ in their
shuffles alone, averaged greedily: the best on validation first, each next one kept where the
average does not lose validation accuracy; the soup is the plain mean of those kept.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import assert_usage_error, run_cli, tiny_settings
from fmtransfer import contenders, load_config
from fmtransfer.config import Config
from fmtransfer.contenders.soup import ONE, average, greedy
from fmtransfer.contenders.transfer import TransferFromA

pytestmark = pytest.mark.usefixtures("tensorflow_set_up")


# ----------------------------------------------------------------------------- the rule, by hand

def test_greedy_tries_the_best_first_keeps_an_ingredient_that_holds_accuracy_and_skips_one_that_lowers_it():
    scores = {0: 0.80, 1: 0.90, 2: 0.85, 3: 0.90}  # 1 and 3 tie: the lower index first
    averages = {(1, 3): 0.92,  # above the soup of 1 alone (0.90): kept
                (1, 3, 2): 0.91,  # below 0.92: skipped
                (1, 3, 0): 0.92}  # equal: kept (the paper's >=)
    asked = []

    def accuracy(kept):
        asked.append(tuple(kept))
        return averages[tuple(kept)]

    tried, kept, soup = greedy(scores, accuracy)
    assert tried == [1, 3, 2, 0]
    assert asked == [(1, 3), (1, 3, 2), (1, 3, 0)]  # each candidate is the soup so far plus the next
    assert kept == [1, 3, 0]
    assert soup == 0.92


def test_greedy_with_every_addition_lowering_accuracy_is_the_best_ingredient_alone():
    tried, kept, soup = greedy({0: 0.7, 1: 0.75, 2: 0.6}, lambda kept: 0.5)
    assert (tried, kept, soup) == ([1, 0, 2], [1], 0.75)


def test_averaging_is_the_plain_mean_of_the_kept_ingredients_weights_and_the_mean_of_one_is_itself():
    a = [np.array([[1.0, 2.0]], np.float32), np.array([0.5], np.float32)]
    b = [np.array([[3.0, -2.0]], np.float32), np.array([1.5], np.float32)]
    c = [np.array([[5.0, 3.0]], np.float32), np.array([-1.0], np.float32)]
    mean = average([a, b, c])
    np.testing.assert_array_equal(mean[0], [[3.0, 1.0]])
    np.testing.assert_array_equal(mean[1], np.array([1.0 / 3.0], np.float32))  # the float64 mean, rounded once
    assert [w.dtype for w in mean] == [np.float32, np.float32]
    odd = [np.array([0.1, 1e-7, -3.3], np.float32)]
    assert average([odd])[0].tobytes() == odd[0].tobytes()


# ----------------------------------------------------------------------------- trained, on the dense network

@pytest.fixture(scope="module")
def setup(tiny_data):
    """(cfg, split, model A): three batches an epoch and rates that move the weights, so that
    ingredients on other shuffles end apart."""
    from fmtransfer import data, pipeline

    cfg = load_config(None, {**tiny_settings(tiny_data), "batch_size": 8, "transfer.frozen_learning_rate": 0.05,
                             "transfer.fine_tune_learning_rate": 0.05, "soup.ingredients": 3})
    split = data.split_of(data.load(cfg.data), cfg.data)
    return cfg, split, pipeline.train_model_a(cfg, split)[0]


def _fit(name, cfg, split, model_a):
    from fmtransfer.report import Reporter

    return contenders.get(name).fit(cfg, split, {"model_a": model_a}, Reporter(quiet=True))


@pytest.fixture(scope="module")
def souped(setup):
    """The soup of 3 and what made it: the configs and shuffles it trained, each ingredient's
    weights as trained (before any averaging) and the shuffle seeds of each phase."""
    from fmtransfer import training

    cfg, split, model_a = setup
    seen: dict = {"seeds": []}
    train, fit_models = TransferFromA.train, training.fit_models

    def spy_train(self, cfgs, *args, shuffles=None, **kwargs):
        made = train(self, cfgs, *args, shuffles=shuffles, **kwargs)
        seen.update(cfgs=cfgs, shuffles=shuffles, weights=[m[0].get_weights() for m in made])
        return made

    def spy_fit_models(plain, *args, seeds, **kwargs):
        seen["seeds"].append(seeds)
        return fit_models(plain, *args, seeds=seeds, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(TransferFromA, "train", spy_train)
        patch.setattr(training, "fit_models", spy_fit_models)
        model, result = _fit("soup", cfg, split, model_a)
    return model, result, seen


def test_the_ingredients_share_the_config_and_the_start_and_differ_in_their_shuffles_alone(setup, souped):
    cfg, split, model_a = setup
    _, result, seen = souped
    assert seen["cfgs"] == [cfg] * 3 and seen["shuffles"] == [0, 1, 2]
    # Per phase, one stack of three: ingredient 0 on the seed's own shuffle, the others on theirs.
    assert seen["seeds"] == [[[42, 1], [42, 1, 1], [42, 1, 2]], [[42, 2], [42, 2, 1], [42, 2, 2]]]
    weights = seen["weights"]
    for i, j in ((0, 1), (0, 2), (1, 2)):
        assert not all(np.array_equal(x, y) for x, y in zip(weights[i], weights[j])), f"{i} and {j} did not differ"
    # Ingredient 0 is transfer from A itself, to a stack's float precision.
    alone, _ = _fit("transfer", cfg, split, model_a)
    for got, want in zip(weights[0], alone.get_weights()):
        np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-4)
    assert result.details["ingredients"] == 3


def test_the_soup_is_the_mean_of_the_ingredients_kept_in_the_order_the_paper_tries_them(setup, souped):
    from fmtransfer import models, training

    cfg, split, _ = setup
    model, result, seen = souped
    d = result.details
    scratch = models.clone_with_weights(model)
    own = []
    for w in seen["weights"]:
        scratch.set_weights(w)
        own.append(training.evaluated(scratch, split.b_valid, training.BINARY)["accuracy"])
    assert d["ingredient_valid_accuracy"] == own
    assert d["tried"] == sorted(range(3), key=lambda j: (-own[j], j))
    assert d["kept"][0] == d["tried"][0] and set(d["kept"]) <= {0, 1, 2}
    assert d["kept"] == [j for j in d["tried"] if j in d["kept"]]  # added in the order tried
    for got, *kept in zip(model.get_weights(), *[seen["weights"][j] for j in d["kept"]]):
        np.testing.assert_allclose(got, np.mean(np.stack(kept), axis=0), rtol=1e-6, atol=1e-7)
    assert d["soup_valid_accuracy"] == training.evaluated(model, split.b_valid, training.BINARY)["accuracy"]
    assert d["soup_valid_accuracy"] >= max(own)  # the greedy rule never lowers it
    test = training.evaluated(model, split.b_test, training.BINARY)
    assert (result.test_accuracy, result.test_loss) == (test["accuracy"], test["loss"])
    assert (result.name, result.title) == ("soup", "greedy soup")
    assert d["soup"] == f"greedy: {len(d['kept'])} of 3 ingredients"
    # Its phases are every ingredient's epochs, what the soup cost.
    assert [p["name"] for p in result.phases] == [f"ingredient {j}: {p}" for j in range(3)
                                                  for p in ("frozen", "fine-tune")]


def test_a_soup_of_one_ingredient_is_the_transfer_model_itself_and_says_so(setup):
    cfg, split, model_a = setup
    one = cfg.replace(**{"soup.ingredients": 1})
    model, result = _fit("soup", one, split, model_a)
    ref_model, ref = _fit("transfer", one, split, model_a)
    for got, want in zip(model.get_weights(), ref_model.get_weights()):
        np.testing.assert_array_equal(got, want)
    assert (result.test_accuracy, result.test_loss) == (ref.test_accuracy, ref.test_loss)
    assert _untimed(result.phases) == _untimed(ref.phases)
    assert result.details == {**ref.details, "soup": ONE, "ingredients": 1}


def _untimed(phases: list[dict]) -> list[dict]:
    """Phase records without the wall times, which no two runs share."""
    return [{**p, "history": [{k: v for k, v in e.items() if k != "seconds"} for e in p["history"]]} for p in phases]


def test_a_diverged_ingredient_is_left_out_and_a_soup_whose_every_ingredient_diverged_diverges(setup, monkeypatch):
    from fmtransfer.errors import DivergedError

    cfg, split, model_a = setup
    train = TransferFromA.train
    failing: set = {1}

    def diverging(self, *args, **kwargs):
        made = train(self, *args, **kwargs)
        return [DivergedError(f"ingredient {j}", 1) if j in failing else m for j, m in enumerate(made)]

    monkeypatch.setattr(TransferFromA, "train", diverging)
    _, result = _fit("soup", cfg, split, model_a)
    d = result.details
    assert d["diverged"] == [1] and d["ingredient_valid_accuracy"][1] is None
    assert 1 not in d["tried"] and 1 not in d["kept"]
    assert not any(p["name"].startswith("ingredient 1:") for p in result.phases)
    failing.update({0, 2})
    with pytest.raises(DivergedError, match="ingredient 0"):
        _fit("soup", cfg, split, model_a)


# ----------------------------------------------------------------------------- on the cnn

def test_a_cnn_soup_trains_its_ingredients_one_by_one_and_averages_them(tiny_data, monkeypatch):
    from fmtransfer import data, pipeline, stacked

    cfg = load_config(None, {**tiny_settings(tiny_data), "model.arch": "cnn", "model.hidden": [4, 4],
                             "model.cnn_dense": 6, "transfer.fine_tune_learning_rate": 0.05,
                             "soup.ingredients": 2})
    split = data.split_of(data.load(cfg.data), cfg.data)
    model_a = pipeline.train_model_a(cfg, split)[0]
    monkeypatch.setattr(stacked, "fit", lambda *a, **k: pytest.fail("a cnn stacked"))
    weights = []
    train = TransferFromA.train

    def spy(self, *args, **kwargs):
        made = train(self, *args, **kwargs)
        weights.extend(m[0].get_weights() for m in made)
        return made

    monkeypatch.setattr(TransferFromA, "train", spy)
    model, result = _fit("soup", cfg, split, model_a)
    kept = result.details["kept"]
    assert len(weights) == 2 and 1 <= len(kept) <= 2
    for got, *mine in zip(model.get_weights(), *[weights[j] for j in kept]):
        np.testing.assert_allclose(got, np.mean(np.stack(mine), axis=0), rtol=1e-6, atol=1e-7)


# ----------------------------------------------------------------------------- its settings

def test_soup_is_listed_with_transfers_space_its_ingredients_a_budget_not_tuned():
    rows = {r["name"]: r for r in json.loads(run_cli("contenders", "--json").out)["contenders"]}
    assert rows["soup"]["space"] == rows["transfer"]["space"]
    assert "soup.ingredients" not in rows["soup"]["space"]
    listed = run_cli("contenders").out
    assert "soup  greedy soup, builds on model A" in listed and "--soup-ingredients 8" in listed
    cfg = Config()
    drawn = contenders.trial_settings(cfg, "soup", study_seed=0, cell="c", trial=2)
    assert set(drawn) == set(contenders.trial_settings(cfg, "transfer", study_seed=0, cell="c", trial=2))
    assert contenders.get("soup").stack_unsupported  # a study's stack of seeds: one slot per seed


def test_zero_ingredients_or_no_validation_images_is_one_line_and_exit_2_before_training(tmp_path):
    run = tmp_path / "r"
    assert_usage_error(run_cli("run", "--run", run, "--contenders", "soup", "--soup-ingredients", "0"),
                       "--soup-ingredients")
    assert_usage_error(run_cli("run", "--run", run, "--contenders", "soup", "--valid-size", "0"),
                       "--valid-size", "validation images")
    assert not run.exists()


def test_the_run_directorys_record_of_a_soup_of_one_says_it_is_the_transfer_model_itself(tiny_data, tmp_path):
    run = tmp_path / "r"
    result = run_cli("run", "--run", run, "--contenders", "soup", "--soup-ingredients", "1", "--data-dir", tiny_data,
                     "--no-verify", "--valid-size", "100", "--b-train-size", "20", "--hidden", "16,8",
                     "--a-epochs", "1", "--b-epochs", "1", "--freeze-epochs", "1", "--fine-tune-epochs", "1")
    assert result.code == 0, result.err
    record = json.loads((run / "transfer_soup.json").read_text())
    assert record["details"] == {"soup": ONE, "ingredients": 1}
    assert [p["name"] for p in record["phases"]] == ["frozen", "fine-tune"]
