"""Artifacts prove what they are: needs as typed values, one resolver over a store, fingerprints.

Each case of the redesign's "why" is here, on `tiny_data` (700 generated images, 1-2 epochs): a
study's cached model swapped for another seed's, or copied over, is trained again, to the numbers
a clean study gives; a run directory refuses a model made for another shape or seed, or a file
copied over its own, in one line naming the file and the command that remakes it; a study rerun
on other dataset files is refused. Every one of these ran without error, with wrong numbers,
before.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

import fmtransfer
from conftest import assert_usage_error, run_cli, snapshot, tiny_settings, write_idx
from fmtransfer import contenders, data, fingerprints
from fmtransfer.io import file_sha256, fingerprint
from fmtransfer import study as studies
from fmtransfer.needs import MODEL_A, Encoder, needs_of, parse

# ----------------------------------------------------------------------------- needs, typed


def test_a_need_round_trips_todays_strings_and_every_contender_maps_to_typed_needs():
    assert parse("model_a") is MODEL_A and str(MODEL_A) == "model_a"
    assert parse("encoder:gan") == Encoder("gan") and str(Encoder("gan")) == "encoder:gan"
    assert parse(Encoder("rbm")) == Encoder("rbm")
    for name in contenders.names():
        c = contenders.get(name)
        assert [str(n) for n in needs_of(c)] == list(map(str, c.needs))
    assert needs_of(contenders.get("baseline")) == () and needs_of(contenders.get("lp-ft")) == (MODEL_A,)
    for bad in ("encoder:", "model-a", "encoder", ""):
        with pytest.raises(ValueError, match="model_a"):
            parse(bad)


def test_a_need_equals_its_string_so_a_mapping_keyed_either_way_answers_to_both():
    """Contenders' `deps` have been keyed by strings: a contender declaring MODEL_A finds its
    model in {"model_a": model}, and one declaring "model_a" in {MODEL_A: model}."""
    assert {"model_a": 1}[MODEL_A] == 1 and {MODEL_A: 1}["model_a"] == 1
    assert {Encoder("gan"): 2}["encoder:gan"] == 2 and "encoder:rbm" not in {Encoder("gan"): 2}
    assert MODEL_A != Encoder("model_a") and Encoder("gan") != "gan" and MODEL_A != 1
    assert len({MODEL_A, "model_a", parse("model_a")}) == 1


# ----------------------------------------------------------------------------- the rules


def test_each_artifact_depends_on_what_determines_it_and_nothing_else(tiny_data):
    cfg = fmtransfer.load_config(None, tiny_settings(tiny_data))
    sha = data.dataset_hashes(cfg.data)
    a = fingerprints.model_a(cfg, sha)
    # Model A never sees task B's training images, nor do encoders see labels.
    assert fingerprints.model_a(cfg.replace(**{"data.b_train_size": 10}), sha) == a
    assert fingerprints.model_a(cfg.replace(**{"data.b_classes": [0, 2]}), sha) != a
    enc = fingerprints.encoder(cfg, sha, "autoencoder")
    assert fingerprints.encoder(cfg.replace(**{"data.b_classes": [0, 2]}), sha, "autoencoder") == enc
    assert fingerprints.encoder(cfg.replace(**{"greedy.epochs": 3}), sha, "autoencoder") == enc
    assert fingerprints.encoder(cfg.replace(**{"greedy.epochs": 3}), sha, "greedy") != \
        fingerprints.encoder(cfg, sha, "greedy")
    other = {**sha, "t10k-labels-idx1-ubyte.gz": "0" * 64}
    for changed in (fingerprints.model_a(cfg.replace(seed=43), sha), fingerprints.model_a(cfg, other),
                    fingerprints.model_a(cfg.replace(**{"model.hidden": [20]}), sha),
                    fingerprints.model_a(cfg.replace(**{"train_a.epochs": 3}), sha)):
        assert changed != a
    # Where the files lie changes nothing in them.
    assert fingerprints.model_a(cfg.replace(**{"data.dir": "/elsewhere"}), sha) == a
    line = fingerprints.run(cfg, sha, "transfer")
    assert fingerprints.run(cfg.replace(**{"transfer.fine_tune_learning_rate": 1e-3}), sha, "transfer") != line
    assert fingerprints.run(cfg.replace(**{"baseline.epochs": 3}), sha, "transfer") != line
    assert fingerprints.run(cfg.replace(**{"pretrain.epochs": 3}), sha, "transfer") == line  # not built on one
    assert fingerprints.run(cfg.replace(**{"pretrain.epochs": 3}), sha, "autoencoder") != \
        fingerprints.run(cfg, sha, "autoencoder")


def test_a_difference_is_said_by_its_key():
    assert fingerprints.difference({"seed": 43}, {"seed": 42}) == "made for seed 43, this run has seed 42"
    assert fingerprints.difference({"model.hidden": [300, 100]}, {"model.hidden": [20]}) == \
        "made with model.hidden [300, 100], this run has [20]"
    assert "t10k-images-idx3-ubyte.gz" in fingerprints.difference(
        {"data.sha256": {"t10k-images-idx3-ubyte.gz": "a", "x": "b"}},
        {"data.sha256": {"t10k-images-idx3-ubyte.gz": "c", "x": "b"}})
    assert fingerprints.difference({"train_a.epochs": 1, "seed": 1}, {"train_a.epochs": 20, "seed": 1},
                                   ignore=("train_a",)) is None


def test_stages_no_longer_import_pipeline():
    """The in-memory pipeline runs the stages for `run_dir=`; the stages need nothing of it."""
    proc = subprocess.run([sys.executable, "-c", "import sys, fmtransfer.stages, fmtransfer.study; "
                                                 "print('fmtransfer.pipeline' in sys.modules)"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "False", proc.stderr[-2000:]


# ----------------------------------------------------------------------------- a study's cache

@pytest.fixture(scope="module")
def study_cfg(tiny_data):
    return fmtransfer.load_config(None, {**tiny_settings(tiny_data), "contenders": ["transfer", "autoencoder"],
                                         "study.seeds": [42, 43], "study.b_train_sizes": [20]})


@pytest.fixture(scope="module")
def clean(study_cfg, tmp_path_factory):
    """The grid with both presets, made in one go: what every resumed study must equal."""
    directory = tmp_path_factory.mktemp("clean")
    studies.run_study(study_cfg.replace(**{"study.presets": ["book", "notebook"]}), directory)
    return directory


@pytest.fixture(scope="module")
def book_only(study_cfg, tmp_path_factory):
    directory = tmp_path_factory.mktemp("book")
    studies.run_study(study_cfg, directory)
    return directory


def _numbers(directory) -> dict:
    return {r["id"]: (r["baseline"], r["result"]) for r in studies.load_results(directory)}


def _resumed_with_one_more_preset(study_cfg, directory, clean) -> None:
    result = studies.run_study(study_cfg.replace(**{"study.presets": ["book", "notebook"]}), directory)
    assert result.runs_finished == result.runs_in_grid == 8 and not result.skipped
    assert _numbers(directory) == _numbers(clean)


def test_a_cached_encoder_swapped_for_another_seeds_is_trained_again(study_cfg, book_only, clean, tmp_path):
    """Seed 43's encoder and its record, renamed as seed 42's: the record says seed 43, so seed
    42's new runs get an encoder of their own, and the numbers of a clean study."""
    directory = tmp_path / "study"
    shutil.copytree(book_only, directory)
    models = directory / "models"
    for suffix in (".keras", ".json"):
        a, b = models / f"encoder-autoencoder-seed42{suffix}", models / f"encoder-autoencoder-seed43{suffix}"
        a_bytes = a.read_bytes()
        a.write_bytes(b.read_bytes())
        b.write_bytes(a_bytes)
    _resumed_with_one_more_preset(study_cfg, directory, clean)
    for seed in (42, 43):
        record = json.loads((models / f"encoder-autoencoder-seed{seed}.json").read_text())
        assert record["seed"] == record["made_from"]["seed"] == seed


