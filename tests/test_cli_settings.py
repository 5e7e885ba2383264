"""How settings reach the command line: options built from the config's fields, what the run
directory remembers, and where a refused setting came from.

Runs on `tiny_data` (700 generated images) with one epoch per stage.
"""

from __future__ import annotations

import json

import click

from conftest import CONFIGS, assert_usage_error, run_cli
from fmtransfer import Config, load_config
from fmtransfer.cli import CFG, cli, show_default
from fmtransfer.config import field_info

TINY = ["--valid-size", "100", "--no-verify"]
ONE = ["--freeze-epochs", "1", "--fine-tune-epochs", "1"]


def _ok(*args) -> dict:
    result = run_cli(*args, "--json")
    assert result.code == 0, result.err
    return result.json()


def _split(run, tiny_data, *extra):
    _ok("split", "--run", run, "--data-dir", tiny_data, *TINY, "--b-train-size", "20", *extra)


def _config_options():
    commands = [(name, cmd) for name, cmd in cli.commands.items()]
    for name, cmd in commands:
        for param in cmd.params:
            if param.name and param.name.startswith(CFG):
                yield name, param


def test_every_config_option_shows_the_default_config_has():
    """`--help` shows the defaults of Config(), read from the fields, so they cannot drift."""
    seen = 0
    for command, param in _config_options():
        key = param.name[len(CFG):].replace("__", ".")
        f, _, default = field_info(key)
        shown = param.help.rsplit("[", 1)[1].rstrip("]")
        section, _, name = key.rpartition(".")
        actual = getattr(getattr(Config(), section) if section else Config(), name)
        assert actual == default
        if f.metadata.get("show"):  # a default that depends on another key, said in words
            assert shown == f.metadata["show"], (command, param.opts)
            if key == "model.hidden":
                assert show_default(actual) in shown
        else:
            assert shown == show_default(actual), (command, param.opts, shown)
        seen += 1
    assert seen > 40


def test_the_same_option_name_sets_one_key_per_command():
    for name, cmd in cli.commands.items():
        opts = [o for p in cmd.params for o in p.opts]
        assert len(opts) == len(set(opts)), name


def test_study_seed_alone_runs_that_seed(tiny_data, tmp_path):
    """`study --seed 7` runs seed 7, not the default 42."""
    out = _ok("study", "--run", tmp_path, "--seed", "7", "--data-dir", tiny_data, *TINY, "--b-train-sizes", "20",
              "--hidden", "16,8", "--a-epochs", "1", "--b-epochs", "1", *ONE, "--no-plots")
    assert [c["seeds"] for c in out["cells"]] == [[7]]


def test_study_seed_against_a_config_files_seed_list_is_refused(tmp_path):
    toml = tmp_path / "s.toml"
    toml.write_text("[study]\nseeds = [1, 2]\n")
    message = assert_usage_error(run_cli("study", "--run", tmp_path / "s", "--config", toml, "--seed", "7"), "--seed")
    assert "--seeds N" in message and "s.toml" in message


def test_a_later_stage_setting_is_not_remembered_and_cannot_block_an_earlier_stage(tiny_data, tmp_path):
    """transfer --reuse-layers 3, then train-a --hidden 100,50 (2 layers): train-a runs, and a bare
    transfer afterwards reuses all of the new model A."""
    _split(tmp_path, tiny_data)
    _ok("train-a", "--run", tmp_path, "--epochs", "1", "--hidden", "16,8,8")
    assert _ok("transfer", "--run", tmp_path, "--reuse-layers", "3", *ONE)["reuse_layers"] == 3
    _ok("train-a", "--run", tmp_path, "--epochs", "1", "--hidden", "100,50")
    assert _ok("transfer", "--run", tmp_path, *ONE)["reuse_layers"] == 2
    remembered = json.loads((tmp_path / "config.json").read_text())
    assert sorted(remembered) == ["batch_size", "data", "model", "seed"]


def test_a_bad_remembered_setting_names_config_json_and_the_option_that_overrides_it(tiny_data, tmp_path):
    _split(tmp_path, tiny_data)
    (tmp_path / "config.json").write_text(json.dumps({"model": {"arch": "cnn", "hidden": [8, 8, 8, 8]}}))
    message = assert_usage_error(run_cli("train-a", "--run", tmp_path), "model.hidden", "config.json", "--hidden")
    assert "3 conv-pool blocks" in message
    _ok("train-a", "--run", tmp_path, "--epochs", "1", "--hidden", "8,8")  # the advice works


def test_a_stage_conflict_names_the_option_that_set_it(tiny_data, tmp_path):
    """compare --seed 7 against a transfer trained with seed 42: refused, naming --seed."""
    _split(tmp_path, tiny_data)
    _ok("train-a", "--run", tmp_path, "--epochs", "1", "--hidden", "16,8")
    _ok("transfer", "--run", tmp_path, *ONE)
    message = assert_usage_error(run_cli("compare", "--run", tmp_path, "--seed", "7", "--epochs", "1"), "--seed")
    assert "seed 42" in message


def test_pretrain_takes_every_training_image_by_default(tiny_data, tmp_path):
    """A split with few training images: pretrain without --unlabelled-size uses them all, rather
    than blaming an option the user never gave."""
    _ok("split", "--run", tmp_path, "--data-dir", tiny_data, "--no-verify", "--valid-size", "650",
        "--b-train-size", "5")
    r = _ok("pretrain", "--run", tmp_path, "--epochs", "1", "--hidden", "8", "--no-plot")
    assert r["unlabelled_size"] == 50
    assert_usage_error(run_cli("pretrain", "--run", tmp_path, "--unlabelled-size", "51", "--hidden", "8"),
                       "--unlabelled-size", "50")


def test_quick_toml_pretrains_in_seconds_not_minutes():
    """configs/quick.toml's promise of a smoke run covers pretrain: one epoch, 5,000 images."""
    c = load_config(CONFIGS / "quick.toml")
    assert c.pretrain.epochs == 1 and c.greedy.epochs == 1 and 0 < c.pretrain.unlabelled_size <= 5000


def test_run_and_compare_take_contenders(tiny_data, tmp_path):
    out = _ok("run", "--run", tmp_path, "--data-dir", tiny_data, *TINY, "--b-train-size", "20", "--hidden", "16,8",
              "--a-epochs", "1", "--b-epochs", "1", *ONE, "--contenders", "autoencoder",
              "--unlabelled-size", "100", "--p-epochs", "1")
    assert list(out["contenders"]) == ["baseline", "autoencoder-pretrained"]
    assert (tmp_path / "encoder_autoencoder.keras").is_file() and not (tmp_path / "model_a.keras").exists()
    only = _ok("compare", "--run", tmp_path, "--epochs", "1", "--contenders", "autoencoder")
    assert list(only["contenders"]) == ["baseline", "autoencoder-pretrained"]
    assert_usage_error(run_cli("compare", "--run", tmp_path, "--contenders", "transfer"), "transfer --contender transfer")
    assert_usage_error(run_cli("run", "--run", tmp_path, "--contenders", "vae"), "--contenders", "vae")


def test_every_contender_has_a_one_line_description_in_help():
    from fmtransfer import contenders

    for name in contenders.names():
        assert contenders.get(name).description and "\n" not in contenders.get(name).description


def test_click_params_are_built_for_existing_keys_only():
    for _, param in _config_options():
        assert isinstance(param, click.Option)
        field_info(param.name[len(CFG):].replace("__", "."))  # raises for an unknown key
