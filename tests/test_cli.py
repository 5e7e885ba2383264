"""The `fmtransfer` command, end to end on the real Fashion-MNIST, and how it reports bad input.

Stages run in-process through `fmtransfer.cli.main` (as the console script calls it), with few
epochs and a temporary --run directory. `--json` must leave exactly one JSON object on stdout.
Errors the user can act on exit with code 2 and one line on stderr, "fmtransfer: error: ...",
naming the file or option, without a traceback, and leave earlier stages' artifacts untouched.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from conftest import CONFIGS, FILE_NAMES, REAL_DATA, assert_usage_error, run_cli, snapshot
from fmtransfer.config import load_config

SPLIT_SIZES = {"a_train": 43986, "a_valid": 4014, "a_test": 8000, "b_train": 200, "b_valid": 986, "b_test": 2000}
STAGE_FILES = {
    "split": ["split.npz", "split.json", "config.json"],
    "train-a": ["model_a.keras", "model_a.json"],
    "transfer": ["model_b_on_a.keras", "transfer_a.json"],
    "compare": ["model_b.keras", "baseline.json", "compare.json"],
}
FAST = {
    "split": [],
    "train-a": ["--epochs", "1"],
    "transfer": ["--freeze-epochs", "1", "--fine-tune-epochs", "1"],
    "compare": ["--epochs", "1"],
}


def _ok(result):
    assert result.code == 0, f"exit code {result.code}: {result.err}"
    return result.json()


def _error_rate_ratio(result: dict) -> float:
    return (1 - result["baseline"]["test_accuracy"]) / (1 - result["transfer"]["test_accuracy"])


# ============================================================================ the four stages

@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    """split, train-a, transfer, compare in order, each with --json, in one run directory."""
    run = tmp_path_factory.mktemp("pipeline") / "run"
    results = {}
    for stage, options in FAST.items():
        results[stage] = _ok(run_cli(stage, "--run", run, "--json", *options))
    return SimpleNamespace(run=run, results=results)


def _copy_of(pipeline, tmp_path, files=None) -> Path:
    """A copy of the pipeline's run directory (or of some of its files) to change freely."""
    target = tmp_path / "run"
    if files is None:
        shutil.copytree(pipeline.run, target)
    else:
        target.mkdir()
        for name in files:
            shutil.copy2(pipeline.run / name, target / name)
    return target


@pytest.mark.slow
def test_split_reports_the_books_sizes_as_json(pipeline):
    """`split --json`: {"sizes": {...}} with the book's split of the real data, verified files."""
    result = pipeline.results["split"]
    assert result["sizes"] == SPLIT_SIZES
    assert result["b_classes"] == [5, 6]
    assert Path(result["source"]) == REAL_DATA  # found by the search, no --data-dir given
    assert sorted(result["sha256"]) == sorted(FILE_NAMES.values())


@pytest.mark.slow
def test_train_a_reports_test_accuracy_and_epochs_as_json(pipeline):
    """`train-a --json`: test_accuracy (a float in [0, 1], far above 1/8 chance) and epochs (int)."""
    result = pipeline.results["train-a"]
    assert isinstance(result["test_accuracy"], float)
    assert 0.3 < result["test_accuracy"] <= 1.0
    assert result["epochs"] == 1 and isinstance(result["epochs"], int)
    assert len(result["history"]) == 1


@pytest.mark.slow
def test_transfer_reports_test_accuracy_and_both_phases_as_json(pipeline):
    """`transfer --json`: test_accuracy and the two phases: frozen at 1e-2, then fine-tune at 1e-4;
    model A is left unchanged."""
    result = pipeline.results["transfer"]
    assert isinstance(result["test_accuracy"], float) and 0.0 <= result["test_accuracy"] <= 1.0
    phases = result["phases"]
    assert [p["name"] for p in phases] == ["frozen", "fine-tune"]
    assert [p["epochs"] for p in phases] == [1, 1]
    assert [p["learning_rate"] for p in phases] == [1e-2, 1e-4]
    assert phases[0]["trainable_weights"] == 2  # only the new output layer trains while frozen
    assert phases[1]["trainable_weights"] == 12  # then all five reused layers too
    assert result["reuse_layers"] == 5
    assert result["pretrained_unchanged"] is True


