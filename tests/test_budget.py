"""Budget curves of a tuned study (fmtransfer/study/budget.py): validation alone selects, with
ties broken by validation loss and then trial index; Dodge's closed form for the expected best of
n trials drawn with replacement is what resampling gives; the tuned gain against the budget, and
where two curves cross. Nothing here trains.
"""

from __future__ import annotations

import doctest
import json
import math
import sys

import numpy as np
import pytest

from fmtransfer import FmtError
from fmtransfer.study import budget
from fmtransfer.study.budget import (Curve, cell_curve, crossings, curve, selected, selection_order,
                                     tuned_gain, weights)

# Trial sets a tuned cell can produce: ties in validation accuracy, ties in loss too, diverged
# trials (chance accuracy, loss None), trial indices that are not the positions.
TRIAL_SETS = {
    "distinct": dict(acc=[0.91, 0.84, 0.95, 0.88, 0.93, 0.79],
                     loss=[0.30, 0.45, 0.20, 0.35, 0.25, 0.60],
                     index=[0, 1, 2, 3, 4, 5],
                     test=[0.90, 0.85, 0.92, 0.86, 0.94, 0.80]),
    "ties in accuracy": dict(acc=[0.90, 0.95, 0.90, 0.95, 0.95, 0.85, 0.90],
                             loss=[0.31, 0.22, 0.28, 0.20, 0.22, 0.40, 0.28],
                             index=[6, 2, 0, 5, 1, 3, 4],
                             test=[0.88, 0.91, 0.87, 0.96, 0.89, 0.83, 0.80]),
    "diverged trials": dict(acc=[0.5, 0.93, 0.5, 0.93, 0.97, 0.5],
                            loss=[None, 0.26, None, None, 0.15, 0.9],
                            index=[0, 1, 2, 3, 4, 5],
                            test=[0.5, 0.92, 0.49, 0.95, 0.90, 0.51]),
}


def brute_force(acc, loss, index, test, n: int, draws: int, rng: np.random.Generator):
    """Per draw of n trials with replacement: the best validation accuracy, and the test accuracy
    of the trial selected by the rule applied directly (highest accuracy, then lowest loss with
    None as +inf, then lowest index), not through `selection_order`."""
    acc, test, index = np.asarray(acc), np.asarray(test), np.asarray(index)
    loss = np.array([math.inf if v is None else v for v in loss])
    pick = rng.integers(0, len(acc), size=(draws, n))
    a = acc[pick]
    best = a.max(axis=1)
    tied = a == best[:, None]
    lo = np.where(tied, loss[pick], math.inf)
    tied &= lo == lo.min(axis=1)[:, None]
    idx = np.where(tied, index[pick], np.iinfo(np.int64).max)
    chosen = pick[np.arange(draws), idx.argmin(axis=1)]
    return best, test[chosen]


def _exact_fourth_moment(values, w, mean):
    return float(w @ (values - mean) ** 4)


@pytest.mark.parametrize("name", TRIAL_SETS)
def test_the_closed_form_agrees_with_brute_force_resampling(name):
    """200,000 seeded draws per budget. The Monte Carlo mean of D draws has standard error sd/sqrt(D)
    and the Monte Carlo variance sqrt((mu4 - sd^4)/D), both known exactly from the closed form's own
    weights; 5 such standard errors (a chance below 1e-6 for a correct formula) is the tolerance,
    far below any error the formula could make (a wrong tie rule moves the test mean by ~1e-2)."""
    t = TRIAL_SETS[name]
    draws = 200_000
    rng = np.random.default_rng(2019)
    c = curve(t["acc"], t["loss"], t["index"], t["test"])
    order = selection_order(t["acc"], t["loss"], t["index"])
    size = len(t["acc"])
    for n in (1, 2, 3, 5, size):
        k = n - 1
        best, sel_test = brute_force(t["acc"], t["loss"], t["index"], t["test"], n, draws, rng)
        w = weights(size, n)
        for sample, mean, sd, ordered in ((best, c.expected_valid[k], c.valid_sd[k], np.asarray(t["acc"])[order]),
                                          (sel_test, c.expected_test[k], c.test_sd[k], np.asarray(t["test"])[order])):
            assert abs(sample.mean() - mean) <= 5 * sd / math.sqrt(draws) + 1e-12, (name, n)
            mu4 = _exact_fourth_moment(ordered, w, mean)
            var_se = math.sqrt(max(mu4 - sd ** 4, 0.0) / draws)
            assert abs(sample.var() - sd ** 2) <= 5 * var_se + 1e-12, (name, n)


