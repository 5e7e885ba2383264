"""Failing safely. A model whose loss stops being finite is a failure, never a result: the stage
stops at once, names the stage, the epoch and the setting to lower, keeps the previous good
artifact, and a study records the run as diverged, at chance accuracy. SIGTERM stops a stage as
Ctrl-C does. One process writes a directory at a time, and a killed one blocks nothing.

Runs on `tiny_data`, with learning rates large enough to make these small networks diverge in
their first epoch.
"""

from __future__ import annotations

import numpy as np
import pytest

import fmtransfer
from conftest import run_cli, snapshot, tiny_settings
from fmtransfer import DivergedError

TINY = ["--valid-size", "100", "--no-verify", "--b-train-size", "20"]


def _diverges(result, *names):
    assert result.code == 1, result.err
    assert result.out == ""
    lines = result.err_lines
    assert len(lines) == 1 and "Traceback" not in result.err, lines
    assert "diverged at epoch 1" in lines[0] and "nothing it trained was saved" in lines[0]
    for name in names:
        assert name in lines[0], (name, lines[0])


@pytest.fixture
def run(tiny_data, tmp_path):
    assert run_cli("split", "--run", tmp_path, "--data-dir", tiny_data, *TINY).code == 0
    assert run_cli("train-a", "--run", tmp_path, "--epochs", "1", "--hidden", "16,8").code == 0
    return tmp_path


def test_train_a_that_diverges_keeps_the_good_model_a(run):
    before = snapshot(run)
    _diverges(run_cli("train-a", "--run", run, "--epochs", "1", "--hidden", "16,8", "--learning-rate", "1e4", "--json"),
              "model A", "--learning-rate", "train_a.learning_rate")
    assert snapshot(run) == before


def test_a_transfer_phase_that_diverges_names_its_learning_rate(run):
    before = snapshot(run)
    _diverges(run_cli("transfer", "--run", run, "--freeze-epochs", "1", "--fine-tune-epochs", "1",
                      "--fine-tune-learning-rate", "1e38", "--json"), "transfer from A: fine-tune", "--fine-tune-learning-rate")
    assert snapshot(run) == before and not (run / "model_b_on_a.keras").exists()


def test_no_accuracy_is_computed_from_nan_predictions(tiny_data):
    from fmtransfer import models, training
    from fmtransfer.config import ModelConfig

    fmtransfer.setup()
    model = models.build_model_b(ModelConfig(hidden=(4,)))
    model.set_weights([np.full_like(w, np.nan) for w in model.get_weights()])
    with pytest.raises(DivergedError):
        training.evaluate(model, np.zeros((8, 28, 28), np.float32), np.ones(8, np.float32), task=training.BINARY)


def test_a_study_records_diverged_runs_at_chance_accuracy(tiny_data, tmp_path):
    cfg = fmtransfer.load_config(None, {**tiny_settings(tiny_data), "study.seeds": [1, 2],
                                        "study.b_train_sizes": [20], "train_a.learning_rate": 1e8,
                                        "contenders": ["transfer", "autoencoder"]})
    result = fmtransfer.run_study(cfg, tmp_path)
    transfer = result.cell("transfer")
    assert transfer.diverged == 2 and transfer.baseline_diverged == 0  # model A diverged: so did B on A
    assert transfer.accuracies == [0.5, 0.5]  # sandal vs shirt's test images are balanced
    assert result.cell("autoencoder").diverged == 0  # the encoder does not depend on model A
    records = fmtransfer.study.load_results(tmp_path)
    assert all("model A diverged" in r["result"]["diverged"] for r in records if r["contender"] == "transfer")


# ----------------------------------------------------------------------------- SIGTERM

