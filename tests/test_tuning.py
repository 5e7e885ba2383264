"""Tuned with an equal budget (issue 25): every contender and the baseline get N trials in each
(seed, draw), each drawing its settings from the search spaces; each unit's trial is selected on
validation data alone, and the cell pairs the selected contender with the selected baseline.

The studies here train on `tiny_data` in seconds, with epochs narrowed by `--space`.
"""

from __future__ import annotations

import json
import math
import random
import shutil
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_usage_error, run_cli, snapshot

from fmtransfer import data
from fmtransfer.config import Config
from fmtransfer.errors import ConfigError
from fmtransfer.study import load_records, tuning
from fmtransfer.study.records import RunRecord, config_from, read_meta

SPACE = "baseline.epochs=1..2,transfer.freeze_epochs=1..1,transfer.fine_tune_epochs=1..2"


def tiny(tiny_data: Path, *more: str, run: bool = False) -> list[str]:
    """Options that train a study (or with `run`, one experiment) on `tiny_data` in seconds."""
    size = ["--b-train-size", "20"] if run else ["--b-train-sizes", "20", "--no-plots"]
    return ["--data-dir", str(tiny_data), "--valid-size", "100", "--no-verify", "--hidden", "16,8", "--a-epochs", "1",
            *size, "--contenders", "transfer", "--space", SPACE, *more]


def lines(study: Path) -> list[dict]:
    return [json.loads(line) for path in sorted(study.glob("results*.jsonl")) for line in path.read_text().splitlines()]


def rank(scores: dict, trial: int) -> tuple:
    loss = scores.get("valid_loss")
    return scores["valid_accuracy"], -math.inf if loss is None else -loss, -trial


@pytest.fixture(scope="module")
def tuned(tiny_data, tmp_path_factory) -> tuple[Path, dict]:
    """Two seeds, three trials each, transfer against the baseline, selected on validation."""
    study = tmp_path_factory.mktemp("tuned") / "study"
    result = run_cli("study", "--run", study, *tiny(tiny_data, "--seeds", "2", "--tune", "3", "--json"))
    assert result.code == 0, result.err
    return study, result.json()


# ----------------------------------------------------------------------------- the trials

def test_every_trial_is_a_results_line_with_its_draw_its_validation_scores_and_its_steps(tuned):
    study, _ = tuned
    cfg = config_from(read_meta(study)["config"])
    found = lines(study)
    assert sorted((line["seed"], line["trial"]) for line in found) == [(s, t) for s in (42, 43) for t in range(3)]
    for record in load_records(study, cfg):
        line = record.to_dict()
        # What the trial drew is what its coordinates draw, whoever runs it.
        both = record.key.trial_settings(cfg, "transfer")
        assert {**line["drawn"]["baseline"], **line["drawn"]["result"]} == both
        assert set(line["drawn"]["result"]) == {"transfer.freeze_epochs", "transfer.fine_tune_epochs",
                                                "transfer.frozen_learning_rate", "transfer.fine_tune_learning_rate"}
        assert 1 <= both["baseline.epochs"] <= 2 and 1 <= both["transfer.fine_tune_epochs"] <= 2
        for side, epochs in (("baseline", both["baseline.epochs"]),
                             ("result", both["transfer.freeze_epochs"] + both["transfer.fine_tune_epochs"])):
            assert 0 <= line[side]["valid_accuracy"] <= 1
            assert line[side]["steps"] == epochs * math.ceil(20 / 32)  # one batch an epoch of 20 images


def test_each_unit_selects_the_trial_best_on_validation_and_pairs_it_with_the_selected_baseline(tuned):
    study, report = tuned
    [cell] = report["cells"]
    by_seed: dict[int, list[dict]] = {}
    for line in lines(study):
        by_seed.setdefault(line["seed"], []).append(line)
    assert cell["tuning"]["trials"] == 3 and cell["tuning"]["on"] == "valid"
    for i, choice in enumerate(cell["tuning"]["selected"]):
        trials = by_seed[choice["seed"]]
        mine = max(trials, key=lambda line: rank(line["result"], line["trial"]))
        theirs = max(trials, key=lambda line: rank(line["baseline"], line["trial"]))
        assert (choice["trial"], choice["baseline_trial"]) == (mine["trial"], theirs["trial"])
        assert cell["accuracies"][i] == mine["result"]["test_accuracy"]
        assert cell["baseline_accuracies"][i] == theirs["baseline"]["test_accuracy"]
        assert choice["settings"] == mine["drawn"]["result"]


