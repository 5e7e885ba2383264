"""fmtransfer.config: the book's defaults, the shipped TOML files, and rejecting impossible settings.

Every key defaults to the book's value (docs/experiment.md), files override defaults, options override files,
and a bad key or value is a UsageError naming the key.
"""

from __future__ import annotations

import pytest

from conftest import CONFIGS
from fmtransfer import UsageError
from fmtransfer.config import LR_PRESETS, Config, load_config


def _toml(tmp_path, text: str):
    path = tmp_path / "settings.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_are_the_books_experiment():
    """Model A 300-100-50-50-50 SELU, SGD 1e-3, 20 epochs, batch 32, seed 42; B = sandal vs shirt on
    200 images; transfer 4 frozen epochs at 1e-2 then 16 unfrozen at 1e-4, reusing every hidden layer."""
    c = Config()
    assert (c.seed, c.batch_size) == (42, 32)
    assert c.data.b_classes == (5, 6)
    assert c.data.b_train_size == 200
    assert c.data.valid_size == 5000
    assert c.data.verify_checksums is True
    assert c.model.arch == "dense"
    assert c.model.hidden == (300, 100, 50, 50, 50)
    assert c.model.activation == "selu"
    assert (c.train_a.epochs, c.train_a.learning_rate) == (20, 1e-3)
    assert (c.baseline.epochs, c.baseline.learning_rate) == (20, 1e-3)
    t = c.transfer
    assert t.reuse_layers == "all"
    assert (t.freeze_epochs, t.frozen_learning_rate) == (4, 1e-2)
    assert (t.fine_tune_epochs, t.fine_tune_learning_rate) == (16, 1e-4)
    assert t.unfreeze == "all"


def test_learning_rate_presets_are_the_book_text_and_the_notebook():
    """Book text: plain "sgd" (1e-2) then 1e-4; the book's notebook: 1e-3 for both phases."""
    assert LR_PRESETS["book"] == (1e-2, 1e-4)
    assert LR_PRESETS["notebook"] == (1e-3, 1e-3)


def test_empty_file_is_the_books_experiment(tmp_path):
    """An empty TOML file changes nothing."""
    assert load_config(_toml(tmp_path, "")) == Config()


def test_book_toml_is_the_defaults():
    """configs/book.toml spells out the defaults."""
    assert load_config(CONFIGS / "book.toml") == Config()


def test_notebook_toml_uses_1e_3_for_both_transfer_phases():
    """configs/notebook.toml: as the book, with both transfer learning rates at 1e-3."""
    c = load_config(CONFIGS / "notebook.toml")
    assert c.transfer.frozen_learning_rate == 1e-3
    assert c.transfer.fine_tune_learning_rate == 1e-3
    assert c.replace(**{"transfer.frozen_learning_rate": 1e-2, "transfer.fine_tune_learning_rate": 1e-4}) == Config()


def test_ml3_toml_is_the_3rd_editions_experiment():
    """T-shirt/top vs pullover, 3 x 100 ReLU He-normal, SGD 1e-3 everywhere, validation at the end."""
    cfg = load_config(CONFIGS / "ml3.toml")
    assert cfg.data.b_classes == (0, 2) and cfg.data.b_train_size == 200 and cfg.data.valid_from == "last"
    assert (cfg.model.hidden, cfg.model.activation, cfg.model.initializer) == ((100, 100, 100), "relu", "he_normal")
    assert (cfg.train_a.learning_rate, cfg.baseline.learning_rate) == (1e-3, 1e-3)
    t = cfg.transfer
    assert (t.freeze_epochs, t.fine_tune_epochs, t.frozen_learning_rate, t.fine_tune_learning_rate) == (4, 16, 1e-3, 1e-3)
    assert (t.frozen_learning_rate, t.fine_tune_learning_rate) == LR_PRESETS["notebook"]  # studies: --presets notebook


def test_the_initializer_reaches_every_hidden_layer(tensorflow_set_up):
    from fmtransfer import models

    for arch in ("dense", "cnn"):
        model = models.build_model_a(load_config(None, {"model.arch": arch, "model.initializer": "he_normal"}).model)
        hidden = [layer for block in models.blocks(model)[1] for layer in block if layer.weights]
        assert hidden and all(type(layer.kernel_initializer).__name__ == "HeNormal" for layer in hidden)


def test_quick_toml_loads_with_few_epochs():
    """configs/quick.toml: the book's experiment with few epochs."""
    c = load_config(CONFIGS / "quick.toml")
    assert c.train_a.epochs < 20 and c.baseline.epochs < 20
    assert c.transfer.freeze_epochs + c.transfer.fine_tune_epochs < 20
    assert c.model == Config().model and c.data == Config().data and c.seed == 42


