"""The same numbers however a study runs (issue 18, item 9): whatever --jobs, --shard and the
machine's cores, for dense and cnn, stacked or not; the thread count and a seed's place in its
stack are in the fingerprints, so runs trained otherwise are never mixed in."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import assert_usage_error, require_system, run_cli
from fmtransfer import fingerprints, runtime
from fmtransfer import study as studies
from fmtransfer.config import Config
from fmtransfer.study import records
from fmtransfer.study.runner import _Stacked

FMTRANSFER = Path(sys.executable).with_name("fmtransfer")
# What is no property of a run: when it finished and how long its parts took.


# ----------------------------------------------------------------------------- the rules, cheap

def test_the_thread_count_is_in_a_cnns_fingerprints_always_and_a_dense_ones_away_from_one():
    dense, cnn = Config().to_dict(), Config().replace(**{"model.arch": "cnn"}).to_dict()
    assert fingerprints.How(1).adds(dense, "model_a") == {}  # the dense studies made before keep theirs
    assert fingerprints.How(2).adds(dense, "model_a") == {"threads": 2}
    assert fingerprints.How(1).adds(cnn, "model_a") == {"threads": 1}
    assert fingerprints.How(None).adds(cnn, "model_a") == {}  # a study.json of 0.5 or older: not recorded
    stacked = fingerprints.How(1, 3, frozenset({"model_a", "baseline"}))
    assert stacked.adds(dense, "baseline") == {"stack_slot": 3} and stacked.adds(dense, "encoder:gan") == {}


def test_a_run_fingerprint_changes_with_the_threads_and_the_slot_only_where_they_count(tiny_data):
    from conftest import tiny_settings

    sha = {"f": "0" * 64}
    cfg = Config().replace(**tiny_settings(tiny_data))
    cnn = cfg.replace(**{"model.arch": "cnn", "model.hidden": [4]})
    run = fingerprints.run
    assert run(cfg, sha, "transfer") == run(cfg, sha, "transfer", records.how(cfg, 1, "transfer", 7))
    assert run(cfg, sha, "transfer") != run(cfg, sha, "transfer", records.how(cfg, 2, "transfer", 7))
    assert run(cnn, sha, "transfer", records.how(cnn, 2, "transfer", 7)) != \
        run(cnn, sha, "transfer", records.how(cnn, 4, "transfer", 7))
    stack = cfg.replace(**{"study.stack": 4})
    # Seeds 3 and 7 take slot 3 of any stack of four; seed 4 slot 0.
    assert run(stack, sha, "transfer", records.how(stack, 1, "transfer", 3)) != \
        run(stack, sha, "transfer", records.how(stack, 1, "transfer", 4))
    assert records.how(stack, 1, "transfer", 3).slot == records.how(stack, 1, "transfer", 7).slot == 3
    assert records.how(cnn.replace(**{"study.stack": 4}), 2, "transfer", 3).slot is None  # a cnn never stacks


def test_an_intra_op_zero_is_recorded_as_the_cores_it_means(monkeypatch):
    monkeypatch.setattr(runtime, "_configured", None)
    monkeypatch.setattr(runtime, "_pending", None)
    monkeypatch.delenv("FMTRANSFER_THREADS", raising=False)
    assert runtime.training_threads("dense") == (1, 1)
    assert runtime.training_threads("cnn") == (runtime.CNN_THREADS, runtime.CNN_THREADS)
    monkeypatch.setenv("FMTRANSFER_THREADS", "0")
    assert runtime.training_threads("cnn")[0] == runtime.schedulable_cores() >= 1
    monkeypatch.setenv("FMTRANSFER_THREADS", "3,1")
    assert runtime.training_threads("cnn") == (3, 1)


def test_a_bad_fmtransfer_threads_stops_a_study_in_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("FMTRANSFER_THREADS", "1,2,3")
    assert_usage_error(run_cli("study", "--run", tmp_path / "s", "--seeds", "2"), "FMTRANSFER_THREADS")
    assert not (tmp_path / "s").exists()


def test_each_seed_takes_its_own_slot_whoever_shares_its_stack(tiny_data):
    stacker = _Stacked([], Config(), (), Path("."), set(), stack=4)
    key = studies.RunKey.at
    keys = {s: key(seed=s, pair=(5, 6), b_train_size=20, reuse_layers="all", preset="book") for s in (2, 5, 6, 9)}
    (stack,) = stacker._slotted([keys[5], keys[6]])  # slots 1 and 2; slot 0 a filler
    assert [k.seed for k in stack] == [5, 5, 6]
    first, second = stacker._slotted([keys[5], keys[9], keys[2]])  # 5 and 9 share slot 1; 2 takes slot 2
    assert [k.seed for k in first] == [5, 5, 2] and [k.seed for k in second] == [9, 9]  # two slots at least


# ----------------------------------------------------------------------------- whole studies, compared

def _study(tmp_path: Path, name: str, args: list[str], *, one_core: bool = False, env: dict | None = None) -> dict:
    """Run `fmtransfer study` in its own process; its records by id, timing left out."""
    command = [str(FMTRANSFER), "study", "--run", str(tmp_path / name), *args, "--no-plots", "--json"]
    if one_core:
        taskset = shutil.which("taskset")
        if taskset is None:
            require_system("taskset", "not found; it is util-linux's, to run a study on one core")
        command = [taskset, "-c", "0", *command]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env={**os.environ, **(env or {})})
    assert done.returncode == 0, done.stderr[-3000:]
    return _records(tmp_path / name)


def _records(study_dir: Path) -> dict:
    """The records the study counts (made as its study.json says), timing left out."""
    cfg = records.config_from(records.read_meta(study_dir)["config"], study_dir)
    return records.comparable(study_dir, cfg)


def _grid(tiny_data: Path, *extra: str) -> list[str]:
    return ["--data-dir", str(tiny_data), "--no-verify", "--valid-size", "100", "--a-epochs", "1", "--b-epochs", "2",
            "--freeze-epochs", "1", "--fine-tune-epochs", "1", "--pairs", "5:6", "--b-train-sizes", "20", *extra]


@pytest.mark.slow
def test_a_cnn_study_gives_the_same_records_on_one_job_two_jobs_and_one_core(tiny_data, tmp_path, monkeypatch):
    monkeypatch.delenv("FMTRANSFER_THREADS", raising=False)
    args = _grid(tiny_data, "--arch", "cnn", "--hidden", "4,8", "--cnn-dense", "8", "--seed-list", "1,2")
    serial = _study(tmp_path, "serial", [*args, "--jobs", "1"])
    assert len(serial) == 2
    assert all(r["trained_with"] == {"threads": runtime.CNN_THREADS} for r in serial.values())
    assert _study(tmp_path, "jobs", [*args, "--jobs", "2"]) == serial
    assert _study(tmp_path, "one-core", [*args, "--jobs", "1"], one_core=True) == serial
    assert json.loads((tmp_path / "serial" / "study.json").read_text())["threads"] == runtime.CNN_THREADS


@pytest.mark.slow
def test_a_stacked_dense_study_gives_the_same_records_on_two_jobs_resumed_in_shards_on_one_core(tiny_data, tmp_path):
    """Three seeds in stacks of two: seed 1 trains with a filler in slot 0, seeds 2 and 3 together.
    Each shard and each worker takes whole stacks; a resumed study stacks the seeds left; every
    seed keeps its slot whichever seeds share its stack, so every way gives the same records."""
    args = _grid(tiny_data, "--hidden", "16,8", "--stack", "2", "--seed-list", "1,2,3")
    serial = _study(tmp_path, "serial", [*args, "--jobs", "1"])
    assert len(serial) == 3
    assert {r["seed"]: r["trained_with"]["stack_slot"] for r in serial.values()} == {1: 1, 2: 0, 3: 1}
    assert all(r["trained_with"]["stacked"] == ["baseline", "model_a", "transfer"] for r in serial.values())
    assert _study(tmp_path, "jobs", [*args, "--jobs", "2"]) == serial
    # On one core, seed 3 first alone (slot 1, a filler in slot 0); then resumed as two shards,
    # one stack each: seed 1 with a filler, seed 2 with a filler where seed 3 was.
    one_seed = _grid(tiny_data, "--hidden", "16,8", "--stack", "2", "--seed-list", "3")
    assert len(_study(tmp_path, "resumed", one_seed, one_core=True)) == 1
    for shard in ("0/2", "1/2"):
        resumed = _study(tmp_path, "resumed", [*args, "--shard", shard], one_core=True)
    assert resumed == serial
    # Never mixed: the study made stacked is not continued unstacked.
    refused = run_cli("study", "--run", tmp_path / "serial", *args[:-4], "--seed-list", "1,2,3", "--stack", "1")
    assert_usage_error(refused, "stack")
