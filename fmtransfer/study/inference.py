"""Inference for paired comparisons of test accuracy: exact tests, crossed designs, families of cells.

Every function here is pure (numpy, scipy) and returns a frozen dataclass with `to_dict()`
(except `t_halfwidth`, a plain float for stopping rules). docs/statistics.md explains each
quantity and each choice in plain words.

Conventions
-----------
* A *difference* is a contender's test accuracy minus the baseline's, paired (same seed, same
  draw of the labelled sample), in [-1, 1]. Inputs are rounded to 1e-9, as `stats.paired_stats`
  does, so that 0.995 - 0.990 and 0.990 - 0.985 tie exactly; the permutation tests then work on
  the differences as integers (multiples of 1e-9), so their ties are exact, not approximate.
* Results keep accuracy units (fractions, like `Cell.mean_difference` and `Cell.ci95`); fields
  whose name ends in `_points` are accuracy points (x100), as the report shows them.
* A *crossed* matrix has one row per data draw (a random draw of the labelled sample) and one
  column per seed; every cell is one (draw, seed) run. All draws of a seed share that seed's
  pretrained model A, and all seeds of a draw share its labelled sample, so neither rows nor
  columns are independent units.
* Monte Carlo paths draw from `numpy.random.default_rng(seed)`: the same input and seed give the
  same p-value.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

POINTS = 100.0  # accuracy points per unit of accuracy
RESOLUTION = 1e-9  # differences are rounded to this, as stats.paired_stats does
_SCALE = 1e9
_MAX_EXACT = 20
_N_MONTE_CARLO = 100_000
_CHUNK_ENTRIES = 1 << 21  # sign matrices are built in chunks of about this many entries (16 MiB)
_REL_TIE = 1e-12  # relative tolerance of "at least as extreme" on t statistics computed in floats


# ----------------------------------------------------------------------------------------------
# Input checks and shared machinery
# ----------------------------------------------------------------------------------------------

def _check_accuracy_units(d: np.ndarray, name: str) -> None:
    if not np.all(np.isfinite(d)):
        raise ValueError(f"{name}: differences must be finite numbers")
    if np.any(np.abs(d) > 1 + 1e-12):
        raise ValueError(f"{name}: accuracy differences lie in [-1, 1]; got {float(np.abs(d).max())!r} "
                         "(were points, x100, passed instead of accuracies?)")


def _as_diffs(diffs: Any, name: str = "diffs") -> np.ndarray:
    """A 1-D float array of differences, rounded to 1e-9; at least one."""
    d = np.asarray(diffs, dtype=float)
    if d.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D sequence of differences, got shape {d.shape}")
    if d.size == 0:
        raise ValueError(f"{name}: no differences")
    _check_accuracy_units(d, name)
    return np.round(d, 9)


def _as_matrix(diffs_matrix: Any, name: str = "diffs_matrix") -> np.ndarray:
    """A 2-D float array (draws x seeds) of differences, rounded to 1e-9; at least one cell."""
    d = np.asarray(diffs_matrix, dtype=float)
    if d.ndim == 1:
        raise ValueError(f"{name}: expected a matrix (rows = data draws, columns = seeds); "
                         "wrap a single draw as [diffs]")
    if d.ndim != 2 or d.size == 0:
        raise ValueError(f"{name}: expected a non-empty 2-D matrix, got shape {d.shape}")
    _check_accuracy_units(d, name)
    return np.round(d, 9)


def _integer_units(d: np.ndarray) -> np.ndarray:
    """Differences as exact integers, in units of 1e-9."""
    return np.rint(d * _SCALE).astype(np.int64)


def _rng(seed: Any) -> np.random.Generator:
    return np.random.default_rng(seed)


def _random_signs(n: int, n_draws: int, rng: np.random.Generator, width: int = 1):
    """Yield float matrices of `n_draws` uniform random sign patterns (+1/-1) over n units, in
    chunks; `width` (the columns the caller multiplies by) only sizes the chunks."""
    rows = max(1, _CHUNK_ENTRIES // max(n, width, 1))
    left = n_draws
    while left > 0:
        k = min(left, rows)
        yield 1.0 - 2.0 * rng.integers(0, 2, size=(k, n), dtype=np.int8)
        left -= k


def _all_signed_sums(values: np.ndarray, *, fix_first: bool = False) -> np.ndarray:
    """The sums of +-values over every sign pattern of the rows of `values` (1-D: one sum per
    pattern; 2-D units x cells: one row of sums per pattern). With `fix_first` the first unit
    keeps its sign: half the patterns, each standing for itself and its mirror image."""
    values = np.asarray(values)
    if fix_first:
        sums, rest = values[:1].copy(), values[1:]
    else:
        sums, rest = np.zeros((1,) + values.shape[1:], dtype=values.dtype), values
    for v in rest:
        sums = np.concatenate([sums + v, sums - v])
    return sums


def _flip_count(values: np.ndarray, *, max_exact: int, n_monte_carlo: int, seed: Any) -> tuple[float, str, int, float]:
    """Two-sided sign-flip p-value of |sum(values)| for integer `values`: (p, method, patterns, mc_se).

    Exact: meet in the middle. The 2**n signed sums are a + b, a from the first half of the
    units, b from the second; with the b's sorted, the patterns with |a + b| >= observed are
    counted by binary search for every a, in integers, so ties are exact and n = 20 costs two
    lists of 1,024 sums. Monte Carlo: sums of +-values in float64, exact for integers below 2**53.
    """
    n = values.size
    observed = abs(int(values.sum()))
    if n <= max_exact:
        if observed == 0:
            return 1.0, "exact", 1 << n, 0.0  # every pattern reaches |0|
        a = _all_signed_sums(values[: n // 2])
        b = np.sort(_all_signed_sums(values[n // 2:]))
        hits = (b.size - np.searchsorted(b, observed - a, side="left")) + np.searchsorted(b, -observed - a, side="right")
        return int(hits.sum()) / (1 << n), "exact", 1 << n, 0.0
    if n_monte_carlo < 1:
        raise ValueError("n_monte_carlo must be at least 1")
    v = values.astype(float)
    rng, count = _rng(seed), 0
    for signs in _random_signs(n, n_monte_carlo, rng):
        count += int(np.count_nonzero(np.abs(signs @ v) >= observed))
    p = (count + 1) / (n_monte_carlo + 1)  # the observed pattern counts as one of the draws
    return p, "monte-carlo", n_monte_carlo, math.sqrt(p * (1 - p) / n_monte_carlo)


def _tq(q: float, df: float) -> float:
    from scipy import stats

    return float(stats.t.ppf(q, df))


# ----------------------------------------------------------------------------------------------
# 1-2. Sign-flip permutation tests of the mean difference
# ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SignFlipTest:
    """Two-sided paired sign-flip test of the mean difference over n units."""

    n: int
    mean_difference: float  # accuracy units
    p_value: float
    method: str  # "exact" (all 2**n sign patterns) or "monte-carlo"
    n_patterns: int  # 2**n when exact, else the number of random patterns drawn
    mc_standard_error: float  # of p_value; 0.0 when exact

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def sign_flip_test(diffs: Sequence[float], *, max_exact: int = _MAX_EXACT, n_monte_carlo: int = _N_MONTE_CARLO,
                   seed: Any = 0) -> SignFlipTest:
    """Exact two-sided paired permutation (sign-flip) test of the mean difference.

    Under the null hypothesis that contender and baseline are exchangeable within each unit
    (seed), each difference is as likely to have come out with the opposite sign, so each of the
    2**n sign patterns is equally likely. The p-value is the fraction of patterns whose |mean| is
    at least the observed |mean|, the observed pattern included (so p >= 2/2**n > 0).

    Why this and not Wilcoxon: it tests the quantity the report shows (the mean gain, in
    points), uses the sizes of the differences rather than only their ranks, and is exact with
    any number of ties and zeros, which accuracies on a fixed test set produce all the time (they
    move in steps of 1/n_test). Wilcoxon's normal approximation on ties makes a unanimous
    10-0 result look stronger or weaker depending on the tie pattern; here 10 wins out of 10 give
    p = 2/1024 whatever the sizes. All-zero differences give p = 1.

    Up to `max_exact` units every pattern is counted (meet in the middle, in integers: n = 20
    takes milliseconds); above, `n_monte_carlo` random patterns are drawn from
    `default_rng(seed)` and p = (1 + hits) / (1 + draws), with its Monte Carlo standard error.
    """
    d = _as_diffs(diffs)
    p, method, patterns, se = _flip_count(_integer_units(d), max_exact=max_exact, n_monte_carlo=n_monte_carlo,
                                          seed=seed)
    return SignFlipTest(n=int(d.size), mean_difference=float(d.mean()), p_value=p, method=method,
                        n_patterns=patterns, mc_standard_error=se)


@dataclass(frozen=True)
class CrossedSignFlipTest:
    """Sign-flip test of the grand mean difference of a crossed (draws x seeds) design, seeds flipped."""

    n_draws: int
    n_seeds: int
    mean_difference: float  # grand mean over all (draw, seed) runs, accuracy units
    p_value: float
    method: str
    n_patterns: int
    mc_standard_error: float
    unit: str = "seed"  # what the signs are flipped over; the draws are held fixed

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def crossed_sign_flip_test(diffs_matrix: Any, *, max_exact: int = _MAX_EXACT, n_monte_carlo: int = _N_MONTE_CARLO,
                           seed: Any = 0) -> CrossedSignFlipTest:
    """Permutation test of the grand mean difference in a crossed design, flipping signs per SEED.

    Rows are data draws, columns seeds. One sign per column multiplies every draw of that seed:
    swapping "contender" and "baseline" for a whole seed at once. This keeps everything a seed
    shares (its model A, its initialisations) together, which is why the seed, not the run, is
    the unit. Given the draws, seeds are independent, so the test is exact (all 2**n_seeds
    patterns up to `max_exact` seeds, Monte Carlo above) for the null hypothesis "on these
    labelled samples, the contender is no better or worse than the baseline on average over
    seeds". The statistic is |grand mean| (the mean over seeds of each seed's mean over draws).

    Why not flip draws too: the draws are shared by every seed, so flipping a row and a column
    independently is not a symmetry of the data (the row's shared effect would change sign in
    some columns only); no exact test exists for both at once. What the draws add (a labelled
    sample that helps the contender more than another) is carried by `crossed_interval` and
    `variance_components`; read this p-value as conditional on the draws actually made.

    With one draw it is exactly `sign_flip_test` on that row.
    """
    d = _as_matrix(diffs_matrix)
    column_sums = _integer_units(d).sum(axis=0)  # exact integers: a seed's mean over draws, times n_draws
    p, method, patterns, se = _flip_count(column_sums, max_exact=max_exact, n_monte_carlo=n_monte_carlo, seed=seed)
    return CrossedSignFlipTest(n_draws=int(d.shape[0]), n_seeds=int(d.shape[1]), mean_difference=float(d.mean()),
                               p_value=p, method=method, n_patterns=patterns, mc_standard_error=se)


# ----------------------------------------------------------------------------------------------
# 3. Wilcoxon signed-rank, exact with ties and zeros
# ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class WilcoxonTest:
    """Two-sided Wilcoxon signed-rank test, Pratt's treatment of zeros."""

    n: int
    n_zeros: int
    statistic: float  # W+: the sum of the (average) ranks of the positive differences
    p_value: float
    method: str  # "exact" (all 2**m sign patterns of the non-zero ranks) or "normal approximation"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _scipy_wilcoxon_asymptotic(d: np.ndarray) -> float:
    """scipy's normal approximation (Pratt zeros, tie-corrected); 'asymptotic' is spelled 'approx' before 1.15."""
    from scipy import stats

    try:
        res = stats.wilcoxon(d, zero_method="pratt", alternative="two-sided", method="asymptotic")
    except ValueError:  # scipy < 1.15
        res = stats.wilcoxon(d, zero_method="pratt", alternative="two-sided", method="approx")
    return float(res.pvalue)


