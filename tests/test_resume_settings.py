"""A study's settings hold for every invocation that adds to it, every number has a range, and
every count read from the environment is bounded by the machine (issue 28, classes 3 and 4).

The studies here are written from numbers (tests/studyfiles.py): each refusal comes before
anything trains, and must leave the study's files as they were.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import typing
from dataclasses import fields
from pathlib import Path

import pytest
from conftest import assert_usage_error, run_cli, snapshot
from studyfiles import write_study

from fmtransfer import runtime
from fmtransfer.config import Config, sections
from fmtransfer.errors import ConfigError, UsageError
from fmtransfer.study import check_study_dir
from fmtransfer.study.axes import parse_shard

ROOT = Path(__file__).resolve().parents[1]
QUICK = ROOT / "configs" / "quick.toml"


def _study(directory: Path, tiny_data: Path, *, arch="dense", draws=None, meta=None, config=None) -> Path:
    """A finished two-seed study on `tiny_data`'s settings, with `meta` added to its study.json."""
    settings = {"data.dir": str(tiny_data), "data.verify_checksums": False, **(config or {})}
    if draws:
        settings["study.data_seeds"] = list(draws)
    write_study(directory, {"transfer": 0.01}, seeds=(42, 43), arch=arch, draws=draws, config=settings)
    path = directory / "study.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **(meta or {})}))
    return directory


def _resume(directory: Path, tiny_data: Path, *args: str):
    return run_cli("study", "--run", directory, "--config", QUICK, "--data-dir", tiny_data, "--no-verify",
                   "--seeds", "2", "--contenders", "transfer", "--no-plots", *args)


# ----------------------------------------------------------------------------- 3. settings compared on resume

def test_cnn_study_resumed_on_another_thread_count_is_refused_naming_the_variable(tiny_data, tmp_path):
    """Made on the default 2 threads, resumed with FMTRANSFER_THREADS=1: refused, nothing rewritten
    (a subprocess: the variable is read once, when TensorFlow is set up)."""
    study = _study(tmp_path / "cnn", tiny_data, arch="cnn", meta={"threads": 2})
    before = snapshot(study)
    proc = subprocess.run([sys.executable, "-m", "fmtransfer.cli", "study", "--run", str(study), "--config", str(QUICK),
                           "--data-dir", str(tiny_data), "--no-verify", "--arch", "cnn", "--seeds", "2",
                           "--contenders", "transfer", "--no-plots"],
                          capture_output=True, text=True, timeout=120, cwd=ROOT,
                          env={**os.environ, "FMTRANSFER_THREADS": "1", "PYTHONPATH": str(ROOT)})
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert "FMTRANSFER_THREADS=2" in lines[0] and "on 2 intra-op threads" in lines[0]
    assert snapshot(study) == before
    assert json.loads((study / "study.json").read_text())["threads"] == 2


def test_dense_study_resumed_on_another_thread_count_is_refused_too(tiny_data, tmp_path):
    """A dense study's fingerprints carry a count away from 1 as well: 1 then 4 is refused; the
    same count, or a study.json that records none, goes on and keeps the count."""
    cfg = Config().replace(**{"data.dir": str(tiny_data), "data.verify_checksums": False})
    study = _study(tmp_path / "dense", tiny_data, meta={"threads": 1})
    with pytest.raises(UsageError, match="FMTRANSFER_THREADS=1"):
        check_study_dir(cfg, study, 4)
    check_study_dir(cfg, study, 1)
    assert json.loads((study / "study.json").read_text())["threads"] == 1


@pytest.mark.parametrize("typed", [["--target-halfwidth", "0.1"], ["--max-seeds", "7"],
                                   ["--target-halfwidth", "0.1", "--max-seeds", "7"]])
