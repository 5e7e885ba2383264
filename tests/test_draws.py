"""Task B's labelled sample as a random factor: `data.b_sample`, the `data_seed` axis, and their records.

A data seed draws the N task-B training images at random from those outside the validation set;
"first" is the book's first N and leaves every run id and fingerprint as it was before draws
existed, so a study made then resumes without retraining anything.
"""

import json

import numpy as np
import pytest

from conftest import assert_usage_error, tiny_settings
from fmtransfer import data, fingerprints
from fmtransfer import study as studies
from fmtransfer.config import Config, DataConfig
from fmtransfer.errors import ConfigError
from fmtransfer.io import fingerprint
from fmtransfer.rundir import RunDir


def _labels(n: int = 6000, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 10, size=n).astype(np.uint8)


# ----------------------------------------------------------------------------- the draw

def test_draws_nest_across_sizes_and_lie_outside_the_validation_set():
    y, y_test = _labels(), _labels(100, 1)
    pool = set(np.flatnonzero(np.isin(y, (5, 6)))) - set(range(500))
    for valid_from in ("first", "last"):
        for seed in (0, 1, 7):
            rows = [data.split_indices(y, y_test, (5, 6), n, 500, valid_from, b_sample=seed)["b_train"]
                    for n in (50, 200, 1000)]
            assert [len(r) for r in rows] == [50, 200, 1000]
            assert set(rows[0]) < set(rows[1]) < set(rows[2])
            valid = data.split_indices(y, y_test, (5, 6), 50, 500, valid_from)["b_valid"]
            assert not set(rows[2]) & set(valid) and all(np.isin(y[rows[2]], (5, 6)))
            assert all(np.diff(rows[2]) > 0)  # in file order: the set decides, as "first" does
        if valid_from == "first":
            assert set(rows[2]) <= pool


def test_a_data_seed_always_draws_the_same_images_and_another_seed_others():
    y, y_test = _labels(), _labels(100, 1)
    once = data.split_indices(y, y_test, (5, 6), 200, 500, b_sample=3)["b_train"]
    again = data.split_indices(y.copy(), y_test, (5, 6), 200, 500, b_sample=3)["b_train"]
    other = data.split_indices(y, y_test, (5, 6), 200, 500, b_sample=4)["b_train"]
    assert np.array_equal(once, again) and len(set(once) & set(other)) < 150
    assert data.indices_sha256(once) == data.indices_sha256(again) != data.indices_sha256(other)
    # The draw is fmtransfer's own arithmetic, pinned: a change would pass other images off as seed 0's.
    assert data.draw_order(np.arange(10), 0).tolist() == [1, 4, 5, 7, 6, 9, 0, 3, 2, 8]
    rows = np.arange(5000, 5400)
    assert data.draw_order(rows, 12345).tolist() == sorted(rows.tolist(), key=lambda r: _mix(_mix(12345) ^ r))
    first = data.split_indices(y, y_test, (5, 6), 200, 500)["b_train"]
    assert np.array_equal(first, np.flatnonzero(np.isin(y, (5, 6)) & (np.arange(len(y)) >= 500))[:200])


def _mix(x: int) -> int:
    """SplitMix64's finaliser in plain Python integers: the reference `data.draw_order` ranks by."""
    m = 2**64
    x = (x + 0x9E3779B97F4A7C15) % m
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) % m
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) % m
    return x ^ (x >> 31)


def test_draws_are_a_simple_random_sample_not_stratified():
    """Class shares vary from draw to draw as they do among random samples of N, around the pool's
    share (docs/experiment.md says why the draw is not stratified)."""
    y, y_test = _labels(20000), _labels(100, 1)
    shares = [np.mean(y[data.split_indices(y, y_test, (5, 6), 50, 500, b_sample=s)["b_train"]] == 6)
              for s in range(200)]
    pool = np.isin(y, (5, 6)) & (np.arange(len(y)) >= 500)
    assert abs(np.mean(shares) - np.mean(y[pool] == 6)) < 0.02
    assert 0.05 < np.std(shares) < 0.09  # binomial: sqrt(0.25 / 50) = 0.071, less a finite-pool bit
    assert len(set(shares)) > 5


# ----------------------------------------------------------------------------- settings