def test_the_brute_force_would_see_a_wrong_tie_rule():
    """The check above has power: ignoring the loss tie-break (taking the lowest index among equal
    accuracies) changes the expected test score by far more than the tolerance."""
    t = TRIAL_SETS["ties in accuracy"]
    right = curve(t["acc"], t["loss"], t["index"], t["test"]).expected_test
    wrong = curve(t["acc"], [0.0] * len(t["acc"]), t["index"], t["test"]).expected_test
    assert max(abs(a - b) for a, b in zip(right, wrong)) > 0.005


def test_one_trial_expects_the_plain_mean_and_its_population_sd():
    t = TRIAL_SETS["ties in accuracy"]
    c = curve(t["acc"], t["loss"], t["index"], t["test"])
    assert c.n[0] == 1
    assert c.expected_valid[0] == pytest.approx(np.mean(t["acc"]), abs=1e-12)
    assert c.valid_sd[0] == pytest.approx(np.std(t["acc"]), abs=1e-12)
    assert c.expected_test[0] == pytest.approx(np.mean(t["test"]), abs=1e-12)
    assert c.test_sd[0] == pytest.approx(np.std(t["test"]), abs=1e-12)


def test_a_large_budget_tends_to_the_best_trial_by_validation():
    t = TRIAL_SETS["ties in accuracy"]
    order = selection_order(t["acc"], t["loss"], t["index"])
    w = weights(len(order), 5000)
    assert w[-1] == pytest.approx(1.0, abs=1e-12)
    assert float(w @ np.asarray(t["acc"])[order]) == pytest.approx(max(t["acc"]), abs=1e-12)
    # the test score it tends to is the selected trial's, not the best test score
    assert float(w @ np.asarray(t["test"])[order]) == pytest.approx(t["test"][selected(t["acc"], t["loss"], t["index"])])


def test_a_curve_spans_budgets_one_to_the_number_of_trials():
    t = TRIAL_SETS["distinct"]
    c = curve(t["acc"], t["loss"], t["index"], t["test"])
    assert c.n == tuple(range(1, len(t["acc"]) + 1))
    assert all(len(x) == len(c.n) for x in (c.expected_valid, c.valid_sd, c.expected_test, c.test_sd))
    assert c.units == 1 and c.valid_se is None and c.test_se is None


def test_the_weights_are_the_chance_each_ranked_trial_is_the_best_of_n():
    for size in (1, 2, 5, 16):
        for n in (1, 2, 7, 40):
            w = weights(size, n)
            assert len(w) == size and (w >= 0).all()
            assert w.sum() == pytest.approx(1.0, abs=1e-12)
            assert (np.diff(w) >= -1e-15).all()  # a better-ranked trial is never less likely the best
    assert weights(3, 1).tolist() == pytest.approx([1 / 3] * 3)


def test_expected_best_validation_never_falls_as_the_budget_grows():
    rng = np.random.default_rng(7)
    for _ in range(200):
        size = int(rng.integers(1, 20))
        acc = rng.choice([0.5, 0.8, 0.85, 0.9, 0.95], size=size)  # few values: many ties
        loss = [None if a == 0.5 else float(rng.choice([0.2, 0.3])) for a in acc]
        c = curve(acc, loss, None, rng.random(size))
        assert all(b >= a - 1e-12 for a, b in zip(c.expected_valid, c.expected_valid[1:]))
        assert c.expected_valid[-1] <= max(acc) + 1e-12


def test_the_expected_test_score_may_fall_with_the_budget_when_validation_picks_an_overfit_trial():
    # The best by validation is the worst on test: more trials make picking it likelier.
    c = curve([0.80, 0.90], [0.4, 0.3], [0, 1], [0.90, 0.70])
    assert c.expected_test[1] < c.expected_test[0]
    assert c.expected_valid[1] > c.expected_valid[0]


# ----------------------------------------------------------------------------- selection

