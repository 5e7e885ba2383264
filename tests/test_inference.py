"""The inference of fmtransfer.study.inference, stated as its specification.

Each test checks a function against an independent, straightforward computation (brute-force
enumeration with itertools, scipy, a simulation with known truth) or a property the method must
have. Pure numpy/scipy: no TensorFlow, the whole file runs in a few seconds.
"""

from __future__ import annotations

import itertools
import math
import time

import numpy as np
import pytest
from scipy import stats

from fmtransfer.study import inference as inf
from fmtransfer.study.stats import paired_stats


# ----------------------------------------------------------------------------------------------
# Reference implementations: slow, obvious, independent of the module's machinery
# ----------------------------------------------------------------------------------------------

def brute_sign_flip_p(diffs) -> float:
    """Fraction of all 2**n sign patterns whose |mean| reaches the observed |mean|."""
    d = np.round(np.asarray(diffs, float), 9)
    observed = abs(d.mean())
    hits = sum(abs(np.mean(np.array(s) * d)) >= observed - 1e-12 for s in itertools.product((1, -1), repeat=d.size))
    return hits / 2 ** d.size


def pratt_w_plus(d: np.ndarray) -> float:
    """W+ with Pratt's zeros: rank |d| with the zeros, sum the ranks of the positive ones."""
    ranks = stats.rankdata(np.abs(d))
    return float(ranks[d > 0].sum())


def brute_wilcoxon_p(diffs) -> float:
    """Exact two-sided Pratt signed-rank p: every sign pattern of the non-zero differences, ranks recomputed."""
    d = np.round(np.asarray(diffs, float), 9)
    nz = np.flatnonzero(d)
    ranks = stats.rankdata(np.abs(d))
    centre = ranks[nz].sum() / 2
    observed = abs(pratt_w_plus(d) - centre)
    hits = 0
    patterns = list(itertools.product((1, -1), repeat=nz.size))
    for signs in patterns:
        e = d.copy()
        e[nz] = np.abs(d[nz]) * np.array(signs)
        hits += abs(pratt_w_plus(e) - centre) >= observed - 1e-9
    return hits / len(patterns)


def abs_t(x: np.ndarray) -> float:
    """|mean| / (sd / sqrt(n)), inf for a constant non-zero sample, 0 for all zeros."""
    m, sd = x.mean(), x.std(ddof=1)
    if sd < 1e-15:
        return math.inf if abs(m) > 1e-15 else 0.0
    return abs(m) / (sd / math.sqrt(x.size))


def brute_max_t(cells: dict) -> dict:
    """Westfall-Young single-step max-T by looping over every sign pattern of the shared units."""
    keys = list(cells)
    d = np.column_stack([np.round(np.asarray(cells[k], float), 9) for k in keys])
    observed = np.array([abs_t(d[:, j]) for j in range(d.shape[1])])
    hits = np.zeros(len(keys))
    patterns = list(itertools.product((1, -1), repeat=d.shape[0]))
    for signs in patterns:
        flipped = d * np.array(signs)[:, None]  # the same sign for a unit in every cell
        biggest = max(abs_t(flipped[:, j]) for j in range(d.shape[1]))
        hits += biggest >= observed * (1 - 1e-9)
    return dict(zip(keys, hits / len(patterns)))


def crossed(rng, draws, seeds, draw_sd, seed_sd, resid_sd, mean=0.0):
    """A draws x seeds matrix of differences from the crossed model (accuracy units)."""
    return (mean + draw_sd * rng.normal(size=(draws, 1)) + seed_sd * rng.normal(size=(1, seeds))
            + resid_sd * rng.normal(size=(draws, seeds)))


SMALL_CASES = [
    [0.01, 0.005, -0.002, 0.0, 0.01],                      # a tie and a zero
    [0.0025, 0.0025, 0.0025, -0.0025, 0.0, 0.0],             # every magnitude tied, two zeros
    [0.003, -0.001, 0.002, 0.004, -0.002, 0.001, 0.0005],  # no ties
    [0.0005 * k for k in (1, -2, 3, -1, 2, 4, 0, 1, -3)],  # test-set steps of 1/2000
    [0.01],
    [-0.004, -0.004],
]


