"""The tools Keras users already use: TensorBoard event files (`--tensorboard DIR` on `run`, the
stages and `study`), read back with TensorFlow's own reader; `fmtransfer curves RUN_DIR`, a PNG of
every model's learning curves; and `study export DIR --csv FILE`, one tidy row per run, read back
with Python's csv module (and pandas where it is installed)."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest

from conftest import assert_usage_error, run_cli
from fmtransfer import tensorboard
from fmtransfer.study import Axis, declare, declared, withdraw
from studyfiles import write_study

PNG = b"\x89PNG\r\n\x1a\n"
TINY = ["--no-verify", "--valid-size", "100", "--hidden", "16,8", "--a-epochs", "1"]
TINY_RUN = [*TINY, "--b-train-size", "20", "--b-epochs", "2", "--freeze-epochs", "1", "--fine-tune-epochs", "1"]
TINY_STUDY = [*TINY, "--b-epochs", "1", "--freeze-epochs", "1", "--fine-tune-epochs", "1", "--seeds", "2",
              "--b-train-sizes", "20", "--contenders", "transfer", "--no-plots"]


def events(folder: Path) -> list[tuple[int, str, str, object]]:
    """(step, tag, plugin, value) of every summary in `folder`'s event file, read with
    TensorFlow's own reader: a TFRecord file of `Event` protos."""
    import tensorflow as tf
    from tensorflow.core.util import event_pb2

    (path,) = folder.glob("events.out.tfevents.*")
    found = []
    for raw in tf.data.TFRecordDataset(str(path)):
        event = event_pb2.Event.FromString(raw.numpy())
        for v in event.summary.value:
            value = tf.make_ndarray(v.tensor)
            found.append((event.step, v.tag, v.metadata.plugin_data.plugin_name,
                          value.item().decode() if value.dtype == object else value.item()))
    return found


def scalars(folder: Path, tag: str) -> list[tuple[int, float]]:
    return [(step, value) for step, t, plugin, value in events(folder) if t == tag and plugin == "scalars"]


@pytest.fixture(scope="module")
def board_run(tiny_data, tmp_path_factory):
    """`run --tensorboard` on the tiny data: model A (1 epoch), the baseline (2), transfer (1 frozen
    + 1 fine-tuning)."""
    base = tmp_path_factory.mktemp("board-run")
    run, board = base / "run", base / "tb"
    result = run_cli("run", "--run", run, "--data-dir", tiny_data, *TINY_RUN, "--tensorboard", board, "--json")
    assert result.code == 0, result.err
    return run, board


@pytest.fixture(scope="module")
def studies(tiny_data, tmp_path_factory):
    """The same tiny study (2 seeds, 1 epoch each) twice: without and with --tensorboard."""
    base = tmp_path_factory.mktemp("board-study")
    made = {}
    for name, extra in (("plain", []), ("board", ["--tensorboard", base / "tb"])):
        result = run_cli("study", "--run", base / name, "--data-dir", tiny_data, *TINY_STUDY, *extra, "--json")
        assert result.code == 0, result.err
        made[name] = base / name
    return made["plain"], made["board"], base / "tb"


def lines(study_dir: Path) -> list[dict]:
    """Every results line of the study, all its files (a worker's own included), in run id order."""
    found = [json.loads(line) for path in study_dir.glob("results*.jsonl") for line in path.read_text().splitlines()]
    return sorted(found, key=lambda line: line["id"])


# ----------------------------------------------------------------------------- TensorBoard