def wilcoxon_exact(diffs: Sequence[float], *, max_exact: int = _MAX_EXACT) -> WilcoxonTest:
    """Wilcoxon signed-rank two-sided p-value, exact with ties and zeros (Pratt's method).

    The |differences| are ranked with the zeros kept in the ranking (tied values share their
    average rank), then the zeros are dropped from the statistic (Pratt 1959). Under the null
    hypothesis each of the m non-zero ranks is equally likely to carry either sign, so the exact
    null distribution of W+ given these ranks is that of the 2**m sign patterns; p is the
    fraction of patterns with |W+ - E| >= |observed W+ - E| (E = half the non-zero ranks' sum).
    Ranks are halves at worst, so doubled they are integers and the enumeration is exact.

    Why: `stats.paired_stats` falls back to the normal approximation whenever ties or zeros
    occur, which at ten seeds is common and inaccurate. scipy's own `method="exact"` is exact
    only without ties and zeros (before 1.15 it switches to the approximation on zeros and uses
    the no-ties distribution on ties; from 1.15 it keeps "exact", then an approximation); its
    `PermutationMethod` (scipy >= 1.13) does what this function does. This one needs only
    scipy >= 1.9 and is deterministic. Above `max_exact` non-zero differences, scipy's normal
    approximation (tie-corrected, Pratt-adjusted) is used.
    """
    from scipy import stats

    d = _as_diffs(diffs)
    ranks = stats.rankdata(np.abs(d))  # average ranks, zeros included (Pratt)
    nonzero = d != 0
    m = int(nonzero.sum())
    w_plus = float(ranks[d > 0].sum())
    if m == 0:
        return WilcoxonTest(n=int(d.size), n_zeros=int(d.size), statistic=0.0, p_value=1.0, method="exact")
    if m <= max_exact:
        signed = np.rint(2 * ranks[nonzero]).astype(np.int64) * np.sign(d[nonzero]).astype(np.int64)
        p, _, _, _ = _flip_count(signed, max_exact=max_exact, n_monte_carlo=0, seed=None)
        method = "exact"
    else:
        p, method = _scipy_wilcoxon_asymptotic(d), "normal approximation"
    return WilcoxonTest(n=int(d.size), n_zeros=int(d.size - m), statistic=w_plus, p_value=p, method=method)