# ----------------------------------------------------------------------------------------------
# 1. sign_flip_test
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("diffs", SMALL_CASES)
def test_exact_sign_flip_p_is_the_share_of_all_sign_patterns_at_least_as_extreme(diffs):
    res = inf.sign_flip_test(diffs)
    assert res.method == "exact" and res.n_patterns == 2 ** len(diffs) and res.mc_standard_error == 0.0
    assert res.p_value == pytest.approx(brute_sign_flip_p(diffs), abs=1e-15)
    assert res.mean_difference == pytest.approx(np.mean(diffs))


def test_exact_p_is_exact_on_random_accuracy_data_up_to_twelve_units():
    rng = np.random.default_rng(11)
    for n in (3, 6, 9, 12):
        diffs = np.round(rng.normal(0.002, 0.004, n) * 2000) / 2000  # accuracies on 2,000 test images
        assert inf.sign_flip_test(diffs).p_value == pytest.approx(brute_sign_flip_p(diffs), abs=1e-15)


@pytest.mark.parametrize("diffs", [
    [0.005] * 10,                                         # every win the same size
    [0.0005 * k for k in range(1, 11)],                   # all different
    [0.001, 0.001, 0.002, 0.002, 0.002, 0.01, 0.02, 0.02, 0.03, 0.001],  # mixed ties
])
def test_unanimous_ten_wins_give_two_in_1024_whatever_the_tie_pattern(diffs):
    assert inf.sign_flip_test(diffs).p_value == 2 / 1024
    assert inf.sign_flip_test([-x for x in diffs]).p_value == 2 / 1024


def test_unanimous_results_are_told_apart_by_n():
    ps = [inf.sign_flip_test([0.004] * n).p_value for n in (3, 5, 8, 10)]
    assert ps == [2 / 8, 2 / 32, 2 / 256, 2 / 1024]
    # a tie among ten seeds doubles the count of extreme patterns: 9 wins, 1 tie
    assert inf.sign_flip_test([0.004] * 9 + [0.0]).p_value == 4 / 1024


def test_all_zero_differences_give_p_one_and_p_is_never_zero():
    assert inf.sign_flip_test([0.0] * 7).p_value == 1.0
    assert inf.sign_flip_test([0.5] * 20).p_value == 2 / 2 ** 20 > 0


def test_float_noise_in_the_differences_does_not_break_ties():
    # 0.995 - 0.990 and 0.990 - 0.985 differ in float arithmetic; rounded to 1e-9 they tie
    noisy = [0.995 - 0.990, -(0.990 - 0.985), 0.0025, -0.0025]
    assert inf.sign_flip_test(noisy).p_value == brute_sign_flip_p([0.005, -0.005, 0.0025, -0.0025]) == 1.0


def test_exact_enumeration_of_twenty_units_takes_well_under_a_second():
    diffs = np.round(np.random.default_rng(0).normal(0.003, 0.01, 20), 4)
    start = time.perf_counter()
    res = inf.sign_flip_test(diffs)
    assert time.perf_counter() - start < 0.5
    assert res.method == "exact" and res.n_patterns == 2 ** 20


def test_monte_carlo_p_is_within_a_few_standard_errors_of_the_exact_p_at_n_20():
    rng = np.random.default_rng(5)
    for _ in range(3):
        diffs = np.round(rng.normal(0.002, 0.01, 20), 4)
        exact = inf.sign_flip_test(diffs)
        mc = inf.sign_flip_test(diffs, max_exact=10, seed=1)
        assert mc.method == "monte-carlo" and mc.n_patterns >= 100_000
        assert 0 < mc.mc_standard_error < 0.002
        assert abs(mc.p_value - exact.p_value) < 4 * mc.mc_standard_error


def test_monte_carlo_is_deterministic_given_the_seed():
    diffs = np.round(np.random.default_rng(9).normal(0.001, 0.01, 30), 4)
    a, b = inf.sign_flip_test(diffs, seed=3), inf.sign_flip_test(diffs, seed=3)
    assert a == b and a.method == "monte-carlo"
    assert inf.sign_flip_test(diffs, seed=4).p_value != a.p_value  # the seed is really used
    assert a.p_value > 0


def test_points_passed_for_accuracies_are_refused():
    with pytest.raises(ValueError, match="points"):
        inf.sign_flip_test([1.5, 2.0, -0.5])
    with pytest.raises(ValueError):
        inf.sign_flip_test([0.01, float("nan")])


