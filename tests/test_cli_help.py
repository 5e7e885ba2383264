"""`--help` against `Config`: one name per setting on every command, every key a command reads
reachable there, each contender's options in its own group, old names as documented aliases
that refuse to be given with the new one, and `fmtransfer contenders` listing every contender.

TensorFlow-free: it reads the click commands and the config's fields.
"""

from __future__ import annotations

import json

import cloup

from conftest import assert_usage_error, run_cli
from fmtransfer import contenders
from fmtransfer.cli import ALIAS, CFG, cli, option_name
from fmtransfer.config import Config, field_info, flatten
from fmtransfer.study.axes import declared

KEYS = set(flatten(Config().to_dict()))


def _keys(command) -> dict[str, object]:
    """Config key -> its click parameter, for the options of `command` that set one."""
    return {p.name[len(CFG):].replace("__", "."): p for p in command.params if p.name and p.name.startswith(CFG)}


def _commands():
    yield from ((name, cmd) for name, cmd in cli.commands.items())


def _axis_keys() -> set[str]:
    """The keys a study's grid sets for each run: its options for them would be overridden."""
    keys = set()
    for a in declared():
        if a.pooled:
            continue
        keys.update(a.settings(a.from_json(_example(a))))
    return keys


def _example(a):
    return {"pair": [5, 6], "b_train_size": 200, "reuse_layers": "all", "preset": "book"}[a.name]


def test_each_setting_has_one_option_name_on_every_command():
    """`train-a --epochs` and `run --a-epochs` were one setting under two names; now a key's
    option is the same everywhere, and an older name lives on only as a hidden, documented alias."""
    names: dict[str, set[str]] = {}
    for command, cmd in _commands():
        for key, param in _keys(cmd).items():
            assert param.opts == [option_name(key)], (command, key, param.opts)
            names.setdefault(key, set()).update(param.opts)
            help_text = param.help.rsplit("  [", 1)[0]
            assert help_text.startswith(field_info(key)[0].metadata["help"]), (command, key)
        for p in cmd.params:
            if p.name and p.name.startswith(ALIAS):
                key = p.name[len(ALIAS):].replace("__", ".")
                assert p.hidden, (command, p.opts)
                assert f"Alias: {p.opts[0]}." in _keys(cmd)[key].help, (command, key)
    assert all(len(v) == 1 for v in names.values()), {k: v for k, v in names.items() if len(v) > 1}
    assert len(names) > 50


def test_run_reaches_every_key_it_reads():
    """Every key but the study's grid and `pretrain`'s method choice (run pretrains what its
    contenders need) is an option of `run`: model A's learning rate too."""
    reached = set(_keys(cli.commands["run"])) | {"data.verify_checksums"}  # --no-verify
    unread = {k for k in KEYS if k.startswith("study.")} | {"pretrain.method"}
    assert KEYS - unread - reached == set()
    assert {"train_a.learning_rate", "baseline.learning_rate", "pretrain.learning_rate"} <= reached


def test_study_reaches_every_key_its_runs_read_and_none_its_grid_overrides():
    study = _keys(cli.commands["study"])
    grid = _axis_keys()
    assert grid == {"data.b_classes", "data.b_train_size", "transfer.reuse_layers",
                    "transfer.frozen_learning_rate", "transfer.fine_tune_learning_rate"}
    # --seeds/--seed-list and --data-seeds/--data-seed-list set these two; --no-verify the last.
    # study.space: search-space bounds, read by `contenders` until a study tunes.
    unread = grid | {"pretrain.method", "study.seeds", "study.data_seeds", "data.verify_checksums", "study.space"}
    assert KEYS - unread - set(study) == set()
    assert not grid & set(study), "an option the grid would silently override"


def test_each_contenders_options_are_in_a_group_of_their_own():
    for command in ("run", "study"):
        cmd = cli.commands[command]
        groups = {g.title: {p.name[len(CFG):].replace("__", ".") for p in g.options if p.name.startswith(CFG)}
                  for g in cmd.option_groups}
        for name in contenders.names():
            own = contenders.get(name).Settings
            if own is None or not own.__dataclass_fields__:
                continue
            title = next(t for t in groups if t.endswith(f"[{own.NAME}]"))
            assert groups[title] == {f"{own.NAME}.{f}" for f in own.__dataclass_fields__}, (command, title)
        assert isinstance(cmd, cloup.Command)


def test_contenders_help_names_them_and_the_command_lists_them():
    help_text = run_cli("run", "--help").out
    assert "fmtransfer contenders" in " ".join(help_text.split())  # wherever the list of names wraps it
    for name in contenders.names():
        assert contenders.get(name).description not in " ".join(help_text.split())
    listed = run_cli("contenders", "--json")
    assert listed.code == 0, listed.err
    rows = {r["name"]: r for r in json.loads(listed.out)["contenders"]}
    assert list(rows) == list(contenders.names())
    assert rows["transfer"]["builds_on"] == ["model A"] and rows["baseline"]["builds_on"] == ["nothing"]
    assert rows["gan"]["builds_on"] == ["gan's encoder"]
    assert rows["l2-sp"]["options"] == {"--l2-sp-alpha": "0.1", "--l2-sp-beta": "0.01"}
    assert rows["lp-ft"]["title"] == "LP-FT"
    shown = run_cli("contenders")
    assert shown.code == 0 and "--gan-dropout" in shown.out and "GAN-pretrained" in shown.out


def test_an_old_name_with_the_new_one_is_one_line_naming_both(tmp_path):
    for args, names in ((["train-a", "--epochs", "1", "--a-epochs", "2"], ["--epochs", "--a-epochs"]),
                        (["compare", "--learning-rate", "0.1", "--b-learning-rate", "0.1"],
                         ["--learning-rate", "--b-learning-rate"]),
                        (["study", "--reuse-layers", "1", "--reuse-depths", "2"], ["--reuse-layers", "--reuse-depths"])):
        assert_usage_error(run_cli(*args, "--run", tmp_path / "r"), *names)
    assert not (tmp_path / "r").exists()
