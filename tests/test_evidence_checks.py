"""Evidence is checked before it is used: a study's records against their stored predictions,
the studies pooled into one judgement against each other, and every study docs/study/generate.py
is given against the study its name stands for. A contradiction is one line naming the file and
the run; nothing is dropped silently, and nothing on disk is changed by a refusal."""

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from fmtransfer.errors import DataError, UsageError
from fmtransfer.study import claims, records, report
from studyfiles import write_study

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = ROOT / "docs" / "study" / "records"
EDITED = "seed46-pair5v6-n200-draw4-reuseall-book-reinit"  # its predictions give 0.993


def slice_of(name: str, dest: Path, keep) -> Path:
    """A committed study cut down to the lines `keep` takes, with their predictions files."""
    dest.mkdir(parents=True)
    shutil.copy2(COMMITTED / name / "study.json", dest / "study.json")
    lines = [json.loads(line) for f in sorted((COMMITTED / name).glob("results*.jsonl"))
             for line in f.read_text().splitlines() if line.strip()]
    kept = [line for line in lines if keep(line)]
    (dest / "results.jsonl").write_text("".join(json.dumps(line) + "\n" for line in kept))
    (dest / "predictions").mkdir()
    for line in kept:
        for ref in (line.get("predictions") or {}).values():
            shutil.copy2(COMMITTED / name / ref["path"], dest / ref["path"])
    return dest


@pytest.fixture
def study(tmp_path):
    """Ten runs of the cnn study with stored predictions: reinit, book rates, the fifth draw."""
    return slice_of("cnn-draws", tmp_path / "study", lambda r: (r["contender"], r["preset"], r["data_seed"])
                    == ("reinit", "book", 4))


def lines_of(study: Path) -> list[dict]:
    return [json.loads(line) for line in (study / "results.jsonl").read_text().splitlines()]