# ----------------------------------------------------------------------------------------------
# 2. crossed_sign_flip_test
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("diffs", SMALL_CASES)
def test_crossed_test_with_one_draw_is_the_sign_flip_test(diffs):
    one = inf.crossed_sign_flip_test([diffs])
    plain = inf.sign_flip_test(diffs)
    assert (one.p_value, one.method, one.n_patterns, one.mean_difference) == \
        (plain.p_value, plain.method, plain.n_patterns, plain.mean_difference)
    assert (one.n_draws, one.n_seeds, one.unit) == (1, len(diffs), "seed")


def test_crossed_test_with_one_draw_is_the_sign_flip_test_on_the_monte_carlo_path_too():
    diffs = np.round(np.random.default_rng(2).normal(0.001, 0.01, 25), 4)
    assert inf.crossed_sign_flip_test([diffs], seed=8).p_value == inf.sign_flip_test(diffs, seed=8).p_value


def test_crossed_test_flips_whole_seeds_across_their_draws():
    rng = np.random.default_rng(4)
    d = np.round(crossed(rng, 3, 7, 0.004, 0.006, 0.003, mean=0.002), 4)
    hits = 0
    for signs in itertools.product((1, -1), repeat=7):  # one sign per seed (column), every draw alike
        hits += abs((d * np.array(signs)[None, :]).mean()) >= abs(d.mean()) - 1e-12
    res = inf.crossed_sign_flip_test(d)
    assert res.p_value == pytest.approx(hits / 2 ** 7, abs=1e-15)
    assert (res.n_draws, res.n_seeds) == (3, 7)


def test_more_draws_of_the_same_seeds_are_not_counted_as_more_units():
    # 3 draws x 6 seeds, every run won: the evidence is 6 seeds, p = 2/64, not 2/2**18
    assert inf.crossed_sign_flip_test(np.full((3, 6), 0.01)).p_value == 2 / 64


# ----------------------------------------------------------------------------------------------
# 3. wilcoxon_exact
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("diffs", SMALL_CASES + [
    [0.01, 0.01, 0.0, -0.005, 0.02, 0.005, -0.01, 0.01],
    [0.0, 0.0, 0.0, 0.001, -0.001, 0.002],
])
def test_wilcoxon_exact_matches_brute_force_with_ties_and_zeros(diffs):
    res = inf.wilcoxon_exact(diffs)
    assert res.method == "exact"
    assert res.p_value == pytest.approx(brute_wilcoxon_p(diffs), abs=1e-12)
    assert res.statistic == pratt_w_plus(np.round(np.asarray(diffs, float), 9))
    assert res.n_zeros == sum(x == 0 for x in diffs)


def test_wilcoxon_exact_matches_scipys_exact_method_without_ties_or_zeros():
    rng = np.random.default_rng(6)
    for n in (4, 7, 10, 13, 16):
        d = np.round(rng.normal(0.003, 0.01, n), 9)
        assert len(np.unique(np.abs(d))) == n and np.all(d != 0)
        expected = stats.wilcoxon(d, method="exact").pvalue
        assert inf.wilcoxon_exact(d).p_value == pytest.approx(expected, rel=1e-12)


@pytest.mark.skipif(not hasattr(stats, "PermutationMethod"), reason="scipy < 1.13 has no PermutationMethod")
def test_wilcoxon_exact_matches_scipys_full_permutation_distribution_with_ties():
    d = np.array([0.01, 0.01, 0.0, -0.005, 0.02, 0.005, -0.01, 0.01])
    expected = stats.wilcoxon(d, zero_method="pratt", method=stats.PermutationMethod(n_resamples=np.inf)).pvalue
    assert inf.wilcoxon_exact(d).p_value == pytest.approx(expected, rel=1e-12)


def test_wilcoxon_all_zeros_give_p_one_and_many_nonzero_use_scipys_approximation():
    assert inf.wilcoxon_exact([0.0] * 6).p_value == 1.0
    d = np.round(np.random.default_rng(1).normal(0.002, 0.01, 30), 3)
    res = inf.wilcoxon_exact(d)
    assert res.method == "normal approximation"
    # The report's secondary column is this test (its primary p is the sign-flip test).
    assert res.p_value == pytest.approx(paired_stats([0.9] * 30, list(0.9 + d))["p_wilcoxon"], rel=1e-9)


