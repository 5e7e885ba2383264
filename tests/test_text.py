"""What fmtransfer prints reads as written, wherever it goes: a user's path or name is never read
as rich markup; off a terminal (a pipe, a file, a Slurm log) nothing is a live bar, cut to 80
columns, wrapped to a table's width or padded to the console's; an error keeps the reason the
library gave; and `--json` that has nothing to say says why, on stderr."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import zipfile
from contextlib import redirect_stderr
from types import SimpleNamespace

import pytest

from conftest import REPO, run_cli
from fmtransfer import report
from fmtransfer.errors import DataError, reason
from studyfiles import write_study

# What a live rich bar leaves in a file: its bar, and its columns cut with an ellipsis.
BAR_MARKS = ("━", "…", "\x1b[")


@pytest.fixture(scope="module")
def bracketed(tmp_path_factory):
    """Two distinct finished studies (no training; two studies judged together must not be copies)
    in directories whose names are rich markup."""
    root = tmp_path_factory.mktemp("studies")
    return [write_study(root / name, {"transfer": 0.01}, rng_seed=k) for k, name in enumerate(("x[/]y", "a[bold]b"))]


@pytest.fixture(scope="module")
def unjudgeable(tmp_path_factory):
    """A finished cnn study that none of the chapter's claims can be judged on: one other pair, 50 images."""
    return write_study(tmp_path_factory.mktemp("studies") / "cnn", {"transfer": 0.01}, arch="cnn", sizes=(50,),
                       pairs=((0, 2),))


# ----------------------------------------------------------------------------- user text is not markup

def test_study_claims_prints_a_directory_named_like_a_closing_tag_as_typed(bracketed):
    result = run_cli("study", "claims", bracketed[0])
    assert result.code == 0 and "Traceback" not in result.err, result.err
    assert f"The chapter's claims on {bracketed[0]}" in result.out


def test_study_report_prints_a_directory_named_like_a_style_as_typed(bracketed):
    result = run_cli("study", "report", bracketed[1], "--no-plots")
    assert result.code == 0, result.err
    assert f"Study {bracketed[1]}:" in result.out  # "[bold]" kept, not eaten as a style


def test_a_studys_progress_line_prints_its_directory_as_typed(tmp_path):
    """Shard 3 of 10 of a two-seed grid holds no runs: nothing trains, the line is still said."""
    study_dir = tmp_path / "a[bold]b"
    result = run_cli("study", "--run", study_dir, "--seeds", "2", "--shard", "3/10", "--no-plots")
    assert result.code == 0, result.err
    assert f"study {study_dir}: shard 3/10 has 0 runs" in result.err


def test_progress_labels_and_run_names_are_not_markup():
    """A plug-in's label or a run's name in a bar's line is printed as it is."""
    err = io.StringIO()
    with redirect_stderr(err):
        reporter = report.Reporter()
        with reporter.training("mine[/]", 1) as on_epoch:
            on_epoch(1, SimpleNamespace(loss=0.5, accuracy=None, val_accuracy=None))
        with reporter.grid("study", total=1) as advance:
            advance("seed42-[red]x")
    assert "mine[/]: 1/1 epochs" in err.getvalue() and "study 1/1 seed42-[red]x" in err.getvalue()


# ----------------------------------------------------------------------------- off a terminal

def test_training_off_a_terminal_prints_one_plain_line_per_bar_not_a_cut_bar():
    err = io.StringIO()
    with redirect_stderr(err):
        with report.Reporter().training("model A", 16) as on_epoch:
            for epoch in range(1, 17):
                on_epoch(epoch, SimpleNamespace(loss=0.25, accuracy=0.9, val_accuracy=0.875))
    lines = err.getvalue().splitlines()
    assert len(lines) == 1 and not any(mark in lines[0] for mark in BAR_MARKS), lines
    assert re.fullmatch(r"model A: 16/16 epochs, loss 0\.2500  acc 0\.9000  val_acc 0\.8750 \(\d+ s\)", lines[0])


def test_a_study_grid_off_a_terminal_prints_a_line_per_finished_run():
    err = io.StringIO()
    with redirect_stderr(err):
        with report.Reporter().grid("study", total=3, done=1) as advance:
            advance("seed43-transfer")
            advance("seed44-transfer")
    assert err.getvalue().splitlines() == ["study 2/3 seed43-transfer", "study 3/3 seed44-transfer"]


def test_a_failed_stage_off_a_terminal_prints_no_line_for_its_bar():
    err = io.StringIO()
    with redirect_stderr(err), pytest.raises(RuntimeError):
        with report.Reporter().training("model A", 4):
            raise RuntimeError("diverged")
    assert err.getvalue() == ""


def test_study_claims_in_a_pipe_keeps_each_note_on_one_line(unjudgeable):
    result = run_cli("study", "claims", unjudgeable)
    assert result.code == 0, result.err
    notes = [line for line in result.out.splitlines() if line.startswith("Not judged:")]
    assert len(notes) == 6 and all(line.endswith(").") for line in notes), result.out
    assert any(line.startswith("Exploratory verdicts by the rules") and line.endswith("'no evidence'.")
               for line in result.out.splitlines())


