"""`study --jobs N` never hangs and leaves no worker behind: a worker killed (as the out-of-memory
killer does) stops the study in one line; a parent killed takes its workers with it; either way
the study resumes to the records of one never interrupted, no run recorded twice.

Real processes, real training on `tiny_data`. Workers are found in /proc (Linux).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO, run_cli, tiny_settings
from fmtransfer import UsageError, load_config
from fmtransfer import study as studies
from fmtransfer.study import records

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds worker processes in /proc")

# Two runs per seed (reuse 1 and all), so that a worker is mid-seed when the first run is recorded.
ARGS = ["study", "--seeds", "3", "--reuse-layers", "1,all", "--b-train-sizes", "20", "--valid-size", "100",
        "--no-verify", "--hidden", "16,8", "--a-epochs", "1", "--b-epochs", "2", "--freeze-epochs", "1",
        "--fine-tune-epochs", "1", "--no-plots", "--json"]


def _command(tiny_data, study_dir, *more) -> list[str]:
    return [sys.executable, "-m", "fmtransfer.cli", *ARGS, "--data-dir", str(tiny_data), "--run", str(study_dir),
            "--jobs", "2", *more]


@pytest.fixture(scope="module")
def uninterrupted(tiny_data, tmp_path_factory) -> dict:
    """The records of the same study run in one process, start to end, timing left out."""
    study_dir = tmp_path_factory.mktemp("uninterrupted")
    result = run_cli(*ARGS, "--data-dir", tiny_data, "--run", study_dir)
    assert result.code == 0, result.err
    return _records(study_dir)


def _records(study_dir: Path) -> dict:
    return records.comparable(study_dir)


def _recorded_ids(study_dir: Path) -> list[str]:
    """The id of every valid line of every results file, repeats included."""
    ids = []
    for path in sorted(study_dir.glob("results*.jsonl")):
        for line in path.read_text().splitlines():
            try:
                ids.append(studies.RunRecord.from_dict(json.loads(line)).id)
            except ValueError:  # a line torn by a kill: skipped by the reader, its run done again
                continue
    return ids


def _stat(pid: int) -> list[str] | None:
    """/proc/PID/stat's fields after the command name (state, ppid, ...); None if there is no such process."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _alive(pid: int) -> bool:
    fields = _stat(pid)
    return fields is not None and fields[0] not in ("Z", "X")  # a zombie has ended: only its entry waits