# ----------------------------------------------------------------------------------------------
# 4. crossed_interval
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", range(4))
def test_crossed_interval_with_one_draw_is_todays_paired_t_interval(seed):
    rng = np.random.default_rng(seed)
    base = np.round(rng.uniform(0.95, 0.975, 10) * 2000) / 2000
    contender = np.clip(np.round((base + rng.normal(0.004, 0.006, 10)) * 2000) / 2000, 0, 1)
    today = paired_stats(list(base), list(contender))
    res = inf.crossed_interval([np.round(contender - base, 9)])
    assert res.method == "random-effects" and res.df == 9
    assert res.mean_difference == pytest.approx(today["mean_difference"], abs=1e-15)
    assert res.ci95 == pytest.approx(tuple(today["ci95"]), rel=1e-12, abs=1e-15)
    assert res.half_width_points == pytest.approx((today["ci95"][1] - today["ci95"][0]) / 2 * 100, rel=1e-12)


def test_crossed_interval_covers_the_true_mean_about_95_percent_of_the_time():
    rng = np.random.default_rng(21)
    sims, covered = 600, 0
    for _ in range(sims):
        d = crossed(rng, 5, 10, 0.01, 0.02, 0.005, mean=0.003)
        lo, hi = inf.crossed_interval(d).ci95
        covered += lo <= 0.003 <= hi
    assert 0.92 <= covered / sims <= 0.98  # binomial SD at 600 runs: 0.9 points


def test_crossed_interval_counts_the_draws_that_a_runs_as_independent_interval_ignores():
    rng = np.random.default_rng(3)
    d = crossed(rng, 4, 10, 0.02, 0.002, 0.002)  # the draw dominates
    res = inf.crossed_interval(d)
    naive_half = stats.t.ppf(0.975, d.size - 1) * d.std(ddof=1) / math.sqrt(d.size)
    assert (res.ci95[1] - res.ci95[0]) / 2 > 2 * naive_half
    assert res.df < 10  # few draws, few degrees of freedom


def test_pigeonhole_bootstrap_is_deterministic_and_near_random_effects_on_a_large_design():
    rng = np.random.default_rng(8)
    d = crossed(rng, 30, 30, 0.01, 0.01, 0.005)
    boot = inf.crossed_interval(d, method="pigeonhole bootstrap", n_boot=2000, seed=1)
    assert boot == inf.crossed_interval(d, method="pigeonhole bootstrap", n_boot=2000, seed=1)
    assert boot.ci95 != inf.crossed_interval(d, method="pigeonhole bootstrap", n_boot=2000, seed=2).ci95
    re = inf.crossed_interval(d)
    assert boot.half_width_points == pytest.approx(re.half_width_points, rel=0.2)
    with pytest.raises(ValueError):
        inf.crossed_interval(d, method="jackknife")


def test_a_single_run_has_no_interval():
    assert inf.crossed_interval([[0.01]]).ci95 is None


# ----------------------------------------------------------------------------------------------
# 5. variance_components
# ----------------------------------------------------------------------------------------------

def test_variance_components_recover_known_components():
    """Draw SD 1 point, seed SD 2 points, residual SD 0.5 point, 30 x 30."""
    r = s = 30
    a, b, e = 0.01, 0.02, 0.005
    # sampling SDs of the moment estimators (normal theory)
    se_a = math.sqrt(2 * ((e * e + s * a * a) ** 2 / (r - 1) + e ** 4 / ((r - 1) * (s - 1)))) / s
    se_b = math.sqrt(2 * ((e * e + r * b * b) ** 2 / (s - 1) + e ** 4 / ((r - 1) * (s - 1)))) / r
    se_e = e * e * math.sqrt(2 / ((r - 1) * (s - 1)))
    res = inf.variance_components(crossed(np.random.default_rng(30), r, s, a, b, e))
    assert abs(res.draw_var - a * a) < 3 * se_a
    assert abs(res.seed_var - b * b) < 3 * se_b
    assert abs(res.residual_var - e * e) < 3 * se_e
    assert (res.draw_sd_points, res.seed_sd_points, res.residual_sd_points) == pytest.approx((1, 2, 0.5), rel=0.35)
    assert res.draw_share + res.seed_share + res.residual_share == pytest.approx(1)
    # unbiased: over 200 replicates the raw estimates average to the truth
    rng = np.random.default_rng(31)
    raw = np.array([[c.raw_draw_var, c.raw_seed_var, c.residual_var]
                    for c in (inf.variance_components(crossed(rng, r, s, a, b, e)) for _ in range(200))])
    assert np.all(np.abs(raw.mean(axis=0) - [a * a, b * b, e * e]) < 4 * np.array([se_a, se_b, se_e]) / math.sqrt(200))


