"""`fmtransfer study`: the grid, resuming, sharding, merging, and the statistics it reports."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from fmtransfer import UsageError
from fmtransfer import study as studies
from fmtransfer.cli import cli
from fmtransfer.config import Config


@pytest.fixture
def tiny_config(tiny_data):
    return Config().replace(**{
        "data.dir": str(tiny_data), "data.verify_checksums": False, "data.valid_size": 100,
        "model.hidden": [16, 8], "train_a.epochs": 1, "baseline.epochs": 2,
        "transfer.freeze_epochs": 1, "transfer.fine_tune_epochs": 1,
        "study.seeds": [1, 2], "study.pairs": [[5, 6], [0, 2]], "study.b_train_sizes": [10, 20],
        "study.reuse_layers": [1, "all"],
    })


# ----------------------------------------------------------------------------- statistics

DARWIN = [6, 8, 14, 16, 23, 24, 28, 29, 41, -48, 49, 56, 60, -67, 75]  # eighths of an inch


def test_the_primary_p_is_fishers_exact_permutation_test_on_darwins_plants():
    """Darwin's paired plant heights, Fisher's own example of the test (The Design of
    Experiments, 1935): of the 2**15 sign patterns, 1726 give a sum at least as far from zero,
    p = 0.0527. The differences are scaled to accuracy units; the test does not see the scale."""
    stats = studies.paired_stats([0.0] * len(DARWIN), [d / 100 for d in DARWIN])
    assert stats["p_value"] == 1726 / 2**15
    assert stats["p_method"] == "exact" and stats["p_mc_error"] == 0.0
    assert (stats["wins"], stats["ties"], stats["losses"]) == (13, 0, 2)


def test_the_wilcoxon_column_matches_the_textbook_value():
    """The same data: two-sided exact Wilcoxon signed-rank p = 0.04126 (scipy documents it too)."""
    stats = studies.paired_stats([0.0] * len(DARWIN), [d / 100 for d in DARWIN])
    assert stats["p_wilcoxon"] == pytest.approx(0.04126, abs=5e-5)


def test_confidence_interval_is_students_t_on_the_paired_differences():
    """Differences 1..5 points: mean 3, sd sqrt(2.5), t(0.975, 4) = 2.776445 -> 3 -/+ 1.963."""
    stats = studies.paired_stats([0.0] * 5, [0.01, 0.02, 0.03, 0.04, 0.05])
    assert stats["mean_difference"] == pytest.approx(0.03)
    assert stats["ci95"] == pytest.approx([0.01036757, 0.04963243], abs=1e-7)
    assert stats["ci95_method"] == "student t" and stats["design"] == "paired"


def test_means_stds_and_error_rate_ratio_of_a_cell():
    stats = studies.paired_stats([0.97, 0.96, 0.98], [0.99, 0.96, 0.97])
    assert stats["n"] == 3
    assert stats["baseline_mean"] == pytest.approx(0.97)
    assert stats["baseline_std"] == pytest.approx(0.01)
    assert stats["error_rate_ratio"] == pytest.approx(0.03 / (1 - np.mean([0.99, 0.96, 0.97])))
    assert (stats["wins"], stats["ties"], stats["losses"]) == (1, 1, 1)


def test_all_ties_give_p_one_and_a_single_seed_gives_no_interval():
    assert studies.paired_stats([0.9, 0.8], [0.9, 0.8])["p_value"] == 1.0
    single = studies.paired_stats([0.9], [0.95])
    assert single["ci95"] is None and single["p_value"] is None and single["baseline_std"] is None
    assert "1 seed" in single["no_interval"]


def test_a_unanimous_result_gets_the_same_p_whatever_its_ties():
    """Ten wins of ten is p = 2/1024 whether the gains tie or not; the normal approximation the
    report used before gave 0.0016 to 0.0050 for the same 10/0/0, by tie pattern."""
    base = [0.95] * 10
    distinct = [0.95 + 0.0005 * (k + 1) for k in range(10)]
    tied = [0.955] * 5 + [0.96] * 5
    for contender in (distinct, tied, [0.951] * 10):
        stats = studies.paired_stats(base, contender)
        assert stats["p_value"] == 2 / 1024 and stats["p_wilcoxon"] == 2 / 1024, contender


def test_the_book_result_is_placed_against_the_cell():
    """1 run of 3 reaches the book's +2.2 points: 1/3, Clopper-Pearson (0.0084, 0.906)."""
    placement = studies.book_placement([0.97, 0.98, 0.99], [0.995, 0.98, 0.985])
    assert placement["gain"] == pytest.approx(0.022)
    assert placement["seeds_with_gain_at_least_book"] == 1
    assert placement["n"] == 3
    assert placement["p_gain"] == pytest.approx(1 / 3)
    assert placement["ci95_gain"] == pytest.approx([0.00840, 0.90570], abs=1e-4)