def test_b_sample_and_data_seeds_are_checked_where_set():
    assert Config().data.b_sample == "first" and Config().study_data_seeds == ("first",)
    assert Config().replace(**{"data.b_sample": "3"}).study_data_seeds == (3,)
    assert Config().replace(**{"data.b_sample": 3, "study.data_seeds": [0, 1]}).study_data_seeds == (0, 1)
    for bad, key in ((-1, "data.b_sample"), ("x", "data.b_sample"), (1.5, "data.b_sample"), (2**32, "data.b_sample")):
        with pytest.raises(ConfigError) as info:
            Config().replace(**{key: bad})
        assert info.value.key == key
    for bad in ([-1], ["first"], [1, 1], "1.5"):
        with pytest.raises(ConfigError) as info:
            Config().replace(**{"study.data_seeds": bad})
        assert info.value.key == "study.data_seeds"


def test_the_books_sample_leaves_every_fingerprint_as_it_was():
    """Values computed by fmtransfer 0.5.0, before draws existed: the book's sample changes none."""
    sha = {"train-images-idx3-ubyte.gz": "a" * 64, "t10k-labels-idx1-ubyte.gz": "b" * 64}
    for over, expected in PINNED_FINGERPRINTS:
        cfg = Config().replace(**over)
        assert {"split": fingerprints.split(cfg.data, sha), "run-transfer": fingerprints.run(cfg, sha, "transfer"),
                "run-autoencoder": fingerprints.run(cfg, sha, "autoencoder"),
                "model_a": fingerprint(fingerprints.model_a(cfg, sha)),
                "baseline": fingerprint(fingerprints.contender(cfg, sha, "baseline", {})),
                "settings": fingerprints.run_fingerprint(cfg, "transfer")} == expected
        drawn = cfg.replace(**{"data.b_sample": 3})
        # A draw changes what trained on task B's images, and nothing else.
        assert fingerprint(fingerprints.model_a(drawn, sha)) == expected["model_a"]
        assert fingerprints.encoder(drawn, sha, "autoencoder") == fingerprints.encoder(cfg, sha, "autoencoder")
        assert fingerprints.run_fingerprint(drawn, "transfer") == expected["settings"]
        changed = {fingerprints.split(drawn.data, sha), fingerprints.run(drawn, sha, "transfer"),
                   fingerprint(fingerprints.contender(drawn, sha, "baseline", {}))}
        assert not changed & set(expected.values())
        assert fingerprints.run(drawn, sha, "transfer") != fingerprints.run(cfg.replace(**{"data.b_sample": 4}), sha,
                                                                            "transfer")


PINNED_FINGERPRINTS = [
    ({}, {"split": "aaa5e4ca86ecdfcb", "run-transfer": "0e1108acc73c470b", "run-autoencoder": "70a4eaec858ca22f",
          "model_a": "6ec40c6edb845edc", "baseline": "bf4054214362b9ba", "settings": "1a9f6d3b3d492cf4"}),
    ({"data.b_train_size": 50, "data.b_classes": [0, 2]},
     {"split": "6cdc56b7a650dd95", "run-transfer": "59eeecf6d1dba6e5", "run-autoencoder": "1332092a3bd3dfcf",
      "model_a": "eb77ef54cfdfea59", "baseline": "0df58d0f678a8993", "settings": "1a9f6d3b3d492cf4"}),
    ({"model.arch": "cnn", "transfer.frozen_learning_rate": 1e-3},
     {"split": "aaa5e4ca86ecdfcb", "run-transfer": "84e728cd9365dddc", "run-autoencoder": "5c3a42c71e164f9c",
      "model_a": "5bc254c2bf4a6eb6", "baseline": "ad281ae123f8908d", "settings": "781f1246e72b9ff2"}),
]


# ----------------------------------------------------------------------------- the axis