def test_negative_component_estimates_are_reported_raw_and_truncated_at_zero():
    # every seed has the same mean over draws: the seed mean square is 0, below the residual
    d = np.array([[0.01, -0.01], [-0.01, 0.01], [0.02, 0.02]])
    res = inf.variance_components(d)
    assert res.raw_seed_var < 0 and res.seed_var == 0.0
    assert res.ms_seed == pytest.approx(0.0, abs=1e-18) and res.df_residual == 2
    assert res.raw_draw_var == pytest.approx(res.draw_var) and res.draw_var > 0


def test_variance_components_need_two_draws_and_two_seeds():
    with pytest.raises(ValueError, match="2 draws and 2 seeds"):
        inf.variance_components([[0.01, 0.02, 0.0]])


# ----------------------------------------------------------------------------------------------
# 6. p_superiority
# ----------------------------------------------------------------------------------------------

def test_p_superiority_with_one_draw_is_wins_plus_half_ties_with_wilsons_interval():
    res = inf.p_superiority([[0.01] * 10])
    assert res.p_superiority == 1.0 and res.n_effective == 10 and res.design_effect == 1
    assert res.ci95[0] == pytest.approx(0.7225, abs=5e-5) and res.ci95[1] == 1.0  # Wilson, 10 of 10
    mixed = inf.p_superiority([[0.01] * 6 + [0.0] * 2 + [-0.01] * 2])
    assert (mixed.wins, mixed.ties, mixed.losses, mixed.p_superiority) == (6, 2, 2, 0.7)
    z = stats.norm.ppf(0.975)
    centre = (0.7 + z * z / 20) / (1 + z * z / 10)
    assert sum(mixed.ci95) / 2 == pytest.approx(centre)


def test_p_superiority_interval_widens_when_runs_of_a_draw_win_or_lose_together():
    rng = np.random.default_rng(12)
    draw_effect = np.array([[0.02], [-0.015], [0.01], [-0.02]])  # two labelled samples help, two hurt
    d = draw_effect + rng.normal(0, 0.004, (1, 10)) + rng.normal(0, 0.004, (4, 10))
    res = inf.p_superiority(d)
    assert res.design_effect > 2 and res.n_effective < d.size / 2
    independent = inf.p_superiority(d.reshape(1, -1))  # the same runs taken as 40 independent trials
    assert res.ci95[1] - res.ci95[0] > 1.3 * (independent.ci95[1] - independent.ci95[0])


def test_p_superiority_covers_the_true_probability_in_a_crossed_design():
    rng = np.random.default_rng(13)
    a, b, e, mu = 0.01, 0.01, 0.005, 0.005
    truth = stats.norm.cdf(mu / math.sqrt(a * a + b * b + e * e))
    sims = 400
    covered = sum(lo <= truth <= hi for lo, hi in
                  (inf.p_superiority(np.round(crossed(rng, 3, 10, a, b, e, mu), 4)).ci95 for _ in range(sims)))
    assert covered / sims >= 0.90  # taking the 30 runs as independent covers about 68%


# ----------------------------------------------------------------------------------------------
# 7. minimum_detectable_effect
# ----------------------------------------------------------------------------------------------

def test_mde_matches_a_published_power_value():
    # R's documented example power.t.test(n = 20, delta = 1): power 0.8689528, a t test on 38 df with
    # noncentrality sqrt(10). The paired test of 39 units with SD 1 has the same df and noncentrality
    # at a mean difference of sqrt(10/39).
    res = inf.minimum_detectable_effect(1.0, 39, power=0.8689528)
    assert res.mde == pytest.approx(math.sqrt(10 / 39), abs=1e-5)
    assert res.df == 38