def test_permuting_the_test_scores_changes_no_selection(tuned):
    """No test score ever chooses anything: shuffle every trial's test accuracies and losses, and
    every unit selects the same trials."""
    study, _ = tuned
    records = load_records(study, config_from(read_meta(study)["config"]))
    before = tuning.select(records, 3).choices
    rng = random.Random(0)
    for _ in range(5):
        tests = [(r.baseline.test_accuracy, r.result.test_accuracy) for r in records]
        rng.shuffle(tests)
        shuffled = [replace(r, baseline=replace(r.baseline, test_accuracy=b), result=replace(r.result, test_accuracy=m))
                    for r, (b, m) in zip(records, tests)]
        after = tuning.select(shuffled, 3).choices
        assert [[(c["trial"], c["baseline_trial"]) for c in cs] for cs in after.values()] == \
               [[(c["trial"], c["baseline_trial"]) for c in cs] for cs in before.values()]


def test_a_unit_is_selected_only_once_all_its_trials_are_recorded(tuned):
    study, _ = tuned
    records = [r for r in load_records(study, config_from(read_meta(study)["config"]))
               if not (r.key.seed == 43 and r.key.trial == 2)]
    selected = tuning.select(records, 3)
    assert [r.key.seed for r in selected.records] == [42]
    assert list(selected.incomplete.values()) == [1]


def test_the_report_has_the_budget_curves_and_the_tuned_gain_against_the_budget(tuned):
    _, report = tuned
    budget = report["cells"][0]["tuning"]["budget"]
    assert budget["contender"]["n"] == [1, 2, 3] and budget["contender"]["units"] == 2
    assert budget["contender"]["expected_valid"] == sorted(budget["contender"]["expected_valid"])
    assert len(budget["gain"]["mean"]) == 3 and isinstance(budget["gain"]["crossings"], list)
    # n = 1 is the mean over the trials, paired over the units.
    gain_at_one = np.mean([np.mean([line["result"]["test_accuracy"] - line["baseline"]["test_accuracy"]
                                    for line in lines(tuned[0]) if line["seed"] == seed]) for seed in (42, 43)])
    assert budget["gain"]["mean"][0] == pytest.approx(gain_at_one)


def test_the_terminal_and_markdown_reports_say_how_each_cell_was_tuned(tuned):
    study, _ = tuned
    for args in ([], ["--markdown"]):
        result = run_cli("study", "report", study, "--no-plots", "--wide", *args)
        assert result.code == 0, result.err
        assert "tuned with 3 trials a unit (random search)" in result.out
        assert "expected tuned gain" in result.out


# ----------------------------------------------------------------------------- resuming, sharding

def test_a_grown_budget_keeps_the_trials_made_and_a_shrunk_one_or_another_protocol_is_refused(tuned, tiny_data,
                                                                                              tmp_path):
    study = tmp_path / "grown"
    shutil.copytree(tuned[0], study)
    made = {line["id"]: line for line in lines(study)}
    grown = run_cli("study", "--run", study, *tiny(tiny_data, "--seeds", "2", "--tune", "4", "--json"))
    assert grown.code == 0, grown.err
    now = {line["id"]: line for line in lines(study)}
    assert {k: now[k] for k in made} == made and len(now) == len(made) + 2
    before = snapshot(study)
    for args, named in ((["--tune", "3"], "--tune 4"), (["--tune", "4", "--tune-on", "cv:2"], "--tune-on"),
                        (["--tune", "4", "--sampler", "tpe"], "--sampler"), ([], "--tune 4")):
        assert_usage_error(run_cli("study", "--run", study, *tiny(tiny_data, "--seeds", "2", *args)), named)
        assert snapshot(study) == before