def test_a_cached_model_a_copied_over_another_is_trained_again(study_cfg, book_only, clean, tmp_path):
    """Seed 43's model A file over seed 42's, the record left in place: the file is not the one
    the record describes, so it is trained again, to the numbers of a clean study."""
    directory = tmp_path / "study"
    shutil.copytree(book_only, directory)
    models = directory / "models"
    shutil.copy2(models / "a-seed43-pair5v6.keras", models / "a-seed42-pair5v6.keras")
    _resumed_with_one_more_preset(study_cfg, directory, clean)
    assert (models / "a-seed42-pair5v6.keras").read_bytes() != (models / "a-seed43-pair5v6.keras").read_bytes()


def test_a_study_json_without_the_dataset_resumes_without_training_and_gets_it(study_cfg, clean, tmp_path,
                                                                              monkeypatch):
    from fmtransfer import pretraining, resolver

    directory = tmp_path / "study"
    shutil.copytree(clean, directory)
    meta = json.loads((directory / "study.json").read_text())
    (directory / "study.json").write_text(json.dumps({k: v for k, v in meta.items() if k != "dataset"}))
    monkeypatch.setattr(resolver, "train_model_a", lambda *a, **k: pytest.fail("model A was trained"))
    monkeypatch.setattr(pretraining, "pretrain", lambda *a, **k: pytest.fail("an encoder was trained"))
    cfg = study_cfg.replace(**{"study.presets": ["book", "notebook"]})
    assert studies.run_study(cfg, directory).runs_finished == 8
    assert json.loads((directory / "study.json").read_text())["dataset"] == meta["dataset"]
    assert meta["dataset"]["sha256"] == data.dataset_hashes(cfg.data)


