"""`study report`'s statistics on study directories written from numbers: the primary test, the
study-wide max-T, the best set, P(win), MDE, TOST and its margin, the book's placement, small
cells, the crossed design of draws x seeds, and reproducible Monte Carlo."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

from fmtransfer import study as studies
from fmtransfer.cli import cli
from fmtransfer.errors import ConfigError
from fmtransfer.study import inference
from studyfiles import write_study

GAINS = {"transfer": 0.0, "autoencoder": 0.015, "greedy": 0.003}


@pytest.fixture(scope="module")
def leaderboard(tmp_path_factory):
    directory = write_study(tmp_path_factory.mktemp("study") / "s", GAINS, presets=("book", "notebook"))
    return directory, studies.report(directory)


def test_every_cell_reports_the_exact_sign_flip_test_of_its_seeds(leaderboard):
    _, result = leaderboard
    for c in result.cells:
        diffs = np.subtract(c.accuracies, c.baseline_accuracies)
        assert c.p_value == inference.sign_flip_test(diffs).p_value and c.p_method == "exact"
        assert c.p_wilcoxon == inference.wilcoxon_exact(diffs).p_value
        assert c.n_seeds == 10 and c.design == "paired" and c.variance_components is None


def test_max_t_covers_the_whole_study_and_is_never_below_a_cells_own_p(leaderboard):
    _, result = leaderboard
    assert result.max_t["cells"] == 6 and result.max_t["n_units"] == 10 and result.max_t["method"] == "exact"
    for c in result.cells:
        assert c.p_value - 1e-12 <= c.p_max_t <= 1
    strong = result.cell("autoencoder", preset="book")
    assert strong.p_max_t < 0.05 and strong.verdict == "better"
    assert result.cell("transfer", preset="book").verdict in ("no evidence", "equivalent")


def test_one_cell_alone_gets_its_own_p_from_max_t(tmp_path):
    """A family of one: max-T's |t| orders the sign patterns as |mean| does, so p_max_t == p."""
    (cell,) = studies.report(write_study(tmp_path, {"transfer": 0.004})).cells
    assert cell.p_max_t == cell.p_value and cell.p_holm == cell.p_value


def test_the_best_set_holds_the_leader_and_whoever_cannot_be_told_apart(leaderboard):
    _, result = leaderboard
    for summary in result.best_sets:
        cells = [c for c in result.cells if c.point == summary["point"]]
        best = max(cells, key=lambda c: c.mean_difference)
        assert summary["best"] == best.contender and best.in_best_set
        assert {c.contender for c in cells if c.in_best_set} == set(summary["members"])
    assert not result.cell("transfer", preset="book").in_best_set  # 1.5 points behind, with 1-point noise


def test_superiority_mde_and_equivalence_in_every_cell(leaderboard):
    _, result = leaderboard
    for c in result.cells:
        wins = (c.wins + c.ties / 2) / c.n
        assert c.superiority["p"] == wins and c.superiority["ci95"][0] <= wins <= c.superiority["ci95"][1]
        sd = np.std(np.subtract(c.accuracies, c.baseline_accuracies), ddof=1) * 100
        assert c.mde_points == pytest.approx(inference.minimum_detectable_effect(sd, c.n).mde)
        assert c.equivalence["margin_points"] == 0.5 and c.equivalence["verdict"] in (
            "equivalent", "different", "inconclusive")


def test_the_book_is_placed_in_every_transfer_cell_and_drawn_only_at_its_own_point(tmp_path):
    result = studies.report(write_study(tmp_path, {"transfer": 0.02, "greedy": 0.0}, pairs=((5, 6), (0, 2))))
    transfer = [c for c in result.cells if c.contender == "transfer"]
    assert len(transfer) == 2 and all(c.book["ci95_ratio"][0] <= c.book["p_ratio"] <= c.book["ci95_ratio"][1]
                                      for c in transfer)
    assert [c.book["at_book_point"] for c in transfer] == [c.point["pair"] == [5, 6] for c in transfer]
    assert all(c.book is None for c in result.cells if c.contender != "transfer")


