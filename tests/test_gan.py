"""GAN pretraining (ch. 11.2.2): model B on the hidden layers of a GAN's discriminator.

On `tiny_data` and small random images, one or two epochs: these tests check the structure,
the bookkeeping, reproducibility and failing safely, not how good the features are
(docs/pretrain.md measures that on the real data).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import assert_usage_error, run_cli, snapshot, tiny_settings

pytestmark = pytest.mark.usefixtures("tensorflow_set_up")

TINY = ["--no-verify", "--valid-size", "100", "--b-train-size", "20"]
SMALL = ["--hidden", "16,8", "--unlabelled-size", "200", "--gan-epochs", "1", "--gan-batch-size", "32"]


def _cfg(tiny_data, **settings):
    from fmtransfer.config import load_config

    return load_config(None, {**tiny_settings(tiny_data), "gan.epochs": 2, "gan.batch_size": 32, **settings})


def _images(n=160, seed=0) -> np.ndarray:
    """Images in [0, 1] with some structure to learn: a bright band at one of ten heights."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 0.2, size=(n, 28, 28)).astype(np.float32)
    for i, k in enumerate(rng.integers(0, 10, size=n)):
        x[i, 2 * k:2 * k + 3] = 0.9
    return x


def _train(cfg, x=None, x_valid=None):
    from fmtransfer import runtime
    from fmtransfer.contenders import gan

    x = _images() if x is None else x
    runtime.seed_everything(cfg.seed)  # as `pretraining.pretrain` does
    return gan.train(cfg, x, x[:40] if x_valid is None else x_valid)


def _shapes(model) -> list[tuple[str, tuple]]:
    """Each layer's type and output shape, as the model is built."""
    out = []
    shape = (None, 28, 28)
    for layer in model.layers:
        shape = layer.compute_output_shape(shape)
        out.append((type(layer).__name__, tuple(shape)))
    return out


@pytest.mark.parametrize("arch", ["dense", "cnn"])
def test_the_encoder_is_shaped_like_model_a_and_has_no_dropout(tiny_data, arch):
    from fmtransfer import models
    from fmtransfer.contenders import gan

    settings = {"model.arch": arch, "model.hidden": [16, 8] if arch == "dense" else [4, 8], "model.cnn_dense": 8}
    cfg = _cfg(tiny_data, **settings)
    discriminator, encoder, generator = gan.build(cfg)
    reference = models.build_encoder(models.autoencoder_parts(cfg.model))
    assert _shapes(encoder) == _shapes(reference)
    assert [layer.name for layer in encoder.layers] == [layer.name for layer in reference.layers]
    assert [w.shape for w in encoder.weights] == [w.shape for w in reference.weights]
    assert not any(isinstance(layer, models.layers.Dropout) for layer in encoder.layers)
    # The discriminator: the same stem and hidden layers (the same objects), a dropout after each
    # hidden block, one logit.
    _, hidden = models.blocks(encoder)
    dropouts = [layer for layer in discriminator.layers if isinstance(layer, models.layers.Dropout)]
    assert len(dropouts) == len(hidden) and all(d.rate == cfg.gan.dropout for d in dropouts)
    assert all(any(layer is other for other in discriminator.layers) for layer in encoder.layers[:-1])
    assert discriminator.output_shape == (None, 1)
    assert generator.output_shape == (None, 28, 28)
    # Model B built on it carries none of the discriminator's dropout.
    b = models.build_b_on_a(encoder)
    assert not any(isinstance(layer, models.layers.Dropout) for layer in b.layers)
    assert len(models.blocks(b)[1]) == len(hidden)


def test_a_cnn_without_its_dense_block_still_has_one_logit(tiny_data):
    from fmtransfer.contenders import gan

    cfg = _cfg(tiny_data, **{"model.arch": "cnn", "model.hidden": [4], "model.cnn_dense": 0})
    discriminator, encoder, _ = gan.build(cfg)
    assert len(encoder.output_shape) == 4 and discriminator.output_shape == (None, 1)


def test_the_gan_trains_and_its_samples_are_images_in_0_1(tiny_data):
    from fmtransfer import training

    cfg = _cfg(tiny_data)
    generator, encoder, steps = _train(cfg)
    [step] = steps
    assert step["name"] == "gan" and step["trains"] == ["discriminator", "generator"]
    history = step["history"]
    assert [r["epoch"] for r in history] == [1, 2]
    for record in history:
        assert np.isfinite(record["loss"]) and np.isfinite(record["g_loss"]) and record["seconds"] > 0
        assert record["loss"] > 0 and record["g_loss"] > 0
        for key in ("real_accuracy", "fake_accuracy", "val_real_accuracy"):
            assert 0 <= record[key] <= 1
    z = np.random.default_rng(1).normal(size=(7, cfg.gan.codings)).astype(np.float32)
    samples = training.predict(generator, z)
    assert samples.shape == (7, 28, 28)
    assert samples.min() >= 0 and samples.max() <= 1 and samples.std() > 0


def test_the_encoder_is_the_trained_discriminators_hidden_stack(tiny_data, monkeypatch):
    from fmtransfer import models
    from fmtransfer.contenders import gan

    made = {}
    real_build = gan.build

    def recording_build(cfg):
        made["parts"] = parts = real_build(cfg)
        made["initial"] = [layer.get_weights() for layer in parts[1].layers if layer.weights]
        return parts

    monkeypatch.setattr(gan, "build", recording_build)
    _, encoder, _ = _train(_cfg(tiny_data, **{"gan.epochs": 1}))
    discriminator = made["parts"][0]
    by_name = {layer.name: layer for layer in discriminator.layers}
    weighted = [layer for layer in encoder.layers if layer.weights]
    assert [layer.name for layer in weighted] == ["hidden1", "hidden2"]
    for layer, initial in zip(weighted, made["initial"]):
        trained = by_name[layer.name].get_weights()
        assert all(np.array_equal(a, b) for a, b in zip(layer.get_weights(), trained))
        assert not np.array_equal(layer.get_weights()[0], initial[0]), f"{layer.name} did not train"
    assert models.weights_digest(encoder.get_weights()) != models.weights_digest(
        [w for ws in made["initial"] for w in ws])


