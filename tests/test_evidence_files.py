"""A study's evidence is never destroyed or misread through a name a user or a record gives
(issue 28, classes 1 and 2).

Written: a file a user names for output (`study report --html FILE`) is refused, in one line with
exit 2, when it is a study's own file or lies anywhere inside a study, or is a folder, a FIFO or a
device; a symbolic link is written through (the file it names replaced, the link kept), and
refused where that file is refused. Every atomic write refuses a target that is not a file, and
replaces a link in a run directory by the file; no stage writes into a study.

Read: a predictions path in a results line names a regular file inside STUDY/predictions and
is read only up to the size the line declares; anything else reads as no predictions, at once.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys

import pytest

from conftest import REPO, run_cli
from fmtransfer import study as studies
from fmtransfer.errors import DataError
from fmtransfer.io import read_bounded
from fmtransfer.study import records


@pytest.fixture
def study(tiny_study, tmp_path):
    """A copy of the session's finished tiny study (8 runs, with stored predictions) to spoil."""
    return shutil.copytree(tiny_study, tmp_path / "study")


def _digests(folder):
    return {str(p.relative_to(folder)): (os.path.islink(p), p.is_file() and hashlib.sha256(p.read_bytes()).hexdigest())
            for p in sorted(folder.rglob("*")) if not p.name.startswith(".lock")}


def _html_refused(result, *names):
    """Exit 2 and one stderr line for --html naming each of `names`; the report itself was
    printed first, as for any --html that cannot be written."""
    assert result.code == 2, (result.code, result.err)
    assert "Traceback" not in result.err
    (line,) = result.err_lines
    assert line.startswith("fmtransfer: error: option --html:"), line
    for name in names:
        assert str(name) in line, (name, line)
    return line


# ----------------------------------------------------------------------------- written: class 1

def test_html_over_the_studys_own_results_is_refused_and_every_run_still_reports(study):
    before = _digests(study)
    result = run_cli("study", "report", study, "--no-plots", "--html", study / "results.jsonl")
    _html_refused(result, study / "results.jsonl")
    assert _digests(study) == before
    again = run_cli("study", "report", study, "--no-plots", "--json")
    assert again.code == 0 and again.json()["runs_finished"] == again.json()["runs_in_grid"] == 8


def test_html_anywhere_inside_a_study_even_a_new_file_or_another_studys_is_refused(study, tiny_study, tmp_path):
    before = _digests(study)
    for target in (study / "report.html", study / "predictions" / "page.html", tiny_study / "report.html"):
        _html_refused(run_cli("study", "report", study, "--no-plots", "--html", target), target)
        assert not target.exists()
    assert _digests(study) == before


def test_every_output_option_goes_through_the_same_guard(study, tiny_data, tmp_path):
    """--csv, --out and --tensorboard are refused over or inside the study or run directory they
    read, as --html is, in one line naming the target; nothing there changes."""
    before = _digests(study)
    for target in (study / "results.jsonl", study / "export.csv"):
        result = run_cli("study", "export", study, "--csv", target)
        assert result.code == 2 and "Traceback" not in result.err
        (line,) = result.err_lines
        assert str(target) in line and "outside that folder" in line
    refused = run_cli("study", "--run", tmp_path / "other", "--tensorboard", study / "events", "--seeds", "1",
                      "--data-dir", tiny_data, "--no-verify", "--valid-size", "100", "--b-train-sizes", "20")
    assert refused.code == 2 and "Traceback" not in refused.err
    (line,) = refused.err_lines
    assert f"inside the study {study}" in line and not (tmp_path / "other").exists()
    assert _digests(study) == before

    run = tmp_path / "run"
    made = run_cli("run", "--run", run, "--data-dir", tiny_data, "--no-verify", "--valid-size", "100",
                   "--b-train-size", "20", "--a-epochs", "1", "--b-epochs", "1", "--freeze-epochs", "1",
                   "--fine-tune-epochs", "1")
    assert made.code == 0, made.err
    records = _digests(run)
    result = run_cli("curves", run, "--out", run / "model_a.json")
    assert result.code == 2 and "Traceback" not in result.err and str(run / "model_a.json") in result.err
    assert _digests(run) == records