@pytest.mark.slow
def test_sigterm_stops_a_stage_like_ctrl_c_exit_143_with_nothing_lost(run, tmp_path):
    """What Slurm and Kubernetes send at a time limit: a short message, exit 143, no temporary
    file left, the earlier artifacts byte for byte as they were."""
    import signal
    import subprocess
    import sys
    import time

    before = snapshot(run)
    proc = subprocess.Popen([sys.executable, "-m", "fmtransfer.cli", "train-a", "--run", str(run), "--epochs",
                             "10000", "--hidden", "16,8", "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    time.sleep(8)  # past start-up, into training
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert err.strip().splitlines() == [f"fmtransfer: error: terminated (SIGTERM); results already in {run} are intact"]
    assert out == "" and snapshot(run) == before  # no temporary file either: snapshot lists every file


# ----------------------------------------------------------------------------- one writer per directory

HOLD = """
import sys, time
from fmtransfer.io import locked
with locked(sys.argv[1], sys.argv[2], shared=sys.argv[3] == "shared"):
    print("held", flush=True)
    time.sleep(600)
"""


def _holder(directory, name=".lock", mode="exclusive"):
    """Another process holding `directory`'s lock until killed."""
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(directory), name, mode], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_process_writing_a_run_directory_is_refused_and_a_killed_holder_blocks_nothing(run):
    holder = _holder(run)
    try:
        before = snapshot(run)
        result = run_cli("train-a", "--run", run, "--epochs", "1", "--hidden", "16,8")
        assert result.code == 2 and "in use by another fmtransfer process" in result.err and str(run) in result.err
        assert snapshot(run) == before
    finally:
        holder.kill()  # SIGKILL: the OS releases the lock with the process
        holder.wait()
    assert run_cli("train-a", "--run", run, "--epochs", "1", "--hidden", "16,8").code == 0


def test_a_second_unsharded_study_is_refused_but_shards_run_side_by_side(tiny_data, tmp_path):
    cfg = fmtransfer.load_config(None, {**tiny_settings(tiny_data), "study.seeds": [1, 2], "study.b_train_sizes": [20]})
    holder = _holder(tmp_path)  # an unsharded study running there
    try:
        with pytest.raises(fmtransfer.UsageError, match="in use"):
            fmtransfer.run_study(cfg, tmp_path)
    finally:
        holder.kill()
        holder.wait()
    shard0 = _holder(tmp_path, ".lock-0of2")  # shard 0 of 2 running, holding its shard lock
    shard0_dir = _holder(tmp_path, ".lock", "shared")
    try:
        result = fmtransfer.run_study(cfg, tmp_path, shard_spec="1/2")  # shard 1 runs beside it
        assert result.runs_finished == 1
        with pytest.raises(fmtransfer.UsageError, match="in use"):
            fmtransfer.run_study(cfg, tmp_path, shard_spec="0/2")  # the same shard twice: refused
        with pytest.raises(fmtransfer.UsageError, match="in use"):
            fmtransfer.run_study(cfg, tmp_path)  # unsharded beside shards: refused
    finally:
        for p in (shard0, shard0_dir):
            p.kill()
            p.wait()


# ----------------------------------------------------------------------------- what the tool reads back

@pytest.fixture
def trained(run):
    assert run_cli("transfer", "--run", run, "--freeze-epochs", "1", "--fine-tune-epochs", "1").code == 0
    return run


CORRUPT = {
    "model_a.json without its split": ("model_a.json", lambda d: {k: v for k, v in d.items() if k != "split_fingerprint"},
                                       "transfer", "train-a"),
    "transfer_a.json string accuracy": ("transfer_a.json", lambda d: {**d, "test_accuracy": "0.9"}, "compare",
                                        "transfer"),
    "transfer_a.json config a list": ("transfer_a.json", lambda d: {**d, "config": [1]}, None, None),
}


@pytest.mark.parametrize("case", list(CORRUPT))
def test_a_corrupt_file_the_tool_wrote_is_exit_2_naming_it_and_the_command_that_remakes_it(trained, case):
    import json

    name, corrupt, stage, made_by = CORRUPT[case]
    path = trained / name
    path.write_text(json.dumps(corrupt(json.loads(path.read_text()))))
    if stage is None:  # harmless to read: compare shows today's settings instead
        assert run_cli("compare", "--run", trained, "--epochs", "1").code == 0
        return
    args = {"train-a": ["--epochs", "1", "--hidden", "16,8"], "transfer": ["--freeze-epochs", "1"],
            "compare": ["--epochs", "1"]}[stage]
    result = run_cli(stage, "--run", trained, *args)
    assert result.code == 2 and "Traceback" not in result.err, result.err
    [line] = result.err_lines
    assert str(path) in line and f"`fmtransfer {made_by}" in line


def test_split_json_is_a_copy_rewritten_from_split_npz(trained):
    """split.npz holds the split and its manifest in one file, replaced at once; a split.json
    that is missing, stale or corrupt (a kill between the two writes) is rewritten from it."""
    import json

    good = json.loads((trained / "split.json").read_text())
    (trained / "split.json").write_text(json.dumps({**good, "fingerprint": 7}))
    assert run_cli("compare", "--run", trained, "--epochs", "1").code == 0
    assert run_cli("train-a", "--run", trained, "--epochs", "1", "--hidden", "16,8").code == 0
    assert json.loads((trained / "split.json").read_text()) == good


def test_a_corrupt_split_npz_is_exit_2_naming_it(trained):
    (trained / "split.npz").write_bytes(b"PK\x03\x04 torn")
    result = run_cli("train-a", "--run", trained, "--epochs", "1")
    assert result.code == 2 and str(trained / "split.npz") in result.err and "`fmtransfer split" in result.err


def test_a_corrupt_study_file_names_it_and_says_what_to_do(tiny_data, tmp_path):
    import hashlib
    import json

    cfg = fmtransfer.load_config(None, {**tiny_settings(tiny_data), "study.b_train_sizes": [20]})
    fmtransfer.run_study(cfg, tmp_path)
    meta = json.loads((tmp_path / "study.json").read_text())
    (tmp_path / "study.json").write_text(json.dumps({**meta, "config": {"model": {"hidden": [0]}}}))
    with pytest.raises(fmtransfer.DataError, match="study.json.*delete it"):
        fmtransfer.study.report(tmp_path)
    (tmp_path / "study.json").write_text(json.dumps(meta))
    [a_json] = (tmp_path / "models").glob("a-*.json")
    a_json.write_text("[]")
    (tmp_path / "results.jsonl").unlink()  # so the study needs model A again
    with pytest.raises(fmtransfer.DataError, match=f"{a_json.name} is unreadable; delete it"):
        fmtransfer.run_study(cfg, tmp_path)
    [a_model] = (tmp_path / "models").glob("a-*.keras")
    a_json.write_text("{}")  # a record that proves nothing: model A is trained again
    a_model.write_bytes(b"garbage")
    fmtransfer.run_study(cfg, tmp_path)
    made = json.loads(a_json.read_text())
    assert made["file_sha256"] == hashlib.sha256(a_model.read_bytes()).hexdigest()
    # A file its record vouches for that still cannot be loaded: say what to do, not which stage.
    a_model.write_bytes(b"garbage")
    a_json.write_text(json.dumps({**made, "file_sha256": hashlib.sha256(b"garbage").hexdigest()}))
    (tmp_path / "results.jsonl").unlink()
    with pytest.raises(fmtransfer.DataError) as info:
        fmtransfer.run_study(cfg, tmp_path)
    assert "run the study again" in str(info.value) and "fmtransfer train-a" not in str(info.value)


def test_a_branching_functional_model_a_is_refused_in_one_line(run, tmp_path):
    import keras

    inputs = keras.Input((28, 28))
    flat = keras.layers.Flatten()(inputs)
    merged = keras.layers.Concatenate()([keras.layers.Dense(8)(flat), keras.layers.Dense(8)(flat)])
    path = tmp_path / "branchy.keras"
    keras.Model(inputs, keras.layers.Dense(8, activation="softmax")(merged)).save(path)
    result = run_cli("transfer", "--run", run, "--model-a", path)
    assert result.code == 2 and "not a Sequential stack" in result.err and str(path) in result.err


def test_keras_backend_set_to_another_is_overridden_with_a_note(run):
    import os
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "fmtransfer.cli", "train-a", "--run", str(run), "--epochs", "1",
                           "--hidden", "16,8", "--json"], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "KERAS_BACKEND": "jax"})
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "fmtransfer: note: KERAS_BACKEND=jax ignored; fmtransfer trains with TensorFlow graphs, so it uses "
        "Keras' TensorFlow backend"]


