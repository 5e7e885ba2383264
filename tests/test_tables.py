"""Tables that fit: `compare`, `study report` and the study's closing table, rendered at 80, 100
and 200 columns and to a pipe, show complete numbers ('…' nowhere), the essential columns at
any width, every column with --wide; a small study shows no CI, and says why.

Trains a tiny run and a tiny two-seed study on `tiny_data` once (seconds).
"""

from __future__ import annotations

import io
import json

import pytest
from rich.console import Console

from conftest import REPO, TINY_STUDY, run_cli
from fmtransfer import study as studies
from fmtransfer.report import compare_table, pct
from fmtransfer.study.reporting import gain_text

WIDTHS = (80, 100, 200)
TINY = ["--valid-size", "100", "--no-verify", "--b-train-size", "20", "--hidden", "16,8", "--a-epochs", "1",
        "--b-epochs", "1", "--freeze-epochs", "1", "--fine-tune-epochs", "1"]


def render(renderable, width: int) -> str:
    console = Console(file=io.StringIO(), width=width, color_system=None)
    console.print(renderable)
    return console.file.getvalue()


def assert_fits(text: str, width: int | None) -> None:
    assert "…" not in text, text
    if width is not None:
        assert max(map(len, text.splitlines())) <= width, text


def _ok(*args) -> dict:
    result = run_cli(*args, "--json")
    assert result.code == 0, result.err
    return result.json()


@pytest.fixture(scope="module")
def tiny_run(tiny_data, tmp_path_factory):
    run = tmp_path_factory.mktemp("run")
    return run, _ok("run", "--run", run, "--data-dir", tiny_data, *TINY, "--contenders", "transfer,reinit")


@pytest.mark.parametrize("width", WIDTHS)
def test_compare_shows_every_number_and_model_a_at_any_width(tiny_run, width):
    _, result = tiny_run
    shown = render(compare_table(result, width=width), width)
    assert_fits(shown, width)
    for title, scores in result["contenders"].items():
        assert title in shown and pct(scores["test_accuracy"]) in shown
    assert f"model A (task A, 8 classes): test accuracy {pct(result['model_a']['test_accuracy'])}" in shown
    if width == 200:
        assert "Not shown" not in shown and f"{result['contenders']['baseline']['test_loss']:.4f}" in shown


def test_compare_to_a_pipe_shows_every_column_and_model_a(tiny_run):
    run, result = tiny_run
    piped = run_cli("compare", "--run", run, "--b-epochs", "1")
    assert piped.code == 0, piped.err
    assert_fits(piped.out, None)
    assert "Not shown" not in piped.out and "test loss" in piped.out and "model A (task A" in piped.out
    again = _ok("compare", "--run", run, "--b-epochs", "1")
    assert again["model_a"]["test_accuracy"] == result["model_a"]["test_accuracy"]


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("name", ["report-leaderboard-dense.json", "report-leaderboard-cnn.json"])
def test_a_committed_leaderboard_fits_with_its_essential_numbers(name, width):
    report = json.loads((REPO / "docs" / "study" / name).read_text())
    shown = render(studies.table(report, width=width), width)
    assert_fits(shown, width)
    for c in report["cells"]:
        assert c["title"] in shown
        assert gain_text(c) in shown and f"{c['wins']}/{c['ties']}/{c['losses']}" in shown
    wide = render(studies.table(report, wide=True), 400)
    assert "Not shown" not in wide and "probe" in wide and "err ÷" in wide
    if width == 80:
        assert "Not shown at 80 columns" in shown


def test_a_small_study_shows_no_ci_and_says_why(tiny_study):
    result = studies.report(tiny_study)
    cells = result.to_dict()["cells"]
    assert cells and all(c["n"] == 2 for c in cells)
    for width in WIDTHS:
        shown = render(studies.table(result.to_dict(), width=width), width)
        assert_fits(shown, width)
        assert shown.count("(no CI: n=2)") == len(cells)
        assert "No CI where a cell has fewer than 3 seeds" in " ".join(shown.split())
    assert "no interval" in studies.markdown(result)


def test_study_report_to_a_pipe_shows_every_column(tiny_study):
    piped = run_cli("study", "report", tiny_study, "--no-plots")
    assert piped.code == 0, piped.err
    assert_fits(piped.out, None)
    assert "Not shown" not in piped.out
    for c in studies.report(tiny_study).to_dict()["cells"]:
        assert f"{100 * c['transfer_mean']:.2f}" in piped.out


def test_size_axis_shows_the_sizes_used_and_the_gain_axis_the_data(tiny_study):
    from fmtransfer.report import figures
    from fmtransfer.study.reporting import gain_vs_size

    result = studies.report(tiny_study)
    ax = gain_vs_size(result, figures("--plots")).axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["20", "50"]
    gains = [100 * c.mean_difference for c in result.cells]
    low, high = ax.get_ylim()
    assert low <= min(gains) and high >= max(gains)
    assert high - low <= 2 * (max(gains) - min(gains)) + 10  # no t interval of two seeds stretching it


def test_the_studys_closing_table_to_a_pipe(tiny_study, tiny_data):
    """`study` itself, resumed with nothing left to train, closes with the same complete table."""
    piped = run_cli("study", "--run", tiny_study, "--data-dir", tiny_data, *TINY_STUDY)
    assert piped.code == 0, piped.err
    assert_fits(piped.out, None)
    assert "Not shown" not in piped.out and piped.out.count("(no CI: n=2)") == 4


def test_progress_in_a_pipe_names_the_contender_by_its_title(tiny_run):
    """Off a terminal a bar prints once, complete, plain text; and under the title the tables use."""
    run, _ = tiny_run
    piped = run_cli("transfer", "--run", run, "--contender", "reinit", "--freeze-epochs", "1",
                    "--fine-tune-epochs", "1")
    assert piped.code == 0, piped.err
    assert "re-initialised top: head and top layer" in piped.err and "1/1" in piped.err and "\x1b[" not in piped.err
    assert "B on reinit" not in piped.err