# ----------------------------------------------------------------------------------------------
# 4-5. Crossed designs: the interval and the variance components
# ----------------------------------------------------------------------------------------------

def _mean_squares(d: np.ndarray) -> dict[str, float]:
    """Two-way ANOVA mean squares of a draws x seeds matrix without replication."""
    r, s = d.shape
    grand = d.mean()
    row_means, col_means = d.mean(axis=1), d.mean(axis=0)
    resid = d - row_means[:, None] - col_means[None, :] + grand
    return {
        "ms_draw": float(s * ((row_means - grand) ** 2).sum() / (r - 1)),
        "ms_seed": float(r * ((col_means - grand) ** 2).sum() / (s - 1)),
        "ms_residual": float((resid ** 2).sum() / ((r - 1) * (s - 1))),
        "df_draw": r - 1, "df_seed": s - 1, "df_residual": (r - 1) * (s - 1),
    }


def _variance_of_mean(d: np.ndarray) -> tuple[float, float | None]:
    """(standard error of the grand mean, degrees of freedom) under crossed random effects.

    Var(grand mean) = s2_draw/R + s2_seed/S + s2_resid/(R S); with method-of-moments components
    this is (MS_draw + MS_seed - MS_resid)/(R S), a component estimated negative counting as 0.
    Its degrees of freedom are Satterthwaite's for that combination of mean squares. With one
    draw (or one seed) it is the plain standard error over the other factor: s/sqrt(n), n - 1 df.
    """
    r, s = d.shape
    if r == 1 or s == 1:
        x = d.ravel()
        return float(x.std(ddof=1) / math.sqrt(x.size)), float(x.size - 1)
    ms = _mean_squares(d)
    terms = {"ms_residual": 1.0}
    if ms["ms_draw"] > ms["ms_residual"]:
        terms["ms_draw"] = 1.0
        terms["ms_residual"] -= 1.0
    if ms["ms_seed"] > ms["ms_residual"]:
        terms["ms_seed"] = 1.0
        terms["ms_residual"] -= 1.0
    dfs = {"ms_draw": ms["df_draw"], "ms_seed": ms["df_seed"], "ms_residual": ms["df_residual"]}
    combo = sum(c * ms[k] for k, c in terms.items())
    denominator = sum((c * ms[k]) ** 2 / dfs[k] for k, c in terms.items() if c)
    df = combo ** 2 / denominator if denominator > 0 else None
    return math.sqrt(max(combo, 0.0) / (r * s)), df


def _effective_trials(x: np.ndarray, n: int) -> tuple[float, float]:
    """(design effect, effective trials) of the mean of a draws x seeds matrix: its crossed
    random-effects variance over that of n independent runs, kept between 1 and n / min(draws,
    seeds), and the trials n / deff, times (t_{n-1} / t_df)^2 for Satterthwaite's df."""
    r, s = x.shape
    independent = float(x.var()) / n
    if r < 2 or s < 2 or independent <= 0:
        return 1.0, float(n)
    se, df = _variance_of_mean(x)
    deff = min(max(se * se / independent, 1.0), n / min(r, s))
    n_eff = n / deff
    if df:
        n_eff *= (_tq(0.975, n - 1) / _tq(0.975, df)) ** 2
    return deff, n_eff


@dataclass(frozen=True)
class CrossedInterval:
    """The mean paired difference of a crossed design with a 95% confidence interval."""

    n_draws: int
    n_seeds: int
    mean_difference: float  # accuracy units
    ci95: tuple[float, float] | None  # accuracy units; None with a single run
    standard_error: float | None
    df: float | None  # Satterthwaite degrees of freedom of the t interval (random-effects method)
    method: str  # "random-effects" or "pigeonhole bootstrap"
    half_width_points: float | None  # half the interval's width, in points

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["ci95"] = list(self.ci95) if self.ci95 is not None else None
        return d


def crossed_interval(diffs_matrix: Any, *, method: str = "random-effects", n_boot: int = 4000,
                     seed: Any = 0) -> CrossedInterval:
    """Mean paired difference with a 95% CI that counts both the data draws and the seeds.

    Default, `method="random-effects"`: the crossed two-way random-effects model
    d[draw, seed] = mu + a[draw] + b[seed] + e, with the variance of the grand mean estimated
    from the ANOVA mean squares (method of moments, negative components as 0) and a Student t
    interval on Satterthwaite's degrees of freedom. Chosen because it is deterministic, because
    with one draw it is exactly today's paired t interval (`stats.paired_stats`'s ci95: Student t
    over seeds), and because with the few draws and ten-odd seeds of a study a bootstrap is
    unreliable: resampling 3 draws gives only 10 distinct row sets, and percentile intervals from
    n units run about sqrt((n-1)/n) and a t quantile too narrow.

    `method="pigeonhole bootstrap"` (Owen 2007) resamples rows and columns independently with
    replacement, `n_boot` times from `default_rng(seed)`, and takes the 2.5 and 97.5 percentiles
    of the grand mean: a model-free cross-check, mildly conservative for large designs (it counts
    the residual variance more than once), too narrow for small ones.
    """
    d = _as_matrix(diffs_matrix)
    r, s = d.shape
    mean = float(d.mean())
    if d.size == 1:
        return CrossedInterval(r, s, mean, None, None, None, method, None)
    if method == "random-effects":
        se, df = _variance_of_mean(d)
        half = _tq(0.975, df) * se if se > 0 else 0.0
        ci = (mean - half, mean + half)
    elif method == "pigeonhole bootstrap":
        if n_boot < 2:
            raise ValueError("n_boot must be at least 2")
        rng = _rng(seed)
        wr = rng.multinomial(r, np.full(r, 1.0 / r), size=n_boot).astype(float)  # draw counts per resample
        wc = rng.multinomial(s, np.full(s, 1.0 / s), size=n_boot).astype(float)  # seed counts per resample
        means = np.einsum("br,rs,bs->b", wr, d, wc) / (r * s)
        lo, hi = np.quantile(means, [0.025, 0.975])
        ci, se, df = (float(lo), float(hi)), float(means.std(ddof=1)), None
        half = (ci[1] - ci[0]) / 2
    else:
        raise ValueError(f"method must be 'random-effects' or 'pigeonhole bootstrap', not {method!r}")
    return CrossedInterval(n_draws=r, n_seeds=s, mean_difference=mean, ci95=ci, standard_error=se, df=df,
                           method=method, half_width_points=half * POINTS)