def test_the_data_seed_axis_crosses_the_seeds_and_keeps_the_books_ids():
    cfg = Config().replace(**{"study.seeds": [1, 2], "study.data_seeds": [0, 3]})
    keys = studies.grid(cfg)
    assert [k.id for k in keys] == ["seed1-pair5v6-n200-draw0-reuseall-book", "seed1-pair5v6-n200-draw3-reuseall-book",
                                    "seed2-pair5v6-n200-draw0-reuseall-book", "seed2-pair5v6-n200-draw3-reuseall-book"]
    assert keys[0].group == keys[1].group  # a seed's draws share model A (and its encoders) ...
    assert keys[0].baseline_group != keys[1].baseline_group  # ... but not the baseline
    assert keys[0].setting == keys[1].setting == keys[2].setting  # one cell, its units (seed, data seed)
    assert [k.unit for k in keys] == [(1, 0), (1, 3), (2, 0), (2, 3)]
    assert keys[1].config(cfg).data.b_sample == 3
    assert studies.grid(Config())[0].id == "seed42-pair5v6-n200-reuseall-book"  # the book's sample: no part
    assert [k.data_seed for k in studies.grid(Config().replace(**{"data.b_sample": 5}))] == [5]


def test_a_line_written_before_draws_reads_as_the_books_sample_and_keeps_its_form():
    old = {"id": "seed42-pair5v6-n200-reuseall-book-transfer", "seed": 42, "pair": [5, 6], "b_train_size": 200,
           "reuse_layers": "all", "preset": "book", "contender": "transfer",
           "baseline": {"test_accuracy": 0.97}, "result": {"test_accuracy": 0.99}}
    record = studies.RunRecord.from_dict(old)
    assert record.key.data_seed == "first" and record.key.run_id("transfer") == old["id"]
    assert json.dumps(record.to_dict()) == json.dumps(old)
    drawn = studies.RunRecord.from_dict({**old, "id": "seed42-pair5v6-n200-draw3-reuseall-book-transfer",
                                         "data_seed": 3, "b_indices_sha256": "c" * 64})
    assert (drawn.key.data_seed, drawn.b_indices_sha256) == (3, "c" * 64)
    assert drawn.to_dict()["data_seed"] == 3
    for bad in (-1, "last", 1.5, None):
        with pytest.raises(studies.BadRecord, match="data_seed"):
            studies.RunRecord.from_dict({**old, "data_seed": bad})


def test_a_cell_lists_its_units_data_seeds_beside_its_seeds():
    cell = studies.Cell(contender="transfer", title="transfer", pair=[5, 6], b_train_size=200, reuse_layers="all",
                        preset="book", seeds=[1, 2, 1, 2], data_seeds=[0, 0, 3, 3],
                        **studies.paired_stats([0.9] * 4, [0.91, 0.92, 0.9, 0.95]))
    d = cell.to_dict()
    assert list(d).index("data_seeds") == list(d).index("seeds") + 1
    assert studies.Cell(**d).to_dict() == d and cell.units == [(1, 0), (2, 0), (1, 3), (2, 3)]


# ----------------------------------------------------------------------------- studies

def _tiny_toml(tmp_path, tiny_data) -> str:
    """`tiny_settings` as a --config file (JSON's scalars and lists are TOML's)."""
    sections: dict = {}
    for key, value in tiny_settings(tiny_data).items():
        section, _, name = key.rpartition(".")
        sections.setdefault(section, []).append(f"{name} = {json.dumps(value)}")
    path = tmp_path / "tiny.toml"
    path.write_text("".join(f"[{s}]\n" + "\n".join(v) + "\n" for s, v in sections.items()))
    return str(path)