def test_seeds_auto_options_without_seeds_auto_are_refused_not_dropped(typed, tiny_data, tmp_path):
    study = _study(tmp_path / "s", tiny_data, meta={"seeds_auto": {"seeds": 20, "reached": True}})
    before = snapshot(study)
    assert_usage_error(_resume(study, tiny_data, *typed), typed[0], "--seeds auto")
    assert snapshot(study) == before


def test_resuming_a_study_keeps_where_seeds_auto_stopped(tiny_data, tmp_path):
    cfg = Config().replace(**{"data.dir": str(tiny_data), "data.verify_checksums": False})
    stopped = {"seeds": 20, "reached": True, "widest_halfwidth": 0.4}
    study = _study(tmp_path / "s", tiny_data, meta={"seeds_auto": stopped})
    check_study_dir(cfg, study, 1)
    assert json.loads((study / "study.json").read_text())["seeds_auto"] == stopped


def test_draws_study_resumed_without_draws_is_refused_not_pooled_with_the_first_sample(tiny_data, tmp_path):
    study = _study(tmp_path / "draws", tiny_data, draws=[0, 1])
    before = snapshot(study)
    line = assert_usage_error(_resume(study, tiny_data), "random draws", "first N", "--data-seed-list 0,1")
    assert "never pooled" in line
    assert snapshot(study) == before


def test_first_sample_study_resumed_with_draws_is_refused(tiny_data, tmp_path):
    study = _study(tmp_path / "first", tiny_data)
    before = snapshot(study)
    assert_usage_error(_resume(study, tiny_data, "--data-seed-list", "3,4"), "first N", "give no data seeds")
    assert snapshot(study) == before


def test_more_draws_may_join_a_study_of_draws(tiny_data, tmp_path):
    study = _study(tmp_path / "draws", tiny_data, draws=[0, 1])
    cfg = Config().replace(**{"data.dir": str(tiny_data), "data.verify_checksums": False,
                              "study.data_seeds": [0, 1, 2]})
    check_study_dir(cfg, study, 1)
    assert json.loads((study / "study.json").read_text())["config"]["study"]["data_seeds"] == [0, 1, 2]


def test_stack_on_a_cnn_is_refused_not_dropped(tiny_data, tmp_path):
    assert_usage_error(run_cli("study", "--run", tmp_path / "s", "--data-dir", tiny_data, "--no-verify",
                               "--arch", "cnn", "--stack", "4", "--contenders", "transfer"), "--stack", "cnn")
    assert not (tmp_path / "s").exists()


# ----------------------------------------------------------------------------- 3. every number has a range

@pytest.mark.parametrize("args", [["--equivalence-margin", "1e308"], ["--equivalence-margin", "100"],
                                  ["--target-halfwidth", "1e308", "--seeds", "auto"],
                                  ["--max-seeds", "100000000", "--seeds", "auto", "--target-halfwidth", "1"]])
def test_margins_and_halfwidths_beyond_100_points_and_absurd_seed_caps_are_refused(args, tmp_path):
    assert_usage_error(run_cli("study", *args, "--run", tmp_path / "s"), args[0])
    assert not (tmp_path / "s").exists()


def test_report_refuses_a_margin_that_makes_every_contender_equivalent(tmp_path):
    study = write_study(tmp_path / "s", {"transfer": 0.01})
    assert_usage_error(run_cli("study", "report", study, "--equivalence-margin", "1e308"), "--equivalence-margin")


@pytest.mark.parametrize("key, value", [("train_a.epochs", 10**9), ("transfer.fine_tune_epochs", -1),
                                        ("baseline.learning_rate", float("nan")), ("gan.beta_1", 1.0),
                                        ("rbm.cd_k", 10**6), ("gradual.factor", float("inf")),
                                        ("study.stack", 10**6), ("data.b_classes", [5, 12]), ("study.seeds", [-1])])
def test_each_setting_outside_its_range_is_refused_naming_its_key(key, value):
    with pytest.raises(ConfigError) as e:
        Config().replace(**{key: value})
    assert e.value.key == key