def _workers(parent: int) -> list[int]:
    """The parent's spawned workers (not multiprocessing's resource tracker)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        fields = _stat(int(stat.parent.name))
        if fields and int(fields[1]) == parent:
            try:
                if b"spawn_main" in Path(stat.parent, "cmdline").read_bytes():
                    found.append(int(stat.parent.name))
            except OSError:
                continue
    return sorted(found)


def _started(tiny_data, study_dir: Path) -> tuple[subprocess.Popen, list[int]]:
    """A `--jobs 2` study, once it has recorded a run; and its two workers."""
    proc = subprocess.Popen(_command(tiny_data, study_dir), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    deadline = time.monotonic() + 600
    while not _recorded_ids(study_dir):
        if proc.poll() is not None or time.monotonic() > deadline:
            _end(proc)
            pytest.fail(f"the study recorded no run (exit {proc.returncode}): {proc.stderr.read()[-2000:]}")
        time.sleep(0.05)
    workers = _workers(proc.pid)
    assert len(workers) == 2, workers
    return proc, workers


def _end(proc: subprocess.Popen) -> None:
    """Whatever a failed test left of the study it started: its process group, killed."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _gone_within(pids: list[int], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while any(_alive(p) for p in pids):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _resumes_to(tiny_data, study_dir: Path, uninterrupted: dict) -> None:
    resumed = subprocess.run(_command(tiny_data, study_dir), cwd=REPO, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert _records(study_dir) == uninterrupted  # same ids, scores and fingerprints
    ids = _recorded_ids(study_dir)
    assert len(ids) == len(set(ids)) == len(uninterrupted)  # no run recorded twice


@pytest.mark.slow
def test_a_killed_worker_stops_the_study_in_one_line_and_a_rerun_resumes(tiny_data, tmp_path, uninterrupted):
    study_dir = tmp_path / "study"
    proc, workers = _started(tiny_data, study_dir)
    try:
        os.kill(workers[0], signal.SIGKILL)  # as the out-of-memory killer does
        _, err = proc.communicate(timeout=60)  # raises if the study hangs
    finally:
        _end(proc)
    assert proc.returncode == 1, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert re.fullmatch(r"fmtransfer: error: a study worker died \(killed by signal 9, SIGKILL[^)]*\) while running "
                        r"seed4[234]-pair5v6-n20-reuse(1|all)-book-transfer.*; run the study again to resume.*",
                        lines[0]), lines[0]
    assert _gone_within(workers, 5)  # the other one too
    _resumes_to(tiny_data, study_dir, uninterrupted)


@pytest.mark.slow
def test_a_killed_parent_takes_its_workers_and_the_study_resumes(tiny_data, tmp_path, uninterrupted):
    study_dir = tmp_path / "study"
    proc, workers = _started(tiny_data, study_dir)
    try:
        os.kill(proc.pid, signal.SIGKILL)  # nothing of the parent runs: no finally, no atexit
        proc.wait(timeout=30)
        assert _gone_within(workers, 5), [w for w in workers if _alive(w)]
    finally:
        _end(proc)
    _resumes_to(tiny_data, study_dir, uninterrupted)


@pytest.mark.slow
def test_sigterm_to_the_parent_stops_every_worker_exit_143(tiny_data, tmp_path):
    proc, workers = _started(tiny_data, tmp_path / "study")
    try:
        proc.send_signal(signal.SIGTERM)  # what Slurm and Kubernetes send the job's main process
        _, err = proc.communicate(timeout=60)
    finally:
        _end(proc)
    assert proc.returncode == 143 and err.strip().splitlines() == [
        f"fmtransfer: error: terminated (SIGTERM); results already in {tmp_path / 'study'} are intact"], err
    assert not any(_alive(w) for w in workers)  # stopped before the parent exited


# ----------------------------------------------------------------------------- the workers' lock

HOLD = """
import sys, time
from fmtransfer.io import locked
with locked(sys.argv[1], sys.argv[2], shared=True):
    print("held", flush=True)
    time.sleep(600)
"""


def test_a_study_is_refused_while_a_worker_of_an_earlier_one_lives(tiny_data, tmp_path):
    """A worker holds its study's workers lock while it lives: an orphan, say, of a parent killed
    on a system without PR_SET_PDEATHSIG, still finishing a run."""
    cfg = load_config(None, {**tiny_settings(tiny_data), "study.seeds": [1, 2]})
    orphan = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path), ".lock-0of2-workers"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert orphan.stdout.readline().strip() == "held"
        for shard in (None, "0/2"):  # the whole study, and the orphan's own shard
            with pytest.raises(UsageError, match="in use by another fmtransfer process"):
                studies.run_study(cfg, tmp_path, shard_spec=shard)
        assert not list(tmp_path.glob("results*.jsonl")) and not (tmp_path / "study.json").exists()
    finally:
        orphan.kill()
        orphan.wait()


@pytest.mark.slow
def test_a_workers_error_is_raised_here_as_the_same_typed_error(tiny_data, tmp_path):
    """The data refuses a size only once a worker reads it: the parent raises the ConfigError,
    with its key, as a study in one process does, and no worker is left."""
    from fmtransfer import ConfigError

    cfg = load_config(None, {**tiny_settings(tiny_data), "study.seeds": [1, 2], "study.b_train_sizes": [5000]})
    with pytest.raises(ConfigError) as info:
        studies.run_study(cfg, tmp_path, jobs=2)
    assert info.value.key == "data.b_train_size" and "asked for 5000" in info.value.problem
    assert _workers(os.getpid()) == [] and not list(tmp_path.glob("results*.jsonl"))