def test_a_cell_on_drawn_samples_is_not_at_the_books_point_which_is_its_first_200_images(tmp_path):
    drawn = studies.report(write_study(tmp_path / "drawn", {"transfer": 0.02}, draws=[0, 1, 2]))
    first = studies.report(write_study(tmp_path / "first", {"transfer": 0.02}))
    assert drawn.cells[0].point == first.cells[0].point and drawn.cells[0].n_draws == 3
    assert drawn.cells[0].book["at_book_point"] is False and first.cells[0].book["at_book_point"] is True


def test_a_larger_margin_makes_a_null_contender_equivalent_and_a_bad_one_is_refused(tmp_path):
    directory = write_study(tmp_path, {"transfer": 0.0}, sd=0.002)
    narrow = studies.report(directory, equivalence_margin=0.01).cells[0]
    wide = studies.report(directory, equivalence_margin=2).cells[0]
    assert narrow.equivalence["verdict"] != "equivalent" and wide.equivalence["verdict"] == "equivalent"
    with pytest.raises(ConfigError) as e:
        studies.report(directory, equivalence_margin=0)
    assert e.value.key == "study.equivalence_margin"


@pytest.mark.parametrize("margin", ["0", "-1", "x"])
def test_a_bad_margin_on_the_command_line_is_one_line_exit_2(tmp_path, margin):
    directory = write_study(tmp_path / "s", {"transfer": 0.0})
    before = sorted(p.name for p in directory.iterdir())
    for args in (["study", "report", str(directory)], ["study", "claims", str(directory)]):
        result = CliRunner().invoke(cli, [*args, "--equivalence-margin", margin])
        assert result.exit_code == 2, result.output
        assert "--equivalence-margin" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert sorted(p.name for p in directory.iterdir()) == before