def test_a_study_made_before_draws_resumes_without_retraining(tiny_data, tmp_path, monkeypatch):
    """Lines and a study.json as fmtransfer 0.5.0 wrote them (no data seed, no indices' hash, no
    `data_seeds` in the config): every run counts as finished, and the report reads them."""
    from fmtransfer.contenders.base import Contender

    cfg = Config().replace(**tiny_settings(tiny_data), **{"study.seeds": [1, 2], "contenders": ["transfer"]})
    studies.check_study_dir(cfg, tmp_path)
    meta = json.loads((tmp_path / "study.json").read_text())
    del meta["config"]["study"]["data_seeds"], meta["config"]["data"]["b_sample"]
    (tmp_path / "study.json").write_text(json.dumps(meta))
    sha = data.dataset_hashes(cfg.data)
    for key in studies.grid(cfg):
        line = studies.RunRecord.made(key, "transfer", key.config(cfg), {"test_accuracy": 0.5},
                                      {"test_accuracy": 0.75}, settings=studies.run_fingerprint(cfg, "transfer"),
                                      fingerprint=fingerprints.run(key.config(cfg), sha, "transfer"), built_on={},
                                      seconds={}).to_dict()
        del line["data_seed"]
        studies.append_result(tmp_path / "results.jsonl", line)
    before = (tmp_path / "results.jsonl").read_text()
    monkeypatch.setattr(Contender, "fit", lambda *a, **k: pytest.fail("a finished run was trained again"))
    result = studies.run_study(cfg, tmp_path)
    assert (tmp_path / "results.jsonl").read_text() == before and not (tmp_path / "models").exists()
    assert result.runs_finished == result.runs_in_grid == 2 and result.skipped == {}
    [cell] = result.cells
    assert (cell.seeds, cell.data_seeds, cell.accuracies) == ([1, 2], ["first", "first"], [0.75, 0.75])


@pytest.mark.slow
def test_a_crossed_study_trains_model_a_once_per_seed_and_records_each_draw(tiny_data, tmp_path, cli, monkeypatch):
    from fmtransfer import resolver

    trained = []
    real = resolver.train_model_a
    monkeypatch.setattr(resolver, "train_model_a", lambda cfg, *a, **k: trained.append(cfg.seed)
                        or real(cfg, *a, **k))
    run = tmp_path / "study"
    args = ["study", "--run", run, "--config", _tiny_toml(tmp_path, tiny_data), "--seed-list", "1,2",
            "--contenders", "transfer", "--no-plots", "--json"]
    result = cli(*args, "--data-seeds", "2")
    assert result.code == 0, result.err
    assert sorted(trained) == [1, 2]  # one model A per seed, shared by its two draws
    assert sorted(p.name for p in (run / "models").glob("*.keras")) == ["a-seed1-pair5v6.keras",
                                                                        "a-seed2-pair5v6.keras"]
    lines = [json.loads(line) for line in (run / "results.jsonl").read_text().splitlines()]
    assert sorted((d["seed"], d["data_seed"]) for d in lines) == [(1, 0), (1, 1), (2, 0), (2, 1)]
    assert all(d["id"] == f"seed{d['seed']}-pair5v6-n20-draw{d['data_seed']}-reuseall-book-transfer" for d in lines)
    rows = {d["data_seed"]: d["b_indices_sha256"] for d in lines}
    assert len(rows) == 2 and all(d["b_indices_sha256"] == rows[d["data_seed"]] for d in lines)
    raw = data.load(DataConfig(dir=str(tiny_data), verify_checksums=False))
    assert rows[1] == data.indices_sha256(data.make_split(raw, (5, 6), 20, 100, b_sample=1).indices["b_train"])
    [cell] = result.json()["cells"]
    assert (cell["n"], cell["seeds"], cell["data_seeds"]) == (4, [1, 2, 1, 2], [0, 0, 1, 1])
    study = json.loads((run / "study.json").read_text())["config"]["study"]
    assert list(study)[:2] == ["seeds", "data_seeds"] and study["data_seeds"] == [0, 1]
    # A third draw later: model A is loaded from the study's cache, only draw 5's runs train.
    again = cli(*args, "--data-seed-list", "0,1,5")
    assert again.code == 0, again.err
    assert sorted(trained) == [1, 2] and again.json()["cells"][0]["n"] == 6
    assert sum(1 for _ in (run / "results.jsonl").open()) == 6