@pytest.mark.slow
def test_compare_reports_baseline_transfer_and_error_rate_ratio_as_json(pipeline):
    """`compare --json`: baseline and transfer scores, error_rate_ratio = baseline error / transfer
    error, and the config used."""
    result = pipeline.results["compare"]
    for model in ("baseline", "transfer"):
        assert isinstance(result[model]["test_accuracy"], float)
        assert isinstance(result[model]["test_loss"], float)
    assert result["transfer"]["test_accuracy"] == pipeline.results["transfer"]["test_accuracy"]
    assert isinstance(result["error_rate_ratio"], float)
    assert result["error_rate_ratio"] == pytest.approx(_error_rate_ratio(result))
    assert result["config"]["baseline"]["epochs"] == 1
    assert result["config"]["data"]["b_classes"] == [5, 6]


@pytest.mark.slow
def test_each_stage_leaves_its_artifacts_in_the_run_directory(pipeline):
    """The run directory holds every stage's files, no temporary files, and the empty lock file
    each stage holds while it writes."""
    names = {p.name for p in pipeline.run.iterdir()}
    assert names == {name for files in STAGE_FILES.values() for name in files} | {".lock"}
    assert (pipeline.run / ".lock").stat().st_size == 0


@pytest.mark.slow
def test_run_directory_records_config_and_package_versions(pipeline):
    """config.json remembers only what later stages depend on (split, model, seed, batch size);
    each stage's JSON records every setting it used, and the versions of fmtransfer, TensorFlow,
    Keras, numpy and Python."""
    import keras
    import numpy
    import tensorflow as tf

    import fmtransfer

    config = json.loads((pipeline.run / "config.json").read_text())
    assert sorted(config) == ["batch_size", "data", "model", "seed"]
    assert config["model"]["hidden"] == [300, 100, 50, 50, 50]
    assert json.loads((pipeline.run / "model_a.json").read_text())["config"]["train_a"]["epochs"] == 1
    transfer = json.loads((pipeline.run / "transfer_a.json").read_text())["config"]["transfer"]
    assert transfer["freeze_epochs"] == 1 and transfer["fine_tune_epochs"] == 1
    for name in ("model_a.json", "transfer_a.json", "baseline.json"):
        versions = json.loads((pipeline.run / name).read_text())["versions"]
        assert versions["fmtransfer"] == fmtransfer.__version__
        assert versions["tensorflow"] == tf.__version__
        assert versions["keras"] == keras.__version__
        assert versions["numpy"] == numpy.__version__
        assert versions["python"].count(".") == 2


@pytest.mark.slow
def test_saved_model_a_scores_what_train_a_reported(pipeline, real_split):
    """model_a.keras is the model whose test accuracy train-a reported."""
    from fmtransfer import models, training
    from fmtransfer.data import scaled

    model = models.load_model(pipeline.run / "model_a.keras")
    scores = training.evaluate(model, scaled(real_split.a_test[0]), real_split.a_test[1], task=training.MULTICLASS)
    assert scores["accuracy"] == pytest.approx(pipeline.results["train-a"]["test_accuracy"], abs=1e-6)


@pytest.mark.slow
def test_compare_reuses_the_baseline_when_settings_are_unchanged(pipeline, tmp_path):
    """A second `compare` with the same settings reuses model B (says so; baseline.json and the
    model file untouched); changing --epochs retrains it."""
    run = _copy_of(pipeline, tmp_path)
    before = snapshot(run)
    first_fingerprint = json.loads((run / "baseline.json").read_text())["fingerprint"]

    again = run_cli("compare", "--run", run, "--epochs", "1")
    assert again.code == 0, again.err
    assert "reusing" in again.err
    after = snapshot(run)
    assert after["baseline.json"] == before["baseline.json"]
    assert after["model_b.keras"] == before["model_b.keras"]

    changed = _ok(run_cli("compare", "--run", run, "--epochs", "2", "--json"))
    retrained = json.loads((run / "baseline.json").read_text())
    assert retrained["epochs"] == 2
    assert retrained["fingerprint"] != first_fingerprint
    assert snapshot(run)["model_b.keras"][0] != before["model_b.keras"][0]
    assert changed["config"]["baseline"]["epochs"] == 2
    assert changed["error_rate_ratio"] == pytest.approx(_error_rate_ratio(changed))


def test_error_rate_ratio_of_the_published_numbers_is_almost_4():
    """The book: 97.05% -> 99.25% accuracy is an error rate 2.95% -> 0.75%, "divided by almost 4";
    a perfect transfer model divides it by infinity, written as JSON null."""
    from fmtransfer.pipeline import error_rate_ratio
    from fmtransfer.report import to_json

    assert error_rate_ratio(0.9705, 0.9925) == pytest.approx(2.95 / 0.75)
    assert error_rate_ratio(0.99, 0.98) == pytest.approx(0.5)  # transfer made it worse
    assert error_rate_ratio(0.9, 1.0) == float("inf")
    assert json.loads(to_json({"error_rate_ratio": float("inf")})) == {"error_rate_ratio": None}


