"""Test-image uncertainty (issue 18, item 7): each run's test-B predictions kept beside its
record and tied to it, and the pure statistics on them: an exact McNemar test and a bootstrap
over test images, checked against brute force and known values."""

import itertools
import json
import math

import numpy as np
import pytest

from conftest import tiny_settings
from fmtransfer import study as studies
from fmtransfer.config import Config
from fmtransfer.errors import DataError
from fmtransfer.study import inference, records


# ----------------------------------------------------------------------------- McNemar

def _outcomes(both: int, only_contender: int, only_baseline: int, neither: int):
    base = [1] * both + [0] * only_contender + [1] * only_baseline + [0] * neither
    mine = [1] * both + [1] * only_contender + [0] * only_baseline + [0] * neither
    return np.array(base, bool), np.array(mine, bool)


def test_mcnemar_is_exact_binomial_on_the_discordant_images():
    """10 images only the contender gets right, 2 only the baseline: p = 2 (1 + 12 + 66) / 2^12."""
    test = inference.mcnemar_exact(*_outcomes(1900, 10, 2, 88))
    assert (test.contender_only, test.baseline_only, test.n) == (10, 2, 2000)
    assert test.p_value == pytest.approx(158 / 4096, rel=1e-12)
    assert test.difference == pytest.approx(8 / 2000)
    assert inference.mcnemar_exact(*_outcomes(5, 0, 0, 5)).p_value == 1.0  # no discordant image
    assert inference.mcnemar_exact(*_outcomes(0, 3, 3, 0)).p_value == 1.0


@pytest.mark.parametrize("b, c", [(0, 1), (7, 0), (4, 9), (6, 6), (13, 2)])
def test_mcnemar_matches_brute_force_over_every_way_the_discordant_images_could_fall(b, c):
    """Under the null each discordant image falls either way with probability 1/2: count the
    assignments at least as uneven as the one seen."""
    m = b + c
    extreme = sum(1 for falls in itertools.product((0, 1), repeat=m)
                  if abs(2 * sum(falls) - m) >= abs(b - c))
    assert inference.mcnemar_exact(*_outcomes(3, b, c, 2)).p_value == pytest.approx(min(1.0, extreme / 2 ** m))


def test_mcnemar_refuses_predictions_of_other_images():
    with pytest.raises(ValueError, match="same test images"):
        inference.mcnemar_exact([True, False], [True])
    with pytest.raises(ValueError, match="True/False"):
        inference.mcnemar_exact([2, 0], [1, 0])


# ----------------------------------------------------------------------------- the bootstrap

def test_the_image_bootstrap_is_seeded_and_has_the_exact_bootstrap_spread():
    base, mine = _outcomes(1900, 30, 14, 56)
    first = inference.image_bootstrap(base, mine, n_boot=20_000, seed=7)
    assert first == inference.image_bootstrap(base, mine, n_boot=20_000, seed=7)  # deterministic
    assert first != inference.image_bootstrap(base, mine, n_boot=20_000, seed=8)
    # The bootstrap distribution of a mean of n per-image differences d (1, -1 or 0) has variance
    # var(d) / n exactly; 20,000 resamples estimate its SD to about 0.5%.
    d = mine.astype(int) - base.astype(int)
    assert first.difference == pytest.approx(16 / 2000)
    assert first.se == pytest.approx(math.sqrt(d.var() / d.size), rel=0.02)
    assert first.ci95[0] < first.difference < first.ci95[1]


def test_the_image_bootstrap_agrees_with_resampling_the_images_themselves():
    """Brute force: resample image indices with replacement and score both models on them."""
    base, mine = _outcomes(150, 12, 5, 33)
    rng = np.random.default_rng(0)
    picks = rng.integers(0, base.size, size=(20_000, base.size))
    brute = (mine[picks].mean(axis=1) - base[picks].mean(axis=1))
    ours = inference.image_bootstrap(base, mine, n_boot=20_000, seed=1)
    assert ours.se == pytest.approx(brute.std(ddof=1), rel=0.03)
    assert ours.ci95 == pytest.approx(tuple(np.quantile(brute, [0.025, 0.975])), abs=0.006)


