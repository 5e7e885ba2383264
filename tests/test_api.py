"""The Python API: importing changes nothing, set-up is one explicit call, the config checks itself,
and the experiment runs in memory, with files only when asked.

The pipeline tests run on `tiny_data` (700 generated images, 1-2 epochs): they check the paths,
the types and the bookkeeping in seconds, not the accuracies.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys

import pytest

import fmtransfer
from conftest import REPO, tiny_settings
from fmtransfer import Config, ConfigError, UsageError, load_config
from fmtransfer.config import DataConfig, ModelConfig, TransferConfig


def _python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})


TF_STATE = """
import logging, warnings
import tensorflow as tf
from tensorflow.python.framework import config as tf_config
def state():
    return (tf.config.threading.get_intra_op_parallelism_threads(),
            tf.config.threading.get_inter_op_parallelism_threads(),
            tf_config.is_op_determinism_enabled(), tf.get_logger().level, len(warnings.filters))
"""


# ----------------------------------------------------------------------------- no side effects

def test_importing_every_module_leaves_tensorflow_settings_untouched():
    """Threads, determinism, TF's log level and the warning filters are as they were before
    `import fmtransfer` and every submodule, models and training included."""
    proc = _python(TF_STATE + """
before = state()
import fmtransfer, fmtransfer.models, fmtransfer.training, fmtransfer.pipeline, fmtransfer.stages
import fmtransfer.study, fmtransfer.pretraining, fmtransfer.contenders, fmtransfer.cli, fmtransfer.rundir
print("before", before)
print("after", state())
""")
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = dict(line.split(" ", 1) for line in proc.stdout.strip().splitlines())
    assert lines["before"] == lines["after"], proc.stdout


def test_setup_is_the_one_call_that_configures_tensorflow_and_entry_points_respect_it():
    """setup(threads=..., deterministic=...) sets the pools and determinism; ensure_setup, which
    the entry points call, does not undo a choice already made."""
    proc = _python(TF_STATE + """
import fmtransfer
from fmtransfer import runtime
fmtransfer.setup(threads=(2, 3), deterministic=True)
runtime.ensure_setup("cnn")
print(state()[:3])
""")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "(2, 3, True)"


def test_the_api_exports_its_names():
    for name in ("load_config", "run_experiment", "run_study", "setup", "Config", "ExperimentResult",
                 "StudyResult", "ContenderResult", "Contender", "register", "FmtError", "UsageError", "ConfigError"):
        assert hasattr(fmtransfer, name), name


# ----------------------------------------------------------------------------- a self-validating config

def test_sections_check_themselves_however_they_are_built():
    """Building a section directly validates it, naming the key: no path around the checks."""
    with pytest.raises(ConfigError) as info:
        TransferConfig(fine_tune_learning_rate=-1)
    assert info.value.key == "transfer.fine_tune_learning_rate"
    with pytest.raises(ConfigError, match="data.b_classes"):
        DataConfig(b_classes=(5, 5))
    with pytest.raises(ConfigError, match="model.hidden"):
        ModelConfig(arch="cnn", hidden=(8, 8, 8, 8))
    with pytest.raises(ConfigError, match="transfer.reuse_layers"):
        Config(model={"hidden": [10, 10]}, transfer={"reuse_layers": 3})


def test_values_are_converted_by_their_type_hints():
    c = Config(seed="7", transfer={"freeze_epochs": "3", "reuse_layers": "ALL"}, data={"b_classes": "0,2"},
               study={"pairs": "5:6,0:2", "presets": ["notebook"]})
    assert (c.seed, c.transfer.freeze_epochs, c.transfer.reuse_layers) == (7, 3, "all")
    assert c.data.b_classes == (0, 2) and c.study.pairs == ((5, 6), (0, 2)) and c.study.presets == ("notebook",)
    with pytest.raises(ConfigError, match="expected an integer"):
        Config(batch_size=2.5)
    with pytest.raises(ConfigError, match="presets"):
        Config(study={"presets": ["tuned"]})


def test_a_cnn_model_config_gets_the_cnn_default_sizes():
    assert ModelConfig(arch="cnn").hidden == (16, 32, 64)
    assert ModelConfig().hidden == (300, 100, 50, 50, 50)


def test_configs_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        Config().seed = 1  # type: ignore[misc]


def test_an_empty_item_in_a_list_is_an_error_not_skipped():
    with pytest.raises(ConfigError, match="model.hidden"):
        load_config(None, {"model.hidden": "300,,100"})


def test_unfreezing_top_0_is_an_error():
    with pytest.raises(ConfigError, match="transfer.unfreeze"):
        TransferConfig(unfreeze="top:0")


def test_load_config_takes_keyword_overrides():
    """The README's example: load_config(path, seed=7); sections as dicts or section__key."""
    cfg = load_config(REPO / "configs" / "book.toml", seed=7, transfer__freeze_epochs=2,
                      baseline={"epochs": 3}, contenders=["transfer", "autoencoder"])
    assert (cfg.seed, cfg.transfer.freeze_epochs, cfg.baseline.epochs) == (7, 2, 3)
    assert fmtransfer.contenders.select(cfg) == ("baseline", "transfer", "autoencoder")
    with pytest.raises(ConfigError, match="unknown key"):
        load_config(None, transfer__freeze=2)


