"""The study's grid axes, each declared once, and its typed run records.

Run ids and results lines are what committed studies and users' directories hold: they keep
their form to the byte. A new axis is one declaration, and reaches the run ids, the runs'
configs, the results lines and the report's cells.
"""

import io
import json

import pytest

from conftest import REPO, tiny_settings
from fmtransfer import study as studies
from fmtransfer.config import Config
from fmtransfer.study.records import _normalised


# ----------------------------------------------------------------------------- today's axes

def test_run_ids_keep_their_form():
    cfg = Config().replace(**{"study.seeds": [42, 43], "study.reuse_layers": [1, "all"],
                              "study.presets": ["book", "notebook"]})
    ids = [k.id for k in studies.grid(cfg)]
    assert ids[:2] == ["seed42-pair5v6-n200-reuse1-book", "seed42-pair5v6-n200-reuse1-notebook"]
    assert ids[-1] == "seed43-pair5v6-n200-reuseall-notebook" and len(ids) == 8
    key = studies.RunKey.at(seed=42, pair=(5, 6), b_train_size=200, reuse_layers="all", preset="book")
    assert key.run_id("transfer") == "seed42-pair5v6-n200-reuseall-book-transfer"
    assert (key.group, key.setting) == ((42, (5, 6)), ((5, 6), 200, "all", "book"))
    other = studies.RunKey.at(seed=1, pair=(0, 2), b_train_size=50, reuse_layers=1, preset="notebook")
    notebook = other.config(Config())
    assert (notebook.seed, notebook.data.b_classes, notebook.data.b_train_size, notebook.transfer.reuse_layers) == \
        (1, (0, 2), 50, 1)
    assert (notebook.transfer.frozen_learning_rate, notebook.transfer.fine_tune_learning_rate) == (1e-3, 1e-3)


def test_the_books_grid_point_is_the_default_configs():
    point = studies.grid(Config())[0].cell_point
    assert point == {k: list(v) if isinstance(v, tuple) else v for k, v in studies.BOOK.items() if k in point}


# The reports of 0.4, made before the verdict statistics; those docs/study/generate.py writes from
# committed records (docs/study/records/NAME) have them all, and tests/test_findings.py checks those.
OLD_REPORTS = sorted(p.name for p in (REPO / "docs" / "study").glob("report-leaderboard*.json")
                     if not (REPO / "docs" / "study" / "records" / p.stem.removeprefix("report-")).is_dir())


@pytest.mark.parametrize("name", OLD_REPORTS)
def test_committed_reports_cells_read_back_to_the_same_json(name):
    """The cells of docs/study's reports, through `Cell` and back: the same keys and values, in the
    same order, then the statistics added since at their defaults (a report made before them
    says nothing of them)."""
    report = json.loads((REPO / "docs" / "study" / name).read_text())
    for cell in report["cells"]:
        again = studies.Cell(**cell).to_dict()
        assert {k: again[k] for k in cell} == cell and list(again)[:len(cell)] == list(cell)
        added = {k: v for k, v in again.items() if k not in cell}
        assert {"design", "p_wilcoxon", "p_max_t", "superiority", "mde_points", "equivalence", "in_best_set"} <= set(added)
        assert added["design"] == "paired" and all(added[k] is None for k in ("p_max_t", "equivalence", "mcnemar"))
    shown = _text(studies.table(report))
    first = report["cells"][0]
    # One block per setting, headed by its grid point in words.
    assert f"Classes {first['pair'][0]} vs {first['pair'][1]}, {first['b_train_size']} images, reuse " \
           f"{first['reuse_layers']}, {first['preset']} rates" in shown


def _text(table) -> str:
    from rich.console import Console

    console = Console(file=io.StringIO(), width=300)
    console.print(table)
    return console.file.getvalue()


# ----------------------------------------------------------------------------- typed records

LINE = {"id": "seed42-pair5v6-n200-reuseall-book-transfer", "seed": 42, "pair": [5, 6], "b_train_size": 200,
        "reuse_layers": "all", "preset": "book", "contender": "transfer", "learning_rates": [0.01, 0.0001],
        "settings": "0123456789abcdef",
        "baseline": {"test_accuracy": 0.97, "test_loss": 0.09},
        "result": {"test_accuracy": 0.5, "test_loss": None, "diverged": "B on A: frozen diverged at epoch 1"},
        "built_on": {"model_a": {"test_accuracy": 0.9, "seed": 42, "pair": [5, 6]}},
        "seconds": {"baseline": 1.5, "contender": 2.25, "model_a": 3.0}, "finished": "2025-01-01T12:00:00"}


def test_a_results_line_round_trips_to_the_byte():
    record = studies.RunRecord.from_dict(json.loads(json.dumps(LINE)))
    assert json.dumps(record.to_dict()) == json.dumps(LINE)
    assert (record.key.seed, record.key.pair, record.contender) == (42, (5, 6), "transfer")
    assert record.result.diverged and not record.baseline.diverged and record.result.test_loss is None
    assert record.gain == pytest.approx(-0.47)
    assert studies.RunRecord.from_dict(record.to_dict()) == record


def test_older_lines_round_trip_in_todays_form_and_unknown_keys_are_kept():
    old = {"id": "seed1-pair5v6-n200-reuseall-book", "seed": 1, "pair": [5, 6], "b_train_size": 200,
           "reuse_layers": "all", "preset": "book", "baseline": {"test_accuracy": 0.9},
           "transfer": {"test_accuracy": 0.95}}  # before contenders: no contender, no fingerprint
    record = studies.RunRecord.from_dict(old)
    assert (record.id, record.contender, record.result.test_accuracy) == (old["id"] + "-transfer", "transfer", 0.95)
    assert record.to_dict() == _normalised(old) and record.settings is None
    later = {**LINE, "energy_joules": 12.5, "finished": None}  # a key from a later fmtransfer, and a null
    assert studies.RunRecord.from_dict(later).to_dict() == later