def test_run_tensorboard_writes_one_run_per_model_with_its_json_history_per_epoch(board_run):
    run, board = board_run
    assert sorted(p.name for p in board.iterdir()) == ["baseline", "model_a", "transfer"]
    records = {"model_a": [{"name": "train", **json.loads((run / "model_a.json").read_text())}],
               "baseline": [{"name": "train", **json.loads((run / "baseline.json").read_text())}],
               "transfer": json.loads((run / "transfer_a.json").read_text())["phases"]}
    for name, phases in records.items():
        history = [(phase["name"], epoch) for phase in phases for epoch in phase["history"]]
        for tag in ("loss", "accuracy", "val_loss", "val_accuracy"):
            # float32 as TensorBoard's scalars are, steps counting epochs across the phases
            assert scalars(board / name, tag) == [(i, float(np.float32(e[tag]))) for i, (_, e) in
                                                  enumerate(history, 1)], (name, tag)
        texts = [(step, value) for step, tag, plugin, value in events(board / name)
                 if tag == "phase_name" and plugin == "text"]
        starts = [(i, p) for i, (p, _) in enumerate(history, 1) if i == 1 or history[i - 2][0] != p]
        assert texts == starts, name
    assert [v for _, v in scalars(board / "transfer", "phase")] == [0.0, 1.0]  # frozen, then fine-tuning
    assert [v for _, v in scalars(board / "transfer", "learning_rate")] == [pytest.approx(0.01), pytest.approx(1e-4)]


def test_writing_a_runs_events_again_replaces_them_rather_than_adding_a_second_file(board_run, tmp_path):
    run, _ = board_run
    again = tmp_path / "tb"
    tensorboard.write_run_dir(run, again)
    first = scalars(again / "transfer", "loss")
    tensorboard.write_run_dir(run, again)
    (only,) = (again / "transfer").iterdir()  # no second event file, no scratch folder left
    assert only.name.startswith("events.out.tfevents.")
    assert scalars(again / "transfer", "loss") == first


def test_a_pretrainings_steps_are_its_phases_and_a_contender_is_named_by_its_record(tmp_path):
    """Greedy pretraining's depths are phases, one after the other, as a contender's are; a
    record's file name does not name the run, its contender does."""
    def epochs(*losses):
        return [{"epoch": i, "loss": v, "val_loss": v + 1, "seconds": 0.1} for i, v in enumerate(losses, 1)]

    run = tmp_path / "run"
    run.mkdir()
    (run / "pretrain_greedy.json").write_text(json.dumps(
        {"steps": [{"name": "depth 1", "history": epochs(3.0, 2.0)}, {"name": "depth 2", "history": epochs(1.5)}]}))
    (run / "transfer_greedy.json").write_text(json.dumps(
        {"contender": "greedy", "phases": [{"name": "frozen", "learning_rate": 0.01, "history": epochs(0.7)},
                                           {"name": "fine-tune", "learning_rate": 0.001, "history": epochs(0.6)}]}))
    (run / "baseline.json").write_text("{not json")  # unreadable: left out, not fatal
    tensorboard.write_run_dir(run, tmp_path / "tb")
    assert sorted(p.name for p in (tmp_path / "tb").iterdir()) == ["greedy", "pretrain_greedy"]
    assert scalars(tmp_path / "tb" / "pretrain_greedy", "loss") == [(1, 3.0), (2, 2.0), (3, 1.5)]
    assert scalars(tmp_path / "tb" / "pretrain_greedy", "phase") == [(1, 0.0), (2, 0.0), (3, 1.0)]
    assert not scalars(tmp_path / "tb" / "pretrain_greedy", "seconds")  # wall time is no score
    assert scalars(tmp_path / "tb" / "greedy", "val_loss") == [(1, pytest.approx(1.7)), (2, pytest.approx(1.6))]


def test_a_stage_writes_the_run_directorys_models_too(board_run, tmp_path):
    """`compare --tensorboard` (the baseline is reused, nothing trains) writes every model the run
    directory holds, as `run` does."""
    run, board = board_run
    result = run_cli("compare", "--run", run, "--b-epochs", "2", "--tensorboard", tmp_path / "tb", "--json")
    assert result.code == 0, result.err
    for name in ("model_a", "baseline", "transfer"):
        assert scalars(tmp_path / "tb" / name, "val_loss") == scalars(board / name, "val_loss")


def test_tensorboard_at_a_file_is_refused_in_one_line_before_anything_trains(tiny_data, tmp_path):
    target = tmp_path / "taken"
    target.write_text("not a folder")
    result = run_cli("run", "--run", tmp_path / "run", "--data-dir", tiny_data, *TINY_RUN, "--tensorboard", target)
    assert_usage_error(result, str(target), "folder")
    assert not (tmp_path / "run" / "model_a.json").exists()
    assert target.read_text() == "not a folder"