def test_permuting_the_test_accuracies_changes_no_selection():
    t = TRIAL_SETS["ties in accuracy"]
    rng = np.random.default_rng(25)
    first = curve(t["acc"], t["loss"], t["index"], t["test"])
    order = selection_order(t["acc"], t["loss"], t["index"])
    chosen = selected(t["acc"], t["loss"], t["index"])
    for _ in range(20):
        shuffled = rng.permutation(t["test"])
        again = curve(t["acc"], t["loss"], t["index"], shuffled)
        assert again.expected_valid == first.expected_valid and again.valid_sd == first.valid_sd
        # the selected trial is the same one: the test score at large n is its shuffled score
        w = weights(len(order), 5000)
        assert float(w @ shuffled[order]) == pytest.approx(shuffled[chosen])
    assert selection_order(t["acc"], t["loss"], t["index"]).tolist() == order.tolist()


def test_the_highest_validation_accuracy_is_selected_whatever_its_loss():
    assert selected([0.90, 0.91, 0.89], [0.1, 0.9, 0.05], [0, 1, 2]) == 1


def test_equal_validation_accuracies_are_broken_by_the_lower_validation_loss():
    assert selected([0.95, 0.95, 0.90], [0.30, 0.20, 0.10], [0, 1, 2]) == 1


def test_equal_accuracy_and_loss_are_broken_by_the_lower_trial_index():
    # the index is the trial's, not its position in the list
    assert selected([0.95, 0.95, 0.95], [0.2, 0.2, 0.2], [7, 3, 5]) == 1
    assert selection_order([0.95, 0.95, 0.95], [0.2, 0.2, 0.2], [7, 3, 5]).tolist() == [0, 2, 1]


def test_a_diverged_trials_missing_loss_is_worse_than_any_loss():
    assert selected([0.95, 0.95], [None, 1e300], [0, 1]) == 1
    assert selection_order([0.5, 0.5, 0.5], [None, 2.3, None], [0, 1, 2]).tolist() == [2, 0, 1]


def test_trial_indices_default_to_the_positions():
    assert selection_order([0.9, 0.9, 0.9], [0.3, 0.3, 0.3]).tolist() == [2, 1, 0]


def test_the_order_is_worst_first_and_ranks_every_trial_once():
    t = TRIAL_SETS["diverged trials"]
    order = selection_order(t["acc"], t["loss"], t["index"])
    assert sorted(order.tolist()) == list(range(len(t["acc"])))
    assert order[-1] == selected(t["acc"], t["loss"], t["index"]) == 4
    assert order[:3].tolist() == [2, 0, 5]  # the three at chance: None, None (higher index first), 0.9


# ----------------------------------------------------------------------------- crossings

def test_crossings_are_the_budgets_where_the_leader_changes():
    assert crossings([0.80, 0.85, 0.88, 0.90], [0.82, 0.86, 0.87, 0.88]) == [3]
    assert crossings([1, 3, 1, 3], [2, 2, 2, 2]) == [2, 3, 4]


def test_curves_that_do_not_cross_have_no_crossings():
    assert crossings([0.9, 0.91, 0.92], [0.8, 0.85, 0.91]) == []
    assert crossings([0.5], [0.6]) == []
    assert crossings([0.8, 0.8, 0.8], [0.8, 0.8, 0.8]) == []


def test_a_touch_is_no_crossing_and_a_crossing_through_a_tie_counts_once_where_the_new_lead_holds():
    assert crossings([2, 1, 2], [1, 1, 1]) == []           # +, 0, +: touches
    assert crossings([2, 1, 1, 0], [1, 1, 1, 1]) == [4]     # +, 0, 0, -: one crossing, at n = 4
    assert crossings([1, 1, 2, 0], [1, 1, 1, 1]) == [4]     # leading ties lead nobody


def test_differences_within_the_tolerance_count_as_ties():
    a, b = [0.90, 0.8995, 0.90], [0.8999, 0.90, 0.8999]
    assert crossings(a, b) == [2, 3]
    assert crossings(a, b, tolerance=1e-3) == []


# ----------------------------------------------------------------------------- a cell's units

def _unit(shift: float, rng: np.random.Generator, size: int = 8) -> Curve:
    acc = np.clip(0.85 + shift + 0.03 * rng.standard_normal(size), 0, 1)
    test = np.clip(acc - 0.01 + 0.02 * rng.standard_normal(size), 0, 1)
    return curve(acc, list(0.5 - acc), None, test)