def test_the_runner_writes_what_the_reader_reads(tmp_path):
    key = studies.grid(Config())[0]
    made = studies.RunRecord.made(key, "transfer", key.config(Config()), {"test_accuracy": 0.97, "test_loss": 0.1},
                                  {"test_accuracy": 0.99, "test_loss": 0.05, "linear_probe": 0.98},
                                  settings="f", fingerprint="g", built_on={}, seconds={"baseline": 1.0, "contender": 2.0})
    studies.append_record(tmp_path / "results.jsonl", made)
    [line] = (tmp_path / "results.jsonl").read_text().splitlines()
    # The keys of lines before draws, in their order, the data seed after the size, then the fingerprint.
    before = list(LINE)
    assert list(json.loads(line)) == [*before[:4], "data_seed", *before[4:], "fingerprint"]
    assert json.loads(line)["data_seed"] == "first" and made.id == "seed42-pair5v6-n200-reuseall-book-transfer"
    assert json.loads(line)["learning_rates"] == [0.01, 0.0001]
    assert studies.load_records(tmp_path) == [made] and made.result.linear_probe == 0.98


# ----------------------------------------------------------------------------- a new axis

@pytest.fixture
def fine_tune_axis():
    """A grid over the fine-tuning epochs: one declaration."""
    yield studies.declare(studies.Axis("fine_tune_epochs", source=lambda cfg: (1, 2), sets="transfer.fine_tune_epochs",
                                       id=lambda e: f"ft{e}", describe=lambda e: f"{e} fine-tuning epochs",
                                       valid=lambda v: isinstance(v, int) and v >= 0))
    studies.withdraw("fine_tune_epochs")


def test_a_declared_axis_reaches_run_ids_configs_records_and_cells(fine_tune_axis, tmp_path):
    cfg = Config().replace(**{"study.seeds": [1, 2]})
    keys = studies.grid(cfg)
    assert [k.id for k in keys] == ["seed1-pair5v6-n200-reuseall-book-ft1", "seed1-pair5v6-n200-reuseall-book-ft2",
                                    "seed2-pair5v6-n200-reuseall-book-ft1", "seed2-pair5v6-n200-reuseall-book-ft2"]
    assert [k.config(cfg).transfer.fine_tune_epochs for k in keys] == [1, 2, 1, 2]
    assert keys[0].group == keys[1].group  # a contender's axis: its runs share model A and the baseline
    studies.check_study_dir(cfg, tmp_path)
    for k, accuracy in zip(keys, (0.95, 0.99, 0.96, 0.98)):
        studies.append_record(tmp_path / "results.jsonl", studies.RunRecord.made(
            k, "transfer", k.config(cfg), {"test_accuracy": 0.9}, {"test_accuracy": accuracy}, settings=None,
            fingerprint=None, built_on={}, seconds={}))
    studies.append_result(tmp_path / "results.jsonl", {**json.loads((tmp_path / "results.jsonl").read_text()
                                                                    .splitlines()[0]), "fine_tune_epochs": "x"})
    assert json.loads((tmp_path / "results.jsonl").read_text().splitlines()[0])["fine_tune_epochs"] == 1  # its key
    result = studies.report(tmp_path)
    assert result.skipped == {"a bad or missing 'fine_tune_epochs'": 1}
    assert [(c.fine_tune_epochs, c.accuracies) for c in result.cells] == [(1, [0.95, 0.96]), (2, [0.99, 0.98])]
    assert result.cell("transfer", fine_tune_epochs=2).seeds == [1, 2]
    assert result.to_dict()["cells"][0]["fine_tune_epochs"] == 1
    assert "Classes 5 vs 6, 200 images, reuse all, book rates, 2 fine-tuning epochs; baseline" in \
        studies.markdown(result)
    shown = _text(studies.table(result.to_dict()))
    assert "2 fine-tuning epochs" in shown and shown.index("95.50") < shown.index("98.50")  # ranked within its own value


@pytest.mark.slow
def test_a_declared_axis_runs_in_a_real_study(fine_tune_axis, tiny_data, tmp_path, monkeypatch):
    """Each value reaches the contender's fit, and the report has a cell per value."""
    from fmtransfer.contenders.transfer import TransferFromA

    seen = []
    real = TransferFromA.fit
    monkeypatch.setattr(TransferFromA, "fit", lambda self, cfg, *a, **k: seen.append(cfg.transfer.fine_tune_epochs)
                        or real(self, cfg, *a, **k))
    cfg = Config().replace(**tiny_settings(tiny_data), **{"study.seeds": [1], "contenders": ["transfer"]})
    result = studies.run_study(cfg, tmp_path)
    assert sorted(seen) == [1, 2]
    assert sorted(r.id for r in studies.load_records(tmp_path)) == \
        ["seed1-pair5v6-n20-reuseall-book-ft1-transfer", "seed1-pair5v6-n20-reuseall-book-ft2-transfer"]
    assert sorted(c.fine_tune_epochs for c in result.cells) == [1, 2]
    assert result.runs_finished == result.runs_in_grid == 2
    assert studies.run_study(cfg, tmp_path).runs_finished == 2 and sorted(seen) == [1, 2]  # resumed: nothing redone