def test_the_same_seed_gives_the_same_gan(tiny_data):
    from fmtransfer import models

    def digests(seed):
        generator, encoder, steps = _train(_cfg(tiny_data, seed=seed, **{"gan.epochs": 1}))
        return (models.weights_digest(encoder.get_weights()), models.weights_digest(generator.get_weights()),
                steps[0]["history"][0]["loss"])

    first = digests(3)
    assert digests(3) == first
    assert digests(4)[0] != first[0]


def test_a_gan_that_diverges_raises_naming_its_learning_rate(tiny_data):
    from fmtransfer import DivergedError

    with pytest.raises(DivergedError, match="gan.learning_rate") as caught:
        _train(_cfg(tiny_data, **{"gan.epochs": 2, "gan.learning_rate": 1e30}))
    assert caught.value.key == "gan.learning_rate" and caught.value.epoch == 1


def test_a_gan_needs_an_epoch(tiny_data, tmp_path):
    from fmtransfer.errors import ConfigError

    with pytest.raises(ConfigError, match="gan.epochs") as caught:
        _cfg(tiny_data, **{"gan.epochs": 0})
    assert caught.value.key == "gan.epochs"
    assert run_cli("split", "--run", tmp_path, "--data-dir", tiny_data, *TINY).code == 0
    assert_usage_error(run_cli("pretrain", "--run", tmp_path, "--method", "gan", *SMALL[:4], "--gan-epochs", "0"),
                       "--gan-epochs")
    config = tmp_path / "gan.toml"
    config.write_text("[gan]\nepochs = 0\n")
    assert_usage_error(run_cli("pretrain", "--run", tmp_path, "--method", "gan", "--config", config), "gan.epochs")
    assert not (tmp_path / "encoder_gan.keras").exists()


def test_transfer_from_gan_before_pretraining_it(tiny_data, tmp_path):
    assert run_cli("split", "--run", tmp_path, "--data-dir", tiny_data, *TINY).code == 0
    assert_usage_error(run_cli("transfer", "--run", tmp_path, "--from", "gan"), "pretrain --method gan")


@pytest.fixture(scope="module")
def gan_run(tiny_data, tmp_path_factory):
    """A dense run on `tiny_data` with a GAN pretrained through the command line."""
    run = tmp_path_factory.mktemp("gan")
    assert run_cli("split", "--run", run, "--data-dir", tiny_data, *TINY).code == 0
    result = run_cli("pretrain", "--run", run, "--method", "gan", *SMALL, "--json")
    assert result.code == 0, result.err
    return run, result.json()


def test_pretrain_gan_then_transfer_then_compare(gan_run):
    from fmtransfer import models

    run, r = gan_run
    assert r["method"] == "gan" and r["arch"] == "dense" and r["unlabelled_size"] == 200
    assert r["settings"]["gan"]["epochs"] == 1 and r["settings"]["gan"]["batch_size"] == 32
    [step] = r["steps"]
    assert len(step["history"]) == 1 and np.isfinite(step["history"][0]["g_loss"])
    saved = json.loads((run / "pretrain_gan.json").read_text())
    assert saved["split_fingerprint"] == json.loads((run / "split.json").read_text())["fingerprint"]
    assert r["generator"] == str(run / "generator_gan.keras")
    encoder = models.load_model(run / "encoder_gan.keras")
    assert [layer.name for layer in encoder.layers] == ["flatten", "hidden1", "hidden2", "code"]
    generator = models.keras.models.load_model(run / "generator_gan.keras", compile=False)
    assert generator.output_shape == (None, 28, 28)
    # matplotlib is installed here, so the picture is drawn without being asked for.
    picture = run / "samples_gan.png"
    assert r["picture"] == str(picture) and picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    before = (run / "encoder_gan.keras").read_bytes()
    t = run_cli("transfer", "--run", run, "--from", "gan", "--freeze-epochs", "1", "--fine-tune-epochs", "1", "--json")
    assert t.code == 0, t.err
    t = t.json()
    assert t["source"] == "gan" and t["reuse_layers"] == 2 and t["pretrained_unchanged"]
    assert [p["name"] for p in t["phases"]] == ["frozen", "fine-tune"]
    assert (run / "model_b_on_gan.keras").is_file() and (run / "encoder_gan.keras").read_bytes() == before
    b = models.load_model(run / "model_b_on_gan.keras")
    assert not any(isinstance(layer, models.layers.Dropout) for layer in b.layers)

    c = run_cli("compare", "--run", run, "--epochs", "1", "--json")
    assert c.code == 0, c.err
    contenders = c.json()["contenders"]
    assert "GAN-pretrained" in contenders and 0 <= contenders["GAN-pretrained"]["test_accuracy"] <= 1


def test_a_diverging_gan_keeps_the_good_encoder(gan_run):
    run, _ = gan_run
    before = snapshot(run)
    result = run_cli("pretrain", "--run", run, "--method", "gan", *SMALL, "--gan-learning-rate", "1e30", "--json")
    assert result.code == 1, result.err
    lines = result.err_lines
    assert len(lines) == 1 and "Traceback" not in result.err and result.out == ""
    assert "GAN pretraining diverged at epoch 1" in lines[0] and "--gan-learning-rate" in lines[0]
    assert snapshot(run) == before
