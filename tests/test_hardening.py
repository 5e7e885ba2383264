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

import shutil

import pytest

from conftest import run_cli, snapshot

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
    assert "B on l2_sp: fine-tune diverged at epoch 2" in line
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
