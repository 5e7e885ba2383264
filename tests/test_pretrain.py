"""Unsupervised pretraining (ch. 11.2.2), transfer from its encoders, and the cnn architecture.

Everything runs on a small generated dataset (700 training images, 1 epoch per stage): these
tests check the paths and the bookkeeping, not the accuracies.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from conftest import assert_usage_error, run_cli, snapshot, write_dataset

N_TRAIN, VALID = 700, 100
SMALL = ("--freeze-epochs", "1", "--fine-tune-epochs", "1")


def _split(run, data_dir) -> None:
    result = run_cli("split", "--run", run, "--data-dir", data_dir, "--no-verify",
                     "--valid-size", VALID, "--b-train-size", 20, "--json")
    assert result.code == 0, result.err


def _ok(*args) -> dict:
    result = run_cli(*args, "--json")
    assert result.code == 0, result.err
    return result.json()


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("data"), n_train=N_TRAIN, n_test=100).directory


@pytest.fixture(scope="module")
def dense_run(tmp_path_factory, data_dir):
    """A dense run with a split, model A and both pretrained encoders."""
    run = tmp_path_factory.mktemp("dense")
    _split(run, data_dir)
    _ok("train-a", "--run", run, "--epochs", 1)
    results = {"autoencoder": _ok("pretrain", "--run", run, "--method", "autoencoder", "--unlabelled-size", 300,
                                  "--epochs", 1, "--learning-rate", 0.1),
               "greedy": _ok("pretrain", "--run", run, "--method", "greedy", "--unlabelled-size", 300,
                             "--greedy-epochs", 1, "--greedy-learning-rate", 0.1)}
    return run, results


def test_autoencoder_pretraining_saves_encoder_loss_and_picture(dense_run):
    from fmtransfer import models

    run, results = dense_run
    r = results["autoencoder"]
    assert r["method"] == "autoencoder" and r["arch"] == "dense" and r["unlabelled_size"] == 300
    assert 0 < r["reconstruction_loss"] < 1.5 and np.isfinite(r["valid_reconstruction_loss"])
    [step] = r["steps"]  # the whole autoencoder trains at once, every block moving
    assert step["depth"] == 5 and len(step["history"]) == 1
    assert step["trains"] == [f"hidden{i}" for i in range(1, 6)] + [f"decode{i}" for i in range(5, 0, -1)]
    assert all(b != a for b, a in zip(step["block_digests_before"], step["block_digests_after"]))
    saved = json.loads((run / "pretrain_autoencoder.json").read_text())
    assert saved["split_fingerprint"] == json.loads((run / "split.json").read_text())["fingerprint"]
    encoder = models.load_model(run / "encoder_autoencoder.keras")
    assert [layer.name for layer in encoder.layers] == ["flatten"] + [f"hidden{i}" for i in range(1, 6)] + ["code"]
    assert len(models.blocks(encoder)[1]) == 5  # the Identity "code" layer is what blocks() drops
    autoencoder = models.load_model(run / "autoencoder_autoencoder.keras")
    assert autoencoder.output_shape == (None, 28, 28)
    # matplotlib is installed here, so the picture is drawn without being asked for.
    picture = run / "reconstructions_autoencoder.png"
    assert r["picture"] == str(picture)
    assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and picture.stat().st_size > 5000


def test_run_draws_the_picture_and_a_later_pretrain_reuses_the_same_encoder(tmp_path, data_dir):
    """`run --contenders autoencoder` leaves the reconstruction picture as `pretrain` does; a
    `pretrain` with the same settings then reuses the encoder, and one with other settings does not."""
    run = tmp_path / "run"
    settings = ("--unlabelled-size", 300, "--p-epochs", 1, "--p-learning-rate", 0.1)
    made = _ok("run", "--run", run, "--data-dir", data_dir, "--no-verify", "--valid-size", VALID,
               "--b-train-size", 20, "--contenders", "autoencoder", "--b-epochs", 1, *SMALL, *settings)
    assert made["pretrained"]["autoencoder"]["reconstruction_loss"] > 0
    picture, encoder = run / "reconstructions_autoencoder.png", run / "encoder_autoencoder.keras"
    assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    before = snapshot(run)

    again = _ok("pretrain", "--run", run, "--method", "autoencoder", "--unlabelled-size", 300, "--epochs", 1,
                "--learning-rate", 0.1)
    assert again["reused"] is True and again["picture"] == str(picture)
    assert snapshot(run) == before  # not one byte rewritten

    other = _ok("pretrain", "--run", run, "--method", "autoencoder", "--unlabelled-size", 300, "--epochs", 2,
                "--learning-rate", 0.1)
    assert "reused" not in other and len(other["steps"][0]["history"]) == 2
    assert encoder.read_bytes() != before[encoder.name]


def test_greedy_pretraining_trains_one_layer_at_a_time(dense_run):
    from fmtransfer import models
    from fmtransfer.pretraining import _digest

    run, results = dense_run
    steps = results["greedy"]["steps"]
    assert [s["depth"] for s in steps] == [1, 2, 3, 4, 5]
    assert [len(s["history"]) for s in steps] == [1] * 5  # --greedy-epochs is per step
    assert results["greedy"]["settings"]["greedy"] == {"epochs": 1, "learning_rate": 0.1}
    for k, step in enumerate(steps, start=1):
        assert step["trains"] == [f"hidden{k}", f"decode{k}"]
        before, after = step["block_digests_before"], step["block_digests_after"]
        assert before[:k - 1] == after[:k - 1], f"step {k} moved a frozen block"
        assert before[k - 1] != after[k - 1], f"step {k} did not train hidden{k}"
        if k > 1:  # nothing touched the lower blocks between steps either
            assert before[:k - 1] == steps[k - 2]["block_digests_after"]
    encoder = models.load_model(run / "encoder_greedy.keras")
    assert [_digest(block) for block in models.blocks(encoder)[1]] == steps[-1]["block_digests_after"]
    assert all(layer.trainable for layer in encoder.layers)


def test_pretraining_sees_only_the_first_n_training_images(tmp_path, data_dir, monkeypatch):
    """The generated images carry their own index in pixels (0,0) and (0,1)."""
    from fmtransfer import stages, training
    from fmtransfer.config import load_config
    from fmtransfer.rundir import RunDir

    seen = []
    real_fit = training.fit

    def recording_fit(model, x, y, **kwargs):
        seen.append((x, kwargs["validation"][0]))
        return real_fit(model, x, y, **kwargs)

    monkeypatch.setattr(training, "fit", recording_fit)
    _split(tmp_path, data_dir)
    cfg = load_config(None, {"pretrain.unlabelled_size": 50, "pretrain.epochs": 1, "model.hidden": "8"})
    stages.pretrain(cfg, RunDir(tmp_path), plot=False)
    [(x, x_valid)] = seen

    def indices(images):
        pixels = np.rint(images[:, 0, :2] * 255).astype(int)
        return sorted(pixels[:, 0] + 256 * pixels[:, 1])

    assert indices(x) == list(range(VALID, VALID + 50))  # training images, in order, labels unused
    assert indices(x_valid) == list(range(VALID))  # validation images only measure
    assert not (tmp_path / "reconstructions_autoencoder.png").exists()  # plot=False


def test_pretraining_without_validation_images(tmp_path, data_dir):
    result = run_cli("split", "--run", tmp_path, "--data-dir", data_dir, "--no-verify", "--valid-size", 0,
                     "--b-train-size", 20)
    assert result.code == 0, result.err
    r = _ok("pretrain", "--run", tmp_path, "--unlabelled-size", 50, "--epochs", 1, "--hidden", 8, "--no-plot")
    assert r["valid_reconstruction_loss"] is None and r["reconstruction_loss"] > 0
    assert "val_loss" not in r["steps"][0]["history"][0]


@pytest.mark.parametrize("source", ["autoencoder", "greedy"])
def test_transfer_from_a_pretrained_encoder(dense_run, source):
    run, _ = dense_run
    before = (run / f"encoder_{source}.keras").read_bytes()
    r = _ok("transfer", "--run", run, "--from", source, *SMALL)
    assert r["source"] == source and r["arch"] == "dense"
    assert r["pretrained"].endswith(f"encoder_{source}.keras") and r["pretrained_meta"]["checked_against_split"]
    assert r["pretrained_meta"]["reconstruction_loss"] > 0
    assert r["reuse_layers"] == 5 and r["pretrained_unchanged"]
    assert [p["name"] for p in r["phases"]] == ["frozen", "fine-tune"]
    assert r["phases"][0]["trainable_weights"] == 2  # frozen phase: only B's new output layer
    assert r["phases"][1]["trainable_weights"] == 12
    assert (run / f"model_b_on_{source}.keras").is_file() and (run / f"transfer_{source}.json").is_file()
    assert (run / f"encoder_{source}.keras").read_bytes() == before


def test_compare_lists_every_contender(dense_run):
    run, _ = dense_run
    for source in ("a", "autoencoder", "greedy"):
        if not (run / f"transfer_{source}.json").is_file():
            _ok("transfer", "--run", run, "--from", source, *SMALL)
    r = _ok("compare", "--run", run, "--epochs", 1)
    names = ["baseline", "transfer from A", "autoencoder-pretrained", "greedy-pretrained"]
    assert list(r["contenders"]) == names
    for name in names:
        assert 0 <= r["contenders"][name]["test_accuracy"] <= 1
    assert r["settings"]["arch"] == "dense"
    table = run_cli("compare", "--run", run, "--epochs", 1)
    assert table.code == 0
    for name in names:
        assert name in table.out


def test_transfer_from_an_encoder_not_yet_trained(tmp_path, data_dir):
    _split(tmp_path, data_dir)
    assert_usage_error(run_cli("transfer", "--run", tmp_path, "--from", "greedy"), "pretrain --method greedy")
    assert_usage_error(run_cli("transfer", "--run", tmp_path, "--from", "autoencoder", "--model-a", "a.keras"),
                       "--model-a", "--from")


def test_pretrain_rejects_bad_input(tmp_path, data_dir, monkeypatch):
    _split(tmp_path, data_dir)
    assert_usage_error(run_cli("pretrain", "--run", tmp_path, "--unlabelled-size", 5000), "--unlabelled-size", "600")
    assert_usage_error(run_cli("pretrain", "--run", tmp_path, "--unlabelled-size", -1), "--unlabelled-size")
    assert_usage_error(run_cli("pretrain", "--run", tmp_path, "--method", "vae"), "--method")
    # --epochs and --learning-rate are the autoencoder's: a method with its own would silently ignore them.
    assert_usage_error(run_cli("pretrain", "--run", tmp_path, "--method", "greedy", "--epochs", 1),
                       "--epochs", "greedy", "--greedy-epochs")
    assert_usage_error(run_cli("pretrain", "--run", tmp_path, "--method", "gan", "--learning-rate", 0.1),
                       "--learning-rate", "gan", "--gan-learning-rate")
    assert_usage_error(run_cli("pretrain", "--run", tmp_path, "--method", "greedy", "--greedy-epochs", 0),
                       "--greedy-epochs", "greedy.epochs")
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if the [plot] extra were not installed
    assert_usage_error(run_cli("pretrain", "--run", tmp_path, "--plot", "--unlabelled-size", 50),
                       "--plot", "fmtransfer[plot]")
    assert not (tmp_path / "encoder_autoencoder.keras").exists()  # refused before training
    r = _ok("pretrain", "--run", tmp_path, "--unlabelled-size", 50, "--epochs", 1, "--hidden", 8)
    assert r["picture"] is None and not (tmp_path / "reconstructions_autoencoder.png").exists()


@pytest.mark.slow
def test_cnn_for_every_stage(tmp_path, data_dir):
    from fmtransfer import models

    _split(tmp_path, data_dir)
    a = _ok("train-a", "--run", tmp_path, "--arch", "cnn", "--epochs", 1)
    assert a["model"]["arch"] == "cnn" and a["model"]["hidden"] == [16, 32, 64]  # the cnn's own default
    model_a = models.load_model(tmp_path / "model_a.keras")
    names = [layer.name for layer in model_a.layers]
    assert names == ["reshape", "conv1", "pool1", "conv2", "pool2", "conv3", "pool3", "flatten", "dense", "output"]
    # Three conv-pool blocks and the dense block: the Flatten travels with the dense layer.
    assert [[layer.name for layer in b] for b in models.blocks(model_a)[1]] == \
        [["conv1", "pool1"], ["conv2", "pool2"], ["conv3", "pool3"], ["flatten", "dense"]]
    t = _ok("transfer", "--run", tmp_path, *SMALL)  # the run remembers --arch cnn
    assert t["arch"] == "cnn" and t["reuse_layers"] == 4
    b_on_a = models.load_model(tmp_path / "model_b_on_a.keras")
    assert [layer.name for layer in b_on_a.layers] == names and b_on_a.output_shape == (None, 1)
    t2 = _ok("transfer", "--run", tmp_path, "--reuse-layers", 2, *SMALL)
    assert t2["reuse_layers"] == 2
    assert [layer.name for layer in models.load_model(tmp_path / "model_b_on_a.keras").layers] == \
        ["reshape", "conv1", "pool1", "conv2", "pool2", "head_flatten", "output"]
    p = _ok("pretrain", "--run", tmp_path, "--method", "greedy", "--unlabelled-size", 200, "--greedy-epochs", 1,
            "--no-plot")
    assert p["arch"] == "cnn" and [s["trains"] for s in p["steps"]] == \
        [["conv1", "decode1"], ["conv2", "decode2"], ["conv3", "decode3"], ["dense", "decode4"]]
    assert _ok("transfer", "--run", tmp_path, "--from", "greedy", *SMALL)["arch"] == "cnn"
    c = _ok("compare", "--run", tmp_path, "--epochs", 1)
    assert c["settings"]["arch"] == "cnn" and list(c["contenders"]) == \
        ["baseline", "transfer from A", "greedy-pretrained"]
    baseline = models.load_model(tmp_path / "model_b.keras")
    assert models.arch_of(baseline) == "cnn"
    # A dense baseline against cnn contenders would compare architectures, not transfer.
    assert_usage_error(run_cli("compare", "--run", tmp_path, "--arch", "dense"), "--arch", "a cnn network")


def test_arch_switch_brings_its_own_default_hidden_sizes(tmp_path):
    from fmtransfer.config import load_config

    assert load_config(None, {"model.arch": "cnn"}).model.hidden == (16, 32, 64)
    cnn = load_config(None, {"model.arch": "cnn"})
    assert cnn.replace(**{"model.arch": "dense"}).model.hidden == (300, 100, 50, 50, 50)
    assert load_config(None, {"model.arch": "cnn", "model.hidden": "8,8"}).model.hidden == (8, 8)
    custom = load_config(None, {"model.hidden": "16,32,64"})  # a dense net that happens to match
    assert custom.replace(**{"seed": 1}).model.hidden == (16, 32, 64)
    toml = tmp_path / "cnn.toml"
    toml.write_text('[model]\narch = "cnn"\n')
    assert load_config(toml).model.hidden == (16, 32, 64)
    # Asking for the dense default's five layers as conv blocks is an error, not a silent swap.
    assert_usage_error(run_cli("train-a", "--run", tmp_path, "--arch", "cnn", "--hidden", "300,100,50,50,50"),
                       "--hidden", "3 conv-pool blocks")


def test_an_encoder_of_another_architecture_than_the_run_is_refused(tmp_path, data_dir):
    """A cnn encoder in a run whose model is dense: one line naming model.arch and the file."""
    _split(tmp_path, data_dir)
    _ok("pretrain", "--run", tmp_path, "--unlabelled-size", 50, "--epochs", 1, "--arch", "cnn", "--no-plot")
    _ok("train-a", "--run", tmp_path, "--epochs", 1, "--arch", "dense")  # the run is dense again
    before = snapshot(tmp_path)
    line = assert_usage_error(run_cli("transfer", "--run", tmp_path, "--from", "autoencoder"), "model.arch",
                              "encoder_autoencoder.keras")
    assert "cnn" in line and "dense" in line
    assert snapshot(tmp_path) == before