def test_study_tensorboard_names_each_run_by_cell_and_seed_and_changes_no_number(studies):
    plain, with_board, board = studies
    cell = board / "pair5v6-n20-reuseall-book"
    assert [p.name for p in board.iterdir()] == [cell.name]
    assert sorted(p.name for p in cell.iterdir()) == ["seed42", "seed43"]
    for seed in ("seed42", "seed43"):
        assert sorted(p.name for p in (cell / seed).iterdir()) == ["baseline", "model_a", "transfer"]
        assert [step for step, _ in scalars(cell / seed / "transfer", "val_accuracy")] == [1, 2]
        assert [v for _, tag, _, v in events(cell / seed / "transfer") if tag == "phase_name"] == ["frozen", "fine-tune"]
        assert len(scalars(cell / seed / "baseline", "loss")) == 1
    # The events are an output: every results line, its fingerprint included, is as without them.
    timeless = [[{k: v for k, v in line.items() if k not in ("seconds", "finished")} for line in lines(d)]
                for d in (plain, with_board)]
    assert timeless[0] == timeless[1]


@pytest.mark.slow
def test_study_workers_write_their_seeds_events_side_by_side(studies, tiny_data, tmp_path):
    """--jobs 2: each worker process writes the folders of its own seeds; none is lost or doubled."""
    plain, _, _ = studies
    board = tmp_path / "tb"
    result = run_cli("study", "--run", tmp_path / "s", "--data-dir", tiny_data, *TINY_STUDY, "--jobs", "2",
                     "--tensorboard", board, "--json")
    assert result.code == 0, result.err
    cell = board / "pair5v6-n20-reuseall-book"
    for seed in ("seed42", "seed43"):
        for name in ("baseline", "model_a", "transfer"):
            (only,) = (cell / seed / name).iterdir()
            assert only.name.startswith("events.out.tfevents.")
        assert len(scalars(cell / seed / "transfer", "loss")) == 2
    timeless = [[{k: v for k, v in line.items() if k not in ("seconds", "finished")} for line in lines(d)]
                for d in (plain, tmp_path / "s")]
    assert timeless[0] == timeless[1]


# ----------------------------------------------------------------------------- curves

def test_curves_plots_every_model_of_a_run_directory_to_one_png(board_run, tmp_path):
    run, _ = board_run
    out = tmp_path / "curves.png"
    result = run_cli("curves", run, "--out", out, "--json")
    assert result.code == 0, result.err
    found = result.json()
    assert found["png"] == str(out)
    assert found["models"] == {"model_a": ["train"], "baseline": ["train"], "transfer": ["frozen", "fine-tune"]}
    assert out.read_bytes().startswith(PNG)
    default = run_cli("curves", run)
    assert default.code == 0, default.err
    assert (run / "curves.png").read_bytes().startswith(PNG)


@pytest.mark.parametrize("kind", ["missing", "empty"])
def test_curves_without_a_trained_run_directory_says_so_in_one_line(kind, tmp_path):
    run = tmp_path / "run"
    if kind == "empty":
        run.mkdir()
    assert_usage_error(run_cli("curves", run), str(run))
    assert not (run / "curves.png").exists()


def test_curves_without_matplotlib_names_the_plot_extra(board_run, monkeypatch, tmp_path):
    import sys

    for name in ("matplotlib", "matplotlib.figure"):
        monkeypatch.setitem(sys.modules, name, None)  # `import matplotlib.figure` now fails
    run, _ = board_run
    assert_usage_error(run_cli("curves", run, "--out", tmp_path / "c.png"), "fmtransfer[plot]")
    assert not (tmp_path / "c.png").exists()


# ----------------------------------------------------------------------------- study export

def read_csv(text: str) -> tuple[list[str], list[dict]]:
    reader = csv.DictReader(io.StringIO(text))
    return list(reader.fieldnames or []), list(reader)


