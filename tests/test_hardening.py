"""Hardening, round 2 (issue 17): each fault a new user found, as a test, and a second one of
each class found while fixing the first.

Class 2, errors that blame the wrong thing: a divergence names every setting that could have
caused it; an option typed on the command line is reported as that option. Class 3, crashes
with an internal exception: one line and exit 2, before the expensive work. Class 4, settings
accepted and ignored. Class 5, output and files.

Runs on `tiny_data`, with tiny networks; one run directory (split and model A) serves the tests
that only read it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from conftest import require_system, run_cli, snapshot

TINY = ["--valid-size", "100", "--no-verify", "--b-train-size", "20"]
PHASES = ["--freeze-epochs", "1", "--fine-tune-epochs", "1"]


def _one_line(result, code: int) -> str:
    assert result.code == code, (result.code, result.err)
    lines = result.err_lines
    assert len(lines) == 1 and "Traceback" not in result.err, result.err
    return lines[0]


@pytest.fixture(scope="module")
def trained(tiny_data, tmp_path_factory):
    """A run directory with a split and a model A, never written by the tests that use it."""
    run = tmp_path_factory.mktemp("hardening") / "run"
    assert run_cli("split", "--run", run, "--data-dir", tiny_data, *TINY).code == 0
    assert run_cli("train-a", "--run", run, "--epochs", "1", "--hidden", "16,8").code == 0
    return run


@pytest.fixture
def run(trained, tmp_path):
    """A copy of `trained` a test may write to."""
    copy = tmp_path / "run"
    shutil.copytree(trained, copy)
    return copy


# ----------------------------------------------------------------------------- class 2: the real cause

def test_l2_sp_alpha_that_diverges_is_named_with_beta_and_the_rate(run):
    before = snapshot(run)
    # 20 images are one batch: the pull acts from the second step, the second epoch.
    line = _one_line(run_cli("transfer", "--json", "--run", run, "--freeze-epochs", "1", "--fine-tune-epochs", "2",
                             "--contender", "l2-sp", "--l2-sp-alpha", "1e30"), 1)
    assert "L2-SP: fine-tune diverged at epoch 2" in line
    for option in ("--l2-sp-alpha", "--l2-sp-beta", "--fine-tune-learning-rate"):
        assert option in line, (option, line)
    assert snapshot(run) == before


def test_l2_sp_beta_that_diverges_in_the_frozen_phase_is_named(run):
    line = _one_line(run_cli("transfer", "--json", "--run", run, "--freeze-epochs", "2", "--fine-tune-epochs", "1",
                             "--contender", "l2-sp", "--l2-sp-beta", "1e38"), 1)
    assert "frozen diverged at epoch 2" in line and "--l2-sp-beta (l2_sp.beta)" in line
    assert "--frozen-learning-rate" in line


def test_an_lp_ft_head_that_is_not_finite_names_c_not_the_rate(run):
    before = snapshot(run)
    line = _one_line(run_cli("transfer", "--json", "--run", run, *PHASES, "--contender", "lp-ft", "--lp-ft-c", "1e300"), 1)
    assert "LP-FT's linear probe diverged" in line and "not finite" in line and "--lp-ft-c (lp_ft.c)" in line
    assert "learning-rate" not in line
    assert snapshot(run) == before


def test_a_weight_computed_outside_the_loop_is_checked_finite():
    import numpy as np

    from fmtransfer import DivergedError
    from fmtransfer.loop import check_finite

    check_finite([np.ones(3)], "probe", "lp_ft.c", "bad head")
    with pytest.raises(DivergedError, match="probe diverged: bad head; lower lp_ft.c") as caught:
        check_finite([np.ones(3), np.array([1.0, np.inf])], "probe", "lp_ft.c", "bad head")
    assert caught.value.keys == ("lp_ft.c",) and caught.value.epoch == 0


def test_a_probe_that_cannot_be_fitted_scores_nan_not_the_negatives_share():
    import math

    import numpy as np

    from fmtransfer import probe

    rng = np.random.default_rng(0)
    y = (np.arange(20) % 2).astype(np.float32)
    x = np.c_[2 * y - 1 + 0.1 * rng.normal(size=20), rng.normal(size=(20, 2))]  # separable: no finite optimum
    fitted = probe.fit(x, y, c=1e300)  # once a LinAlgError
    assert not np.all(np.isfinite(fitted.weights)) and math.isnan(fitted.accuracy(x, y))
    assert 0 <= probe.fit(x, y).accuracy(x, y) <= 1


def test_a_truncated_model_a_file_of_the_users_own_is_called_theirs(run, tmp_path):
    own = tmp_path / "my_model_A.keras"
    own.write_bytes((run / "model_a.keras").read_bytes()[:3000])
    for contender in ("transfer", "lp-ft"):  # lp-ft: once an AttributeError on 'companion'
        line = _one_line(run_cli("transfer", "--json", "--run", run, *PHASES, "--contender", contender, "--model-a", own), 2)
        assert str(own) in line and "your own file (--model-a)" in line and "train-a" not in line


def test_lp_ft_takes_a_model_a_file(run, tmp_path):
    own = tmp_path / "my_model_A.keras"
    shutil.copy(run / "model_a.keras", own)
    result = run_cli("transfer", "--json", "--run", run, *PHASES, "--contender", "lp-ft", "--model-a", own, "--json")
    assert result.code == 0, result.err
    assert (run / "model_b_on_lp_ft.keras").is_file()


def test_a_truncated_encoder_names_the_pretraining_that_makes_it(run):
    assert run_cli("pretrain", "--json", "--run", run, "--method", "autoencoder", "--epochs", "1",
                   "--unlabelled-size", "200", "--no-plot").code == 0
    encoder = run / "encoder_autoencoder.keras"
    encoder.write_bytes(encoder.read_bytes()[:3000])
    line = _one_line(run_cli("transfer", "--json", "--run", run, *PHASES, "--from", "autoencoder"), 2)
    assert str(encoder) in line and "`fmtransfer pretrain --method autoencoder" in line and "train-a" not in line


def test_a_divergence_in_a_study_worker_keeps_every_setting_it_names():
    from fmtransfer import DivergedError
    from fmtransfer.study import pool

    sent = DivergedError("B on l2_sp: frozen", 2, ("transfer.frozen_learning_rate", "l2_sp.alpha", "l2_sp.beta"))
    back = pool._error(pool._describe(sent))
    assert isinstance(back, DivergedError) and back.keys == sent.keys and str(back) == str(sent)


def test_options_typed_are_reported_as_options_not_config_keys(run, tmp_path):
    study = tmp_path / "study"
    line = _one_line(run_cli("study", "--run", study, "--seed", "4294967295", "--seeds", "2", "--no-plots"), 2)
    assert "--seeds" in line and "--seed " in line and "--config" not in line
    assert not study.exists() or not any(study.glob("*.jsonl"))
    line = _one_line(run_cli("transfer", "--json", "--run", run, "--contender", "baseline"), 2)
    assert line.startswith("fmtransfer: error: option --contender (contenders):") and "--config" not in line
    # Found beside them: a contender built on no model A, given a model A file.
    line = _one_line(run_cli("transfer", "--json", "--run", run, "--contender", "autoencoder", "--model-a",
                             run / "model_a.keras"), 2)
    assert "option --contender" in line and "--config" not in line


# ----------------------------------------------------------------------------- class 3: one line, exit 2, before the work

@pytest.mark.parametrize("variable, value, shard", [
    ("SLURM_ARRAY_TASK_ID", "abc", "auto"),
    ("JOB_COMPLETION_INDEX", "-1", "auto/3"),  # found beside it: a Kubernetes index, as the pattern's other half
])
def test_a_scheduler_variable_that_is_not_a_number_is_named(tmp_path, monkeypatch, variable, value, shard):
    monkeypatch.delenv("SLURM_ARRAY_TASK_ID", raising=False)
    monkeypatch.setenv(variable, value)
    monkeypatch.setenv("SLURM_ARRAY_TASK_COUNT", "3")
    line = _one_line(run_cli("study", "--run", tmp_path / "study", "--shard", shard, "--no-plots"), 2)
    assert variable in line and repr(value) in line and "--shard" in line
    assert not (tmp_path / "study").exists()


@pytest.mark.parametrize("args, option", [
    (["--batch-size", "99999999999999999999"], "--batch-size"),
    (["--batch-size", "70000"], "--batch-size"),
    (["--hidden", "100,99999999"], "--hidden"),  # found beside it: a layer TensorFlow cannot allocate
])
def test_integers_are_range_checked_before_tensorflow_sees_them(trained, args, option):
    line = _one_line(run_cli("train-a", "--run", trained, "--epochs", "1", *args), 2)
    assert line.startswith(f"fmtransfer: error: option {option} (")


def test_pretraining_without_validation_images(tiny_data, tmp_path):
    """--valid-size 0 leaves no validation images: once `cannot reshape array of size 0` (rbm)."""
    run = tmp_path / "run"
    assert run_cli("split", "--run", run, "--data-dir", tiny_data, "--valid-size", "0", "--no-verify",
                   "--b-train-size", "20").code == 0
    for method, epochs in (("rbm", "--rbm-epochs"), ("autoencoder", "--epochs")):  # autoencoder: through Keras
        result = run_cli("pretrain", "--run", run, "--method", method, "--hidden", "16,8", epochs, "1",
                         "--unlabelled-size", "200", "--no-plot", "--json")
        assert result.code == 0, (method, result.err)
        assert (run / f"encoder_{method}.keras").is_file()


@pytest.mark.parametrize("blocked", ["models", "."])
def test_a_study_folder_that_is_a_file_is_refused_before_model_a_trains(tiny_data, tmp_path, blocked):
    study = tmp_path / "study"
    if blocked == ".":  # found beside it: the study directory itself a file
        study.write_text("notes")
        target = study
    else:
        study.mkdir()
        target = study / "models"
        target.write_text("notes")
    line = _one_line(run_cli("study", "--run", study, "--data-dir", tiny_data, "--no-verify", "--valid-size", "100",
                             "--b-train-sizes", "20", "--hidden", "16,8", "--no-plots", "--json"), 2)
    assert str(target) in line and "is a file" in line
    assert target.read_text() == "notes"
    assert blocked == "." or sorted(p.name for p in study.iterdir()) == ["models"]


def test_the_api_says_what_it_wanted():
    import fmtransfer

    with pytest.raises(fmtransfer.UsageError, match=r"run_experiment\(\): argument cfg must be a Config.*load_config"):
        fmtransfer.run_experiment("configs/quick.toml")
    with pytest.raises(fmtransfer.UsageError, match=r"run_study\(\): argument cfg must be a Config"):
        fmtransfer.run_study("configs/quick.toml")
    with pytest.raises(fmtransfer.ConfigError, match="expected the text I/N.*got 3") as caught:
        fmtransfer.run_study(fmtransfer.Config(), "runs/never-made", shard_spec=3)
    assert caught.value.key == "shard"


# ----------------------------------------------------------------------------- class 4: honoured or refused

def test_gradual_unfreezing_stops_at_top_k_and_says_so(run):
    result = run_cli("transfer", "--json", "--run", run, "--contender", "gradual", "--freeze-epochs", "2",
                     "--fine-tune-epochs", "2", "--unfreeze", "top:1")
    assert result.code == 0, result.err
    import json

    record = json.loads((run / "transfer_gradual.json").read_text())
    assert [p["name"] for p in record["phases"]] == ["head", "top 1"] and record["unfreeze"] == "top:1"
    assert [p["epochs"] for p in record["phases"]] == [1, 3]
    # model A of hidden 16,8: the head's kernel and bias, then the top layer's too, never the bottom's
    assert [p["trainable_weights"] for p in record["phases"]] == [2, 4]


def test_the_baseline_alone_runs_alone_and_a_study_of_it_is_refused(tiny_data, tmp_path):
    import json

    run = tmp_path / "run"
    result = run_cli("run", "--run", run, "--data-dir", tiny_data, *TINY[2:], "--valid-size", "100",
                     "--hidden", "16,8", "--b-epochs", "1", "--contenders", "baseline", "--json")
    assert result.code == 0, result.err
    assert list(json.loads(result.out)["contenders"]) == ["baseline"]
    assert not (run / "model_a.keras").exists()
    study = tmp_path / "study"
    line = _one_line(run_cli("study", "--run", study, "--contenders", "baseline", "--no-plots"), 2)
    assert "option --contenders (contenders)" in line and "besides it" in line and not study.exists()


def test_a_cnn_model_a_in_a_dense_run_is_refused_before_anything_is_overwritten(run, tiny_data, tmp_path):
    cnn = tmp_path / "cnn"
    assert run_cli("split", "--run", cnn, "--data-dir", tiny_data, *TINY).code == 0
    assert run_cli("train-a", "--run", cnn, "--epochs", "1", "--arch", "cnn", "--hidden", "4",
                   "--cnn-dense", "0").code == 0
    assert run_cli("transfer", "--json", "--run", run, *PHASES).code == 0
    before = snapshot(run)
    line = _one_line(run_cli("transfer", "--json", "--run", run, *PHASES, "--model-a", cnn / "model_a.keras"), 2)
    assert "is a cnn network" in line and "dense" in line
    assert snapshot(run) == before


@pytest.mark.usefixtures("tensorflow_set_up")
def test_a_softmax_of_its_own_is_part_of_model_as_output():
    from fmtransfer import models
    from fmtransfer.models import INPUT_SHAPE, keras

    layers = keras.layers
    model_a = keras.Sequential([keras.Input(INPUT_SHAPE), layers.Flatten(), layers.Dense(16, activation="selu"),
                                layers.Dense(8, activation="selu"), layers.Dense(8), layers.Activation("softmax")])
    stem, hidden = models.blocks(model_a)
    assert [[layer.units for layer in block] for block in hidden] == [[16], [8]]
    b = models.build_b_on_a(model_a)
    assert [layer.units for layer in b.layers if isinstance(layer, layers.Dense)] == [16, 8, 1]
    # Found beside it: a Dropout after the output is the output's too, not a hidden layer.
    with_dropout = keras.Sequential([keras.Input(INPUT_SHAPE), layers.Flatten(), layers.Dense(16),
                                     layers.Dense(8, activation="softmax"), layers.Dropout(0.1)])
    assert len(models.blocks(with_dropout)[1]) == 1
    # An encoder's output is its weightless `code` layer: every Dense below it is a hidden layer.
    encoder = keras.Sequential([keras.Input(INPUT_SHAPE), layers.Flatten(), layers.Dense(16), layers.Dense(8),
                                layers.Identity(name="code")])
    assert len(models.blocks(encoder)[1]) == 2


# ----------------------------------------------------------------------------- class 5: output and files

@pytest.fixture
def disk(tmp_path):
    """`disk(size)`: a real file system of `size` ("20m") mounted at a fresh folder (tmpfs; root
    only), unmounted after the test."""
    mounted = []

    def mount(size: str) -> Path:
        if os.geteuid() != 0 or not shutil.which("mount"):
            require_system("a small file system", "mounting a tmpfs needs root")
        point = tmp_path / f"disk{len(mounted)}"
        point.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(point)],
                              capture_output=True, text=True)
        if done.returncode:
            require_system("a small file system", f"mount -t tmpfs failed: {done.stderr.strip()}")
        mounted.append(point)
        return point

    yield mount
    for point in mounted:
        subprocess.run(["umount", "-l", str(point)], capture_output=True)


def _fill(folder: Path, leave: int) -> None:
    """Take all but about `leave` bytes of the file system `folder` is on."""
    free = shutil.disk_usage(folder).free
    with open(folder / "filler", "wb") as f:
        f.write(b"\0" * max(0, free - leave))


def test_split_fits_a_20_mib_disk_and_a_stage_is_refused_for_what_it_will_write(disk, tiny_data):
    small = disk("20m")
    run = small / "run"
    assert run_cli("split", "--run", run, "--data-dir", tiny_data, *TINY).code == 0, "split refused on 20 MiB"
    _fill(small, 2**20)  # 1 MiB left: model A of the book's 300,100,50,50,50 needs more
    line = _one_line(run_cli("train-a", "--run", run, "--epochs", "1"), 2)
    assert str(run) in line and "has 1 MiB free, less than the 4 MiB this stage may write" in line
    assert not (run / "model_a.keras").exists()


def test_a_full_disk_while_appending_a_result_names_the_file_and_keeps_the_others(disk):
    from fmtransfer import FmtError
    from fmtransfer import study as studies

    small = disk("1m")
    path = small / "results.jsonl"
    studies.append_result(path, {"id": "a"})
    before = path.read_bytes()
    _fill(small, 0)
    with pytest.raises(FmtError, match=f"cannot append a finished run to {path}: No space left on device"):
        studies.append_result(path, {"id": "b", "history": "x" * 200_000})
    assert path.read_bytes() == before  # nothing torn left behind
    (small / "filler").unlink()
    studies.append_result(path, {"id": "c"})
    assert [json.loads(line)["id"] for line in path.read_text().splitlines()] == ["a", "c"]


def test_a_torn_last_line_is_ignored_silently_then_cut_off_by_its_writer(tmp_path):
    from test_study import _record

    from fmtransfer import study as studies

    path = tmp_path / "results.jsonl"
    studies.append_result(path, _record("a"))
    (tmp_path / "study.json").write_text("{}")
    with open(path, "a") as f:
        f.write('{"id": "b", "trunc')  # killed mid-write
    records, skipped = studies.read_records(tmp_path)
    assert [r.id for r in records] == ["a"] and skipped == {}  # not "unreadable JSON", ever
    studies.append_result(path, _record("c"))
    assert [json.loads(line)["id"] for line in path.read_text().splitlines()] == ["a", "c"]
    # Found beside it: a whole record that lacks only its newline is a finished run, and kept.
    with open(path, "a") as f:
        f.write(json.dumps(_record("d")))
    studies.append_result(path, _record("e"))
    assert [r["id"] for r in studies.load_results(tmp_path)] == ["a", "c", "d", "e"]


def test_study_report_on_a_read_only_study_prints_the_report_and_says_plots_failed(disk, tiny_data):
    pytest.importorskip("matplotlib")  # fmtransfer[plot]: `make install` installs it
    study = disk("64m") / "study"
    result = run_cli("study", "--run", study, "--data-dir", tiny_data, "--no-verify", "--valid-size", "100",
                     "--b-train-sizes", "20", "--hidden", "16,8", "--a-epochs", "1", "--b-epochs", "1",
                     "--freeze-epochs", "1", "--fine-tune-epochs", "1", "--no-plots", "--json")
    assert result.code == 0, result.err
    subprocess.run(["mount", "-o", "remount,ro", str(study.parent)], check=True)
    shown = run_cli("study", "report", study, "--plots")
    assert shown.code == 0, shown.err
    assert "transfer" in shown.out and "baseline" in shown.out
    assert shown.err_lines == [f"fmtransfer: note: no plots written (cannot write plots to {study / 'plots'}: "
                               "Read-only file system)"]
    as_json = run_cli("study", "report", study, "--plots", "--json")  # found beside it: --json is one object still
    assert as_json.code == 0 and json.loads(as_json.out)["cells"]


def _prepare_writer(job: int, directory: str) -> Path:
    return Path(directory)


def _write_slowly(folder: Path, unit: int, advance) -> None:
    """A unit that is saving a model when the parent stops the pool."""
    from fmtransfer.io import atomic_path

    with atomic_path(folder / "models" / f"model_{unit}.keras") as tmp:
        tmp.write_bytes(b"half a model")
        advance(f"saving {unit}")
        time.sleep(60)


def test_workers_stopped_mid_save_leave_no_temporary_file(tmp_path):
    """Ctrl-C or SIGTERM in a `study --jobs N` parent stops its workers with SIGTERM: each
    unwinds, as the parent does, so its half-written model goes."""
    from fmtransfer.study import pool

    (tmp_path / "models").mkdir()
    seen = []

    def advance(run_id):
        seen.append(run_id)
        if len(seen) == 2:  # both workers are mid-save
            raise KeyboardInterrupt

    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        pool.run_units([0, 1], 2, prepare=_prepare_writer, prepare_args=(str(tmp_path),), run=_write_slowly,
                       advance=advance, pending=lambda unit: [], lock=(tmp_path, ".lock-workers"))
    assert sorted(seen) == ["saving 0", "saving 1"]
    assert list((tmp_path / "models").iterdir()) == []
    assert time.monotonic() - started < pool.GRACE_S + 30  # ended by SIGTERM, not killed after the grace