def test_a_narrow_tables_title_and_caption_are_not_folded_into_its_width(tiny_data, tmp_path):
    """`split` in a pipe: its table is 20 columns wide, its title and the data's path are not."""
    result = run_cli("split", "--run", tmp_path / "run", "--data-dir", tiny_data, "--no-verify", "--valid-size", "100",
                     "--b-train-size", "20")
    assert result.code == 0, result.err
    lines = result.out.splitlines()
    assert lines[0] == ("Split: task B is Sandal (class 5, label 0) vs Shirt (class 6, label 1); "
                        "task A is the other 8 classes")
    assert lines[-1] == f"data: {tiny_data}"


def test_contenders_redirected_to_a_file_is_not_padded(tmp_path):
    """`fmtransfer contenders > f`: every line as long as its text, no trailing spaces."""
    path = tmp_path / "f"
    with open(path, "w") as f:
        proc = subprocess.run([sys.executable, "-m", "fmtransfer.cli", "contenders"], stdout=f,
                              stderr=subprocess.PIPE, text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stderr
    text = path.read_text()
    assert "transfer" in text and len(text) < 20_000
    assert all(line == line.rstrip() for line in text.splitlines())
    assert not any(mark in text for mark in BAR_MARKS)


def test_study_claims_in_a_pipe_is_not_padded_to_the_consoles_width(bracketed):
    result = run_cli("study", "claims", *bracketed)
    assert result.code == 0, result.err
    assert all(line == line.rstrip() for line in result.out.splitlines())
    assert max(map(len, result.out.splitlines())) < 1000


# ----------------------------------------------------------------------------- --json with nothing to judge

def test_study_claims_json_with_nothing_judged_says_why_on_stderr(unjudgeable):
    result = run_cli("study", "claims", unjudgeable, "--json")
    assert result.code == 0
    assert json.loads(result.out) == []
    [line] = result.err_lines
    assert line.startswith(f"fmtransfer: note: no claim could be judged on {unjudgeable}: ")
    for claim in ("transfer-helps", "book-result-picked", "dense-poor-cnn-good", "gain-shrinks-with-data"):
        assert claim in line


def test_study_claims_json_with_a_claim_judged_adds_nothing_on_stderr(bracketed):
    result = run_cli("study", "claims", bracketed[0], "--json")
    assert result.code == 0 and result.err == ""
    assert [c["id"] for c in json.loads(result.out)][0] == "transfer-helps"


# ----------------------------------------------------------------------------- errors keep their reason

def _keras_model_whose_weights_do_not_fit(path):
    """A .keras file whose config says 7 units where its weights hold 4."""
    import keras

    model = keras.Sequential([keras.Input((28, 28)), keras.layers.Flatten(), keras.layers.Dense(4, name="d")])
    good = path.with_name("good.keras")
    model.save(good)
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(path, "w") as out:
        for item in src.infolist():
            data = src.read(item.filename)
            if item.filename == "config.json":
                config = json.loads(data)
                config["config"]["layers"][-1]["config"]["units"] = 7
                data = json.dumps(config).encode()
            out.writestr(item.filename, data)
    return path


def test_a_model_that_cannot_load_keeps_keras_reason_not_its_lead_in(tmp_path):
    from fmtransfer.models import load_model

    with pytest.raises(DataError) as caught:
        load_model(_keras_model_whose_weights_do_not_fit(tmp_path / "a.keras"))
    message = str(caught.value)
    assert "must match" in message and "value.shape=(784, 4)" in message  # Keras' reason, on its third line
    assert "[[" not in message and "\n" not in message  # not the weights it dumps after it
    assert message.endswith("); give a complete model file")


def test_reason_keeps_whole_sentences_and_drops_a_dumped_config():
    long = "The layer's settings do not match the file it was saved to, " + "and so on, " * 30 + "here."
    error = ValueError(f"Could not locate class 'Wibble'. Make sure custom classes are registered. {long} "
                       "Full object config: {'module': 'mine', 'class_name': 'Wibble',\n  'config': {'units': 4}}")
    assert reason(error) == "Could not locate class 'Wibble'. Make sure custom classes are registered."
    assert reason(ValueError("")) == "ValueError"
    assert reason(OSError("Unable to open file (file signature not found)")) == \
        "Unable to open file (file signature not found)"


def test_an_unexpected_error_keeps_its_reason_on_one_line(monkeypatch):
    from fmtransfer import cli

    def broken():
        raise RuntimeError("Something failed for object <Thing a=1>:\n\nThe reason is here. Object: <Thing\n  a=1>")

    with pytest.raises(SystemExit):
        err = io.StringIO()
        with redirect_stderr(err):
            cli.execute(lambda: broken(), as_json=False, verbose=False, run_path=REPO)
    assert err.getvalue() == ("fmtransfer: error: RuntimeError: Something failed for object <Thing a=1>: The reason "
                              "is here. (rerun with --verbose for the traceback)\n")