@pytest.mark.slow
def test_transfer_accepts_a_legacy_h5_model_a(pipeline, tmp_path):
    """`transfer --model-a my_model_A.h5` (the book's legacy format) trains B on it; the .h5 file,
    the split and the run's own model A stay untouched."""
    from fmtransfer import models

    run = _copy_of(pipeline, tmp_path)
    h5 = tmp_path / "my_model_A.h5"
    models.load_model(run / "model_a.keras").save(str(h5))
    before = snapshot(run)
    h5_bytes = h5.read_bytes()
    result = _ok(run_cli("transfer", "--run", run, "--model-a", h5, "--json",
                         "--freeze-epochs", "1", "--fine-tune-epochs", "1", "--reuse-layers", "3"))
    assert result["pretrained"] == str(h5)
    assert result["reuse_layers"] == 3
    assert result["pretrained_unchanged"] is True
    assert 0.0 <= result["test_accuracy"] <= 1.0
    assert h5.read_bytes() == h5_bytes
    after = snapshot(run)
    for name in ["split.npz", "split.json"] + STAGE_FILES["train-a"]:  # config.json records the new settings
        assert after[name] == before[name]


@pytest.mark.slow
def test_transfer_refuses_a_model_a_trained_on_another_split(pipeline, tmp_path):
    """After `split --b-classes 0,2`, the old model A has seen task B's images: transfer refuses it
    (exit 2, says to rerun train-a) instead of silently leaking test data."""
    run = _copy_of(pipeline, tmp_path)
    _ok(run_cli("split", "--b-classes", "0,2", "--run", run, "--json"))
    before = snapshot(run)
    message = assert_usage_error(run_cli("transfer", "--run", run))
    assert "another split" in message and "`fmtransfer train-a" in message
    assert snapshot(run) == before


@pytest.mark.slow
def test_run_does_all_four_stages_with_quick_toml(tmp_path):
    """`run --config configs/quick.toml --json`: one JSON object with baseline, transfer,
    error_rate_ratio and config, and every stage's artifacts in the run directory."""
    run = tmp_path / "run"
    result = _ok(run_cli("run", "--config", CONFIGS / "quick.toml", "--run", run, "--json"))
    for model in ("baseline", "transfer"):
        assert set(result[model]) >= {"test_accuracy", "test_loss"}
    assert isinstance(result["error_rate_ratio"], float)
    assert result["error_rate_ratio"] == pytest.approx(_error_rate_ratio(result))
    assert result["config"] == load_config(CONFIGS / "quick.toml").to_dict()
    assert result["stages"]["split"]["sizes"] == SPLIT_SIZES
    assert result["stages"]["train_a"]["seconds"] > 0 and result["stages"]["transfer"]["seconds"] > 0
    assert {p.name for p in run.iterdir()} >= {name for files in STAGE_FILES.values() for name in files}
    remembered = json.loads((run / "config.json").read_text())
    assert remembered == {k: result["config"][k] for k in ("seed", "batch_size", "data", "model")}


@pytest.mark.slow
def test_split_with_other_classes_is_remembered_by_the_run_directory(tmp_path):
    """`split --b-classes 0,2`: task B = T-shirt/top vs pullover (3rd edition), sizes follow, and
    config.json remembers the classes for later stages."""
    run = tmp_path / "run"
    result = _ok(run_cli("split", "--b-classes", "0,2", "--run", run, "--json"))
    assert result["b_classes"] == [0, 2]
    assert result["sizes"]["b_test"] == 2000 and result["sizes"]["a_test"] == 8000
    assert result["sizes"]["b_train"] == 200
    assert result["sizes"]["a_valid"] + result["sizes"]["b_valid"] == 5000
    assert json.loads((run / "config.json").read_text())["data"]["b_classes"] == [0, 2]


def test_the_split_table_says_each_class_and_label_on_one_line(tiny_data, tmp_path):
    """The title and the data source are lines of their own, never wrapped to the width of the
    table's two columns, and a label is not mistaken for a class id."""
    result = run_cli("split", "--b-classes", "T-shirt,Pullover", "--run", tmp_path / "run", "--data-dir", tiny_data,
                     "--valid-size", "100", "--b-train-size", "50", "--no-verify")
    assert result.code == 0, result.err
    lines = result.out.splitlines()
    assert ("Split: task B is T-shirt/top (class 0, label 0) vs Pullover (class 2, label 1); "
            "task A is the other 8 classes") in lines
    assert f"data: {tiny_data}" in lines