def test_contenders_default_to_the_books_pair_and_all_means_every_registered_one():
    """The registry resolves the names (`select`); the config, which knows no contender, only
    refuses a name given twice."""
    from fmtransfer import contenders

    assert contenders.select(Config()) == ("baseline", "transfer")
    assert contenders.select(Config(contenders=["all"])) == contenders.names()
    assert {"transfer", "lp-ft", "l2-sp", "gradual", "reinit", "autoencoder", "greedy", "gan", "rbm"} \
        <= set(contenders.names())
    with pytest.raises(ConfigError, match="unknown contender 'vae'") as e:
        contenders.select(Config(contenders=["vae"]))
    assert e.value.key == "contenders"
    with pytest.raises(ConfigError, match="twice"):
        Config(contenders=["gan", "gan"])


def test_all_contenders_of_a_cnn_leave_out_those_that_build_dense_networks_only():
    from fmtransfer import contenders

    chosen = contenders.select(Config(contenders=["all"], model={"arch": "cnn"}))
    assert "rbm" not in chosen and {"gan", "lp-ft", "greedy"} <= set(chosen)
    with pytest.raises(ConfigError, match="rbm builds dense networks only, not cnn") as e:
        contenders.select(Config(contenders=["transfer", "rbm"], model={"arch": "cnn"}))
    assert e.value.key == "contenders"


def test_the_pretraining_method_is_checked_by_the_registry():
    from fmtransfer import contenders

    assert contenders.pretraining_method(Config(pretrain={"method": "gan"})) == "gan"
    with pytest.raises(ConfigError, match="must be one of autoencoder, greedy, rbm, gan, got 'vae'") as e:
        contenders.pretraining_method(Config(pretrain={"method": "vae"}))
    assert e.value.key == "pretrain.method"


def test_a_study_config_may_reuse_fewer_layers_than_transfer_unfreezes():
    """[study] reuse_layers = [1, ...] must not break a single transfer with --unfreeze top:2; the
    study itself refuses the combination, naming the key."""
    from fmtransfer import study

    cfg = load_config(None, {"study.reuse_layers": [1, "all"], "transfer.unfreeze": "top:2"})
    assert cfg.transfer.unfreeze == "top:2"
    with pytest.raises(ConfigError, match="transfer.unfreeze") as info:
        study.check_grid(cfg)
    assert "1 reused layers" in str(info.value)


def test_study_seeds_default_to_the_top_level_seed():
    assert Config(seed=7).study_seeds == (7,)
    assert Config(seed=7, study={"seeds": [1, 2]}).study_seeds == (1, 2)


# ----------------------------------------------------------------------------- the pipeline in memory