def test_toml_values_override_defaults(tmp_path):
    """A file's values replace the defaults, with their types."""
    c = load_config(_toml(tmp_path, 'seed = 7\n[data]\nb_classes = [0, 2]\n[model]\nhidden = [64, 32]\n'
                                    '[transfer]\nreuse_layers = 1\nunfreeze = "top:1"\n'))
    assert c.seed == 7
    assert c.data.b_classes == (0, 2)
    assert c.model.hidden == (64, 32)
    assert c.transfer.reuse_layers == 1
    assert c.transfer.unfreeze == "top:1"


def test_overrides_beat_the_file(tmp_path):
    """Options (overrides) win over the file; an override of None keeps the file's value."""
    path = _toml(tmp_path, "[train_a]\nepochs = 3\n[data]\nb_classes = [0, 2]\n")
    c = load_config(path, {"train_a.epochs": 5, "data.b_classes": "3,4", "seed": None})
    assert c.train_a.epochs == 5
    assert c.data.b_classes == (3, 4)
    assert c.seed == 42


def test_unknown_key_is_rejected_naming_it(tmp_path):
    """A misspelt key is an error naming the key and the file, not silently ignored."""
    path = _toml(tmp_path, "[transfer]\nfreeze_epoch = 3\n")
    with pytest.raises(UsageError) as info:
        load_config(path)
    assert "transfer.freeze_epoch" in str(info.value)
    assert str(path) in str(info.value)


def test_unknown_top_level_key_is_rejected_naming_it(tmp_path):
    with pytest.raises(UsageError, match="seeds"):
        load_config(_toml(tmp_path, "seeds = 3\n"))


def test_unknown_section_is_rejected_naming_it(tmp_path):
    """A misspelt section is an error naming the section."""
    with pytest.raises(UsageError, match="trainA"):
        load_config(_toml(tmp_path, "[trainA]\nepochs = 3\n"))


def test_unknown_override_key_is_rejected_naming_it():
    with pytest.raises(UsageError, match="transfer.frozen_epochs"):
        load_config(None, {"transfer.frozen_epochs": 3})


def test_missing_file_is_a_usage_error_naming_it(tmp_path):
    path = tmp_path / "nope.toml"
    with pytest.raises(UsageError, match="nope.toml"):
        load_config(path)


def test_invalid_toml_is_a_usage_error_naming_the_file(tmp_path):
    path = _toml(tmp_path, "[data\nb_classes = \n")
    with pytest.raises(UsageError, match="settings.toml"):
        load_config(path)


IMPOSSIBLE = [
    ("train_a.epochs", "[train_a]\nepochs = -1\n"),
    ("baseline.epochs", "[baseline]\nepochs = -3\n"),
    ("transfer.freeze_epochs", "[transfer]\nfreeze_epochs = -1\n"),
    ("transfer.fine_tune_epochs", "[transfer]\nfine_tune_epochs = -1\n"),
    ("data.b_classes", "[data]\nb_classes = [5, 10]\n"),
    ("data.b_classes", "[data]\nb_classes = [-1, 6]\n"),
    ("data.b_classes", "[data]\nb_classes = [5, 5]\n"),
    ("data.b_classes", "[data]\nb_classes = [1, 2, 3]\n"),
    ("data.b_classes", '[data]\nb_classes = ["Sandle", "Shirt"]\n'),
    ("study.pairs", '[study]\npairs = [["Sandal", "Sandal"]]\n'),
    ("transfer.reuse_layers", "[transfer]\nreuse_layers = 6\n"),
    ("transfer.reuse_layers", "[transfer]\nreuse_layers = 0\n"),
    ("transfer.reuse_layers", "[model]\nhidden = [100, 50]\n[transfer]\nreuse_layers = 3\n"),
    ("transfer.reuse_layers", '[transfer]\nreuse_layers = "most"\n'),
    ("transfer.unfreeze", '[transfer]\nunfreeze = "top"\n'),
    ("transfer.unfreeze", '[transfer]\nunfreeze = "bottom:2"\n'),
    ("transfer.unfreeze", '[transfer]\nunfreeze = "top:-1"\n'),
    ("train_a.learning_rate", "[train_a]\nlearning_rate = 0.0\n"),
    ("baseline.learning_rate", "[baseline]\nlearning_rate = -0.001\n"),
    ("transfer.frozen_learning_rate", "[transfer]\nfrozen_learning_rate = 0\n"),
    ("transfer.fine_tune_learning_rate", "[transfer]\nfine_tune_learning_rate = -1e-4\n"),
    ("train_a.epochs", '[train_a]\nepochs = "many"\n'),
    ("batch_size", "batch_size = 0\n"),
    ("data.b_train_size", "[data]\nb_train_size = 0\n"),
    ("model.initializer", '[model]\ninitializer = "zeros"\n'),
    ("data.valid_from", '[data]\nvalid_from = "middle"\n'),
    ("gan.epochs", "[gan]\nepochs = 0\n"),
    ("gan.real_label", "[gan]\nreal_label = 0.3\n"),
    ("rbm.cd_k", "[rbm]\ncd_k = 0\n"),
    ("rbm.momentum", "[rbm]\nmomentum = 1.0\n"),
    ("l2_sp.alpha", "[l2_sp]\nalpha = -0.1\n"),
    ("gradual.factor", "[gradual]\nfactor = 0.5\n"),
    ("lp_ft.c", "[lp_ft]\nc = 0\n"),
]


