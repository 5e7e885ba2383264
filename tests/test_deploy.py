"""Cluster arrays out of the box: `--shard auto` reads the array's environment, and the shipped
Slurm and Kubernetes templates run (the sbatch script under bash, on a tiny study) and parse."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import REPO
from fmtransfer import ConfigError
from fmtransfer.study import parse_shard


def _array(task: int, first: int, last: int, step: int, count: int) -> dict[str, str]:
    """The variables Slurm sets in an array task (as a real slurmd does: tests/test_slurm.py)."""
    return {"SLURM_ARRAY_TASK_ID": str(task), "SLURM_ARRAY_TASK_MIN": str(first), "SLURM_ARRAY_TASK_MAX": str(last),
            "SLURM_ARRAY_TASK_STEP": str(step), "SLURM_ARRAY_TASK_COUNT": str(count)}


@pytest.mark.parametrize("text, env, expected", [
    ("auto", {"SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_COUNT": "10"}, (3, 10)),
    ("auto", _array(3, 0, 9, 1, 10), (3, 10)),                 # --array=0-9
    ("auto", _array(18, 0, 18, 2, 10), (9, 10)),               # --array=0-18:2: the 10th of 10 tasks
    ("auto/10", _array(7, 3, 7, 4, 2), (7, 10)),               # --array=3,7 resubmitted: shard 7 of 10
    ("auto/10", _array(4, 1, 6, 1, 4), (4, 10)),               # --array=1,4-6
    ("auto/5", {"JOB_COMPLETION_INDEX": "4"}, (4, 5)),
    ("2/3", {"SLURM_ARRAY_TASK_ID": "0", "SLURM_ARRAY_TASK_COUNT": "9"}, (2, 3)),  # explicit wins
])
def test_shard_auto_reads_the_arrays_environment(text, env, expected):
    assert parse_shard(text, env) == expected


@pytest.mark.parametrize("text, env, says", [
    ("auto", {}, "outside one"),
    ("auto", {"JOB_COMPLETION_INDEX": "1"}, "auto/N"),
    ("auto/3", {"JOB_COMPLETION_INDEX": "3"}, "JOB_COMPLETION_INDEX, which is 3, not below 3"),
    # --array=3,7 resubmitted with plain auto: shards 0 and 1 of 2 would be the wrong ones
    ("auto", _array(7, 3, 7, 4, 2), "SLURM_ARRAY_TASK_MIN is 3; .*auto/N"),
    # --array=0,4-6: no variable says which of the 4 tasks this is
    ("auto", _array(5, 0, 6, 1, 4), "SLURM_ARRAY_TASK_COUNT=4 .*SLURM_ARRAY_TASK_MAX=6 .*auto/N"),
    # --array=0-18:2 with auto/10: task 18 is not a shard of 10, and says so, not "18/10"
    ("auto/10", _array(18, 0, 18, 2, 10), "SLURM_ARRAY_TASK_ID, which is 18, not below 10"),
])
def test_shard_auto_refuses_an_array_it_cannot_place_a_task_in(text, env, says):
    with pytest.raises(ConfigError, match=says):
        parse_shard(text, env)


def test_study_shard_auto_in_a_resubmitted_sparse_array_is_one_usage_line(tmp_path, monkeypatch):
    from conftest import assert_usage_error, run_cli

    for name, value in _array(7, 3, 7, 4, 2).items():
        monkeypatch.setenv(name, value)
    line = assert_usage_error(run_cli("study", "--run", tmp_path / "s", "--shard", "auto"), "--shard",
                              "SLURM_ARRAY_TASK_MIN")
    assert "auto/N" in line and "0/2" not in line  # what to type, not a shard the user never typed
    assert not (tmp_path / "s").exists()


def test_study_shard_auto_outside_an_array_is_a_usage_error(tmp_path, monkeypatch):
    from conftest import assert_usage_error, run_cli

    for name in ("SLURM_ARRAY_TASK_ID", "JOB_COMPLETION_INDEX"):
        monkeypatch.delenv(name, raising=False)
    assert_usage_error(run_cli("study", "--run", tmp_path / "s", "--shard", "auto"), "--shard", "Slurm")


def _template(tmp_path, **env) -> list[str]:
    """The command the sbatch script runs, as array task 3: its FMTRANSFER is a stub that prints
    each argument on a line, then FMTRANSFER_THREADS as the study would see it."""
    stub = tmp_path / "stub"
    stub.write_text('#!/bin/bash\nprintf "%s\\n" "$@"\necho "threads=${FMTRANSFER_THREADS-unset}"\n')
    stub.chmod(0o755)
    base = {k: v for k, v in os.environ.items() if k not in ("FMTRANSFER_THREADS", "CONFIG", "SHARDS")}
    proc = subprocess.run(["bash", str(REPO / "deploy" / "slurm" / "study.sbatch")], capture_output=True, text=True,
                          env={**base, **_array(3, 0, 9, 1, 10), "SLURM_CPUS_PER_TASK": "4", "FMTRANSFER": str(stub),
                               "STUDY_DIR": str(tmp_path / "study"), **env}, timeout=60, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.splitlines()


def test_the_slurm_template_runs_with_no_file_a_pip_install_lacks(tmp_path):
    """From any directory, with no CONFIG: no --config at all (the defaults are the book's
    settings); a CONFIG of the user's is passed as one argument, spaces and all."""
    args = _template(tmp_path)
    assert args[0] == "study" and "--config" not in args
    assert not any("configs/" in a for a in args)
    args = _template(tmp_path, CONFIG="my settings.toml")
    assert args[args.index("--config") + 1] == "my settings.toml"