def test_a_results_line_is_checked_by_its_fingerprint_and_an_older_one_by_its_settings(study_cfg, clean, tmp_path):
    directory = tmp_path / "study"
    shutil.copytree(clean, directory)
    path = directory / "results.jsonl"
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    sha = data.dataset_hashes(study_cfg.data)
    for r in lines:
        key = studies.RunKey.from_json(r)
        assert r["fingerprint"] == fingerprints.run(key.config(study_cfg), sha, r["contender"])
    older = {k: v for k, v in lines[0].items() if k != "fingerprint"}  # as fmtransfer 0.4 wrote it
    forged = {**lines[1], "fingerprint": "0" * 16}  # e.g. a line made with other rates under this id
    path.write_text("".join(json.dumps(r) + "\n" for r in [older, forged, *lines[2:]]))
    report = studies.report(directory)
    assert report.runs_finished == 7 and report.skipped == {"made with other settings": 1}
    meta = json.loads((directory / "study.json").read_text())
    meta["dataset"]["sha256"]["train-images-idx3-ubyte.gz"] = "0" * 64
    (directory / "study.json").write_text(json.dumps(meta))
    assert studies.report(directory).runs_finished == 1  # only the line without a fingerprint


# ----------------------------------------------------------------------------- the dataset of a study

@pytest.fixture
def other_data(tiny_data, tmp_path):
    """tiny_data with one pixel of one training image changed."""
    directory = tmp_path / "other-data"
    shutil.copytree(tiny_data, directory)
    images = data.read_idx(directory / "train-images-idx3-ubyte.gz", data.IMAGES_MAGIC).copy()
    images[0, 27, 27] ^= 1
    write_idx(directory / "train-images-idx3-ubyte.gz", images)
    return directory


def test_a_study_rerun_on_other_dataset_files_is_refused_in_one_line(tiny_data, other_data, tmp_path):
    study = tmp_path / "study"
    args = ["--seeds", "1", "--b-train-sizes", "20", "--no-verify", "--valid-size", "100", "--a-epochs", "1",
            "--b-epochs", "1", "--freeze-epochs", "1", "--fine-tune-epochs", "1", "--hidden", "16,8", "--no-plots"]
    assert run_cli("study", "--run", study, "--data-dir", tiny_data, *args).code == 0
    before = snapshot(study)
    line = assert_usage_error(run_cli("study", "--run", study, "--data-dir", other_data, *args,
                                      "--presets", "book,notebook"),
                              str(study), "other dataset files", "train-images-idx3-ubyte.gz")
    assert "use another directory" in line
    assert snapshot(study) == before


def test_runs_made_on_other_data_are_never_mixed_in_after_study_json_is_deleted(tiny_data, other_data, tmp_path):
    """Following "delete study.json": the lines made on the first data are skipped, model A is
    trained again on the new data, and the numbers are those of a clean study of it."""
    cfg = fmtransfer.load_config(None, {**tiny_settings(tiny_data), "study.seeds": [1],
                                        "study.b_train_sizes": [20]})
    on_other = cfg.replace(**{"data.dir": str(other_data)})
    studies.run_study(cfg, tmp_path / "study")
    (tmp_path / "study" / "study.json").unlink()
    mixed = studies.run_study(on_other, tmp_path / "study")
    assert mixed.skipped == {"made with other settings": 1} and mixed.runs_finished == 1
    clean = studies.run_study(on_other, tmp_path / "clean")
    assert _numbers(tmp_path / "study") == _numbers(tmp_path / "clean")
    assert clean.cells[0].transfer_mean == mixed.cells[0].transfer_mean


# ----------------------------------------------------------------------------- a run directory

SMALL = ("--freeze-epochs", "1", "--fine-tune-epochs", "1")


@pytest.fixture
def run(tiny_data, tmp_path):
    """A split, an autoencoder's encoder and model A, all with the [16, 8] hidden stack."""
    run = tmp_path / "run"
    for args in (("split", "--data-dir", tiny_data, "--no-verify", "--valid-size", "100", "--b-train-size", "20"),
                 ("pretrain", "--hidden", "16,8", "--unlabelled-size", "50", "--epochs", "1", "--no-plot"),
                 ("train-a", "--epochs", "1")):
        result = run_cli(*args, "--run", run)
        assert result.code == 0, result.err
    return run