def test_export_writes_one_tidy_row_per_run_with_every_axis_and_score(tmp_path):
    study = write_study(tmp_path / "s", {"transfer": 0.01, "reinit": 0.0}, seeds=range(42, 45), sizes=(20, 50),
                        draws=[0, 1])
    out = tmp_path / "runs.csv"
    result = run_cli("study", "export", study, "--csv", out)
    assert result.code == 0, result.err
    header, rows = read_csv(out.read_text())
    expected = lines(study)
    assert len(rows) == len(expected) == 3 * 2 * 2 * 2
    assert header[:len(declared()) + 1] == ["id", *[a.name for a in declared()]]
    for column in ("contender", "test_accuracy", "baseline_test_accuracy", "gain"):
        assert column in header
    by_id = {row["id"]: row for row in rows}
    for line in expected:
        row = by_id[line["id"]]
        assert (int(row["seed"]), row["pair"], int(row["b_train_size"]), row["data_seed"]) == \
               (line["seed"], "5:6", line["b_train_size"], str(line["data_seed"]))
        assert (row["reuse_layers"], row["preset"], row["contender"]) == ("all", "book", line["contender"])
        assert float(row["test_accuracy"]) == line["result"]["test_accuracy"]
        assert float(row["baseline_test_accuracy"]) == line["baseline"]["test_accuracy"]
        assert float(row["gain"]) == pytest.approx(line["result"]["test_accuracy"] - line["baseline"]["test_accuracy"])
    assert all(len(row) == len(header) and None not in row for row in rows)  # one value per cell, every row
    try:
        import pandas
    except ImportError:
        return
    frame = pandas.read_csv(out)
    assert frame.shape == (len(rows), len(header))
    assert frame["gain"].tolist() == pytest.approx([float(r["gain"]) for r in rows])


def test_export_of_a_real_study_carries_its_fingerprints_times_and_data_hashes(studies, tmp_path):
    plain, _, _ = studies
    out = tmp_path / "runs.csv"
    assert run_cli("study", "export", plain, "--csv", out).code == 0
    header, rows = read_csv(out.read_text())
    hashes = json.loads((plain / "study.json").read_text())["dataset"]["sha256"]
    expected = {line["id"]: line for line in lines(plain)}
    assert len(rows) == len(expected) == 2
    for row in rows:
        line = expected[row["id"]]
        assert row["fingerprint"] == line["fingerprint"]
        assert row["settings_fingerprint"] == line["settings"]
        assert row["b_indices_sha256"] == line["b_indices_sha256"]
        assert row["built_on_model_a_fingerprint"] == line["built_on"]["model_a"]["fingerprint"]
        assert float(row["test_loss"]) == line["result"]["test_loss"]
        assert float(row["seconds_contender"]) == line["seconds"]["contender"]
        assert (float(row["frozen_learning_rate"]), float(row["fine_tune_learning_rate"])) == tuple(line["learning_rates"])
        assert {name: row[f"sha256_{name}"] for name in hashes} == hashes
    to_stdout = run_cli("study", "export", plain, "--csv", "-")
    assert to_stdout.code == 0 and to_stdout.out == out.read_text()


def test_an_axis_declared_later_is_a_column_of_the_export_without_an_edit(tmp_path):
    declare(Axis("warmup", source=lambda cfg: (0,), sets=lambda v: {}, id=lambda v: "", missing=0,
                 valid=lambda v: isinstance(v, int)))
    try:
        study = write_study(tmp_path / "s", {"transfer": 0.01}, seeds=range(42, 44))
        header, rows = read_csv(run_cli("study", "export", study, "--csv", "-").out)
    finally:
        withdraw("warmup")
    assert "warmup" in header and [row["warmup"] for row in rows] == ["0", "0"]


def test_export_of_no_study_is_refused_in_one_line(tmp_path):
    out = tmp_path / "runs.csv"
    assert_usage_error(run_cli("study", "export", tmp_path / "nothing", "--csv", out), str(tmp_path / "nothing"))
    assert not out.exists()