@dataclass(frozen=True)
class VarianceComponents:
    """The variance of a paired difference split into draw, seed and residual parts."""

    n_draws: int
    n_seeds: int
    mean_difference: float
    draw_var: float  # accuracy units squared, truncated at 0
    seed_var: float
    residual_var: float  # includes the draw x seed interaction (one run per cell cannot separate it)
    raw_draw_var: float  # the method-of-moments estimates before truncation (may be negative)
    raw_seed_var: float
    ms_draw: float
    ms_seed: float
    ms_residual: float
    df_draw: int
    df_seed: int
    df_residual: int
    draw_sd_points: float
    seed_sd_points: float
    residual_sd_points: float
    draw_share: float  # of the total (truncated) variance; 0 when it is all zero
    seed_share: float
    residual_share: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def variance_components(diffs_matrix: Any) -> VarianceComponents:
    """Two-way crossed random-effects ANOVA of the paired differences, by the method of moments.

    With d[draw, seed] = mu + a[draw] + b[seed] + e (one run per cell), the expected mean
    squares are E[MS_draw] = s2_e + S s2_a, E[MS_seed] = s2_e + R s2_b, E[MS_resid] = s2_e, so
    s2_a = (MS_draw - MS_resid)/S, s2_b = (MS_seed - MS_resid)/R, s2_e = MS_resid: unbiased,
    closed-form, no iterative fit to fail on a 3 x 10 matrix. A negative estimate means "no
    detectable component"; it is reported raw and truncated at 0. The residual also holds the
    draw x seed interaction, which one run per (draw, seed) cannot separate.

    Why it matters: the seed part is what more seeds average away, the draw part only more draws
    do; a large draw part means a result on one labelled sample may not carry to another.
    Needs at least two draws and two seeds.
    """
    d = _as_matrix(diffs_matrix)
    r, s = d.shape
    if r < 2 or s < 2:
        raise ValueError(f"variance components need at least 2 draws and 2 seeds, got {r} x {s}")
    ms = _mean_squares(d)
    raw_a = (ms["ms_draw"] - ms["ms_residual"]) / s
    raw_b = (ms["ms_seed"] - ms["ms_residual"]) / r
    a, b, e = max(raw_a, 0.0), max(raw_b, 0.0), ms["ms_residual"]
    total = a + b + e
    share = (lambda x: x / total) if total > 0 else (lambda x: 0.0)
    return VarianceComponents(
        n_draws=r, n_seeds=s, mean_difference=float(d.mean()), draw_var=a, seed_var=b, residual_var=e,
        raw_draw_var=raw_a, raw_seed_var=raw_b, **ms,
        draw_sd_points=math.sqrt(a) * POINTS, seed_sd_points=math.sqrt(b) * POINTS,
        residual_sd_points=math.sqrt(e) * POINTS, draw_share=share(a), seed_share=share(b), residual_share=share(e))


# ----------------------------------------------------------------------------------------------
# 6. Probability of superiority
# ----------------------------------------------------------------------------------------------

def _wilson(p: float, n: float, z: float = 1.959963984540054) -> tuple[float, float]:
    """Wilson's score interval for a proportion p observed on n (possibly effective) trials."""
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z / denom * math.sqrt(max(p * (1 - p) / n + z * z / (4 * n * n), 0.0))
    lo, hi = max(0.0, centre - half), min(1.0, centre + half)
    return (0.0 if p <= 0 else lo), (1.0 if p >= 1 else hi)


@dataclass(frozen=True)
class Superiority:
    """How likely the contender beats the baseline on a new seed (and draw)."""

    n_draws: int
    n_seeds: int
    wins: int
    ties: int
    losses: int
    p_superiority: float  # (wins + ties/2) / runs
    ci95: tuple[float, float]
    n_effective: float  # the independent trials Wilson's interval is computed on (runs with one draw)
    design_effect: float  # variance of the mean win over that of independent runs (1 with one draw)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["ci95"] = list(self.ci95)
        return d


def p_superiority(diffs_matrix: Any) -> Superiority:
    """P(contender beats baseline) on a new seed and draw, ties counted as half, with a 95% CI.

    The estimate is the share of runs won, a tie counting half (the usual "probability of
    superiority", a common-language effect size: 0.5 means no tendency either way). The interval
    is Wilson's score interval, which, unlike the Wald or a bootstrap interval, does not collapse
    to [1, 1] after a unanimous 10-0 (it gives [0.72, 1]), and covers close to 95% even at n = 10.

    With one draw (a 1 x n matrix) the runs are independent trials and n is the number of seeds.
    With several draws they are not: the runs of a draw share its labelled sample, those of a
    seed its model A. Following survey practice for clustered proportions (Korn and Graubard
    1998), Wilson's interval then uses an effective sample size: runs / design effect, the design
    effect being the crossed random-effects variance of the mean win (as in `crossed_interval`)
    over the variance independent runs would give, kept between 1 and runs / min(draws, seeds);
    times (t_{runs-1} / t_df)^2, df being Satterthwaite's, so that a few draws widen the interval
    as a t quantile would. A unanimous result shows no clustering of wins to measure; the design
    effect of the differences themselves stands in, as in `book_placement`.
    `bench/coverage.py` measures how often the interval covers.
    """
    d = _as_matrix(diffs_matrix)
    r, s = d.shape
    n = d.size
    wins, ties = int((d > 0).sum()), int((d == 0).sum())
    w = (d > 0) + 0.5 * (d == 0)
    p = float(w.mean())
    # a unanimous result shows no clustering of wins: the differences' own clustering stands in
    deff, n_eff = _effective_trials(w if 0 < p < 1 else d, n)
    return Superiority(n_draws=r, n_seeds=s, wins=wins, ties=ties, losses=n - wins - ties, p_superiority=p,
                       ci95=_wilson(p, n_eff), n_effective=n_eff, design_effect=deff)


# ----------------------------------------------------------------------------------------------
# 7. Minimum detectable effect
# ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class MinimumDetectableEffect:
    """The smallest true mean difference a paired t test detects with the given power."""

    mde: float  # in the unit of `sd` (points when sd is in points, as the report passes it)
    sd: float
    n: int
    alpha: float
    alpha_per_test: float  # alpha / m_tests: Bonferroni, the first (hardest) step of Holm
    power: float
    m_tests: int
    df: int
    noncentrality: float  # mde * sqrt(n) / sd

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _t_power(lam: float, df: int, t_crit: float) -> float:
    from scipy import stats

    # P(T' > t) + P(T' < -t); the lower tail as P(T'(-lam) > t), which scipy keeps accurate far out
    upper, lower = stats.nct.sf(t_crit, df, lam), stats.nct.sf(t_crit, df, -lam)
    return float(np.nan_to_num(upper, nan=1.0) + np.nan_to_num(lower, nan=0.0))