@pytest.mark.parametrize("m_tests", [1, 3])
def test_simulated_experiments_at_the_mde_reject_about_80_percent_of_the_time(m_tests):
    n, sd = 10, 0.6  # points
    res = inf.minimum_detectable_effect(sd, n, m_tests=m_tests)
    sims = np.random.default_rng(40 + m_tests).normal(res.mde, sd, size=(2000, n))
    p = stats.ttest_1samp(sims, 0.0, axis=1).pvalue
    assert abs((p < 0.05 / m_tests).mean() - 0.80) < 0.03
    assert res.alpha_per_test == pytest.approx(0.05 / m_tests)


def test_mde_shrinks_with_more_seeds_grows_with_more_tests_and_exceeds_the_normal_shortcut():
    at = lambda n, m=1: inf.minimum_detectable_effect(1.0, n, m_tests=m).mde
    assert at(5) > at(10) > at(20) > at(40)
    assert at(10, 5) > at(10, 2) > at(10)
    assert at(10) > (stats.norm.ppf(0.975) + stats.norm.ppf(0.8)) / math.sqrt(10)
    assert inf.minimum_detectable_effect(0.0, 10).mde == 0.0


# ----------------------------------------------------------------------------------------------
# 8. tost
# ----------------------------------------------------------------------------------------------

def test_tost_calls_tightly_tied_contenders_equivalent():
    rng = np.random.default_rng(50)
    res = inf.tost(rng.normal(0.0, 0.001, 10), margin_points=0.5)  # SD 0.1 point, mean ~0
    assert res.verdict == "equivalent" and res.p_value < 0.05
    assert -0.005 < res.ci90[0] < res.ci90[1] < 0.005


def test_tost_tells_a_real_difference_from_no_evidence_either_way():
    rng = np.random.default_rng(51)
    different = inf.tost(rng.normal(0.02, 0.005, 10))  # +2 points, SD 0.5 point
    assert different.verdict == "different" and different.p_value > 0.5 and different.p_difference < 0.001
    noisy = inf.tost(rng.normal(0.0, 0.02, 10))  # SD 2 points: ten seeds cannot say
    assert noisy.verdict == "inconclusive" and noisy.p_value >= 0.05 and noisy.p_difference >= 0.05


def test_tost_p_is_below_005_exactly_when_the_90_percent_interval_lies_inside_the_margin():
    rng = np.random.default_rng(52)
    for _ in range(50):
        res = inf.tost(rng.normal(rng.uniform(-0.006, 0.006), 0.004, 8), margin_points=0.5)
        inside = -0.005 < res.ci90[0] and res.ci90[1] < 0.005
        assert (res.p_value < 0.05) == inside


def test_tost_on_constant_differences():
    assert inf.tost([0.001] * 5).verdict == "equivalent"
    assert inf.tost([0.01] * 5).verdict == "different"


# ----------------------------------------------------------------------------------------------
# 9. max_t and best_set
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", range(4))
def test_max_t_matches_a_loop_over_all_64_sign_patterns(seed):
    rng = np.random.default_rng(seed)
    base = rng.normal(0, 0.004, 6)  # the shared baseline makes the cells correlated
    cells = {f"c{j}": np.round(base + rng.normal(0.002 * j, 0.004, 6), 3) for j in range(3)}
    if seed == 3:
        cells["c2"] = np.array([0.004] * 6)  # sd 0: |t| = inf
    res = inf.max_t(cells)
    expected = brute_max_t(cells)
    assert res.method == "exact" and res.n_patterns == 64
    for key, p in expected.items():
        assert res[key].p_adjusted == pytest.approx(p, abs=1e-15)


def test_max_t_unadjusted_p_is_the_cells_own_sign_flip_p_and_adjusted_p_is_never_smaller():
    rng = np.random.default_rng(60)
    cells = {("dense", k): np.round(rng.normal(0.003 * k, 0.01, 9), 4) for k in range(5)}
    res = inf.max_t(cells)
    for key, d in cells.items():
        assert res[key].p_value == pytest.approx(inf.sign_flip_test(d).p_value, abs=1e-15)
        assert res[key].p_adjusted >= res[key].p_value
    assert res.p_adjusted == {c.key: c.p_adjusted for c in res.cells}


