"""Values never silently become other values: one strict parser for lists typed as text, and
TOML's own types taken at their word. Each refusal is one line naming the option or the file's
key, exit 2, before anything is read or trained.
"""

from __future__ import annotations

import pytest

from conftest import assert_usage_error, run_cli
from fmtransfer import ConfigError, load_config


@pytest.mark.parametrize("command, option, text", [
    ("study", "--seed-list", "42 43"),      # read as one item, it ran seed 4243
    ("train-a", "--hidden", "3 1"),         # it built one layer of 31 units
    ("study", "--b-train-sizes", "50 200"),
    ("study", "--pairs", "5:6 0:2"),
])
def test_a_list_with_spaces_between_values_is_refused_naming_the_option(command, option, text, tmp_path):
    line = assert_usage_error(run_cli(command, "--run", tmp_path / "run", option, text), option)
    assert "not spaces" in line and repr(text) in line
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("option", ["--contenders", "--presets"])
def test_an_empty_list_is_refused_rather_than_meaning_the_default(option, tmp_path):
    line = assert_usage_error(run_cli("study", "--run", tmp_path / "run", option, ""), option)
    assert "is empty" in line


def test_spaces_around_commas_are_allowed():
    cfg = load_config(None, {"model.hidden": " 300, 100 ", "study.pairs": "5:6, 0:2", "study.seeds": "1,2"})
    assert cfg.model.hidden == (300, 100)
    assert cfg.study.pairs == ((5, 6), (0, 2))
    assert cfg.study.seeds == (1, 2)


@pytest.mark.parametrize("toml, key, expected", [
    ('[model]\nhidden = "300 100"\n', "model.hidden", "not spaces"),  # it built one layer of 300,100
    ('seed = "1"\n', "seed", "expected an integer, got '1'"),
    ('seed = 1e9\n', "seed", "expected an integer, got 1000000000.0"),
    ('[transfer]\nfrozen_learning_rate = "1e-3"\n', "transfer.frozen_learning_rate", "expected a number"),
    ('[data]\nverify_checksums = "false"\n', "data.verify_checksums", "expected true or false"),
    ('[model]\nhidden = [300, 100.5]\n', "model.hidden", "expected a list"),
    ('[gan]\nepochs = 2.0\n', "gan.epochs", "expected an integer"),
])
def test_a_toml_value_of_the_wrong_type_is_refused_naming_the_file_and_key(toml, key, expected, tmp_path):
    path = tmp_path / "settings.toml"
    path.write_text(toml)
    line = assert_usage_error(run_cli("split", "--run", tmp_path / "run", "--config", path), str(path), key)
    assert expected in line
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert caught.value.key == key


def test_toml_values_of_the_right_type_load_as_they_read(tmp_path):
    path = tmp_path / "settings.toml"
    path.write_text('seed = 7\ncontenders = ["transfer"]\n[model]\nhidden = [300, 100]\n'
                    '[transfer]\nreuse_layers = 1\nfrozen_learning_rate = 1\n[study]\npairs = [[5, 6], [0, 2]]\n'
                    'stack = "auto"\n')
    cfg = load_config(path)
    assert (cfg.seed, cfg.contenders, cfg.model.hidden) == (7, ("transfer",), (300, 100))
    assert (cfg.transfer.reuse_layers, cfg.transfer.frozen_learning_rate) == (1, 1.0)
    assert cfg.study.pairs == ((5, 6), (0, 2)) and cfg.study.stack == "auto"


def test_off_a_terminal_a_table_prints_complete_numbers(monkeypatch, capsys):
    from rich.table import Table

    from fmtransfer import cli

    table = Table(*(f"column {i}" for i in range(12)))
    table.add_row(*(f"{100 * i / 7:.6f}" for i in range(12)))
    monkeypatch.setattr("sys.stdout.isatty", lambda: False, raising=False)
    cli._console().print(table)
    printed = capsys.readouterr().out
    assert "…" not in printed
    assert all(f"{100 * i / 7:.6f}" in printed for i in range(12))