def minimum_detectable_effect(sd: float, n: int, *, alpha: float = 0.05, power: float = 0.8,
                              m_tests: int = 1) -> MinimumDetectableEffect:
    """Smallest true mean paired difference detected with probability `power` by a two-sided
    paired t test at level alpha / m_tests over n units whose differences have SD `sd`.

    The power of the t test at true mean delta is exact under normal differences: the statistic
    follows a noncentral t with n - 1 degrees of freedom and noncentrality delta sqrt(n) / sd, so
    power = P(|T'| > t_crit); this solves power = `power` for delta. The normal shortcut
    (z_{1-a/2} + z_power) sd / sqrt(n) is 11% too optimistic at n = 10. With m_tests > 1 the
    level is Bonferroni's alpha / m, the threshold the most significant of m cells must pass
    under Holm. The exact tests here have about the power of the t test for these sizes, so this
    is the planning figure for them too: "with 10 seeds and this SD, gains below MDE would
    usually go unnoticed".
    """
    from scipy import optimize, stats

    if n < 2:
        raise ValueError("the minimum detectable effect needs n >= 2")
    if sd < 0 or not math.isfinite(sd):
        raise ValueError(f"sd must be a finite non-negative number, got {sd!r}")
    if not (0 < alpha < 1 and 0 < power < 1) or m_tests < 1:
        raise ValueError("need 0 < alpha < 1, 0 < power < 1 and m_tests >= 1")
    a, df = alpha / m_tests, n - 1
    t_crit = float(stats.t.ppf(1 - a / 2, df))
    if power <= _t_power(0.0, df, t_crit):
        lam = 0.0
    else:
        hi = 1.0
        while _t_power(hi, df, t_crit) < power:
            hi *= 2
        lam = float(optimize.brentq(lambda x: _t_power(x, df, t_crit) - power, 0.0, hi, xtol=1e-12, rtol=1e-12))
    return MinimumDetectableEffect(mde=lam * sd / math.sqrt(n), sd=float(sd), n=int(n), alpha=alpha, alpha_per_test=a,
                                   power=power, m_tests=int(m_tests), df=df, noncentrality=lam)


# ----------------------------------------------------------------------------------------------
# 8. Equivalence: two one-sided tests
# ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Equivalence:
    """Two one-sided t tests (TOST) of |true mean difference| < margin."""

    n: int
    mean_difference: float  # accuracy units
    margin_points: float
    p_value: float  # TOST: max(p_lower, p_upper); < alpha means "equivalent"
    p_lower: float  # H0: mean <= -margin
    p_upper: float  # H0: mean >= +margin
    p_difference: float  # the ordinary two-sided t test of mean = 0
    ci90: tuple[float, float]  # accuracy units; inside +-margin exactly when equivalent (alpha 0.05)
    alpha: float
    verdict: str  # "equivalent", "different" or "inconclusive"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["ci90"] = list(self.ci90)
        return d


def tost(diffs: Sequence[float], margin_points: float = 0.5, *, alpha: float = 0.05) -> Equivalence:
    """Two one-sided t tests for equivalence of contender and baseline within +-margin points.

    A large p-value of an ordinary test means "no evidence of a difference", not "no
    difference": ten noisy seeds fail to reject almost anything. TOST reverses the burden: it
    rejects both "the true mean is <= -margin" and "the true mean is >= +margin" at level alpha,
    p = the larger of the two one-sided p-values, which is the same as the 90% t interval lying
    inside (-margin, +margin). Verdict: "equivalent" when p < alpha (no difference larger than
    the margin); otherwise "different" when the ordinary two-sided t test rejects 0, and
    "inconclusive" when neither (no evidence either way). A difference may be both real and
    smaller than the margin; it is then "equivalent", and `p_difference` says it is real.

    The default margin, 0.5 points, is about the smallest gain worth reporting for the book's
    200-image task (a quarter of the book's 2.2-point transfer gain, ten steps of 1/2,000 on the
    test set); choose it before looking at the data.
    """
    from scipy import stats

    d = _as_diffs(diffs)
    n = d.size
    if n < 2:
        raise ValueError("TOST needs at least 2 differences")
    if not margin_points > 0:
        raise ValueError("margin_points must be positive")
    margin, mean, df = margin_points / POINTS, float(d.mean()), n - 1
    se = float(d.std(ddof=1) / math.sqrt(n))
    if se > 0:
        p_lower = float(stats.t.sf((mean + margin) / se, df))
        p_upper = float(stats.t.cdf((mean - margin) / se, df))
        p_diff = float(2 * stats.t.sf(abs(mean) / se, df))
        half90 = _tq(1 - alpha, df) * se
    else:  # every unit gave the same difference
        p_lower = 0.0 if mean > -margin else 1.0
        p_upper = 0.0 if mean < margin else 1.0
        p_diff = 0.0 if mean != 0 else 1.0
        half90 = 0.0
    p = max(p_lower, p_upper)
    verdict = "equivalent" if p < alpha else "different" if p_diff < alpha else "inconclusive"
    return Equivalence(n=n, mean_difference=mean, margin_points=float(margin_points), p_value=p, p_lower=p_lower,
                       p_upper=p_upper, p_difference=p_diff, ci90=(mean - half90, mean + half90), alpha=alpha,
                       verdict=verdict)


# ----------------------------------------------------------------------------------------------
# 9. Families of cells: Westfall-Young max-T, and the set of contenders tied with the best
# ----------------------------------------------------------------------------------------------

def _aligned(diffs_by_cell: Mapping[Hashable, Any], what: str) -> tuple[list[Hashable], np.ndarray]:
    """(cell keys, units x cells matrix of rounded differences), every cell on the same units.

    Each value is either a sequence (positionally over the units, all of one length) or a
    mapping unit -> difference (all with the same set of units, aligned by unit).
    """
    if not diffs_by_cell:
        raise ValueError(f"{what}: no cells")
    keys = list(diffs_by_cell)
    values = [diffs_by_cell[k] for k in keys]
    mappings = [isinstance(v, Mapping) for v in values]
    if any(mappings) and not all(mappings):
        raise ValueError(f"{what}: give every cell as a mapping unit -> difference, or every cell as a sequence; "
                         f"mappings: {[k for k, m in zip(keys, mappings) if m]!r}")
    if all(mappings):
        reference = set(values[0])
        odd = [k for k, v in zip(keys, values) if set(v) != reference]
        if odd:
            detail = "; ".join(f"{k!r}: missing {sorted(map(repr, reference - set(v)))}, extra "
                               f"{sorted(map(repr, set(v) - reference))}" for k, v in zip(keys, values) if k in odd)
            raise ValueError(f"{what}: cells must share the same units as {keys[0]!r}; these differ: {detail}")
        try:
            units = sorted(reference)
        except TypeError:
            units = list(values[0])
        columns = [[v[u] for u in units] for v in values]
    else:
        columns = [list(v) for v in values]
        sizes = {k: len(c) for k, c in zip(keys, columns)}
        if len(set(sizes.values())) > 1:
            raise ValueError(f"{what}: cells must share the same units (one difference per unit, in the same order); "
                             f"units per cell: {sizes!r}")
    matrix = np.column_stack([_as_diffs(c, f"{what}: cell {k!r}") for k, c in zip(keys, columns)])
    return keys, matrix


