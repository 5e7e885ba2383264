"""RBM greedy pretraining (ch. 11.2.2): the maths against scikit-learn, the greedy stack, the
encoder model B builds on, bad settings, divergence, and the CLI path end to end on tiny data."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import assert_usage_error, run_cli, tiny_settings

pytestmark = pytest.mark.usefixtures("tensorflow_set_up")


def _settings(**overrides):
    from fmtransfer.config import load_config

    values = {"rbm.epochs": 3, "rbm.batch_size": 20, **{f"rbm.{k}": v for k, v in overrides.items()}}
    return load_config(None, values).rbm


@pytest.fixture(scope="module")
def images():
    """300 flattened images in [0, 1] with structure an RBM can learn: each a bright band at one of
    ten heights over faint noise (as conftest's tiny_data)."""
    rng = np.random.default_rng(1)
    x = rng.uniform(0.0, 0.25, size=(300, 28, 28)).astype(np.float32)
    for i, k in enumerate(rng.integers(0, 10, size=300)):
        x[i, 2 * k:2 * k + 3, :] = 0.9
    return x.reshape(300, -1)


# ----------------------------------------------------------------------------- against scikit-learn

def test_same_weights_give_scikit_learns_hidden_probabilities(images):
    from sklearn.neural_network import BernoulliRBM

    from fmtransfer import rbm

    start = rbm.initial(images, 24, (7, 1))
    # Weights of a trained-looking size: N(0, 0.01) would make every probability about 0.5.
    weights = np.random.default_rng(2).normal(0.0, 0.3, size=start.weights.shape).astype(np.float32)
    hidden_bias = np.linspace(-1, 1, 24, dtype=np.float32)
    theirs = BernoulliRBM(n_components=24)
    theirs.components_ = weights.T.astype(np.float64)
    theirs.intercept_hidden_ = hidden_bias.astype(np.float64)
    theirs.intercept_visible_ = start.visible_bias.astype(np.float64)
    ours = rbm.hidden_probabilities(images, weights, hidden_bias).numpy()
    expected = theirs.transform(images.astype(np.float64))
    assert ours.shape == expected.shape == (300, 24)
    assert 0.02 < expected.std()  # not all 0.5: the comparison has something to compare
    np.testing.assert_allclose(ours, expected, atol=1e-5)


def test_our_cd1_and_scikit_learns_fit_both_lower_the_reconstruction_error(images):
    """scikit-learn's BernoulliRBM trains by persistent CD, ours by CD-1: both should learn. One
    function measures both, before and after (fit with n_iter=0 is scikit-learn's starting point)."""
    from sklearn.neural_network import BernoulliRBM

    from fmtransfer import rbm

    def error(model):
        return rbm.reconstruction_error(images, model.components_.T, model.intercept_hidden_,
                                        model.intercept_visible_)

    theirs_start = error(BernoulliRBM(n_components=32, n_iter=0, random_state=0).fit(images))
    theirs_end = error(BernoulliRBM(n_components=32, n_iter=10, batch_size=20, learning_rate=0.05,
                                    random_state=0).fit(images))
    start = rbm.initial(images, 32, (0, 1))
    ours_start = rbm.reconstruction_error(images, start.weights, start.hidden_bias, start.visible_bias)
    trained, history = rbm.train_layer(images, 32, _settings(epochs=10), seed=0, layer=1)
    ours_end = rbm.reconstruction_error(images, trained.weights, trained.hidden_bias, trained.visible_bias)
    assert theirs_end < 0.8 * theirs_start, (theirs_start, theirs_end)
    assert ours_end < 0.5 * ours_start, (ours_start, ours_end)
    # The per-epoch loss is the same measure, on each batch before its update: it falls too.
    assert history[-1].loss < history[0].loss
    assert abs(history[-1].loss - ours_end) < 0.5 * history[-1].loss


def test_cd_updates_follow_the_guides_formulas(images, monkeypatch):
    """With the sampling made deterministic (states = rounded probabilities), two epochs of one
    whole batch each equal the guide's CD-k updates computed in numpy: positive statistics from
    the data's hidden probabilities, negative from the chain's visible and hidden probabilities,
    weight decay on the weights only, momentum carried from the first update into the second."""
    import tensorflow as tf

    from fmtransfer import rbm

    monkeypatch.setattr(rbm, "_sample", lambda p, seed: tf.round(p))
    x = images[:50].astype(np.float64)
    lr, decay, m, k = 0.5, 0.01, 0.5, 2
    settings = _settings(epochs=2, batch_size=50, learning_rate=lr, weight_decay=decay, initial_momentum=m, cd_k=k)
    start = rbm.initial(images[:50], 6, (4, 1))
    start.weights = np.random.default_rng(0).normal(0, 0.1, size=start.weights.shape).astype(np.float32)

    def sigmoid(a):
        return 1 / (1 + np.exp(-a))

    w, bh, bv = (start.weights.astype(np.float64), start.hidden_bias.astype(np.float64),
                 start.visible_bias.astype(np.float64))
    velocity = [np.zeros_like(w), np.zeros_like(bh), np.zeros_like(bv)]
    for _ in range(2):
        ph0 = sigmoid(x @ w + bh)
        ph = ph0
        for _ in range(k):
            pv = sigmoid(np.round(ph) @ w.T + bv)
            ph = sigmoid(pv @ w + bh)
        grads = [(x.T @ ph0 - pv.T @ ph) / len(x) - decay * w, (ph0 - ph).mean(0), (x - pv).mean(0)]
        velocity = [m * v + lr * g for v, g in zip(velocity, grads)]
        w, bh, bv = w + velocity[0], bh + velocity[1], bv + velocity[2]
    monkeypatch.setattr(rbm, "initial", lambda *a: start)
    trained, _ = rbm.train_layer(images[:50], 6, settings, seed=0, layer=1)
    np.testing.assert_allclose(trained.weights, w, atol=2e-5)
    np.testing.assert_allclose(trained.hidden_bias, bh, atol=2e-5)
    np.testing.assert_allclose(trained.visible_bias, bv, atol=2e-5)
    assert np.abs(bh - start.hidden_bias).max() > 1e-3  # the hidden biases did move: checked, not zero


# ----------------------------------------------------------------------------- the stack and its models

def test_the_visible_biases_start_at_the_data_log_odds(images):
    from fmtransfer import rbm

    start = rbm.initial(images, 8, (0, 1))
    p = np.clip(images.mean(axis=0), rbm.BIAS_CLIP, 1 - rbm.BIAS_CLIP)
    np.testing.assert_allclose(1 / (1 + np.exp(-start.visible_bias)), p, rtol=1e-4)
    assert not start.hidden_bias.any() and 0.008 < start.weights.std() < 0.012


def test_greedy_each_rbm_trains_on_the_probabilities_of_the_one_below(images, monkeypatch):
    from fmtransfer import rbm

    seen = []
    real = rbm.train_layer

    def recording(x, hidden, settings, **kwargs):
        seen.append(x.copy())
        return real(x, hidden, settings, **kwargs)

    monkeypatch.setattr(rbm, "train_layer", recording)
    rbms, steps = rbm.train_stack(images, (16, 8, 4), _settings(epochs=2), seed=3)
    assert [(s["visible"], s["hidden"]) for s in steps] == [(784, 16), (16, 8), (8, 4)]
    assert [r.weights.shape for r in rbms] == [(784, 16), (16, 8), (8, 4)]
    np.testing.assert_array_equal(seen[0], images)
    below = images
    for i in (1, 2):  # mean-field: probabilities, not sampled binary states
        below = rbm.hidden_probabilities(below, rbms[i - 1].weights, rbms[i - 1].hidden_bias).numpy()
        np.testing.assert_allclose(seen[i], below, atol=1e-6)
        assert 0 < seen[i].min() and seen[i].max() < 1 and not np.isin(seen[i], (0.0, 1.0)).all()
    for k, step in enumerate(steps, start=1):
        assert step["trains"] == [f"hidden{k}"] and len(step["history"]) == 2
        assert step["block_digests_before"] == step["block_digests_after"][:k - 1], f"RBM {k} moved one below it"
        if k > 1:
            assert step["block_digests_before"] == steps[k - 2]["block_digests_after"]
    assert steps[-1]["block_digests_after"] == [rbm.digest(r) for r in rbms]


def test_the_encoder_is_a_sigmoid_stack_model_b_builds_on(images):
    from fmtransfer import models, rbm

    rbms, _ = rbm.train_stack(images, (16, 8), _settings(epochs=1), seed=0)
    encoder = rbm.encoder(rbms)
    assert [layer.name for layer in encoder.layers] == ["flatten", "hidden1", "hidden2", "code"]
    assert encoder.layers[-1].__class__.__name__ == "Identity"
    dense = encoder.layers[1:3]
    assert [layer.units for layer in dense] == [16, 8]
    assert all(layer.activation.__name__ == "sigmoid" for layer in dense)
    np.testing.assert_array_equal(dense[0].get_weights()[0], rbms[0].weights)
    np.testing.assert_array_equal(dense[1].get_weights()[1], rbms[1].hidden_bias)
    code = encoder(images[:5].reshape(5, 28, 28)).numpy()
    np.testing.assert_allclose(code, rbm.hidden_probabilities(
        rbm.hidden_probabilities(images[:5], rbms[0].weights, rbms[0].hidden_bias),
        rbms[1].weights, rbms[1].hidden_bias).numpy(), atol=1e-6)
    b = models.build_b_on_a(encoder)
    assert [layer.name for layer in b.layers] == ["flatten", "hidden1", "hidden2", "output"]
    assert b.output_shape == (None, 1)
    np.testing.assert_array_equal(b.get_layer("hidden1").get_weights()[0], rbms[0].weights)
    unrolled = rbm.unrolled(encoder, rbms)
    assert [layer.name for layer in unrolled.layers] == \
        ["flatten", "hidden1", "hidden2", "decode2", "decode1", "reconstruction"]
    assert unrolled.output_shape == (None, 28, 28)
    np.testing.assert_array_equal(unrolled.get_layer("decode1").get_weights()[0], rbms[0].weights.T)
    np.testing.assert_array_equal(unrolled.get_layer("decode1").get_weights()[1], rbms[0].visible_bias)


def test_reproducible_with_a_seed_and_cd_k_changes_the_training(images):
    from fmtransfer import rbm

    def run(seed, **overrides):
        rbms, steps = rbm.train_stack(images, (16, 8), _settings(epochs=2, **overrides), seed=seed)
        return [rbm.digest(r) for r in rbms], [h["loss"] for s in steps for h in s["history"]]

    first = run(5)
    assert run(5) == first
    assert run(6)[0] != first[0]
    cd3 = run(5, cd_k=3)
    assert cd3[0][0] != first[0][0] and all(np.isfinite(cd3[1]))


def test_an_absurd_learning_rate_diverges_naming_the_key(images):
    from fmtransfer import rbm
    from fmtransfer.errors import DivergedError

    with pytest.raises(DivergedError) as e:
        rbm.train_stack(images, (16, 8), _settings(learning_rate=1e20), seed=0)
    assert e.value.key == "rbm.learning_rate" and "RBM" in str(e.value)


# ----------------------------------------------------------------------------- through the CLI

def _toml(path, **rbm_settings):
    path.write_text("[rbm]\n" + "".join(f"{k} = {v}\n" for k, v in rbm_settings.items()))
    return path


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, tiny_data):
    """A split of the tiny data with model A, as test_pretrain.py's runs."""
    run = tmp_path_factory.mktemp("rbm-run")
    s = tiny_settings(tiny_data)
    result = run_cli("split", "--run", run, "--data-dir", s["data.dir"], "--no-verify", "--valid-size", 100,
                     "--b-train-size", 20, "--json")
    assert result.code == 0, result.err
    return run