def test_html_onto_a_link_is_written_through_and_the_link_kept(study, tmp_path):
    page, link = tmp_path / "shared" / "page.html", tmp_path / "page-link.html"
    page.parent.mkdir()
    page.write_text("an older page")
    link.symlink_to(page)
    result = run_cli("study", "report", study, "--no-plots", "--html", link)
    assert result.code == 0, result.err
    assert link.is_symlink() and os.readlink(link) == str(page)
    assert page.read_text().startswith("<!DOCTYPE html>")


def test_html_onto_a_link_into_the_study_is_refused_and_link_and_study_kept(study, tmp_path):
    link = tmp_path / "innocent.html"
    link.symlink_to(study / "study.json")
    before = _digests(study)
    _html_refused(run_cli("study", "report", study, "--no-plots", "--html", link), link, study / "study.json")
    assert link.is_symlink() and _digests(study) == before


@pytest.mark.parametrize("kind", ["folder", "fifo", "device"])
def test_html_onto_what_is_not_a_file_is_refused_in_one_line(study, tmp_path, kind):
    if kind == "folder":
        target = tmp_path / "pages"
        target.mkdir()
    elif kind == "fifo":
        target = tmp_path / "pipe"
        os.mkfifo(target)
    else:
        target = tmp_path / "null-link"
        target.symlink_to(os.devnull)
    line = _html_refused(run_cli("study", "report", study, "--no-plots", "--html", target), target)
    assert {"folder": "a folder", "fifo": "a FIFO", "device": "a device"}[kind] in line
    assert os.path.exists(os.devnull) and not any(tmp_path.glob(".*tmp*"))
    if kind == "fifo":
        import stat

        assert stat.S_ISFIFO(os.stat(target).st_mode)


def test_a_stage_whose_output_file_is_a_folder_is_refused_in_one_line(tiny_data, tmp_path):
    """Every artifact goes through the same atomic writer: a folder in place of split.json is
    named, not a traceback of the rename."""
    (tmp_path / "split.json").mkdir()
    result = run_cli("split", "--run", tmp_path, "--data-dir", tiny_data, "--no-verify", "--valid-size", "100",
                     "--b-train-size", "20")
    assert result.code == 2 and "Traceback" not in result.err and "IsADirectoryError" not in result.err
    (line,) = result.err_lines
    assert "split.json is a folder" in line and (tmp_path / "split.json").is_dir()


# ----------------------------------------------------------------------------- read: class 2

def _first_with_predictions(study):
    runs = studies.load_records(study)
    (run, *_) = [r for r in runs if records.load_predictions(study, r) is not None]
    return run


def _pointing(run, part, path, **more):
    d = run.to_dict()
    d["predictions"] = {**d["predictions"], part: {**d["predictions"][part], "path": str(path), **more}}
    return studies.RunRecord.from_dict(d)


def _refused(study, run, why: str) -> None:
    """Loading `run`'s predictions is one DataError naming the file, the run and `why`."""
    with pytest.raises(DataError) as e:
        records.load_predictions(study, run)
    assert why in str(e.value) and run.id in str(e.value) and len(str(e.value).splitlines()) == 1


def test_a_predictions_path_outside_the_study_is_never_read(study, tmp_path):
    """The same bytes (same SHA-256) outside the study are not this study's predictions: an
    absolute path, a `..` path and a link from the predictions folder out are each named, never
    read, and never a run quietly left without predictions."""
    run = _first_with_predictions(study)
    inside = study / run.predictions["result"]["path"]
    outside = tmp_path / "elsewhere" / inside.name
    outside.parent.mkdir()
    shutil.copy(inside, outside)
    _refused(study, _pointing(run, "result", outside), "lies outside")  # absolute
    _refused(study, _pointing(run, "result", f"predictions/../../elsewhere/{inside.name}"), "lies outside")
    inside.unlink()
    inside.symlink_to(outside)
    _refused(study, run, "lies outside")
    inside.unlink()
    outside.rename(inside)  # back where it belongs, a regular file: read again
    assert records.load_predictions(study, run) is not None