def _t_squared(sums: np.ndarray, sq: np.ndarray, n: int) -> np.ndarray:
    """t^2, t = mean / (sd / sqrt(n)), from signed sums S and sums of squares Q (Q is the same
    for every sign pattern): t^2 = S^2 (n - 1) / (n Q - S^2). Guard for sd 0: inf when S != 0
    (every unit the same non-zero difference), 0 when the cell is all zeros (or n = 1)."""
    s2 = sums * sums
    num = np.maximum(n * sq - s2, 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        t2 = s2 * (n - 1) / num
    return np.where(num > 0, t2, np.where((s2 > 0) & (n > 1), np.inf, 0.0))


@dataclass(frozen=True)
class MaxTCell:
    """One cell of a max-T family."""

    key: Any
    n: int
    mean_difference: float
    t: float  # |mean| / (sd / sqrt(n)); inf when every unit gave the same non-zero difference
    p_value: float  # the cell's own sign-flip p-value on |t| (equal to sign_flip_test's when exact)
    p_adjusted: float  # Westfall-Young single-step max-T family-wise adjusted p-value

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["key"] = list(self.key) if isinstance(self.key, tuple) else self.key
        return d


@dataclass(frozen=True)
class MaxT:
    """Family-wise adjusted p-values of many cells, permuted jointly over shared units."""

    n_units: int
    method: str  # "exact" or "monte-carlo"
    n_patterns: int
    cells: tuple[MaxTCell, ...]
    mc_standard_error: float  # the largest MC standard error of any adjusted p; 0.0 when exact

    def __getitem__(self, key: Hashable) -> MaxTCell:
        for c in self.cells:
            if c.key == key:
                return c
        raise KeyError(key)

    @property
    def p_adjusted(self) -> dict[Any, float]:
        return {c.key: c.p_adjusted for c in self.cells}

    def to_dict(self) -> dict[str, Any]:
        return {"n_units": self.n_units, "method": self.method, "n_patterns": self.n_patterns,
                "mc_standard_error": self.mc_standard_error, "cells": [c.to_dict() for c in self.cells]}


def _max_t_matrix(keys: list[Hashable], d: np.ndarray, *, max_exact: int, n_monte_carlo: int, seed: Any) -> MaxT:
    """Max-T over the columns of a units x cells matrix of rounded differences.

    Exact: the signed sums of every pattern are a + b, a over the first half of the units (first
    sign fixed: a pattern and its mirror give the same |t|), b over the second half, formed a
    chunk of a's at a time; t^2 is compared rather than |t| (no square roots). Integers divided
    by each cell's gcd (t is scale-free) keep S and Q exact in float64 for accuracy data.
    """
    n, m = d.shape
    x = _integer_units(d)
    g = np.gcd.reduce(np.abs(x), axis=0)
    x = (x // np.where(g > 0, g, 1)).astype(float)
    sq = (x * x).sum(axis=0)
    observed = _t_squared(x.sum(axis=0), sq, n)
    threshold = observed * (1 - _REL_TIE)  # float ties between equal statistics; inf stays inf
    raw, adj = np.zeros(m, np.int64), np.zeros(m, np.int64)

    def tally(sums: np.ndarray) -> None:
        t2 = _t_squared(sums, sq, n)
        raw[:] += np.count_nonzero(t2 >= threshold, axis=0)
        adj[:] += np.count_nonzero(t2.max(axis=1)[:, None] >= threshold[None, :], axis=0)

    exact = n <= max_exact
    if exact:
        half = max(1, n // 2)
        a = _all_signed_sums(x[:half], fix_first=True)
        b = _all_signed_sums(x[half:])
        rows = max(1, _CHUNK_ENTRIES // (b.shape[0] * m))
        for start in range(0, a.shape[0], rows):
            tally((a[start:start + rows, None, :] + b[None, :, :]).reshape(-1, m))
        total = 1 << (n - 1)
        p_raw, p_adj, patterns, se = raw / total, adj / total, 1 << n, 0.0
    else:
        if n_monte_carlo < 1:
            raise ValueError("n_monte_carlo must be at least 1")
        for signs in _random_signs(n, n_monte_carlo, _rng(seed), width=m):
            tally(signs @ x)
        p_raw, p_adj = (raw + 1) / (n_monte_carlo + 1), (adj + 1) / (n_monte_carlo + 1)
        patterns = n_monte_carlo
        se = float(np.sqrt(p_adj * (1 - p_adj) / n_monte_carlo).max())
    cells = tuple(MaxTCell(key=k, n=n, mean_difference=float(d[:, j].mean()), t=float(np.sqrt(observed[j])),
                           p_value=float(p_raw[j]), p_adjusted=float(p_adj[j])) for j, k in enumerate(keys))
    return MaxT(n_units=n, method="exact" if exact else "monte-carlo", n_patterns=patterns, cells=cells,
                mc_standard_error=se)


def max_t(diffs_by_cell: Mapping[Hashable, Sequence[float] | Mapping[Hashable, float]], *,
          max_exact: int = _MAX_EXACT, n_monte_carlo: int = _N_MONTE_CARLO, seed: Any = 0) -> MaxT:
    """Westfall-Young single-step max-T adjusted p-values over many cells sharing their units.

    Each cell (a contender at a setting) has one difference per unit (seed). One sign pattern is
    drawn per unit and applied to EVERY cell at once (a seed's contender and baseline swap in all
    cells together), so the dependence between cells is kept: cells of one setting share the
    baseline runs, cells of one seed share model A. For each pattern the statistic is the largest
    |t| over the cells; a cell's adjusted p is the fraction of patterns whose largest |t| reaches
    that cell's observed |t| (the observed pattern included). This controls the family-wise error
    rate, like Holm, but uses the actual correlation of the tests instead of the worst case, so it
    is never more conservative than Bonferroni when the cells' permutation distributions are
    alike, and gains most when cells are strongly correlated (identical cells cost nothing).
    |t| rather than |mean| puts cells with different spreads on one scale.

    Units: every cell must be measured on the same units, since a pattern flips a unit in all
    cells. Give each cell either as a sequence (positional, all the same length) or as a mapping
    unit -> difference (aligned by unit; all must have the same set of units). Otherwise a
    ValueError names the cells that differ: restrict the family to the shared units first.
    Exact enumeration up to `max_exact` units, Monte Carlo from `default_rng(seed)` above.
    """
    keys, d = _aligned(diffs_by_cell, "max_t")
    return _max_t_matrix(keys, d, max_exact=max_exact, n_monte_carlo=n_monte_carlo, seed=seed)


@dataclass(frozen=True)
class BestSet:
    """The contenders of one setting that cannot be told apart from the best one."""

    best: Any  # the contender with the highest mean difference (first of any tied)
    members: tuple  # the best, then every contender whose gap to it is not significant
    alpha: float
    means: tuple[tuple[Any, float], ...]  # (contender, mean difference vs baseline), in input order
    comparisons: MaxT | None  # max-T of (best - contender) over the shared units; None for one contender

    def to_dict(self) -> dict[str, Any]:
        conv = (lambda k: list(k) if isinstance(k, tuple) else k)
        return {"best": conv(self.best), "members": [conv(k) for k in self.members], "alpha": self.alpha,
                "means": [[conv(k), v] for k, v in self.means],
                "comparisons": self.comparisons.to_dict() if self.comparisons else None}


def best_set(diffs_by_contender: Mapping[Hashable, Sequence[float] | Mapping[Hashable, float]], *,
             alpha: float = 0.05, max_exact: int = _MAX_EXACT, n_monte_carlo: int = _N_MONTE_CARLO,
             seed: Any = 0) -> BestSet:
    """Which contenders of one setting cannot be told apart from the best, so that "first" means something.

    The best is the contender with the highest mean difference over the baseline. Each other
    contender is compared with it on the same units: the paired differences best - contender
    (the baseline cancels), all tested together by `max_t`. A contender whose adjusted p is
    >= alpha "cannot be told apart" from the best and joins the set; the set always holds the
    best. Only when the set has one member is the leader first in a sense the data support.

    The best is chosen on the same data, which favours it; the two-sided test (the gap can only
    be >= 0 by construction) offsets this, erring toward a larger set, the cautious side for a
    claim of "first". Units as in `max_t`.
    """
    keys, d = _aligned(diffs_by_contender, "best_set")
    means = d.mean(axis=0)
    best_j = int(np.argmax(means))
    best = keys[best_j]
    others = [j for j in range(len(keys)) if j != best_j]
    comparisons = None
    members = [best]
    if others:
        gaps = np.round(d[:, [best_j]] - d[:, others], 9)
        comparisons = _max_t_matrix([keys[j] for j in others], gaps, max_exact=max_exact,
                                    n_monte_carlo=n_monte_carlo, seed=seed)
        members += [c.key for c in comparisons.cells if c.p_adjusted >= alpha]
    return BestSet(best=best, members=tuple(members), alpha=alpha,
                   means=tuple((k, float(v)) for k, v in zip(keys, means)), comparisons=comparisons)


# ----------------------------------------------------------------------------------------------
# 10. Where the book's result falls
# ----------------------------------------------------------------------------------------------

def _clopper_pearson(k: float, n: float, level: float = 0.95) -> tuple[float, float]:
    """The exact binomial interval; k and n may be effective (non-integer) counts."""
    from scipy import stats

    a = (1 - level) / 2
    lo = 0.0 if k <= 0 else float(stats.beta.ppf(a, k, n - k + 1))
    hi = 1.0 if k >= n else float(stats.beta.ppf(1 - a, k + 1, n - k))
    return lo, hi


@dataclass(frozen=True)
class BookPlacement:
    """How often a random seed (and draw) reaches the book's gain and the book's error ratio."""

    n: int
    book_gain: float  # accuracy units
    book_ratio: float
    reached_gain: int
    p_gain: float
    ci95_gain: tuple[float, float]
    reached_ratio: int
    p_ratio: float
    ci95_ratio: tuple[float, float]
    n_effective_gain: float  # the trials each interval is computed on: n with one draw
    n_effective_ratio: float

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["ci95_gain"], d["ci95_ratio"] = list(self.ci95_gain), list(self.ci95_ratio)
        return d


def book_placement(gains: Sequence[float], ratios: Sequence[float], book_gain: float,
                   book_ratio: float) -> BookPlacement:
    """The share of runs whose gain reaches the book's gain, and whose error-rate ratio reaches the
    book's, each with a Clopper-Pearson 95% interval.

    One run is one (draw, seed) pair; `gains` (accuracy differences) and `ratios` (baseline error
    / contender error, inf for a perfect contender) are flat (one draw: the runs are independent
    trials) or a draws x seeds matrix. "Reaches" allows 1e-9 for float noise, as
    `stats.book_placement` does. Clopper-Pearson, the exact binomial interval, because the counts
    are small and often 0 or n (where Wald's interval is empty) and because a claim like "the
    book's result is rare" should not rest on an approximation.

    With several draws the runs of a seed share model A and those of a draw its labelled sample,
    so they are not independent trials. As for clustered survey proportions (Korn and Graubard
    1998), the interval is then Clopper-Pearson on an effective sample size: runs / design effect,
    with the t correction of `p_superiority`. The design effect is that of the indicator "reaches
    the book" when some runs reach it and some do not. When all or none do, the indicator shows no
    clustering to measure, so the design effect of the gains themselves stands in: thresholding a
    normal variable weakens its correlations, so the indicator's design effect is at most the
    gains', and the interval errs wide.
    """
    g = np.asarray(gains, dtype=float)
    q = np.asarray(ratios, dtype=float)
    if g.size == 0 or g.shape != q.shape or g.ndim > 2:
        raise ValueError(f"need as many ratios as gains, at least one, flat or draws x seeds: gains {g.shape}, "
                         f"ratios {q.shape}")
    if np.any(np.isnan(g)) or np.any(np.isnan(q)):
        raise ValueError("gains and ratios must not be NaN")
    g, q = (g[None, :], q[None, :]) if g.ndim == 1 else (g, q)
    n = int(g.size)
    reach_gain = (np.round(g, 9) >= book_gain - RESOLUTION).astype(float)
    reach_ratio = (q >= book_ratio - RESOLUTION).astype(float)
    latent = _effective_trials(np.round(g, 9), n)[1]

    def share(reached: np.ndarray) -> tuple[int, float, tuple[float, float], float]:
        k = int(reached.sum())
        n_eff = _effective_trials(reached, n)[1] if 0 < k < n else latent
        return k, k / n, _clopper_pearson(k if n_eff == n else k / n * n_eff, n_eff), n_eff

    kg, pg, cig, ng = share(reach_gain)
    kr, pr, cir, nr = share(reach_ratio)
    return BookPlacement(n=n, book_gain=float(book_gain), book_ratio=float(book_ratio), reached_gain=kg, p_gain=pg,
                         ci95_gain=cig, reached_ratio=kr, p_ratio=pr, ci95_ratio=cir, n_effective_gain=ng,
                         n_effective_ratio=nr)


# ----------------------------------------------------------------------------------------------
# 11. Precision for stopping rules
# ----------------------------------------------------------------------------------------------

def t_halfwidth(diffs: Sequence[float]) -> float:
    """Half-width, in points, of the Student t 95% interval of the mean difference: t_{0.975, n-1} sd / sqrt(n).

    Deterministic (no resampling), so a precision-based stopping rule ("add seeds until the
    half-width is under 0.3 points") stops at the same seed on every rerun. Precision, not
    significance, is the safe thing to stop on: stopping when p < 0.05 inflates false positives,
    stopping when the interval is narrow enough does not bias the test. inf below two units.
    """
    d = _as_diffs(diffs)
    if d.size < 2:
        return math.inf
    return _tq(0.975, d.size - 1) * float(d.std(ddof=1)) / math.sqrt(d.size) * POINTS


# ----------------------------------------------------------------------------------------------
# 12. Test-image uncertainty: one run's paired predictions on the same test images
# ----------------------------------------------------------------------------------------------

def _as_correct(correct: Any, name: str) -> np.ndarray:
    c = np.asarray(correct)
    if c.ndim != 1 or c.size == 0:
        raise ValueError(f"{name}: expected a non-empty 1-D sequence of correct (True/1) or wrong (False/0) "
                         f"predictions, got shape {c.shape}")
    if c.dtype != bool and not np.all((c == 0) | (c == 1)):
        raise ValueError(f"{name}: expected only True/False or 1/0 per test image")
    return c.astype(bool)


def _paired_correct(baseline_correct: Any, contender_correct: Any) -> tuple[np.ndarray, np.ndarray]:
    b = _as_correct(baseline_correct, "baseline_correct")
    c = _as_correct(contender_correct, "contender_correct")
    if b.size != c.size:
        raise ValueError(f"the two runs must be scored on the same test images: {b.size} baseline predictions, "
                         f"{c.size} contender predictions")
    return b, c


@dataclass(frozen=True)
class McNemar:
    """The exact McNemar test of one run: do the contender and the baseline err on as many of the
    same test images?"""

    n: int  # test images
    contender_only: int  # images the contender gets right and the baseline wrong
    baseline_only: int  # the other way round
    p_value: float  # exact two-sided: binomial(contender_only + baseline_only, 1/2)
    difference: float  # accuracy units: (contender_only - baseline_only) / n, the run's gain

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def mcnemar_exact(baseline_correct: Sequence[bool], contender_correct: Sequence[bool]) -> McNemar:
    """Exact McNemar test on one run's paired per-image outcomes (right or wrong on each test image).

    Only the discordant images count: b images only the contender gets right, c only the
    baseline. Under "the two models are equally accurate on this kind of image", each discordant
    image is as likely to fall either way, so b ~ Binomial(b + c, 1/2); the two-sided p-value is
    the probability of a split at least as uneven, min(1, 2 P(X <= min(b, c))), and 1 with no
    discordant image. Exact, not the chi-squared approximation, since b + c is often small (ten
    or twenty images of 2,000). It answers "on this seed, is the gap more than test-image luck?";
    it says nothing of other seeds, which the paired tests over seeds are for.
    """
    from scipy import stats

    b_ok, c_ok = _paired_correct(baseline_correct, contender_correct)
    b = int(np.sum(c_ok & ~b_ok))
    c = int(np.sum(b_ok & ~c_ok))
    m = b + c
    p = 1.0 if m == 0 else min(1.0, 2.0 * float(stats.binom.cdf(min(b, c), m, 0.5)))
    return McNemar(n=int(b_ok.size), contender_only=b, baseline_only=c, p_value=p, difference=(b - c) / b_ok.size)


def mcnemar(y: Sequence[int], baseline: Sequence[float], result: Sequence[float]) -> McNemar:
    """`mcnemar_exact` on stored predictions (`records.Predictions`): the labels and each model's
    P(label 1) per test image, an image right where p > 0.5 says its label."""
    y = np.asarray(y) == 1
    return mcnemar_exact((np.asarray(baseline) > 0.5) == y, (np.asarray(result) > 0.5) == y)


@dataclass(frozen=True)
class ImageBootstrap:
    """A bootstrap over test images of one run's accuracy difference."""

    n: int  # test images
    difference: float  # accuracy units: the run's own, contender minus baseline
    se: float  # the bootstrap standard error, accuracy units
    ci95: tuple[float, float]  # percentile interval, accuracy units
    n_boot: int
    seed: int

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["ci95"] = list(self.ci95)
        return d


def image_bootstrap(baseline_correct: Sequence[bool], contender_correct: Sequence[bool], *, n_boot: int = 10_000,
                    seed: int = 0) -> ImageBootstrap:
    """The test-image term of one run's gain: resample the test images with replacement, the same
    images for both models (they are paired), and take the accuracy difference of each resample.

    Its spread is how much the gain would move on another 2,000 images like these, with the
    models fixed (at 98% accuracy the binomial SE of one accuracy is about 0.3 points; the
    paired difference's is smaller, since both models get most images right). Seeded
    (`numpy.random.default_rng(seed)`): the same input and seed give the same interval. Only the
    four kinds of image (both right, only one right, both wrong) matter, so a resample is drawn
    as multinomial counts of them, exactly the distribution resampling images gives.
    """
    b_ok, c_ok = _paired_correct(baseline_correct, contender_correct)
    if n_boot < 1:
        raise ValueError("n_boot must be at least 1")
    n = int(b_ok.size)
    gains, losses = int(np.sum(c_ok & ~b_ok)), int(np.sum(b_ok & ~c_ok))
    counts = _rng(seed).multinomial(n, [gains / n, losses / n, (n - gains - losses) / n], size=n_boot)
    diffs = (counts[:, 0] - counts[:, 1]) / n
    lo, hi = np.quantile(diffs, [0.025, 0.975])
    return ImageBootstrap(n=n, difference=(gains - losses) / n, se=float(diffs.std(ddof=1)) if n_boot > 1 else 0.0,
                          ci95=(float(lo), float(hi)), n_boot=int(n_boot), seed=int(seed))


@dataclass(frozen=True)
class TestImageTerm:
    """How much a cell's mean gain would move on another set of test images like these."""

    n_images: int
    runs: int
    se: float  # accuracy units: the standard error of the cell's mean gain over test images
    se_points: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def test_image_term(baseline_correct: Any, contender_correct: Any) -> TestImageTerm:
    """The test-image term of a cell's mean gain: its standard error under resampling the test
    images, the same images for every run of the cell.

    `baseline_correct` and `contender_correct` are runs x images (right or wrong on each image),
    every run scored on the same images in the same order, as a study's are. The seeds' interval
    treats the 2,000 test images as fixed: it says how the gain varies over seeds and draws on
    these images. On another 2,000 images the mean gain would move too, by this much. Because
    every run is scored on the same images, they are resampled jointly: the cell's mean gain is
    the mean over images of d_i, each image's gain averaged over the runs, so resampling images
    with replacement has variance var(d) / n_images exactly (`image_bootstrap` converges to it
    for one run). Closed form, so the report is deterministic and fast.
    """
    b = np.atleast_2d(np.asarray(baseline_correct))
    c = np.atleast_2d(np.asarray(contender_correct))
    if b.shape != c.shape or b.ndim != 2 or b.size == 0:
        raise ValueError(f"need runs x images of right/wrong for both, the same shape: baseline {b.shape}, "
                         f"contender {c.shape}")
    _as_correct(b.ravel(), "baseline_correct"), _as_correct(c.ravel(), "contender_correct")
    d = (c.astype(float) - b.astype(float)).mean(axis=0)
    se = math.sqrt(float(d.var()) / d.size)
    return TestImageTerm(n_images=int(d.size), runs=int(b.shape[0]), se=se, se_points=se * POINTS)


__all__ = [
    "SignFlipTest", "sign_flip_test", "CrossedSignFlipTest", "crossed_sign_flip_test", "WilcoxonTest",
    "wilcoxon_exact", "CrossedInterval", "crossed_interval", "VarianceComponents", "variance_components",
    "Superiority", "p_superiority", "MinimumDetectableEffect", "minimum_detectable_effect", "Equivalence", "tost",
    "MaxTCell", "MaxT", "max_t", "BestSet", "best_set", "BookPlacement", "book_placement", "t_halfwidth",
    "McNemar", "mcnemar_exact", "mcnemar", "ImageBootstrap", "image_bootstrap", "TestImageTerm", "test_image_term",
]