def test_max_t_is_no_more_conservative_than_bonferroni_when_cells_are_alike():
    # the same magnitudes per unit with different signs: every cell has the same permutation distribution
    rng = np.random.default_rng(61)
    size = np.round(rng.uniform(0.001, 0.01, 10), 4)
    cells = {j: size * np.where(rng.random(10) < 0.2 + 0.15 * j, -1, 1) for j in range(4)}
    res = inf.max_t(cells)
    for c in res.cells:
        assert c.p_value <= c.p_adjusted <= min(1.0, len(cells) * c.p_value) + 1e-12


def test_identical_cells_cost_nothing():
    d = np.round(np.random.default_rng(62).normal(0.004, 0.006, 8), 4)
    res = inf.max_t({"a": d, "b": d.copy(), "c": d * 0.5})  # perfectly dependent (c is a rescaled a)
    assert all(c.p_adjusted == pytest.approx(inf.sign_flip_test(d).p_value, abs=1e-15) for c in res.cells)


def test_max_t_monte_carlo_agrees_with_exact_and_is_deterministic():
    rng = np.random.default_rng(63)
    cells = {j: np.round(rng.normal(0.003, 0.01, 14), 4) for j in range(3)}
    exact = inf.max_t(cells)
    mc = inf.max_t(cells, max_exact=10, n_monte_carlo=100_000, seed=5)
    assert mc.method == "monte-carlo" and mc == inf.max_t(cells, max_exact=10, n_monte_carlo=100_000, seed=5)
    for c in exact.cells:
        assert abs(mc[c.key].p_adjusted - c.p_adjusted) < 4 * mc.mc_standard_error + 1e-5


def test_max_t_aligns_mappings_by_unit_and_names_cells_whose_units_differ():
    d1 = {1: 0.01, 2: -0.002, 3: 0.004, 4: 0.006}
    d2 = {4: 0.0, 3: 0.002, 2: 0.001, 1: 0.003}  # other insertion order, same seeds
    by_unit = inf.max_t({"a": d1, "b": d2})
    positional = inf.max_t({"a": [0.01, -0.002, 0.004, 0.006], "b": [0.003, 0.001, 0.002, 0.0]})
    assert by_unit == positional
    with pytest.raises(ValueError, match="'b'.*missing.*5"):
        inf.max_t({"a": {**d1, 5: 0.0}, "b": d2})
    with pytest.raises(ValueError, match="'short': 3"):
        inf.max_t({"long": [0.01] * 4, "short": [0.01] * 3})
    with pytest.raises(ValueError):
        inf.max_t({})


def test_best_set_keeps_only_contenders_that_cannot_be_told_apart_from_the_best():
    rng = np.random.default_rng(70)
    noise = rng.normal(0, 0.002, 10)
    contenders = {
        "greedy": np.round(0.020 + noise + rng.normal(0, 0.001, 10), 4),
        "autoencoder": np.round(0.0197 + noise + rng.normal(0, 0.001, 10), 4),  # a whisker behind
        "transfer": np.round(0.005 + noise + rng.normal(0, 0.001, 10), 4),     # clearly behind
    }
    res = inf.best_set(contenders)
    assert res.best == "greedy"
    assert set(res.members) == {"greedy", "autoencoder"}
    assert res.comparisons["transfer"].p_adjusted < 0.05 <= res.comparisons["autoencoder"].p_adjusted
    alone = inf.best_set({"greedy": contenders["greedy"]})
    assert alone.members == ("greedy",) and alone.comparisons is None


# ----------------------------------------------------------------------------------------------
# 10. book_placement, 11. t_halfwidth, results as dicts
# ----------------------------------------------------------------------------------------------

def test_book_placement_counts_runs_reaching_the_book_with_clopper_pearson_intervals():
    # the book's own gain counts as reached, float noise of 1e-10 below it too, 0.0219 does not
    gains = [0.022, 0.0220000000001, 0.01, 0.03, -0.002, 0.015, 0.0219999999, 0.0, 0.0219, 0.004]
    ratios = [1.8, 2.5, 1.2, 3.0, 0.9, 1.4, 1.7, 1.0, 1.1, math.inf]
    res = inf.book_placement(gains, ratios, book_gain=0.022, book_ratio=2.5)
    assert (res.n, res.reached_gain, res.reached_ratio) == (10, 4, 3)  # inf: a perfect contender
    assert (res.p_gain, res.p_ratio) == (0.4, 0.3)
    for k, ci in ((res.reached_gain, res.ci95_gain), (res.reached_ratio, res.ci95_ratio)):
        expected = stats.binomtest(k, 10).proportion_ci(method="exact")
        assert ci == pytest.approx((expected.low, expected.high), abs=1e-9)
    none = inf.book_placement([0.0] * 10, [1.0] * 10, 0.022, 2.5)
    assert none.ci95_gain == pytest.approx((0.0, 0.3085), abs=1e-4)