def test_shards_draw_and_train_the_same_trials_as_one_process(tuned, tiny_data, tmp_path):
    study = tmp_path / "sharded"
    for shard in ("0/2", "1/2"):
        result = run_cli("study", "--run", study, *tiny(tiny_data, "--seeds", "2", "--tune", "3", "--shard", shard))
        assert result.code == 0, result.err
    whole = {line["id"]: (line["fingerprint"], line["drawn"], line["result"], line["baseline"]) for line in lines(tuned[0])}
    parts = {line["id"]: (line["fingerprint"], line["drawn"], line["result"], line["baseline"]) for line in lines(study)}
    assert parts == whole


# ----------------------------------------------------------------------------- cross-validation

def test_folds_split_the_labelled_sample_by_class_into_k_disjoint_parts(tiny_data):
    raw = data.load_raw(tiny_data, None)
    split = data.make_split(raw, (5, 6), 20, 100)
    folds = data.folds(split, 4)
    held = np.concatenate([f.indices["b_valid"] for f in folds])
    assert sorted(held) == sorted(split.indices["b_train"])  # every image held out once
    for f in folds:
        assert set(f.indices["b_train"]).isdisjoint(f.indices["b_valid"])
        assert len(f.b_train[1]) + len(f.b_valid[1]) == 20
        assert set(np.unique(f.b_valid[1])) == {0, 1}  # each class in each fold
        assert f.b_test is split.b_test
    counts = np.unique(split.b_train[1], return_counts=True)[1]
    with pytest.raises(ConfigError) as e:
        data.folds(split, int(counts.min()) + 1)
    assert e.value.key == "tune.on"


def test_the_protocol_as_typed_with_spaces_is_the_protocol_itself():
    """A TOML file's on = " cv:5 " is cv:5, never a silent fall back to the validation images."""
    tune = Config(tune={"trials": 2, "on": " cv:5 "}).tune
    assert (tune.on, tune.folds) == ("cv:5", 5)


def test_a_cv_tuned_study_scores_each_trial_on_the_folds_and_counts_their_steps(tiny_data, tmp_path):
    study = tmp_path / "cv"
    result = run_cli("study", "--run", study, *tiny(tiny_data, "--tune", "2", "--tune-on", "cv:2", "--json"))
    assert result.code == 0, result.err
    for line in lines(study):
        for side in ("baseline", "result"):
            assert line[side]["folds"] == 2
            assert line[side]["tuning_steps"] > line[side]["steps"]  # two fold models and the final one
    assert result.json()["cells"][0]["tuning"]["on"] == "cv:2"


# ----------------------------------------------------------------------------- one tuned experiment

def test_run_tune_prints_the_selected_settings_beside_the_test_table(tiny_data, tmp_path):
    result = run_cli("run", "--run", tmp_path / "run", "--tune", "2", *tiny(tiny_data, run=True))
    assert result.code == 0, result.err
    assert "baseline: trial" in result.out and "transfer from A: trial" in result.out
    assert "selected on valid" in result.out


def test_run_experiment_tunes_in_the_api_and_says_which_trial_each_result_is(tiny_data):
    from fmtransfer import run_experiment

    cfg = Config(data={"dir": str(tiny_data), "verify_checksums": False, "valid_size": 100, "b_train_size": 20},
                 model={"hidden": [16, 8]}, train_a={"epochs": 1}, study={"space": tuple(SPACE.split(","))})
    result = run_experiment(cfg, tune=2)
    for r in result.contenders.values():
        tuned = r.details["tuned"]
        assert tuned["trials"] == 2 and tuned["trial"] in (0, 1) and tuned["on"] == "valid"
        assert 0 <= tuned["valid_accuracy"] <= 1 and tuned["settings"]


# ----------------------------------------------------------------------------- TPE

def test_a_tpe_study_resumed_suggests_what_an_uninterrupted_one_did_and_keeps_a_journal(tiny_data, tmp_path):
    pytest.importorskip("optuna", reason="the tune extra (make install installs it)")
    study = tmp_path / "tpe"
    args = tiny(tiny_data, "--tune", "3", "--sampler", "tpe")
    assert run_cli("study", "--run", study, *args).code == 0
    assert (study / "tune" / "tpe.journal").is_file()
    first = {line["id"]: line["drawn"] for line in lines(study)}
    results = study / "results.jsonl"
    kept = results.read_text().splitlines()
    results.write_text("\n".join(kept[:-1]) + "\n")  # the last trial lost
    assert run_cli("study", "--run", study, *args).code == 0
    assert {line["id"]: line["drawn"] for line in lines(study)} == first
    report = run_cli("study", "report", study, "--json", "--no-plots").json()
    assert report["cells"][0]["tuning"]["sampler"] == "tpe" and report["cells"][0]["tuning"]["budget"] is None