def rewrite(study: Path, lines: list[dict]) -> None:
    (study / "results.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))


def predictions_file(study: Path, run_id: str, part: str = "result") -> Path:
    (line,) = [line for line in lines_of(study) if line["id"] == run_id]
    return study / line["predictions"][part]["path"]


def assert_one_line_naming(text: str, *names) -> None:
    assert "Traceback" not in text and len(text.strip().splitlines()) == 1, text
    for name in names:
        assert str(name) in text, (name, text)


def test_the_untouched_slice_reports_every_run_with_its_test_images(study):
    cell = report(study).cell("reinit")
    assert cell.n == 10 and cell.test_images["runs"] == 10 and len(cell.mcnemar) == 10


def test_a_record_whose_accuracy_contradicts_its_predictions_is_refused_naming_file_and_run(study, cli):
    lines = lines_of(study)
    (edited,) = [line for line in lines if line["id"] == EDITED]
    assert edited["result"]["test_accuracy"] == 0.993
    edited["result"]["test_accuracy"] = 0.999
    rewrite(study, lines)
    with pytest.raises(DataError) as e:
        report(study)
    assert_one_line_naming(str(e.value), study / "results.jsonl", EDITED, "0.999", "0.993")
    for command in (["study", "report", study], ["study", "claims", study]):
        result = cli(*command)
        assert result.code == 2 and result.out == ""
        assert_one_line_naming(result.err, study / "results.jsonl", EDITED)


def test_an_edited_baseline_accuracy_is_refused_too(study):
    lines = lines_of(study)
    lines[3]["baseline"]["test_accuracy"] = round(lines[3]["baseline"]["test_accuracy"] - 0.01, 3)
    rewrite(study, lines)
    with pytest.raises(DataError, match="baseline test accuracy") as e:
        report(study)
    assert lines[3]["id"] in str(e.value)


def _truncate(path: Path, study: Path) -> None:
    path.write_bytes(path.read_bytes()[:-100])


def _swap(path: Path, study: Path) -> None:
    other = next(p for p in (study / "predictions").iterdir() if p != path and not p.name.startswith("baseline"))
    path.write_bytes(other.read_bytes())


def _edit(path: Path, study: Path) -> None:
    raw = bytearray(path.read_bytes())
    raw[-1] ^= 1  # one image's probability moved by 1/255: its class, and the accuracy, unchanged
    path.write_bytes(bytes(raw))


def _delete(path: Path, study: Path) -> None:
    path.unlink()


@pytest.mark.parametrize("spoil, says", [(_truncate, "truncated"), (_swap, "holds the predictions of"),
                                         (_edit, "SHA-256"), (_delete, "cannot be read")],
                         ids=["truncated", "swapped", "digest-mismatch", "missing"])
def test_a_bad_predictions_file_is_a_named_error_not_a_silent_gap(study, cli, spoil, says):
    path = predictions_file(study, EDITED)
    spoil(path, study)
    with pytest.raises(DataError, match=says) as e:
        report(study)
    assert_one_line_naming(str(e.value), path, EDITED, study / "results.jsonl")
    result = cli("study", "report", study, "--markdown")
    assert result.code == 2 and "runs with stored predictions" not in result.out
    assert_one_line_naming(result.err, path, EDITED)


def test_another_groups_baseline_file_under_a_runs_name_is_refused(study):
    mine = predictions_file(study, EDITED, "baseline")
    other = next(p for p in (study / "predictions").glob("baseline-*") if p != mine)
    mine.write_bytes(other.read_bytes())
    with pytest.raises(DataError, match=f"holds the predictions of 'baseline of {other.stem[9:]}'"):
        report(study)


def test_a_line_without_predictions_is_a_run_without_them_and_the_report_says_so(study):
    lines = lines_of(study)
    del lines[0]["predictions"]  # a run of fmtransfer 0.5, or one whose model diverged
    rewrite(study, lines)
    from fmtransfer.study.reporting import markdown

    cell = report(study).cell("reinit")
    assert cell.test_images["runs"] == 9 and cell.test_images["of"] == 10 and cell.mcnemar is None
    assert "from the 9 of 10 runs with stored predictions" in markdown(report(study))


# ----------------------------------------------------------------------------- pooled studies

def with_dataset(directory: Path, sha256: dict) -> Path:
    meta = json.loads((directory / "study.json").read_text())
    (directory / "study.json").write_text(json.dumps({**meta, "dataset": {"sha256": sha256, "verify_checksums": True}}))
    return directory


FASHION = json.loads((COMMITTED / "study-book" / "study.json").read_text())["dataset"]["sha256"]


def test_claims_refuse_to_pool_a_study_made_on_other_data(tmp_path, cli):
    fashion = with_dataset(write_study(tmp_path / "fashion", {"transfer": 0.01}), FASHION)
    digits = with_dataset(write_study(tmp_path / "digits", {"transfer": 0.01}, rng_seed=1),
                          {**FASHION, "train-images-idx3-ubyte.gz": "0" * 64})
    with pytest.raises(UsageError, match="other data") as e:
        claims.judge([fashion, digits])
    assert_one_line_naming(str(e.value), fashion, digits, "train-images-idx3-ubyte.gz")
    result = cli("study", "claims", fashion, digits)
    assert result.code == 2 and result.out == ""
    assert_one_line_naming(result.err, fashion, digits)
    assert claims.judge([fashion, with_dataset(digits, FASHION)]).claims  # the same data: judged


def test_claims_refuse_one_study_given_twice_by_path_or_as_a_copy(tmp_path, cli):
    one = with_dataset(write_study(tmp_path / "one", {"transfer": 0.01}), FASHION)
    copy = shutil.copytree(one, tmp_path / "copy")
    for given, says in (([one, tmp_path / "." / "one"], "given twice"), ([one, copy], "holds every run of")):
        with pytest.raises(UsageError, match=says):
            claims.judge(given)
        result = cli("study", "claims", *given)
        assert result.code == 2
        assert_one_line_naming(result.err, one)


def test_claims_pool_two_studies_that_share_some_runs_but_are_distinct():
    """The committed dense leaderboard reran 60 of study-book-draws' runs: distinct studies."""
    records.check_pooled([COMMITTED / "study-book-draws", COMMITTED / "leaderboard-dense-draws"])


# ----------------------------------------------------------------------------- docs/study/generate.py

@pytest.fixture
def repo(tmp_path):
    """A copy of the repository's findings machinery with one committed study, study-book."""
    root = tmp_path / "repo"
    (root / "docs" / "study" / "records").mkdir(parents=True)
    (root / "configs").mkdir()
    shutil.copy2(ROOT / "docs" / "study" / "generate.py", root / "docs" / "study" / "generate.py")
    shutil.copy2(ROOT / "configs" / "book.toml", root / "configs" / "book.toml")
    shutil.copy2(ROOT / "README.md", root / "README.md")
    shutil.copytree(COMMITTED / "study-book", root / "docs" / "study" / "records" / "study-book")
    return root


def generate(repo: Path, *args) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MPLBACKEND": "Agg"}
    return subprocess.run([sys.executable, "docs/study/generate.py", *map(str, args)], cwd=repo, env=env,
                          capture_output=True, text=True, timeout=600)


def snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def quick_dense(directory: Path) -> Path:
    """A 3-seed dense study of quick settings: not the cnn study, whatever it is named."""
    return write_study(directory, {"transfer": 0.05}, seeds=range(42, 45), draws=[0, 1, 2],
                       config={"train_a.epochs": 2, "baseline.epochs": 5})


def rerun_of_study_book(directory: Path) -> Path:
    """study-book as another session would have rerun it: the same runs, finished at other times."""
    shutil.copytree(COMMITTED / "study-book", directory, ignore=shutil.ignore_patterns("plots"))
    lines = lines_of(directory)
    rewrite(directory, [{**line, "finished": "2027-01-01T00:00:00"} for line in lines])
    return directory


def test_generate_refuses_to_copy_a_study_over_itself_and_deletes_nothing(repo):
    before = snapshot(repo)
    done = generate(repo, "--from", "study-book=docs/study/records/study-book")
    assert done.returncode == 2
    assert_one_line_naming(done.stderr, "docs/study/records/study-book", "--from")
    assert snapshot(repo) == before


def test_generate_refuses_a_study_whose_grid_is_not_the_one_its_name_stands_for(repo, tmp_path):
    before = snapshot(repo)
    quick = quick_dense(tmp_path / "quick")
    done = generate(repo, "--from", f"cnn-draws={quick}")
    assert done.returncode == 2
    assert_one_line_naming(done.stderr, quick, "not the cnn-draws study", "model.arch")
    assert snapshot(repo) == before


def test_generate_checks_every_source_before_applying_any(repo, tmp_path):
    good, bad = rerun_of_study_book(tmp_path / "rerun"), quick_dense(tmp_path / "quick")
    before = snapshot(repo)
    done = generate(repo, "--from", f"study-book={good}", "--from", f"cnn-draws={bad}")
    assert done.returncode == 2 and "cnn-draws" in done.stderr
    assert snapshot(repo) == before


def test_generate_refuses_a_source_whose_records_contradict_its_predictions(repo, tmp_path):
    source = shutil.copytree(COMMITTED / "cnn-draws", tmp_path / "cnn", ignore=shutil.ignore_patterns("plots"))
    lines = lines_of(source)
    (edited,) = [line for line in lines if line["id"] == EDITED]
    edited["result"]["test_accuracy"] = 0.999
    rewrite(source, lines)
    before = snapshot(repo)
    done = generate(repo, "--from", f"cnn-draws={source}")
    assert done.returncode == 2
    assert_one_line_naming(done.stderr, source / "results.jsonl", EDITED, "0.999")
    assert snapshot(repo) == before


def test_generate_refuses_a_source_with_lines_that_are_no_runs_of_its_study(repo, tmp_path):
    source = rerun_of_study_book(tmp_path / "rerun")
    lines = lines_of(source)
    lines[0]["fingerprint"] = "0" * 16  # made with other settings or data than its study.json says
    rewrite(source, lines)
    before = snapshot(repo)
    done = generate(repo, "--from", f"study-book={source}")
    assert done.returncode == 2
    assert_one_line_naming(done.stderr, source, "not runs of its study", "1 made with other settings")
    assert snapshot(repo) == before


def test_generate_refuses_an_unfinished_study(repo, tmp_path):
    source = rerun_of_study_book(tmp_path / "rerun")
    rewrite(source, lines_of(source)[:-1])
    done = generate(repo, "--from", f"study-book={source}")
    assert done.returncode == 2
    assert_one_line_naming(done.stderr, "179 of the 180 runs")


def test_generate_installs_a_checked_source_whole_and_regenerates_from_it(repo, tmp_path):
    source = rerun_of_study_book(tmp_path / "rerun")
    done = generate(repo, "--from", f"study-book={source}")
    assert done.returncode == 0, done.stderr
    installed = repo / "docs" / "study" / "records" / "study-book"
    assert (installed / "results.jsonl").read_bytes() == (source / "results.jsonl").read_bytes()
    assert sorted(p.name for p in installed.parent.iterdir()) == ["study-book"]  # no folder left half-made
    assert json.loads((repo / "docs" / "study" / "report-study-book.json").read_text())["runs_finished"] == 180
    assert (repo / "docs" / "study" / "claims.json").is_file() and (repo / "docs" / "findings.md").is_file()


def test_each_committed_study_is_the_grid_its_name_stands_for():
    """generate.py's declaration of each name is what its committed study.json holds: a rerun of
    the command shown is accepted, and a study of any other grid refused."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("generate_names", ROOT / "docs" / "study" / "generate.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["generate_names"] = module
    spec.loader.exec_module(module)
    for s in module.committed():
        meta = json.loads((COMMITTED / s.name / "study.json").read_text())
        assert module._grid(records.config_from(meta["config"])) == module._grid(module.expected(s)), s.name