def test_the_margin_option_reaches_the_json_report(tmp_path):
    directory = write_study(tmp_path / "s", {"transfer": 0.0}, sd=0.002)
    result = CliRunner().invoke(cli, ["study", "report", str(directory), "--json", "--no-plots",
                                      "--equivalence-margin", "2"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["equivalence_margin"] == 2.0 and out["cells"][0]["equivalence"]["verdict"] == "equivalent"
    assert out["max_t"]["n_units"] == 10 and out["best_sets"][0]["best"] == "transfer"


def test_fewer_than_three_seeds_show_no_interval_and_say_why(tmp_path):
    (cell,) = studies.report(write_study(tmp_path, {"transfer": 0.01}, seeds=[1, 2])).cells
    assert cell.ci95 is None and cell.equivalence is None and cell.mde_points is None
    assert "2 seeds" in cell.no_interval and "at least 3" in cell.no_interval
    assert cell.p_value is not None and cell.superiority is not None
    assert "transfer from A: no interval, TOST or MDE: 2 seeds" in studies.markdown(studies.report(tmp_path))


def test_above_twenty_seeds_the_p_is_monte_carlo_with_its_error_and_the_same_wherever_reported(tmp_path):
    directory = write_study(tmp_path / "a", {"transfer": 0.004}, seeds=range(22))
    first = studies.report(directory).cells[0]
    assert first.p_method == "monte-carlo" and 0 < first.p_mc_error < 0.01
    exact = inference.sign_flip_test(np.subtract(first.accuracies, first.baseline_accuracies), max_exact=22)
    assert abs(first.p_value - exact.p_value) < 5 * first.p_mc_error + 1e-5
    moved = tmp_path / "elsewhere"
    shutil.copytree(directory, moved)
    assert [c.to_dict() for c in studies.report(moved).cells] == [first.to_dict()]


def test_several_draws_make_a_crossed_cell(tmp_path):
    directory = write_study(tmp_path, {"transfer": 0.01, "greedy": 0.0}, draws=[0, 1, 2], seeds=range(6))
    result = studies.report(directory)
    cell = result.cell("transfer")
    assert (cell.design, cell.n_draws, cell.n_seeds, cell.n) == ("crossed", 3, 6, 18)
    records = [r for r in studies.load_records(directory) if r.contender == "transfer"]
    matrix = np.array([[next(r.gain for r in records if r.key.seed == s and r.key.data_seed == d) for s in range(6)]
                       for d in range(3)])
    assert cell.ci95 == pytest.approx(list(inference.crossed_interval(matrix).ci95))
    assert cell.ci95_method == "crossed random effects"
    assert cell.p_value == inference.crossed_sign_flip_test(matrix).p_value
    assert cell.variance_components["seed_sd_points"] == pytest.approx(
        inference.variance_components(matrix).seed_sd_points)
    assert result.max_t["n_units"] == 6  # seeds are the units of the family too
    assert "from the draw" in studies.markdown(result)


def test_one_draw_is_the_paired_analysis(tmp_path):
    one = studies.report(write_study(tmp_path / "one", {"transfer": 0.01}, draws=[7])).cells[0]
    # the same numbers as a study made before data draws existed (its lines have no data_seed)
    plain = studies.report(write_study(tmp_path / "plain", {"transfer": 0.01})).cells[0]
    assert one.design == plain.design == "paired"
    assert (one.p_value, one.ci95, one.mde_points) == (plain.p_value, plain.ci95, plain.mde_points)


def test_a_seed_missing_a_draw_is_left_out_of_a_crossed_cell_and_counted():
    stats = studies.paired_stats([0.9] * 5, [0.91, 0.92, 0.91, 0.93, 0.95], seeds=[1, 2, 1, 2, 3],
                                 draws=[0, 0, 1, 1, 0])
    assert (stats["n_draws"], stats["n_seeds"], stats["runs_left_out"]) == (2, 2, 1)
    assert stats["mean_difference"] == pytest.approx(np.mean([0.01, 0.02, 0.01, 0.03]))


def test_a_cell_with_one_seed_has_no_test_and_stays_out_of_max_t(tmp_path):
    directory = write_study(tmp_path, {"transfer": 0.01, "greedy": 0.0})
    lines = (directory / "results.jsonl").read_text().splitlines()
    kept = [line for line in lines if '"greedy"' not in line or '"seed": 42,' in line]  # greedy: seed 42 only
    (directory / "results.jsonl").write_text("\n".join(kept) + "\n")
    result = studies.report(directory)
    greedy, transfer = result.cell("greedy"), result.cell("transfer")
    assert greedy.n == 1 and greedy.p_value is None and greedy.p_max_t is None
    assert (result.max_t["cells"], result.max_t["cells_without_a_test"], result.max_t["n_units"]) == (1, 1, 10)
    assert transfer.p_max_t == transfer.p_value == transfer.p_holm  # a family of one test


def test_cells_sharing_fewer_than_two_seeds_get_no_max_t_and_the_report_says_why(tmp_path):
    directory = write_study(tmp_path, {"transfer": 0.01, "greedy": 0.0}, seeds=[1, 2, 3])
    lines = (directory / "results.jsonl").read_text().splitlines()
    kept = [line for line in lines if not ('"greedy"' in line and '"seed": 1,' in line)
            and not ('"transfer"' in line and '"seed": 2,' in line)]  # they share seed 3 only
    (directory / "results.jsonl").write_text("\n".join(kept) + "\n")
    result = studies.report(directory)
    assert all(c.p_max_t is None and c.p_value is not None for c in result.cells)
    assert "fewer than 2 seeds" in result.max_t["why"]
    assert "No max-T over the study: fewer than 2 seeds" in studies.markdown(result)


def test_a_crossed_cell_reads_the_same_whatever_order_its_lines_were_written_in(tmp_path):
    directory = write_study(tmp_path, {"transfer": 0.01}, draws=[0, 1], seeds=range(4))
    before = studies.report(directory).to_dict()
    lines = (directory / "results.jsonl").read_text().splitlines()
    (directory / "results.jsonl").write_text("\n".join(reversed(lines)) + "\n")  # as another --jobs might
    after = studies.report(directory).to_dict()
    assert after["cells"] == before["cells"] and after["cells"][0]["seeds"] == [0, 1, 2, 3, 0, 1, 2, 3]


def test_too_few_seeds_for_significance_have_no_detectable_effect():
    """With 5 seeds the exact test's smallest p is 2/32 > 0.05: no gain could be significant, so
    the cell claims no detectable effect rather than one it could never reach."""
    five = studies.paired_stats([0.9] * 5, [0.92, 0.93, 0.92, 0.94, 0.93], seeds=[1, 2, 3, 4, 5])
    assert five["p_floor"] == five["p_value"] == 2 / 32 and five["mde_points"] is None
    six = studies.paired_stats([0.9] * 6, [0.92, 0.93, 0.92, 0.94, 0.93, 0.92], seeds=[1, 2, 3, 4, 5, 6])
    assert six["p_floor"] == 2 / 64 and six["mde_points"] is not None