@pytest.fixture
def tiny_cfg(tiny_data) -> Config:
    return load_config(None, tiny_settings(tiny_data))


def test_run_experiment_in_memory_writes_no_file(tiny_cfg, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = fmtransfer.run_experiment(tiny_cfg.replace(contenders=["all"]))
    from fmtransfer import contenders
    from fmtransfer.pipeline import error_rate_ratio

    assert list(result.contenders) == [contenders.get(n).title for n in contenders.names()]
    assert result.baseline is result.contenders["baseline"] and result.transfer.name == "transfer"
    for r in result.contenders.values():
        assert 0 <= r.test_accuracy <= 1 and r.test_loss > 0
        if r.name != "baseline":
            assert r.error_rate_ratio == pytest.approx(error_rate_ratio(result.baseline.test_accuracy,
                                                                        r.test_accuracy))
            assert r.history and {h["phase"] for h in r.history} <= {p["name"] for p in r.phases}
    for name in ("transfer", "autoencoder", "greedy", "gan", "rbm", "l2-sp"):  # the book's two phases
        r = result.contenders[contenders.get(name).title]
        assert [h["phase"] for h in r.history] == ["frozen", "fine-tune"]  # one epoch each
    assert result.model_a is not None and len(result.model_a.history) == 1
    assert set(result.pretrained) == set(contenders.pretraining_methods())
    assert list(tmp_path.iterdir()) == []
    d = json.loads(json.dumps(result.to_dict()))
    assert set(d) >= {"baseline", "transfer", "error_rate_ratio", "contenders", "config", "settings"}
    assert d["config"] == tiny_cfg.replace(contenders=["all"]).to_dict()


def test_the_baseline_alone_needs_no_model_a(tiny_cfg, monkeypatch):
    from fmtransfer import resolver

    monkeypatch.setattr(resolver, "train_model_a", lambda *a, **k: pytest.fail("model A was trained"))
    result = fmtransfer.run_experiment(tiny_cfg.replace(contenders=["baseline"]))
    assert list(result.contenders) == ["baseline"] and result.transfer is None and result.model_a is None


def test_in_memory_and_on_disk_give_the_same_numbers(tiny_cfg, tmp_path):
    """run_experiment(cfg) and run_experiment(cfg, run_dir=...) (the CLI's stages) agree to the bit,
    and a run directory may be given as a str."""
    in_memory = fmtransfer.run_experiment(tiny_cfg)
    on_disk = fmtransfer.run_experiment(tiny_cfg, run_dir=str(tmp_path / "run"))
    for title in ("baseline", "transfer from A"):
        assert on_disk.contenders[title].test_accuracy == in_memory.contenders[title].test_accuracy
        assert on_disk.contenders[title].test_loss == in_memory.contenders[title].test_loss
    assert (tmp_path / "run" / "model_b_on_a.keras").is_file() and (tmp_path / "run" / "compare.json").is_file()


def test_stages_accept_a_str_run_directory(tiny_cfg, tmp_path):
    from fmtransfer import stages
    from fmtransfer.rundir import RunDir

    manifest = stages.split(tiny_cfg, RunDir(str(tmp_path / "x")))
    assert manifest["sizes"]["b_train"] == 20 and (tmp_path / "x" / "split.npz").is_file()


def test_a_new_contender_is_one_class_with_its_settings_and_its_registration(tiny_cfg):
    """A contender with its own phase schedule and its own section, registered, is selectable by
    name, its settings are config keys like any other (validated, overridable), and it runs."""
    from dataclasses import dataclass

    from fmtransfer.config import Section, setting
    from fmtransfer.contenders import Phase, register, unregister
    from fmtransfer.contenders.transfer import TransferFromA

    @register
    class FrozenOnly(TransferFromA):
        name = "frozen-only"
        title = "frozen features only"
        description = "Train only the new output layer on A's frozen features."

        @dataclass(frozen=True)
        class Settings(Section):
            NAME = "frozen_only"
            epochs: int = setting(3, "Epochs of the head alone.")

            def check(self):
                self.fail_unless(self.epochs >= 1, "epochs", f"must be at least 1, got {self.epochs}")

        def phases(self, cfg, reused):
            return [Phase("frozen", cfg.frozen_only.epochs, cfg.transfer.frozen_learning_rate, trainable=False)]

    try:
        cfg = tiny_cfg.replace(contenders=["frozen-only"], **{"frozen_only.epochs": 2})
        assert cfg.frozen_only.epochs == 2 and cfg.to_dict()["frozen_only"] == {"epochs": 2}
        with pytest.raises(ConfigError, match="frozen_only.epochs: must be at least 1"):
            cfg.replace(**{"frozen_only.epochs": 0})
        result = fmtransfer.run_experiment(cfg)
        r = result.contenders["frozen features only"]
        assert [p["name"] for p in r.phases] == ["frozen"] and r.phases[0]["epochs"] == 2
        assert r.phases[0]["trainable_weights"] == 2  # only the new head moves
    finally:
        unregister("frozen-only")
    assert "frozen_only" not in Config().to_dict()
    with pytest.raises(ConfigError, match=r"unknown section \[frozen_only\]"):
        load_config(None, frozen_only__epochs=2)


# ----------------------------------------------------------------------------- studies over contenders

@pytest.mark.slow
def test_study_pairs_every_contender_with_the_same_baseline_and_pretrains_once_per_seed(tiny_cfg, tmp_path,
                                                                                       monkeypatch):
    from fmtransfer import pretraining

    calls = []
    real = pretraining.pretrain
    monkeypatch.setattr(pretraining, "pretrain", lambda cfg, split, method, *a, **k:
                        calls.append((cfg.seed, method)) or real(cfg, split, method, *a, **k))
    cfg = tiny_cfg.replace(**{"contenders": ["transfer", "autoencoder"], "study.seeds": [1, 2],
                              "study.pairs": [[5, 6], [0, 2]], "study.b_train_sizes": [20]})
    result = fmtransfer.run_study(cfg, tmp_path / "study")
    assert sorted(calls) == [(1, "autoencoder"), (2, "autoencoder")]  # not once per pair
    assert {(c.contender, tuple(c.pair)) for c in result.cells} == \
        {(n, p) for n in ("transfer", "autoencoder") for p in ((5, 6), (0, 2))}
    assert all(c.n == 2 for c in result.cells) and result.runs_finished == result.runs_in_grid == 8
    by_key = {}
    for r in fmtransfer.study.load_results(tmp_path / "study"):
        by_key.setdefault((r["seed"], tuple(r["pair"])), []).append(r["baseline"])
    assert all(len(b) == 2 and b[0] == b[1] for b in by_key.values())  # one baseline, paired with both
    assert result.cell("autoencoder", pair=(0, 2)).title == "autoencoder-pretrained"
    plots = {p.name for p in fmtransfer.study.plot(tmp_path / "study", result)}
    assert {"contenders.png", "gain-vs-size.png", "paired-pair5v6-n20-reuseall-book.png",
            "paired-autoencoder-pair0v2-n20-reuseall-book.png"} <= plots
    # Resuming with a third contender runs only it, reusing the saved models.
    calls.clear()
    more = fmtransfer.run_study(cfg.replace(contenders=["transfer", "autoencoder", "greedy"]), tmp_path / "study")
    assert sorted(calls) == [(1, "greedy"), (2, "greedy")] and more.runs_finished == 12


def test_a_cached_encoder_is_reused_only_if_its_record_proves_the_studys_settings(tiny_cfg, tmp_path, monkeypatch):
    """A cached encoder's record carries what made it: [pretrain] and its method's own section
    ([greedy] for greedy alone), the seed, the data. Resuming reuses it; one whose record
    predates fingerprints (fmtransfer 0.4 or older) is trained again, to the same numbers."""
    from fmtransfer import data, fingerprints, pretraining

    calls = []
    real = pretraining.pretrain
    monkeypatch.setattr(pretraining, "pretrain", lambda cfg, split, method, *a, **k:
                        calls.append(method) or real(cfg, split, method, *a, **k))
    cfg = tiny_cfg.replace(**{"contenders": ["autoencoder", "greedy"], "study.seeds": [1],
                              "study.b_train_sizes": [20]})
    study_dir = tmp_path / "study"
    first = fmtransfer.run_study(cfg, study_dir)
    assert sorted(calls) == ["autoencoder", "greedy"]
    records = {m: study_dir / "models" / f"encoder-{m}-seed1.json" for m in ("autoencoder", "greedy")}
    made = {m: json.loads(p.read_text()) for m, p in records.items()}
    sha256 = data.dataset_hashes(cfg.data)
    assert made["greedy"]["made_from"] == fingerprints.encoder(cfg.replace(seed=1), sha256, "greedy")
    assert "greedy.epochs" in made["greedy"]["made_from"] and "greedy.epochs" not in made["autoencoder"]["made_from"]
    (study_dir / "results.jsonl").unlink()
    calls.clear()
    fmtransfer.run_study(cfg, study_dir)
    assert calls == []  # both proved what they are
    old = {k: v for k, v in made["autoencoder"].items() if k not in ("made_from", "fingerprint", "file_sha256")}
    records["autoencoder"].write_text(json.dumps(old))  # as 0.4 wrote it
    (study_dir / "results.jsonl").unlink()
    again = fmtransfer.run_study(cfg, study_dir)
    assert calls == ["autoencoder"]
    assert json.loads(records["autoencoder"].read_text())["fingerprint"] == made["autoencoder"]["fingerprint"]
    assert [c.transfer_mean for c in again.cells] == [c.transfer_mean for c in first.cells]  # same seed, same runs


def test_a_study_of_transfer_refuses_other_pretraining_settings_once_pretraining_ran(tiny_cfg, tmp_path):
    from fmtransfer import study

    cfg = tiny_cfg.replace(contenders=["autoencoder"])
    study.check_study_dir(cfg, tmp_path)
    study.check_study_dir(cfg.replace(contenders=["transfer"], **{"pretrain.epochs": 3}), tmp_path)  # unused
    with pytest.raises(UsageError, match="pretraining"):
        study.check_study_dir(cfg.replace(**{"pretrain.epochs": 3}), tmp_path)


def test_old_results_lines_read_as_transfer_runs(tmp_path):
    """A results file from before contenders existed still reports, as transfer from A."""
    from fmtransfer import study

    old = {"id": "seed1-pair5v6-n200-reuseall-book", "seed": 1, "pair": [5, 6], "b_train_size": 200,
           "reuse_layers": "all", "preset": "book", "baseline": {"test_accuracy": 0.9},
           "transfer": {"test_accuracy": 0.95}}
    study.append_result(tmp_path / "results.jsonl", old)
    [r] = study.load_results(tmp_path)
    assert (r["contender"], r["result"], r["id"]) == ("transfer", {"test_accuracy": 0.95}, old["id"] + "-transfer")


@pytest.mark.slow
def test_the_readme_example_runs_as_written_on_the_real_data(tmp_path, monkeypatch):
    """The issue's and README's example, verbatim but for the path, on the real Fashion-MNIST."""
    monkeypatch.chdir(REPO)
    cfg = fmtransfer.load_config("configs/book.toml", seed=7)  # overrides as keyword args (or a mapping)
    result = fmtransfer.run_experiment(cfg)  # in memory; files only if run_dir= is given
    assert 0.9 < result.baseline.test_accuracy <= 1
    ratio = result.contenders["transfer from A"].error_rate_ratio
    assert ratio == pytest.approx(result.baseline.error_rate / result.transfer.error_rate)
    d = result.to_dict()  # what `run --json` prints
    assert d["config"]["seed"] == 7 and d["error_rate_ratio"] == ratio
    assert result.model_a.test_accuracy > 0.85 and result.sizes["b_train"] == 200