# ----------------------------------------------------------------------------- bad input

@pytest.mark.parametrize("args, named", [
    (["--tune", "0"], "--tune"), (["--tune", "-3"], "--tune"), (["--tune", "100000"], "--tune"),
    (["--tune", "2", "--tune-on", "cv:1"], "--tune-on"), (["--tune", "2", "--tune-on", "cv:x"], "--tune-on"),
    (["--tune", "2", "--tune-on", "cv:11"], "--tune-on"),  # 20 images: at most 10 of a class
    (["--tune", "2", "--presets", "book,notebook"], "--presets"),
    (["--tune", "2", "--sampler", "tpe", "--stack", "2"], "--stack"),  # TPE's trials run in order
    (["--tune", "2", "--space", "baseline.learning_rate=0.1..0.01"], "baseline.learning_rate"),
    (["--tune", "2", "--space", "baseline.learning_rate=0..0.1"], "baseline.learning_rate"),
])
def test_bad_tuning_input_is_one_line_exit_2_before_anything_trains(args, named, tiny_data, tmp_path):
    line = assert_usage_error(run_cli("study", "--run", tmp_path / "s", *tiny(tiny_data)[:-2], *args), named)
    assert not (tmp_path / "s" / "results.jsonl").exists(), line


def test_tpe_without_optuna_is_one_line_naming_the_sampler(tiny_data, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "optuna", None)
    assert_usage_error(run_cli("study", "--run", tmp_path / "s", *tiny(tiny_data, "--tune", "2", "--sampler", "tpe")),
                       "--sampler")


# ----------------------------------------------------------------------------- stacked trials

def test_stacked_trials_give_each_trials_numbers_to_float_precision_and_the_same_selection(tuned, tiny_data, tmp_path):
    """`--stack K` trains up to K trials of one seed as one graph, each with its own settings."""
    study = tmp_path / "stacked"
    result = run_cli("study", "--run", study, *tiny(tiny_data, "--seeds", "2", "--tune", "3", "--stack", "2", "--json"))
    assert result.code == 0, result.err
    alone = {line["id"]: line for line in lines(tuned[0])}
    stacked = {line["id"]: line for line in lines(study)}
    assert set(stacked) == set(alone)
    for run_id, line in stacked.items():
        assert line["drawn"] == alone[run_id]["drawn"]
        assert line["trained_with"]["stack_slot"] == line["trial"] % 2
        for side in ("baseline", "result"):
            for score in ("test_accuracy", "valid_accuracy", "valid_loss"):
                assert line[side][score] == pytest.approx(alone[run_id][side][score], abs=1e-5)
    [cell] = result.json()["cells"]
    assert [(c["trial"], c["baseline_trial"]) for c in cell["tuning"]["selected"]] == \
           [(c["trial"], c["baseline_trial"]) for c in tuned[1]["cells"][0]["tuning"]["selected"]]


def test_what_a_trial_records_it_drew_is_what_its_run_trained_with_at_every_reuse_depth():
    """A depth's space is capped by the point's reuse depth, not the study's first: the `drawn`
    a results line keeps is the run config's, for every contender and depth."""
    from fmtransfer.study.axes import grid

    cfg = Config(tune={"trials": 4}, study={"reuse_layers": ("all", 1, 2)}, contenders=("reinit", "surgical", "bss"))
    draws = tuning.Draws(cfg)
    for key in grid(cfg):
        for name in ("reinit", "surgical", "bss"):
            drawn = draws.drawn(key, name)
            run = key.config(cfg, name, drawn).to_dict()
            for k, v in {**drawn["baseline"], **drawn["result"]}.items():
                section, _, setting = k.partition(".")
                assert run[section][setting] == v, (key.id, name, k)
            if key.reuse_layers != "all":
                assert drawn["result"].get("reinit.depth", 1) <= key.reuse_layers
                assert drawn["result"].get("surgical.block", 1) <= key.reuse_layers