# ============================================================================ bad input

@pytest.fixture(scope="module")
def populated(pipeline, tmp_path_factory):
    """A copy of the finished pipeline's run directory for failing commands to run against."""
    target = tmp_path_factory.mktemp("populated") / "run"
    shutil.copytree(pipeline.run, target)
    return target


@pytest.fixture(scope="module")
def corrupt_data(tmp_path_factory):
    """A copy of the real data with one byte flipped in the training labels."""
    directory = tmp_path_factory.mktemp("corrupt") / "fashion-mnist"
    shutil.copytree(REAL_DATA, directory)
    path = directory / FILE_NAMES["train_labels"]
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    path.write_bytes(bytes(raw))
    return directory


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory):
    directory = tmp_path_factory.mktemp("bad_files")
    (directory / "typo.toml").write_text("[transfer]\nfreeze_epoch = 3\n")
    (directory / "garbage.keras").write_bytes(os.urandom(4096))
    return directory


BAD_INPUT = {
    "b-classes twice": (["split", "--b-classes", "5,5"], ["--b-classes"]),
    "b-class outside 0..9": (["split", "--b-classes", "5,12"], ["--b-classes", "12"]),
    "run with b-classes twice": (["run", "--b-classes", "5,5"], ["--b-classes"]),
    "negative epochs on train-a": (["train-a", "--epochs", "-1"], ["--epochs"]),
    "zero learning rate on train-a": (["train-a", "--learning-rate", "0"], ["--learning-rate"]),
    "negative epochs on compare": (["compare", "--epochs", "-1"], ["--epochs"]),
    "reuse more layers than A has": (["transfer", "--reuse-layers", "9"], ["--reuse-layers"]),
    "unfreeze more layers than reused": (["transfer", "--reuse-layers", "2", "--unfreeze", "top:3"], ["--unfreeze"]),
    "bad unfreeze": (["transfer", "--unfreeze", "bottom:1"], ["--unfreeze"]),
    "unknown key in --config": (["compare", "--config", "{bad}/typo.toml"], ["typo.toml", "transfer.freeze_epoch"]),
    "nonexistent --config": (["train-a", "--config", "{bad}/missing.toml"], ["missing.toml"]),
    "corrupt file in --data-dir": (["split", "--data-dir", "{corrupt}"], [FILE_NAMES["train_labels"], "SHA-256"]),
    "empty --data-dir": (["split", "--data-dir", "{bad}"], ["--data-dir", "{bad}"]),
    "garbage --model-a": (["transfer", "--model-a", "{bad}/garbage.keras"], ["garbage.keras"]),
    "missing --model-a": (["transfer", "--model-a", "{bad}/absent.h5"], ["absent.h5"]),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", list(BAD_INPUT))
def test_bad_input_is_one_line_exit_2_and_leaves_artifacts_unchanged(case, populated, corrupt_data, bad_files):
    """Each bad option, file or setting: exit code 2, one line "fmtransfer: error: ..." naming the
    option or file, no traceback; the earlier stages' artifacts are byte-for-byte untouched."""
    args, names = BAD_INPUT[case]
    fill = {"bad": bad_files, "corrupt": corrupt_data}
    args = [a.format(**fill) for a in args]
    names = [n.format(**fill) for n in names]
    before = snapshot(populated)
    result = run_cli(*args, "--run", populated)
    assert_usage_error(result, *names)
    assert snapshot(populated) == before


def test_train_a_before_split_says_to_run_split(tmp_path):
    """train-a in an empty run directory: exit 2, "run `fmtransfer split ...` first"; nothing written."""
    run = tmp_path / "run"
    message = assert_usage_error(run_cli("train-a", "--run", run))
    assert "`fmtransfer split" in message
    assert not run.exists() or not any(run.iterdir())


@pytest.mark.slow
def test_transfer_before_train_a_says_to_run_train_a(pipeline, tmp_path):
    """transfer with only a split: exit 2, "run `fmtransfer train-a ...` first"; the split untouched."""
    run = _copy_of(pipeline, tmp_path, STAGE_FILES["split"])
    before = snapshot(run)
    message = assert_usage_error(run_cli("transfer", "--run", run))
    assert "`fmtransfer train-a" in message
    assert snapshot(run) == before


@pytest.mark.slow
def test_compare_before_transfer_says_to_run_transfer(pipeline, tmp_path):
    """compare with a split and model A but no transferred model: exit 2, "run `fmtransfer
    transfer ...` first"; the earlier artifacts untouched, no baseline trained."""
    run = _copy_of(pipeline, tmp_path, STAGE_FILES["split"] + STAGE_FILES["train-a"])
    before = snapshot(run)
    message = assert_usage_error(run_cli("compare", "--run", run))
    assert "`fmtransfer transfer" in message
    assert snapshot(run) == before


def test_unknown_option_is_one_line_exit_2(tmp_path):
    """click's own usage errors are shortened to one line too."""
    assert_usage_error(run_cli("split", "--bogus", "--run", tmp_path / "run"), "--bogus")


# ============================================================================ no TensorFlow for help and usage errors

def _python(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=120,
                          env=dict(os.environ))


@pytest.mark.parametrize("argv", [["--help"], ["train-a", "--help"]], ids=["fmtransfer --help", "train-a --help"])
def test_help_does_not_import_tensorflow(argv, tmp_path):
    """`fmtransfer --help` and `fmtransfer train-a --help` answer at once: TensorFlow is not imported."""
    proc = _python("-X", "importtime", "-m", "fmtransfer.cli", *argv, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Usage:" in proc.stdout
    imported = {line.rsplit("|", 1)[-1].strip().split(".")[0] for line in proc.stderr.splitlines()
                if line.startswith("import time:")}
    assert "click" in imported  # the import log was read
    assert "tensorflow" not in imported and "keras" not in imported
    if argv == ["--help"]:
        for command in ("split", "train-a", "transfer", "compare", "run"):
            assert command in proc.stdout
    else:
        assert "--epochs" in proc.stdout


CHECK_NO_TF = """
import sys
from fmtransfer.cli import main
try:
    main(sys.argv[1:])
    code = 0
except SystemExit as e:
    code = e.code
print("exit", code)
print("tensorflow imported:", "tensorflow" in sys.modules or "keras" in sys.modules)
"""


def test_usage_error_is_reported_without_importing_tensorflow(tmp_path):
    """`split --b-classes 5,5`: one error line, exit 2, and TensorFlow never imported."""
    proc = _python("-c", CHECK_NO_TF, "split", "--b-classes", "5,5", "--run", str(tmp_path / "run"), cwd=tmp_path)
    assert "exit 2" in proc.stdout, proc.stdout + proc.stderr
    assert "tensorflow imported: False" in proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fmtransfer: error:") and "--b-classes" in lines[0], lines


@pytest.mark.slow
def test_failing_stage_that_loads_tensorflow_still_prints_one_line(populated, bad_files, tmp_path):
    """In a real process, TensorFlow's start-up noise does not reach stderr: a garbage --model-a
    gives exactly the one error line, exit 2."""
    before = snapshot(populated)
    proc = _python("-m", "fmtransfer.cli", "transfer", "--model-a", str(bad_files / "garbage.keras"),
                   "--run", str(populated), cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("fmtransfer: error:") and "garbage.keras" in lines[0]
    assert proc.stdout == ""
    assert snapshot(populated) == before


@pytest.mark.slow
def test_every_contender_runs_end_to_end_on_the_real_data(tmp_path):
    """`run --contenders all` on Fashion-MNIST itself, one or two epochs each: every contender is
    trained and compared, each built on pretrained layers with its linear probe, and each
    pretraining method leaves its encoder, companion model and results."""
    from fmtransfer import contenders

    run = tmp_path / "run"
    result = _ok(run_cli("run", "--run", run, "--contenders", "all", "--a-epochs", 1, "--b-epochs", 2,
                         "--freeze-epochs", 1, "--fine-tune-epochs", 1, "--p-epochs", 1, "--unlabelled-size", 5000,
                         "--greedy-epochs", 1, "--gan-epochs", 1, "--rbm-epochs", 1, "--json"))
    shown = result["contenders"]
    assert list(shown) == [contenders.get(n).title for n in contenders.names()]
    for title, scores in shown.items():
        assert 0 <= scores["test_accuracy"] <= 1 and scores["test_loss"] > 0, title
        if title != "baseline":  # sandal against shirt is easy for a probe even on briefly trained features
            assert 0.9 <= scores["linear_probe"] <= 1, title
    assert set(result["pretrained"]) == set(contenders.pretraining_methods())
    for method in contenders.pretraining_methods():
        c = contenders.get(method)
        assert (run / f"encoder_{method}.keras").is_file() and (run / f"{c.companion}_{method}.keras").is_file()
        assert json.loads((run / f"pretrain_{method}.json").read_text())["unlabelled_size"] == 5000