def test_a_cells_test_image_term_is_what_resampling_the_shared_test_images_gives():
    """Brute force: draw the same image indices for every run of the cell, score each run's gain
    on them, average over the runs; the spread of that mean is the term."""
    rng = np.random.default_rng(5)
    runs, n = 6, 400
    base = rng.random((runs, n)) < 0.95
    mine = np.where(rng.random((runs, n)) < 0.3, ~base, base) & (rng.random((runs, n)) < 0.99)
    picks = rng.integers(0, n, size=(20_000, n))
    brute = (mine[:, picks].mean(axis=2) - base[:, picks].mean(axis=2)).mean(axis=0)
    term = inference.test_image_term(base, mine)
    assert (term.runs, term.n_images) == (runs, n)
    assert term.se == pytest.approx(brute.std(ddof=1), rel=0.03)
    # One run: the single run's image bootstrap.
    one = inference.test_image_term(base[:1], mine[:1])
    assert one.se == pytest.approx(inference.image_bootstrap(base[0], mine[0], n_boot=20_000).se, rel=0.03)
    with pytest.raises(ValueError, match="same shape"):
        inference.test_image_term(base, mine[:, :-1])


# ----------------------------------------------------------------------------- storage

def test_quantised_predictions_keep_every_images_class():
    p = np.array([0.0, 0.4999, 0.5, 0.50001, 0.501, 0.999, 1.0])
    q = records.quantised(p)
    assert q.dtype == np.uint8 and list((q / 255 > 0.5)) == list(p > 0.5)
    assert np.max(np.abs(q / 255 - p)) <= 0.5 / 255 + 1e-12 + 0.002


@pytest.mark.slow
def test_a_study_keeps_each_runs_test_predictions_tied_to_its_record(tiny_data, tmp_path):
    cfg = Config().replace(**tiny_settings(tiny_data), **{"study.seeds": [1], "study.b_train_sizes": [20],
                                                           "study.reuse_layers": [1, "all"]})
    studies.run_study(cfg, tmp_path)
    runs = studies.load_records(tmp_path, cfg)
    assert len(runs) == 2
    kept = sorted(p.name for p in (tmp_path / "predictions").iterdir())
    # One baseline file per (seed, pair, size), one per contender's run.
    assert kept == sorted(["baseline-seed1-pair5v6-n20.bin", *(f"{r.id}.bin" for r in runs)])
    from fmtransfer import data

    labels = data.split_of(data.load(cfg.data), cfg.data).b_test[1]
    for r in runs:
        pred = records.load_predictions(tmp_path, r)
        assert pred is not None and np.array_equal(pred.y, labels)
        assert np.mean(pred.result_correct) == pytest.approx(r.result.test_accuracy, abs=1e-12)
        assert np.mean(pred.baseline_correct) == pytest.approx(r.baseline.test_accuracy, abs=1e-12)
        assert inference.mcnemar_exact(pred.baseline_correct, pred.result_correct).difference == \
            pytest.approx(r.gain, abs=1e-12)
    shared = {r.predictions["baseline"]["path"] for r in runs if r.key.seed == 1}
    assert len(shared) == 1  # the baseline once per group, not per contender
    # Resumed, a group's baseline file is written again, with the same bytes: the lines written
    # before it still find theirs.
    results = tmp_path / "results.jsonl"
    lines = results.read_text().splitlines(keepends=True)
    results.write_text("".join(lines[:-1]))
    studies.run_study(cfg, tmp_path)
    runs = studies.load_records(tmp_path, cfg)
    assert len(runs) == 2 and all(records.load_predictions(tmp_path, r) is not None for r in runs)
    # The report tests each run on its test images, and gives each cell its test-image term.
    for cell in studies.report(tmp_path).cells:
        (r,) = [r for r in runs if r.key.cell_point == cell.point and r.contender == cell.contender]
        pred = records.load_predictions(tmp_path, r)
        d = pred.result_correct.astype(int) - pred.baseline_correct.astype(int)
        assert len(cell.mcnemar) == 1 and cell.mcnemar[0]["difference"] == pytest.approx(cell.mean_difference)
        assert cell.test_images["runs"] == 1
        assert cell.test_images["se"] == pytest.approx(math.sqrt(d.var() / d.size), abs=1e-12)
    # A stale file is never used, nor silently dropped: another run's copied over it is an error
    # naming it and the run (tests/test_evidence_checks.py has the other ways a file goes bad).
    victim, other = runs[0], runs[1]
    path = tmp_path / victim.predictions["result"]["path"]
    path.write_bytes((tmp_path / other.predictions["result"]["path"]).read_bytes())
    # (The first check it fails says why: another run's header, or more bytes than the line declares.)
    with pytest.raises(DataError, match=f"holds the predictions of '{other.id}'|is longer than the") as e:
        records.load_predictions(tmp_path, victim)
    assert str(path) in str(e.value) and victim.id in str(e.value)
    # A line without predictions (fmtransfer 0.5 or older) reads as having none.
    old = studies.RunRecord.from_dict({k: v for k, v in other.to_dict().items() if k != "predictions"})
    assert old.predictions is None and records.load_predictions(tmp_path, old) is None
    assert json.loads(json.dumps(other.to_dict()))["predictions"]["result"]["path"].startswith("predictions/")