# ----------------------------------------------------------------------------- grid and shards

def test_grid_is_the_product_of_the_axes_with_model_a_groups_adjacent(tiny_config):
    keys = studies.grid(tiny_config)
    assert len(keys) == 2 * 2 * 2 * 2 * 1
    assert len({k.id for k in keys}) == len(keys)
    groups = [k.group for k in keys]
    assert groups == sorted(groups, key=groups.index)  # each group is one contiguous stretch


def test_shards_are_disjoint_cover_the_grid_and_keep_model_a_groups_whole(tiny_config):
    keys = studies.grid(tiny_config)
    slices = [studies.shard(keys, i, 3) for i in range(3)]
    ids = [k.id for s in slices for k in s]
    assert sorted(ids) == sorted(k.id for k in keys)
    assert len(ids) == len(set(ids))
    for i, s in enumerate(slices):
        others = {k.group for j, t in enumerate(slices) if j != i for k in t}
        assert not {k.group for k in s} & others


@pytest.mark.parametrize("bad", ["2/2", "x/3", "1", "0/0", "-1/2"])
def test_a_bad_shard_is_a_usage_error(bad):
    with pytest.raises(UsageError, match="shard"):
        studies.parse_shard(bad)


# ----------------------------------------------------------------------------- results on disk

def _record(run_id: str, accuracy=0.9) -> dict:
    return {"id": run_id, "seed": 1, "pair": [5, 6], "b_train_size": 20, "reuse_layers": "all", "preset": "book",
            "contender": "transfer", "baseline": {"test_accuracy": 0.9}, "result": {"test_accuracy": accuracy}}


def test_a_torn_last_line_is_ignored_and_cannot_swallow_the_next_result(tmp_path):
    path = tmp_path / "results.jsonl"
    studies.append_result(path, _record("a"))
    with open(path, "a") as f:
        f.write('{"id": "b", "trunc')  # a run killed mid-write
    studies.append_result(path, _record("c"))
    (tmp_path / "study.json").write_text("{}")
    assert sorted(r["id"] for r in studies.load_results(tmp_path)) == ["a", "c"]


@pytest.mark.slow
def test_an_interrupted_study_resumes_without_repeating_a_finished_run(tiny_config, tmp_path, monkeypatch):
    from fmtransfer import resolver
    from fmtransfer.contenders.transfer import TransferFromA

    calls = []
    real = TransferFromA.fit

    def interrupted_after_three(*args, **kwargs):
        if len(calls) == 3:
            raise KeyboardInterrupt
        calls.append(1)
        return real(*args, **kwargs)

    tiny_config = tiny_config.replace(**{"study.pairs": [[5, 6]]})
    monkeypatch.setattr(TransferFromA, "fit", interrupted_after_three)
    with pytest.raises(KeyboardInterrupt):
        studies.run_study(tiny_config, tmp_path)
    assert len(studies.load_results(tmp_path)) == 3
    first_three = {r["id"]: r for r in studies.load_results(tmp_path)}
    models_before = sorted(p.name for p in (tmp_path / "models").iterdir())

    monkeypatch.setattr(TransferFromA, "fit", real)
    trained = []
    real_fit_a = resolver.train_model_a
    monkeypatch.setattr(resolver, "train_model_a", lambda *a, **k: trained.append(1) or real_fit_a(*a, **k))
    summary = studies.run_study(tiny_config, tmp_path)
    results = studies.load_results(tmp_path)
    assert len(results) == len(studies.grid(tiny_config)) == summary.runs_finished
    assert {r["id"]: r for r in results if r["id"] in first_three} == first_three  # kept, not redone
    assert len(trained) == 2 - len(models_before) // 2  # saved model A's are reused, not retrained


@pytest.mark.slow
def test_shards_run_separately_merge_to_the_same_numbers_as_one_job(tiny_config, tmp_path):
    cfg = tiny_config.replace(**{"study.b_train_sizes": [20], "study.reuse_layers": ["all"]})
    whole, sharded = tmp_path / "whole", tmp_path / "sharded"
    studies.run_study(cfg, whole)
    for spec in ("0/2", "1/2"):
        studies.run_study(cfg, sharded, shard_spec=spec)
    assert sorted(p.name for p in sharded.glob("results*.jsonl")) == ["results-0of2.jsonl", "results-1of2.jsonl"]
    merged = {r["id"]: (r["baseline"], r["result"]) for r in studies.load_results(sharded)}
    single = {r["id"]: (r["baseline"], r["result"]) for r in studies.load_results(whole)}
    assert merged == single and len(merged) == 4
    report = studies.report(sharded)
    assert report.runs_finished == report.runs_in_grid == 4
    assert [c.n for c in report.cells] == [2, 2]