def test_pretrain_transfer_and_compare_from_rbm(tiny_run, tmp_path):
    from fmtransfer import models

    run = tiny_run
    config = _toml(tmp_path / "rbm.toml", epochs=2, batch_size=20)
    r = run_cli("pretrain", "--run", run, "--method", "rbm", "--config", config, "--unlabelled-size", 200,
                "--hidden", "16,8", "--json")
    assert r.code == 0, r.err
    p = r.json()
    assert p["method"] == "rbm" and p["unlabelled_size"] == 200 and p["settings"]["rbm"]["epochs"] == 2
    assert [s["trains"] for s in p["steps"]] == [["hidden1"], ["hidden2"]]
    assert all(np.isfinite(h["loss"]) and np.isfinite(h["val_loss"]) for s in p["steps"] for h in s["history"])
    assert 0 < p["reconstruction_loss"] < 1
    for name in ("encoder_rbm.keras", "autoencoder_rbm.keras", "pretrain_rbm.json"):
        assert (run / name).is_file(), name
    picture = run / "filters_rbm.png"
    assert p["picture"] == str(picture) and picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    encoder = models.load_model(run / "encoder_rbm.keras")
    assert [layer.activation.__name__ for layer in encoder.layers[1:3]] == ["sigmoid", "sigmoid"]
    before = (run / "encoder_rbm.keras").read_bytes()
    t = run_cli("transfer", "--run", run, "--from", "rbm", "--freeze-epochs", 1, "--fine-tune-epochs", 1, "--json")
    assert t.code == 0, t.err
    t = t.json()
    assert t["source"] == "rbm" and t["reuse_layers"] == 2 and t["pretrained_unchanged"]
    assert (run / "model_b_on_rbm.keras").is_file() and (run / "encoder_rbm.keras").read_bytes() == before
    c = run_cli("compare", "--run", run, "--epochs", 1, "--json")
    assert c.code == 0, c.err
    assert "RBM-pretrained" in c.json()["contenders"]
    assert json.loads((run / "pretrain_rbm.json").read_text())["split_fingerprint"]