def test_a_cells_curve_averages_its_units_and_pools_their_sds():
    rng = np.random.default_rng(3)
    units = [_unit(s, rng) for s in (0.0, 0.02, -0.01, 0.03)]
    c = cell_curve(units)
    assert c.units == 4 and c.n == units[0].n
    ev = np.array([u.expected_valid for u in units])
    et = np.array([u.expected_test for u in units])
    assert np.allclose(c.expected_valid, ev.mean(axis=0)) and np.allclose(c.expected_test, et.mean(axis=0))
    assert np.allclose(c.test_sd, np.sqrt(np.mean(np.square([u.test_sd for u in units]), axis=0)))
    assert np.allclose(c.valid_sd, np.sqrt(np.mean(np.square([u.valid_sd for u in units]), axis=0)))
    assert np.allclose(c.test_se, et.std(axis=0, ddof=1) / 2)
    assert np.allclose(c.valid_se, ev.std(axis=0, ddof=1) / 2)


def test_one_unit_has_no_standard_error_across_units():
    rng = np.random.default_rng(4)
    c = cell_curve([_unit(0, rng)])
    assert c.units == 1 and c.test_se is None and c.valid_se is None


def test_units_with_different_budgets_do_not_make_one_curve():
    rng = np.random.default_rng(5)
    with pytest.raises(ValueError, match="same number of trials"):
        cell_curve([_unit(0, rng, 8), _unit(0, rng, 6)])
    with pytest.raises(ValueError, match="per_unit"):
        cell_curve([])


def test_the_tuned_gain_is_the_mean_paired_difference_with_its_standard_error():
    rng = np.random.default_rng(6)
    contender = [_unit(0.02, rng) for _ in range(5)]
    baseline = [_unit(0.0, rng) for _ in range(5)]
    g = tuned_gain(contender, baseline)
    d = np.array([c.expected_test for c in contender]) - np.array([b.expected_test for b in baseline])
    assert g.n == contender[0].n and g.units == 5
    assert np.allclose(g.mean, d.mean(axis=0))
    assert np.allclose(g.se, d.std(axis=0, ddof=1) / math.sqrt(5))
    # pairing matters: the se is of the differences, not of the two means apart
    unpaired = np.sqrt(np.var([c.expected_test for c in contender], axis=0, ddof=1) / 5
                       + np.var([b.expected_test for b in baseline], axis=0, ddof=1) / 5)
    assert not np.allclose(g.se, unpaired)


def test_the_tuned_gain_reports_where_it_changes_sign():
    # the contender is better with one trial, the baseline once both are tuned with two
    c = [curve([0.8, 0.9], [0.5, 0.4], [0, 1], [0.9, 0.8])]
    b = [curve([0.8, 0.9], [0.5, 0.4], [0, 1], [0.8, 0.85])]
    g = tuned_gain(c, b)
    assert g.mean[0] > 0 > g.mean[1]
    assert g.crossings == (2,)
    assert g.se is None
    assert crossings(cell_curve(c).expected_test, cell_curve(b).expected_test) == [2]


def test_a_gain_needs_paired_units_with_equal_budgets():
    rng = np.random.default_rng(8)
    with pytest.raises(ValueError, match="pair them unit by unit"):
        tuned_gain([_unit(0, rng)] * 3, [_unit(0, rng)] * 2)
    with pytest.raises(ValueError, match="same number of trials"):
        tuned_gain([_unit(0, rng, 8)], [_unit(0, rng, 4)])


def _plain(x) -> bool:
    if isinstance(x, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in x.items())
    if isinstance(x, list):
        return all(_plain(v) for v in x)
    return x is None or type(x) in (int, float)


def test_curves_and_gains_become_plain_json():
    rng = np.random.default_rng(9)
    units = [_unit(0, rng) for _ in range(3)]
    for thing in (units[0], cell_curve(units), tuned_gain(units, [_unit(0, rng) for _ in range(3)])):
        d = thing.to_dict()
        assert _plain(d)
        assert json.loads(json.dumps(d, allow_nan=False)) == d
    assert cell_curve(units).to_dict()["test_se"] is not None and units[0].to_dict()["test_se"] is None