def test_transfer_refuses_an_encoder_made_for_another_shape(run):
    """pretrain, then `train-a --hidden 20`: the run's networks are [20] now, and building B on
    the [16, 8] encoder (then pairing it with a [20] baseline) would compare two shapes."""
    assert run_cli("train-a", "--run", run, "--hidden", "20", "--epochs", "1").code == 0
    before = snapshot(run)
    line = assert_usage_error(run_cli("transfer", "--run", run, "--from", "autoencoder", *SMALL),
                              str(run / "encoder_autoencoder.keras"),
                              "made with model.hidden [16, 8], this run has [20]",
                              f"`fmtransfer pretrain --method autoencoder --run {run}` again")
    assert "Traceback" not in line
    assert snapshot(run) == before and not (run / "transfer_autoencoder.json").exists()


def test_transfer_refuses_a_model_a_made_for_another_seed_or_copied_over(run):
    before = snapshot(run)
    assert_usage_error(run_cli("transfer", "--run", run, "--seed", "43", *SMALL), str(run / "model_a.keras"),
                       "made for seed 42, this run has seed 43", f"`fmtransfer train-a --run {run}` again")
    shutil.copy2(run / "encoder_autoencoder.keras", run / "model_a.keras")  # a model file of the same shape
    assert_usage_error(run_cli("transfer", "--run", run, *SMALL), str(run / "model_a.keras"),
                       "not the file its record describes", "`fmtransfer train-a")
    record = json.loads((run / "model_a.json").read_text())
    shutil.copy2(run / "encoder_autoencoder.keras", run / "model_a.keras")
    legacy = {k: v for k, v in record.items() if k not in ("made_from", "fingerprint", "file_sha256")}
    (run / "model_a.json").write_text(json.dumps(legacy))  # as fmtransfer 0.4 wrote it: nothing to check
    assert_usage_error(run_cli("transfer", "--run", run, *SMALL), "does not say what made it", "`fmtransfer train-a")
    assert {k for k, v in snapshot(run).items() if before.get(k) != v} == {"model_a.keras", "model_a.json"}


def test_every_artifact_of_a_run_records_what_made_it(run):
    assert run_cli("transfer", "--run", run, *SMALL).code == 0
    assert run_cli("compare", "--run", run, "--epochs", "1").code == 0
    for model, record in (("model_a", "model_a"), ("encoder_autoencoder", "pretrain_autoencoder"),
                          ("model_b_on_a", "transfer_a"), ("model_b", "baseline")):
        saved = json.loads((run / f"{record}.json").read_text())
        assert saved["fingerprint"] == fingerprint(saved["made_from"])
        assert saved["file_sha256"] == file_sha256(run / f"{model}.keras")
        assert saved["made_from"]["seed"] == 42 and saved["made_from"]["model.hidden"] == [16, 8]
    a = json.loads((run / "model_a.json").read_text())
    assert json.loads((run / "transfer_a.json").read_text())["made_from"]["built_on.model_a"] == a["fingerprint"]
    # A baseline file replaced behind its record is trained again, not reused on its record's word.
    baseline = json.loads((run / "baseline.json").read_text())
    shutil.copy2(run / "model_b_on_a.keras", run / "model_b.keras")
    result = run_cli("compare", "--run", run, "--epochs", "1", "--json")
    assert result.code == 0, result.err
    again = json.loads((run / "baseline.json").read_text())
    assert again["file_sha256"] == file_sha256(run / "model_b.keras") != baseline["file_sha256"]
    assert again["test_accuracy"] == baseline["test_accuracy"]  # same settings, same numbers


def test_in_memory_needs_are_made_once_and_recorded(tiny_data):
    from fmtransfer.resolver import MemoryStore, Resolver

    cfg = fmtransfer.load_config(None, tiny_settings(tiny_data))
    split = data.split_of(data.load(cfg.data), cfg.data)
    fmtransfer.setup()
    resolver = Resolver(cfg, split, MemoryStore())
    assert not resolver.has("model_a")
    model = resolver["model_a"]
    assert resolver.has(MODEL_A) and resolver[MODEL_A] is model
    assert resolver.info["model_a"]["fingerprint"] == fingerprint(fingerprints.model_a(cfg, split.sha256))
    assert resolver.made[MODEL_A].epochs == 1 and np.isfinite(resolver.made[MODEL_A].test_loss)