def test_a_study_directory_refuses_runs_made_with_other_settings(tiny_config, tmp_path):
    studies.check_study_dir(tiny_config, tmp_path)
    with pytest.raises(UsageError, match="other settings"):
        studies.check_study_dir(tiny_config.replace(**{"train_a.epochs": 5}), tmp_path)
    studies.check_study_dir(tiny_config.replace(**{"study.seeds": [7]}), tmp_path)  # axes may grow


@pytest.mark.slow
def test_study_cli_prints_json_and_report_merges_with_plots(tiny_data, tmp_path):
    runner = CliRunner()
    args = ["study", "--run", str(tmp_path), "--seeds", "2", "--pairs", "5:6", "--b-train-sizes", "20",
            "--data-dir", str(tiny_data), "--no-verify", "--a-epochs", "1", "--b-epochs", "1",
            "--freeze-epochs", "1", "--fine-tune-epochs", "1", "--hidden", "16,8", "--valid-size", "100",
            "--json", "--no-plots"]
    result = runner.invoke(cli, args)
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["runs_finished"] == 2
    assert out["cells"][0]["seeds"] == [42, 43]
    report = runner.invoke(cli, ["study", "report", str(tmp_path), "--json", "--plots"])
    assert report.exit_code == 0, report.output
    merged = json.loads(report.stdout)
    assert merged["cells"] == out["cells"]
    assert all((tmp_path / "plots" / name).stat().st_size > 1000
               for name in ("gain-vs-size.png", "paired-pair5v6-n20-reuseall-book.png"))


def test_report_of_a_directory_that_holds_no_study_is_a_usage_error(tmp_path):
    result = CliRunner().invoke(cli, ["study", "report", str(tmp_path)])
    assert result.exit_code == 2
    assert "not a study directory" in result.stderr


@pytest.mark.parametrize("args, says", [
    (["--seeds", "2", "--seed-list", "1,2"], "give one of them"),
    (["--seed-list", "1,1"], "option --seed-list"),
    (["--seeds", "0"], "option --seeds"),
    (["--pairs", "5:5"], "option --pairs"),
    (["--shard", "2/2"], "option --shard"),
    (["--equivalence-margin", "0"], "option --equivalence-margin"),
])
def test_bad_study_options_are_one_line_usage_errors_before_any_work(tmp_path, args, says):
    result = CliRunner().invoke(cli, ["study", "--run", str(tmp_path / "s"), *args])
    assert result.exit_code == 2
    assert says in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize("bad", [{"id": "x"}, {**_record("x"), "result": {"test_accuracy": "0.9"}},
                                 {**_record("x"), "pair": "5:6"}, ["x"], {**_record("x"), "preset": "tuned"}],
                         ids=["fields missing", "string accuracy", "pair as text", "a list", "unknown preset"])
def test_a_malformed_line_is_skipped_counted_and_never_hides_the_valid_one(tmp_path, bad):
    path = tmp_path / "results.jsonl"
    studies.append_result(path, bad)  # first: "the first record for an id wins" must not pick it
    studies.append_result(path, _record("x", accuracy=0.95))
    results, skipped = studies.read_results(tmp_path)
    assert [r["result"]["test_accuracy"] for r in results] == [0.95]
    assert sum(skipped.values()) == 1


@pytest.mark.slow
def test_following_the_advice_to_delete_study_json_never_mixes_old_settings_in(tiny_config, tmp_path):
    """"Delete study.json and run the study again": runs made with the old settings are skipped
    (their lines carry the settings' fingerprint) and run again with the new ones."""
    cfg = tiny_config.replace(**{"study.pairs": [[5, 6]], "study.b_train_sizes": [20], "study.reuse_layers": ["all"]})
    studies.run_study(cfg, tmp_path)
    (tmp_path / "study.json").unlink()
    new = cfg.replace(**{"train_a.epochs": 2})
    result = studies.run_study(new, tmp_path)
    assert result.runs_finished == result.runs_in_grid == 2
    assert result.skipped == {"made with other settings": 2}
    assert all(r["settings"] == studies.run_fingerprint(new, "transfer") for r in studies.load_results(tmp_path, new))
    assert len((tmp_path / "results.jsonl").read_text().splitlines()) == 4  # nothing lost, nothing mixed