@pytest.mark.parametrize("key,text", IMPOSSIBLE, ids=[f"{k}:{t.splitlines()[-1]}" for k, t in IMPOSSIBLE])
def test_impossible_value_in_a_file_is_rejected_naming_the_key(tmp_path, key, text):
    """Negative epochs, a class outside 0..9 or twice, reusing more layers than exist, a bad
    unfreeze, a non-positive learning rate...: UsageError naming the key (and the file)."""
    path = _toml(tmp_path, text)
    with pytest.raises(UsageError) as info:
        load_config(path)
    assert key in str(info.value)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("key,value", [
    ("train_a.epochs", -1), ("data.b_classes", "5,5"), ("data.b_classes", "5,12"),
    ("transfer.reuse_layers", "9"), ("transfer.unfreeze", "top:x"),
    ("transfer.fine_tune_learning_rate", 0.0),
])
def test_impossible_override_is_rejected_naming_the_key(key, value):
    """The same checks apply to command-line overrides."""
    with pytest.raises(UsageError, match=key.replace(".", r"\.")):
        load_config(None, {key: value})


def test_reuse_all_and_every_count_up_to_the_hidden_stack_are_accepted():
    """reuse_layers may be 'all' or 1..len(model.hidden)."""
    for reuse in ["all", "ALL", 1, 3, 5, "2"]:
        c = load_config(None, {"transfer.reuse_layers": reuse})
        assert c.transfer.reuse_layers in ("all", 1, 2, 3, 5)


def test_config_round_trips_through_its_dict():
    """to_dict is plain JSON data that loads back to the same settings (the run directory's memory)."""
    c = load_config(CONFIGS / "notebook.toml", {"data.b_classes": "0,2", "transfer.unfreeze": "top:2"})
    d = c.to_dict()
    flat = {f"{s}.{k}": v for s, sect in d.items() if isinstance(sect, dict) for k, v in sect.items()}
    flat.update({k: v for k, v in d.items() if not isinstance(v, dict)})
    assert load_config(None, flat) == c


@pytest.mark.parametrize("typed, ids", [
    ("T-shirt/top,Pullover", (0, 2)),  # as the dataset spells them
    ("sandal,SHIRT", (5, 6)),           # in any case
    ("T-shirt,ankle-boot", (0, 9)),     # half of a name with a slash; a hyphen for a space
    ("ankle_boot,7", (9, 7)),           # names and ids mixed
])
def test_task_b_classes_are_typed_as_ids_or_as_the_datasets_names(typed, ids):
    assert load_config(None, {"data.b_classes": typed}).data.b_classes == ids


def test_class_names_reach_study_pairs_and_toml_and_are_stored_as_ids(tmp_path):
    assert load_config(None, {"study.pairs": "Sandal:Shirt,T-shirt/top:Pullover"}).study.pairs == ((5, 6), (0, 2))
    cfg = load_config(_toml(tmp_path, '[data]\nb_classes = ["Trouser", "Ankle boot"]\n'))
    assert cfg.to_dict()["data"]["b_classes"] == [1, 9]


def test_an_unknown_class_name_is_refused_with_every_id_and_name(cli):
    result = cli("split", "--b-classes", "T-shirt,Sandle")
    assert result.code == 2
    line, = result.err.strip().splitlines()
    assert "--b-classes" in line and "'Sandle'" in line
    assert "0 T-shirt/top" in line and "9 Ankle boot" in line