def test_cd_k_below_one_is_a_usage_error_naming_the_key(tiny_run, tmp_path, images):
    from types import SimpleNamespace

    from fmtransfer import rbm
    from fmtransfer.errors import ConfigError

    config = _toml(tmp_path / "bad.toml", cd_k=0)
    assert_usage_error(run_cli("pretrain", "--run", tiny_run, "--method", "rbm", "--config", config), "rbm.cd_k")
    assert_usage_error(run_cli("pretrain", "--run", tiny_run, "--method", "rbm", "--rbm-cd-k", 0),
                       "--rbm-cd-k", "rbm.cd_k")
    with pytest.raises(ConfigError, match="rbm.cd_k"):  # settings that skipped the config's checks
        rbm.train_layer(images, 4, SimpleNamespace(**{**vars(_settings()), "cd_k": 0}), seed=0, layer=1)


def test_rbm_refuses_a_cnn(tiny_run):
    assert_usage_error(run_cli("pretrain", "--run", tiny_run, "--method", "rbm", "--arch", "cnn",
                               "--unlabelled-size", 50), "model.arch", "cnn")


def test_a_diverging_rbm_fails_in_one_line_and_keeps_the_good_encoder(tmp_path, tiny_data):
    s = tiny_settings(tiny_data)
    assert run_cli("split", "--run", tmp_path, "--data-dir", s["data.dir"], "--no-verify", "--valid-size", 100,
                   "--b-train-size", 20).code == 0
    common = ("pretrain", "--run", tmp_path, "--method", "rbm", "--unlabelled-size", 100, "--hidden", "8",
              "--no-plot")
    good = run_cli(*common, "--config", _toml(tmp_path / "good.toml", epochs=1, batch_size=20))
    assert good.code == 0, good.err
    files = {name: (tmp_path / name).read_bytes() for name in ("encoder_rbm.keras", "autoencoder_rbm.keras",
                                                             "pretrain_rbm.json")}
    bad = run_cli(*common, "--config", _toml(tmp_path / "bad.toml", epochs=3, batch_size=20, learning_rate=1e20))
    assert bad.code == 1 and "Traceback" not in bad.err
    [line] = bad.err_lines
    assert "rbm.learning_rate" in line and "diverged" in line
    assert {name: (tmp_path / name).read_bytes() for name in files} == files