@pytest.mark.slow
def test_worker_processes_give_the_same_runs_as_one_process(tiny_config, tmp_path):
    """--jobs 2 deals whole seeds to two spawned workers: the same runs, the same numbers."""
    cfg = tiny_config.replace(**{"study.seeds": [1, 2, 3], "study.pairs": [[5, 6]], "study.b_train_sizes": [20],
                                 "study.reuse_layers": ["all"]})
    serial = studies.run_study(cfg, tmp_path / "serial")
    parallel = studies.run_study(cfg, tmp_path / "parallel", jobs=2)
    assert [c.to_dict() for c in parallel.cells] == [c.to_dict() for c in serial.cells]
    assert sorted(p.name for p in (tmp_path / "parallel").glob("results*.jsonl")) == \
        ["results-job0.jsonl", "results-job1.jsonl"]
    assert studies.run_study(cfg, tmp_path / "parallel", jobs="auto").runs_finished == 3  # nothing redone


@pytest.mark.parametrize("jobs", [0, -1, "many", True])
def test_a_bad_job_count_is_an_error(jobs):
    with pytest.raises(UsageError, match="jobs"):
        studies.parse_jobs(jobs, "dense")


def test_auto_jobs_is_the_cores_over_the_threads_of_one_run(monkeypatch):
    import os

    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    monkeypatch.delenv("FMTRANSFER_THREADS", raising=False)
    assert studies.parse_jobs("auto", "dense") == 8  # one thread per dense run
    assert studies.parse_jobs("auto", "cnn") == 4  # a cnn run takes a fixed two threads (runtime.CNN_THREADS)
    monkeypatch.setenv("FMTRANSFER_THREADS", "2")
    assert studies.parse_jobs("auto", "cnn") == 4


# ----------------------------------------------------------------------------- the leaderboard

def _cell(name, p, gain=0.01, preset="book"):
    return studies.Cell(contender=name, title=name, pair=[5, 6], b_train_size=200, reuse_layers="all", preset=preset,
                        seeds=[1, 2], n=2, baseline_mean=0.9, baseline_std=0.01, transfer_mean=0.9 + gain,
                        transfer_std=0.01, mean_difference=gain, ci95=[gain - 0.01, gain + 0.01], p_value=p,
                        error_rate_ratio=1.0, wins=2, ties=0, losses=0)


def test_holm_corrects_each_setting_over_its_contenders_step_down():
    """p = 0.01, 0.04, 0.03 in one setting: sorted, times 3, 2, 1, then never decreasing:
    0.03, 0.06, 0.06. A lone contender in another setting keeps its p."""
    cells = [_cell("a", 0.01), _cell("b", 0.04), _cell("c", 0.03), _cell("d", 0.02, preset="notebook")]
    studies.holm(cells)
    assert [c.p_holm for c in cells] == pytest.approx([0.03, 0.06, 0.06, 0.02])


def test_holm_never_exceeds_one():
    cells = [_cell("a", 0.6), _cell("b", 0.9)]
    studies.holm(cells)
    assert [c.p_holm for c in cells] == [1.0, 1.0]


def test_the_markdown_leaderboard_ranks_by_gain_within_each_setting():
    result = studies.StudyResult("s", 4, 4, [_cell("small", 0.5, gain=0.001), _cell("big", 0.01, gain=0.02)], {})
    studies.holm(result.cells)
    rows = [line for line in studies.markdown(result).splitlines() if line.startswith("| 1 ") or line.startswith("| 2 ")]
    assert rows[0].startswith("| 1 | big | 92.00") and "+2.00" in rows[0]
    assert rows[1].startswith("| 2 | small |")


def test_a_study_takes_the_experiments_own_task_unless_its_grid_says_otherwise():
    """configs/ml3.toml sets [data] b_classes = [0, 2]: `study --config configs/ml3.toml` studies
    T-shirt vs pullover at its 200 images, not the 2nd edition's sandal vs shirt."""
    from conftest import CONFIGS
    from fmtransfer import load_config

    ml3 = load_config(CONFIGS / "ml3.toml")
    assert {(k.pair, k.b_train_size) for k in studies.grid(ml3)} == {((0, 2), 200)}
    book = Config()
    assert {(k.pair, k.b_train_size) for k in studies.grid(book)} == {((5, 6), 200)}
    chosen = ml3.replace(**{"study.pairs": [[7, 9]], "study.b_train_sizes": [50, 1000]})
    assert {(k.pair, k.b_train_size) for k in studies.grid(chosen)} == {((7, 9), 50), ((7, 9), 1000)}