def _numeric(hint) -> bool:
    return hint in (int, float) or any(_numeric(a) for a in typing.get_args(hint) if a is not Ellipsis)


def test_every_numeric_setting_of_every_section_declares_its_range():
    """One mechanism: each int or float setting (alone, in a list or beside a word such as
    "all") carries `bounds`, the core sections' and the contenders' alike."""
    unbounded = [f"{name}.{f.name}" if name else f.name
                 for name, cls in {"": Config, **sections()}.items() for f in fields(cls)
                 if cls.__module__.startswith("fmtransfer.")  # not a test's section made on the fly
                 and f.name != "registered" and not f.metadata.get("sections") and "help" in f.metadata
                 and _numeric(typing.get_type_hints(cls)[f.name]) and f.metadata.get("bounds") is None]
    assert unbounded == []


# ----------------------------------------------------------------------------- 4. counts from the environment

@pytest.mark.parametrize("value", ["100000", "2,100000", "100000,1"])
def test_thread_count_beyond_the_machine_is_refused_before_training(value, monkeypatch, tmp_path):
    monkeypatch.setenv("FMTRANSFER_THREADS", value)
    line = assert_usage_error(run_cli("train-a", "--run", tmp_path / "r", "--epochs", "1"), "FMTRANSFER_THREADS")
    assert f"at most {runtime.max_threads()}" in line
    assert not (tmp_path / "r").exists()


def test_thread_count_a_few_per_core_is_accepted(monkeypatch):
    """A study made on a machine with a few times these cores can be rerun here with its count."""
    monkeypatch.setenv("FMTRANSFER_THREADS", f"{runtime.max_threads()},1")
    assert runtime.threads("cnn") == (runtime.max_threads(), 1)


@pytest.mark.parametrize("env, named", [({"SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_COUNT": "9" * 30},
                                          "SLURM_ARRAY_TASK_COUNT"),
                                         ({"SLURM_ARRAY_TASK_ID": "9" * 30, "SLURM_ARRAY_TASK_COUNT": "4"},
                                          "SLURM_ARRAY_TASK_ID"),
                                         ({"JOB_COMPLETION_INDEX": "9" * 30}, "JOB_COMPLETION_INDEX")])
def test_scheduler_counts_beyond_any_job_array_are_refused_naming_the_variable(env, named):
    with pytest.raises(ConfigError) as e:
        parse_shard("auto/4" if "JOB_COMPLETION_INDEX" in env else "auto", env)
    assert e.value.key == "shard" and named in e.value.problem and "more than any job array" in e.value.problem


def test_worker_count_beyond_the_machine_is_refused(tmp_path):
    assert_usage_error(run_cli("study", "--run", tmp_path / "s", "--jobs", "100000", "--contenders", "transfer"),
                       "--jobs", f"at most {runtime.max_threads()}")


@pytest.mark.parametrize("option", ["--seeds", "--data-seeds"])
def test_seed_counts_are_refused_before_a_list_of_that_many_is_made(option, tmp_path):
    """--seeds 10**12 would build a list of 10**12 seeds before any setting is checked."""
    line = assert_usage_error(run_cli("study", "--run", tmp_path / "s", option, str(10**12), "--contenders", "transfer"),
                              option)
    assert "10000" in line


def test_study_resumed_with_another_equivalence_margin_is_refused(tiny_data, tmp_path):
    """The margin is recorded when a study is made, before its runs: a resumed study keeps its own, and a
    report may still read the study with another."""
    study = _study(tmp_path / "s", tiny_data, config={"study.equivalence_margin": 1.0})
    before = snapshot(study)
    assert_usage_error(_resume(study, tiny_data), "--equivalence-margin 1", "study report")
    assert snapshot(study) == before
    assert run_cli("study", "report", study, "--equivalence-margin", "2", "--json").json()["equivalence_margin"] == 2