def test_bad_data_seeds_are_one_line_each(tiny_data, tmp_path, cli):
    toml = _tiny_toml(tmp_path, tiny_data)
    study = ["study", "--run", tmp_path / "s", "--config", toml, "--contenders", "transfer"]
    assert_usage_error(cli(*study, "--data-seeds", "2", "--data-seed-list", "1"), "--data-seeds", "--data-seed-list")
    assert_usage_error(cli(*study, "--data-seeds", "0"), "--data-seeds")
    assert_usage_error(cli(*study, "--data-seed-list", "-1"), "--data-seed-list", "-1")
    assert_usage_error(cli(*study, "--data-seed-list", "1.5"), "--data-seed-list", "1.5")
    assert_usage_error(cli(*study, "--b-sample", "-3"), "--b-sample", "-3")
    assert_usage_error(cli("split", "--run", tmp_path / "r", "--b-sample", "many"), "--b-sample", "many")
    # Too few images outside the validation set to draw N: the key, the number there is.
    available = int(np.isin(data.load(DataConfig(dir=str(tiny_data), verify_checksums=False)).y_train[100:],
                            (5, 6)).sum())
    line = assert_usage_error(cli(*study, "--b-train-sizes", "500", "--data-seeds", "1"), "data.b_train_size",
                              f"only {available}")
    assert "asked for 500" in line and not (tmp_path / "s" / "models").exists()
    line = assert_usage_error(cli("split", "--run", tmp_path / "r", "--config", toml, "--b-sample", "2",
                                  "--b-train-size", "500"), "--b-train-size", f"only {available}", "data seed 2")


def test_a_run_directory_trains_on_the_sample_its_split_holds(tiny_data, tmp_path, cli):
    toml = _tiny_toml(tmp_path, tiny_data)
    run = tmp_path / "r"
    assert cli("split", "--run", run, "--config", toml, "--b-sample", "3").code == 0
    manifest = json.loads((run / "split.json").read_text())
    settings = DataConfig(dir=str(tiny_data), verify_checksums=False, b_train_size=20, valid_size=100)
    assert manifest["data"]["b_sample"] == 3
    assert manifest["fingerprint"] == fingerprints.split(DataConfig(**{**settings.to_dict(), "b_sample": 3}),
                                                         manifest["sha256"]) != fingerprints.split(settings,
                                                                                                   manifest["sha256"])
    split, _ = RunDir(run).load_split("transfer")
    drawn = data.make_split(data.load(settings), (5, 6), 20, 100, b_sample=3)
    assert np.array_equal(split.indices["b_train"], drawn.indices["b_train"])
    # Another sample asked of this split is refused, not silently replaced by the split's.
    line = assert_usage_error(cli("transfer", "--run", run, "--b-sample", "4"), "--b-sample", "data seed 3",
                              "fmtransfer split --b-sample 4")
    assert not (run / "model_a.keras").exists() and "first" not in line


@pytest.mark.slow
def test_a_stack_trains_only_the_seeds_of_one_draw_together_on_that_draws_images(tiny_data, tmp_path, monkeypatch):
    from fmtransfer.contenders.scratch import Baseline
    from fmtransfer.contenders.transfer import TransferFromA

    stacks = []

    def spying(cls):
        real = cls.train

        def spy(self, cfgs, split, *args, **kwargs):
            stacks.append((self.name, sorted({c.seed for c in cfgs}), {c.data.b_sample for c in cfgs},
                           data.indices_sha256(split.indices["b_train"])))
            return real(self, cfgs, split, *args, **kwargs)
        monkeypatch.setattr(cls, "train", spy)

    spying(Baseline)
    spying(TransferFromA)
    cfg = Config().replace(**tiny_settings(tiny_data), **{"study.seeds": [2, 3], "study.data_seeds": [0, 1],
                                                          "contenders": ["transfer"]})
    result = studies.run_study(cfg, tmp_path, stack=2)  # seeds 2 and 3 fill the slots of one stack of 2
    raw = data.load(cfg.data)
    drawn = {d: data.indices_sha256(data.make_split(raw, (5, 6), 20, 100, b_sample=d).indices["b_train"])
             for d in (0, 1)}
    assert sorted((name, seeds, tuple(draw)) for name, seeds, draw, _ in stacks) == \
        [("baseline", [2, 3], (0,)), ("baseline", [2, 3], (1,)), ("transfer", [2, 3], (0,)), ("transfer", [2, 3], (1,))]
    assert all(rows == drawn[next(iter(draw))] for _, _, draw, rows in stacks)
    assert {r.id: r.b_indices_sha256 for r in studies.load_records(tmp_path)} == \
        {f"seed{s}-pair5v6-n20-draw{d}-reuseall-book-transfer": drawn[d] for s in (2, 3) for d in (0, 1)}
    assert result.cells[0].units == [(2, 0), (3, 0), (2, 1), (3, 1)]