def test_a_predictions_file_is_read_only_up_to_the_size_its_line_declares(study, tmp_path):
    run = _first_with_predictions(study)
    ref = run.predictions["result"]
    size = (study / ref["path"]).stat().st_size
    assert ref["bytes"] == size  # what the runner records
    _refused(study, _pointing(run, "result", ref["path"], bytes=size - 1), f"longer than the {size - 1:,} bytes")
    big = tmp_path / "big"
    big.write_bytes(b"x" * 4096)
    with pytest.raises(ValueError, match="longer than the 4,095 bytes"):
        read_bounded(big, tmp_path, 4095)
    assert read_bounded(big, tmp_path, 4096) == b"x" * 4096
    # A line written before lines had a size is still read, up to a bound.
    older = _pointing(run, "result", ref["path"])
    older = studies.RunRecord.from_dict({**older.to_dict(), "predictions": {
        k: {f: v for f, v in r.items() if f != "bytes"} for k, r in older.predictions.items()}})
    assert records.load_predictions(study, older) is not None


def _cli(*args):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "fmtransfer.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=120, env=env)


def test_a_fifo_or_a_folder_in_place_of_a_predictions_file_never_hangs_report_or_claims(study):
    run = _first_with_predictions(study)
    fifo, folder = study / run.predictions["result"]["path"], study / run.predictions["baseline"]["path"]
    fifo.unlink()
    os.mkfifo(fifo)  # nothing ever writes to it: reading it would wait for ever
    folder.unlink()
    folder.mkdir()
    for args in (["study", "report", study, "--no-plots", "--json"], ["study", "claims", study, "--json"]):
        done = _cli(*args)  # a hang fails here, after the timeout, rather than hanging the suite
        assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
        (line,) = done.stderr.strip().splitlines()
        assert "is not a regular file" in line and run.id in line
    _refused(study, run, "is not a regular file")


def test_a_results_file_that_is_a_fifo_is_named_in_one_line_not_waited_on(study):
    """The results files are found by name, not by a record, but are read as blindly: a FIFO
    named results.jsonl is refused, exit 2, by every command that reads the study."""
    (study / "results.jsonl").rename(study / "kept.jsonl.txt")
    os.mkfifo(study / "results.jsonl")
    for args in (["study", "report", study, "--no-plots"], ["study", "claims", study]):
        done = _cli(*args)
        assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
        (line,) = done.stderr.strip().splitlines()
        assert "results.jsonl is a FIFO" in line


def test_a_stage_never_writes_into_a_study_or_a_folder_inside_it(study, tiny_data):
    before = _digests(study)
    for run in (study, study / "models" / "mine"):
        result = run_cli("split", "--run", run, "--data-dir", tiny_data, "--no-verify", "--valid-size", "100",
                         "--b-train-size", "20")
        assert result.code == 2 and "Traceback" not in result.err
        (line,) = result.err_lines
        assert f"{run} is" in line and str(study) in line and "run directory of its own" in line
    assert _digests(study) == before and not (study / "models" / "mine").exists()


def test_a_link_where_a_stage_writes_its_own_file_is_replaced_not_written_through(tiny_data, tmp_path):
    """A file the user names is written through a link; a run directory's own file is not, so
    the directory never writes outside itself."""
    run, outside = tmp_path / "run", tmp_path / "elsewhere.json"
    run.mkdir()
    outside.write_text("not fmtransfer's")
    (run / "split.json").symlink_to(outside)
    result = run_cli("split", "--run", run, "--data-dir", tiny_data, "--no-verify", "--valid-size", "100",
                     "--b-train-size", "20")
    assert result.code == 0, result.err
    assert outside.read_text() == "not fmtransfer's"
    assert not (run / "split.json").is_symlink() and json.loads((run / "split.json").read_text())
