"""Smoke-test settings are flagged: a run, study or report whose settings are below the chapter's
(fewer epochs, fewer images) says so in its title in every output (terminal, Markdown, HTML, JSON),
and `study claims` never prints a verdict on it without the warning. The chapter's settings
(the defaults, configs/book.toml) are never flagged.
"""

from __future__ import annotations

import json

import pytest

from conftest import CONFIGS, run_cli
from fmtransfer import contenders
from fmtransfer.config import Config, below_chapter, load_config
from studyfiles import write_study

QUICK = {"train_a.epochs": 2, "baseline.epochs": 5, "transfer.freeze_epochs": 2, "transfer.fine_tune_epochs": 3}


@pytest.mark.parametrize("preset", ["book", "notebook", "ml3"])
def test_the_chapters_presets_are_not_smoke_tests(preset):
    cfg = load_config(CONFIGS / f"{preset}.toml")
    assert contenders.smoke(cfg.replace(contenders=["all"])) == ()


def test_quick_toml_is_a_smoke_test_naming_each_setting_below_the_chapters():
    cfg = load_config(CONFIGS / "quick.toml")
    assert contenders.smoke(cfg) == ("train_a.epochs 2 (the chapter's: 20)", "baseline.epochs 5 (the chapter's: 20)",
                                     "transfer.freeze_epochs 2 (the chapter's: 4)",
                                     "transfer.fine_tune_epochs 3 (the chapter's: 16)")


def test_only_the_sections_the_contenders_read_count():
    """Pretraining with 1 epoch makes a smoke test of a run that pretrains, not of one that does
    not; a contender's sections are those its models' fingerprints are made from."""
    cfg = Config().replace(**{"pretrain.epochs": 1, "greedy.epochs": 1})
    assert contenders.smoke(cfg) == ()
    assert contenders.smoke(cfg.replace(contenders=["autoencoder"])) == ("pretrain.epochs 1 (the chapter's: 10)",)
    assert "greedy.epochs 1 (the chapter's: 5)" in contenders.smoke(cfg.replace(contenders=["greedy"]))
    assert contenders.smoke(cfg.replace(**{"pretrain.epochs": 10}, contenders=["greedy", "transfer"])) == (
        "greedy.epochs 1 (the chapter's: 5)",)


def test_fewer_images_than_the_chapter_is_a_smoke_test_but_a_studied_size_is_not():
    assert below_chapter({"data": {"valid_size": 100}}) == ("data.valid_size 100 (the chapter's: 5000)",)
    assert below_chapter({"pretrain": {"unlabelled_size": 5000}}) == (
        "pretrain.unlabelled_size 5000 (the chapter's: 0, every training image)",)
    assert below_chapter({"data": {"b_train_size": 50}, "study": {"b_train_sizes": [50, 1000]}}) == ()


def test_more_epochs_than_the_chapter_is_no_smoke_test():
    assert below_chapter({"train_a": {"epochs": 40}, "baseline": {"epochs": 30}}) == ()


@pytest.fixture(scope="module")
def smoke_study(tmp_path_factory):
    return write_study(tmp_path_factory.mktemp("quick") / "study", {"transfer": 0.01}, seeds=range(1, 6),
                       config=QUICK)


@pytest.fixture(scope="module")
def chapter_study(tmp_path_factory):
    return write_study(tmp_path_factory.mktemp("chapter") / "study", {"transfer": 0.01}, seeds=range(1, 6))


def test_a_smoke_studys_report_says_so_first_in_every_output(smoke_study):
    terminal = run_cli("study", "report", smoke_study, "--no-plots")
    assert terminal.code == 0, terminal.err
    assert terminal.out.lstrip().startswith("SMOKE TEST (settings below the chapter's")
    assert "train_a.epochs 2 (the chapter's: 20)" in terminal.out

    markdown = run_cli("study", "report", smoke_study, "--no-plots", "--markdown")
    assert markdown.out.lstrip().startswith("**SMOKE TEST: below the chapter's settings: train_a.epochs 2")

    page = smoke_study.parent / "report.html"
    assert run_cli("study", "report", smoke_study, "--no-plots", "--html", page).code == 0
    html = page.read_text()
    assert "<title>SMOKE TEST: " in html and "<h1>SMOKE TEST (settings below the chapter&#x27;s" in html
    assert "train_a.epochs 2 (the chapter&#x27;s: 20)" in html
    assert html.count("(SMOKE TEST)") >= 1  # the claims it shows, never a bare verdict

    as_json = run_cli("study", "report", smoke_study, "--no-plots", "--json").json()
    assert as_json["smoke"][:2] == ["train_a.epochs 2 (the chapter's: 20)", "baseline.epochs 5 (the chapter's: 20)"]


def test_study_claims_never_give_a_bare_verdict_on_a_smoke_study(smoke_study):
    terminal = run_cli("study", "claims", smoke_study)
    assert terminal.code == 0, terminal.err
    judged = [line for line in terminal.out.splitlines() if "transfer-helps (11.2.1)" in line]
    assert judged and all("(SMOKE TEST)" in line for line in judged)
    assert terminal.out.lstrip().startswith("SMOKE TEST")

    found = json.loads(run_cli("study", "claims", smoke_study, "--json").out)
    said = (f"{smoke_study}: train_a.epochs 2 (the chapter's: 20), baseline.epochs 5 (the chapter's: 20), "
            "transfer.freeze_epochs 2 (the chapter's: 4), transfer.fine_tune_epochs 3 (the chapter's: 16)")
    assert found and all(c["smoke"] == [said] for c in found)

    markdown = run_cli("study", "claims", smoke_study, "--markdown").out
    assert markdown.startswith("**SMOKE TEST: below the chapter's settings:")
    assert "(SMOKE TEST)**" in markdown


def test_a_study_on_the_chapters_settings_carries_no_warning(chapter_study):
    for args in (["report", chapter_study, "--no-plots"], ["claims", chapter_study]):
        result = run_cli("study", *args)
        assert result.code == 0, result.err
        assert "SMOKE" not in result.out
    assert run_cli("study", "report", chapter_study, "--no-plots", "--json").json()["smoke"] == []
    assert all(c["smoke"] == [] for c in json.loads(run_cli("study", "claims", chapter_study, "--json").out))


def test_a_quick_run_says_it_is_a_smoke_test_in_its_table_and_json(tiny_data, tmp_path):
    args = ["run", "--config", CONFIGS / "quick.toml", "--run", tmp_path / "run", "--data-dir", tiny_data,
            "--no-verify", "--valid-size", 100, "--b-train-size", 20]
    shown = run_cli(*args)
    assert shown.code == 0, shown.err
    assert "SMOKE TEST (settings below the chapter's" in shown.out
    assert "data.valid_size 100 (the chapter's: 5000)" in shown.out
    made = json.loads((tmp_path / "run" / "compare.json").read_text())
    assert "train_a.epochs 2 (the chapter's: 20)" in made["smoke"]

    # compare, run alone later, judges by the model A its contenders were built on (2 epochs),
    # not by the train_a defaults it was given.
    again = run_cli("compare", "--run", tmp_path / "run", "--json", "--b-epochs", 5)
    assert again.code == 0, again.err
    assert "train_a.epochs 2 (the chapter's: 20)" in again.json()["smoke"]