def test_a_bad_fmtransfer_threads_is_reported_before_tensorflow_loads(run):
    import os
    import subprocess
    import sys

    code = ("import sys; from fmtransfer.cli import main\ntry: main(sys.argv[1:])\nexcept SystemExit as e: "
            "print('exit', e.code, 'tensorflow' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code, "train-a", "--run", str(run)], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "FMTRANSFER_THREADS": "two"})
    assert proc.stdout.strip() == "exit 2 False" and "FMTRANSFER_THREADS" in proc.stderr


def test_too_little_free_space_is_refused_before_training(run, monkeypatch):
    import shutil
    from collections import namedtuple

    Usage = namedtuple("Usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: Usage(10**9, 10**9 - 2**20, 2**20))
    before = snapshot(run)
    result = run_cli("train-a", "--run", run, "--epochs", "1")
    assert result.code == 2 and str(run) in result.err and "1 MiB free" in result.err
    assert snapshot(run) == before


def test_a_read_only_run_directory_is_refused_before_training(run, monkeypatch):
    import os

    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if (str(p), mode) == (str(run), os.W_OK) else real(p, mode))
    result = run_cli("train-a", "--run", run, "--epochs", "1")
    assert result.code == 2 and f"cannot write to {run}" in result.err


def test_a_full_disk_names_the_file_and_leaves_no_temporary(tmp_path):
    import errno

    from fmtransfer.io import atomic_path

    target = tmp_path / "model_a.keras"
    target.write_bytes(b"good")
    with pytest.raises(fmtransfer.FmtError, match=f"cannot write {target}: No space left on device"):
        with atomic_path(target):
            raise OSError(errno.ENOSPC, "No space left on device")
    assert [p.name for p in tmp_path.iterdir()] == ["model_a.keras"] and target.read_bytes() == b"good"


def test_a_split_npz_of_fmtransfer_0_1_with_the_images_still_loads(trained):
    """Run directories made before splits were saved as indices keep working."""
    import numpy as np

    from fmtransfer.rundir import RunDir

    split, manifest = RunDir(trained).load_split("test")
    arrays = {f"{p}_{xy}": getattr(split, p)[i] for p in split.PARTS for i, xy in enumerate("xy")}
    with open(trained / "split.npz", "wb") as f:
        np.savez(f, b_classes=np.array(split.b_classes), unlabelled=split.unlabelled,
                 fingerprint=np.array(split.fingerprint), **arrays)
    assert run_cli("transfer", "--run", trained, "--freeze-epochs", "1", "--fine-tune-epochs", "1").code == 0


def test_a_split_is_kilobytes_and_checks_the_dataset_it_was_made_from(tiny_data, tmp_path):
    import shutil

    data_dir = tmp_path / "data"
    shutil.copytree(tiny_data, data_dir)
    run = tmp_path / "run"
    assert run_cli("split", "--run", run, "--data-dir", data_dir, *TINY).code == 0
    assert (run / "split.npz").stat().st_size < 20_000
    (data_dir / "t10k-labels-idx1-ubyte.gz").write_bytes((tiny_data / "train-labels-idx1-ubyte.gz").read_bytes())
    result = run_cli("train-a", "--run", run, "--epochs", "1")
    assert result.code == 2 and "not the ones" in result.err and "`fmtransfer split" in result.err
    shutil.rmtree(data_dir)
    result = run_cli("train-a", "--run", run, "--epochs", "1")
    assert result.code == 2 and "no longer there" in result.err


def test_a_temporary_file_left_by_a_killed_writer_is_removed_by_the_next_one(run):
    leftover = run / ".model_a.k2j4x.tmp.keras"
    leftover.write_bytes(b"half a model")
    assert run_cli("train-a", "--run", run, "--epochs", "1", "--hidden", "16,8").code == 0
    assert not leftover.exists()


@pytest.mark.slow
def test_a_study_killed_with_sigkill_and_sigterm_resumes_to_the_uninterrupted_result(tiny_data, tmp_path):
    """Kill a study hard mid-run, then politely (SIGTERM: exit 143), then run it to the end: the
    report equals that of a study never interrupted, and no run was done twice."""
    import json
    import signal
    import subprocess
    import sys
    import time

    args = ["study", "--seeds", "4", "--data-dir", str(tiny_data), *TINY[:3], "--b-train-sizes", "20",
            "--hidden", "16,8", "--a-epochs", "1", "--b-epochs", "2", "--freeze-epochs", "1",
            "--fine-tune-epochs", "1", "--no-plots", "--json"]
    whole = run_cli(*args, "--run", tmp_path / "whole").json()
    results = tmp_path / "killed" / "results.jsonl"

    def lines():
        return len(results.read_text().splitlines()) if results.exists() else 0

    def started_then(sig):
        """Start the study, and send `sig` once it has appended one more run."""
        after_lines = lines() + 1
        proc = subprocess.Popen([sys.executable, "-m", "fmtransfer.cli", *args, "--run", str(tmp_path / "killed")],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 120
        while time.time() < deadline and lines() < after_lines:
            time.sleep(0.05)
        proc.send_signal(sig)
        return proc.wait(timeout=60), proc.stderr.read()

    code, _ = started_then(signal.SIGKILL)
    assert code == -signal.SIGKILL
    with open(results, "a") as f:  # and a corrupt line between runs
        f.write('{"id": "seed42-pair5v6-n20-reuseall-book-transfer"}\n')
    code, err = started_then(signal.SIGTERM)
    assert code in (143, 0), err  # 0: it finished before the signal arrived
    resumed = run_cli(*args, "--run", tmp_path / "killed").json()
    assert resumed["cells"] == whole["cells"]
    ids = []
    for line in results.read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue  # a line torn by SIGKILL mid-write: skipped by the reader, its run done again
        if "result" in record:  # not the corrupt line
            ids.append(record["id"])
    assert sorted(ids) == sorted(set(ids)) and len(ids) == 4