def test_book_placement_in_a_crossed_design_counts_a_seed_once_not_once_per_draw():
    # five seeds' gains repeated over five draws: 25 runs, but only 5 independent outcomes
    seed_gain = np.array([[0.001, 0.006, -0.004, 0.011, 0.003]])
    gains = np.repeat(seed_gain, 5, axis=0) + np.random.default_rng(3).normal(0, 1e-4, (5, 5))
    res = inf.book_placement(gains, np.ones_like(gains), book_gain=0.022, book_ratio=2.5)
    assert (res.n, res.reached_gain) == (25, 0)
    assert res.n_effective_gain <= 5  # none of 25 runs is no stronger evidence than none of 5 seeds
    assert res.ci95_gain[1] >= stats.binomtest(0, 5).proportion_ci(method="exact").high
    flat = inf.book_placement(gains.ravel(), np.ones(25), book_gain=0.022, book_ratio=2.5)
    assert flat.n_effective_gain == 25 and flat.ci95_gain[1] < res.ci95_gain[1]


def test_book_placement_covers_the_true_share_in_a_crossed_design():
    rng = np.random.default_rng(14)
    a, b, e = 0.001, 0.01, 0.005  # the seed (model A) carries most of the variation, as in the studies
    threshold = stats.norm.isf(0.2) * math.sqrt(a * a + b * b + e * e)  # 20% of runs reach it
    sims = 300
    covered = sum(lo <= 0.2 <= hi for lo, hi in
                  (inf.book_placement(g, g, threshold, math.inf).ci95_gain
                   for g in (crossed(rng, 5, 10, a, b, e, 0.0) for _ in range(sims))))
    assert covered / sims >= 0.93  # the runs taken as independent trials cover about 75%


def test_p_superiority_after_a_unanimous_crossed_result_still_counts_the_clustering():
    seed_gain = np.array([[0.004, 0.006, 0.009, 0.011, 0.003]])  # every run wins
    d = np.repeat(seed_gain, 5, axis=0) + np.random.default_rng(4).normal(0, 1e-4, (5, 5))
    res = inf.p_superiority(d)
    assert res.p_superiority == 1.0 and res.n_effective <= 5
    assert res.ci95[0] <= inf.p_superiority(seed_gain).ci95[0]  # no narrower than 5 of 5 seeds


def test_t_halfwidth_is_the_deterministic_student_t_half_width_in_points():
    rng = np.random.default_rng(80)
    base = rng.uniform(0.95, 0.97, 10)
    contender = base + rng.normal(0.003, 0.005, 10)
    ci = paired_stats(list(base), list(contender))["ci95"]
    assert inf.t_halfwidth(np.round(contender - base, 9)) == pytest.approx((ci[1] - ci[0]) / 2 * 100, rel=1e-12)
    assert inf.t_halfwidth([0.01]) == math.inf


def test_every_result_is_a_frozen_dataclass_with_a_plain_dict():
    d = [0.01, 0.002, -0.001, 0.004]
    m = np.array([d, [0.0, 0.003, 0.001, 0.002]])
    results = [inf.sign_flip_test(d), inf.crossed_sign_flip_test(m), inf.wilcoxon_exact(d), inf.crossed_interval(m),
               inf.variance_components(m), inf.p_superiority(m), inf.minimum_detectable_effect(0.5, 4), inf.tost(d),
               inf.max_t({"a": d, "b": m[1]}), inf.best_set({"a": d, "b": list(m[1])}),
               inf.book_placement(d, [1.0] * 4, 0.022, 2.5)]
    for r in results:
        with pytest.raises(AttributeError):
            r.n = 0  # frozen
        assert isinstance(r.to_dict(), dict)
    assert inf.max_t({("dense", 200): d}).to_dict()["cells"][0]["key"] == ["dense", 200]