def test_the_slurm_template_takes_each_tasks_id_as_its_shard_of_shards(tmp_path):
    args = _template(tmp_path)
    assert args[args.index("--shard") + 1] == "auto/10"  # --array=3,7 resubmitted: shards 3 and 7 of 10
    args = _template(tmp_path, SHARDS="")
    assert args[args.index("--shard") + 1] == "auto"  # the count from the array itself


def test_the_slurm_template_leaves_the_thread_count_to_fmtransfer_whatever_cpus_per_task(tmp_path):
    """A cnn's thread count is part of its fingerprint: it must not follow --cpus-per-task."""
    assert _template(tmp_path)[-1] == "threads=unset"
    assert _template(tmp_path, FMTRANSFER_THREADS="2")[-1] == "threads=2"  # the user's own, kept
    text = (REPO / "deploy" / "slurm" / "study.sbatch").read_text()
    assert "SLURM_CPUS_PER_TASK" not in text


def test_the_slurm_template_does_not_promise_a_requeue_at_the_time_limit():
    text = (REPO / "deploy" / "slurm" / "study.sbatch").read_text()
    assert "Slurm does not requeue it" in text and "sbatch --array=3,7" in text
    assert "requeued, resumes" not in text


@pytest.mark.slow
def test_the_slurm_template_runs_its_shard_under_bash(tiny_data, tmp_path):
    """The sbatch script as Slurm would run array task 1 of 2: it runs that shard of the grid,
    on fmtransfer's own thread count, not the task's 4 CPUs."""
    from fmtransfer import runtime

    env = {**{k: v for k, v in os.environ.items() if k != "FMTRANSFER_THREADS"},
           "SLURM_ARRAY_TASK_ID": "1", "SLURM_ARRAY_TASK_COUNT": "2", "SLURM_CPUS_PER_TASK": "4", "SHARDS": "2",
           "STUDY_DIR": str(tmp_path / "study"), "CONFIG": str(REPO / "configs" / "quick.toml"),
           "FMTRANSFER": f"{sys.executable} -m fmtransfer.cli",
           "GRID": f"--seeds 2 --data-dir {tiny_data} --no-verify --valid-size 100 --b-train-sizes 20 --hidden 16,8"}
    proc = subprocess.run(["bash", str(REPO / "deploy" / "slurm" / "study.sbatch")], env=env, capture_output=True,
                          text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = (tmp_path / "study" / "results-1of2.jsonl").read_text().splitlines()
    assert len(lines) == 1 and '"seed": 43' in lines[0]  # shard 1 of 2: the second seed
    assert not (tmp_path / "study" / "results-0of2.jsonl").exists()
    assert json.loads(lines[0])["trained_with"]["threads"] == runtime.threads("dense")[0]


def test_the_kubernetes_template_is_an_indexed_job_whose_shard_count_is_its_completions():
    import yaml

    job = yaml.safe_load((REPO / "deploy" / "k8s" / "study-job.yaml").read_text())
    assert job["kind"] == "Job" and job["spec"]["completionMode"] == "Indexed"
    [container] = job["spec"]["template"]["spec"]["containers"]
    command = container["command"]
    assert command[:2] == ["fmtransfer", "study"]
    assert command[command.index("--shard") + 1] == f"auto/{job['spec']['completions']}"
    mount = container["volumeMounts"][0]["mountPath"]
    assert command[command.index("--run") + 1].startswith(mount)


def test_the_kubernetes_template_names_no_file_a_pip_install_lacks_and_sets_no_threads():
    """A pod runs `pip install fmtransfer`: no configs/ folder (a missing --config would fail the
    pod and restart it up to backoffLimit times), and no thread count unlike a laptop's."""
    import yaml

    job = yaml.safe_load((REPO / "deploy" / "k8s" / "study-job.yaml").read_text())
    [container] = job["spec"]["template"]["spec"]["containers"]
    command = container["command"]
    assert "--config" not in command or command[command.index("--config") + 1].startswith(
        container["volumeMounts"][0]["mountPath"])
    assert "FMTRANSFER_THREADS" not in {e["name"] for e in container.get("env", [])}