# ----------------------------------------------------------------------------- bad input

BAD = [
    (dict(acc=[], loss=[], index=[], test=[]), "valid_acc is empty"),
    (dict(acc=[0.9, 0.8], loss=[0.1], index=[0, 1], test=[0.9, 0.8]), "valid_loss has 1 values"),
    (dict(acc=[0.9, 0.8], loss=[0.1, 0.2], index=[0], test=[0.9, 0.8]), "trial_index has 1 values"),
    (dict(acc=[0.9, 0.8], loss=[0.1, 0.2], index=[0, 1], test=[0.9]), "test_acc has 1 values"),
    (dict(acc=[0.9, float("nan")], loss=[0.1, 0.2], index=[0, 1], test=[0.9, 0.8]), r"valid_acc\[1\] is nan"),
    (dict(acc=[0.9, 0.8], loss=[float("nan"), 0.2], index=[0, 1], test=[0.9, 0.8]), r"valid_loss\[0\] is NaN"),
    (dict(acc=[0.9, 0.8], loss=[0.1, 0.2], index=[0, 1], test=[float("nan"), 0.8]), r"test_acc\[0\] is nan"),
    (dict(acc=[0.9, 0.8], loss=[0.1, "x"], index=[0, 1], test=[0.9, 0.8]), r"valid_loss\[1\]"),
    (dict(acc=[0.9, 0.8], loss=[0.1, 0.2], index=[3, 3], test=[0.9, 0.8]), "trial_index 3 appears twice"),
    (dict(acc=[0.9, 0.8], loss=[0.1, 0.2], index=[0, 1.5], test=[0.9, 0.8]), r"trial_index\[1\] is 1.5"),
    (dict(acc=[[0.9, 0.8]], loss=[0.1, 0.2], index=[0, 1], test=[0.9, 0.8]), "valid_acc must be one-dimensional"),
]


@pytest.mark.parametrize("bad, message", BAD, ids=[m for _, m in BAD])
def test_bad_trials_are_refused_in_one_line_naming_the_argument(bad, message):
    with pytest.raises(ValueError, match=message) as caught:
        curve(bad["acc"], bad["loss"], bad["index"], bad["test"])
    assert isinstance(caught.value, FmtError) and caught.value.exit_code == 2
    assert "\n" not in str(caught.value)


def test_bad_curves_to_compare_are_refused():
    with pytest.raises(ValueError, match="a has 2 values and b 3"):
        crossings([1, 2], [1, 2, 3])
    with pytest.raises(ValueError, match=r"b\[1\] is nan"):
        crossings([1, 2], [1, float("nan")])
    with pytest.raises(ValueError, match="a is empty"):
        crossings([], [])
    with pytest.raises(ValueError, match="tolerance"):
        crossings([1], [1], tolerance=-1)
    with pytest.raises(ValueError, match="n must be an integer of at least 1"):
        weights(3, 0)


# ----------------------------------------------------------------------------- the figure

def test_the_budget_figure_is_written_as_a_png_and_nothing_else(tmp_path):
    pytest.importorskip("matplotlib")  # fmtransfer[plot]: `make install` installs it
    rng = np.random.default_rng(10)
    curves = {"baseline": cell_curve([_unit(0, rng) for _ in range(3)]),
              "transfer": cell_curve([_unit(0.02, rng) for _ in range(3)])}
    path = budget.plot_budget(curves, "pair (5, 6), 200 images", tmp_path / "plots" / "budget.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in (tmp_path / "plots").iterdir()] == ["budget.png"]  # no temporary left


def test_without_matplotlib_the_figure_names_the_plot_extra(tmp_path, monkeypatch):
    for name in ("matplotlib", "matplotlib.figure"):
        monkeypatch.setitem(sys.modules, name, None)
    c = curve([0.8, 0.9], [0.5, 0.4], None, [0.8, 0.9])
    with pytest.raises(FmtError, match=r"--plots needs matplotlib: pip install 'fmtransfer\[plot\]'"):
        budget.plot_budget({"transfer": c}, "t", tmp_path / "b.png")
    assert not (tmp_path / "b.png").exists()


def test_the_module_examples_hold():
    assert doctest.testmod(budget).failed == 0
