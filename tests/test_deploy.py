"""Cluster arrays out of the box: `--shard auto` reads the array's environment, and the shipped
Slurm and Kubernetes templates run (the sbatch script under bash, on a tiny study) and parse."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from conftest import REPO
from fmtransfer import ConfigError
from fmtransfer.study import parse_shard


@pytest.mark.parametrize("text, env, expected", [
    ("auto", {"SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_COUNT": "10"}, (3, 10)),
    ("auto", {"SLURM_ARRAY_TASK_ID": "11", "SLURM_ARRAY_TASK_MIN": "10", "SLURM_ARRAY_TASK_COUNT": "4"}, (1, 4)),
    ("auto/5", {"JOB_COMPLETION_INDEX": "4"}, (4, 5)),
    ("2/3", {"SLURM_ARRAY_TASK_ID": "0", "SLURM_ARRAY_TASK_COUNT": "9"}, (2, 3)),  # explicit wins
])
def test_shard_auto_reads_the_arrays_environment(text, env, expected):
    assert parse_shard(text, env) == expected


@pytest.mark.parametrize("text, env, says", [
    ("auto", {}, "outside one"),
    ("auto", {"JOB_COMPLETION_INDEX": "1"}, "auto/N"),
    ("auto/3", {"JOB_COMPLETION_INDEX": "3"}, "0 <= I < N"),
])
def test_shard_auto_outside_an_array_or_without_a_count_is_an_error(text, env, says):
    with pytest.raises(ConfigError, match=says):
        parse_shard(text, env)


def test_study_shard_auto_outside_an_array_is_a_usage_error(tmp_path, monkeypatch):
    from conftest import assert_usage_error, run_cli

    for name in ("SLURM_ARRAY_TASK_ID", "JOB_COMPLETION_INDEX"):
        monkeypatch.delenv(name, raising=False)
    assert_usage_error(run_cli("study", "--run", tmp_path / "s", "--shard", "auto"), "--shard", "Slurm")


@pytest.mark.slow
def test_the_slurm_template_runs_its_shard_under_bash(tiny_data, tmp_path):
    """The sbatch script as Slurm would run array task 1 of 2: it runs that shard of the grid,
    with as many TensorFlow threads as the task has CPUs."""
    env = {**os.environ, "SLURM_ARRAY_TASK_ID": "1", "SLURM_ARRAY_TASK_COUNT": "2", "SLURM_CPUS_PER_TASK": "1",
           "STUDY_DIR": str(tmp_path / "study"), "CONFIG": str(REPO / "configs" / "quick.toml"),
           "FMTRANSFER": f"{sys.executable} -m fmtransfer.cli",
           "GRID": f"--seeds 2 --data-dir {tiny_data} --no-verify --valid-size 100 --b-train-sizes 20 --hidden 16,8"}
    proc = subprocess.run(["bash", str(REPO / "deploy" / "slurm" / "study.sbatch")], env=env, capture_output=True,
                          text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = (tmp_path / "study" / "results-1of2.jsonl").read_text().splitlines()
    assert len(lines) == 1 and '"seed": 43' in lines[0]  # shard 1 of 2: the second seed
    assert not (tmp_path / "study" / "results-0of2.jsonl").exists()


def test_the_slurm_template_matches_threads_to_cpus_per_task():
    text = (REPO / "deploy" / "slurm" / "study.sbatch").read_text()
    assert "#SBATCH --array=" in text and "#SBATCH --cpus-per-task=" in text
    assert "FMTRANSFER_THREADS=${SLURM_CPUS_PER_TASK" in text and "--shard auto" in text


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
