"""The statistics of a cell (each contender against the baseline, paired over seeds, and over data
draws when there are several), and of the study's cells together: Holm within a setting, max-T
over the whole study, the set of contenders tied with the best.

The tests and intervals themselves are `inference`'s; this module decides which of them a cell
reports, on which units, and what a cell too small for them shows instead (docs/statistics.md).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from fmtransfer.io import fingerprint
from fmtransfer.results import error_rate_ratio
from fmtransfer.study import inference
from fmtransfer.study.axes import cell_axes


# Hands-On ML 2nd ed., 11.2.1; its grid point is the default Config's.
BOOK = {"pair": (5, 6), "b_train_size": 200, "reuse_layers": "all", "preset": "book",
        "baseline": 0.9705, "transfer": 0.9925}

ALPHA = 0.05
POWER = 0.8  # of the minimum detectable effect
MIN_INTERVAL_UNITS = 3  # seeds a cell needs before it shows a confidence interval, TOST or MDE
DEFAULT_MARGIN_POINTS = 0.5  # StudyConfig.equivalence_margin's default, for callers without a Config
FIRST = "first"  # the draw of a record made before data draws existed: the book's first N images


@dataclass
class _CellFields:
    contender: str
    title: str
    point: dict[str, Any]  # the cell's axes but the pooled ones, as results lines write them: {"pair": [5, 6], ...}
    seeds: list[int]  # one per unit (seed, data seed) of the cell, in its order; `data_seeds` beside them
    n: int
    baseline_mean: float
    baseline_std: float | None
    transfer_mean: float  # the contender's mean test accuracy
    transfer_std: float | None
    mean_difference: float  # the headline: over every analysed run (all of them in a complete design)
    ci95: list[float] | None  # Student t over seeds with one draw; crossed random effects with several
    p_value: float | None  # the primary test: exact sign-flip over seeds (whole seeds flipped when crossed)
    error_rate_ratio: float
    wins: int
    ties: int
    losses: int
    diverged: int = 0  # runs of the contender that diverged, counted at chance accuracy
    baseline_diverged: int = 0
    p_holm: float | None = None  # p_value corrected for the contenders compared in the same setting
    linear_probe: float | None = None  # mean test-B accuracy of the probe on its pretrained features
    baseline_accuracies: list[float] = field(default_factory=list)  # per seed, in `seeds` order
    accuracies: list[float] = field(default_factory=list)  # the contender's, per seed
    book: dict | None = None  # where the book's published gain and error ratio fall among this cell's runs
    # Per unit, parallel to `seeds`: "first" (the book's sample) or the data seed of its draw.
    # Empty only in a cell written before draws existed, whose units were all "first".
    data_seeds: list[Any] = field(default_factory=list)
    design: str = "paired"  # "paired": one draw of the labelled sample; "crossed": draws x seeds
    n_seeds: int | None = None  # the units of the tests: seeds analysed (those with a run at every draw)
    n_draws: int = 1
    runs_left_out: int = 0  # runs of seeds lacking some draw: a crossed design must be complete
    ci95_method: str | None = None  # "student t" or "crossed random effects"
    no_interval: str | None = None  # why the cell shows no CI, TOST or MDE (too few seeds)
    p_method: str | None = None  # "exact" (every sign pattern) or "monte-carlo"
    p_mc_error: float | None = None  # Monte Carlo standard error of p_value; 0 when exact
    p_wilcoxon: float | None = None  # secondary: Wilcoxon signed-rank (Pratt), exact with ties and zeros
    p_max_t: float | None = None  # Westfall-Young max-T over every cell of the study (family-wise)
    in_best_set: bool | None = None  # cannot be told apart from the best contender of its setting
    superiority: dict | None = None  # P(beats the baseline on a new seed, and draw), Wilson 95% CI
    mde_points: float | None = None  # smallest true gain the primary test finds with 80% power at 5%
    # The smallest p the primary test can give with these seeds (2 / 2^n, exact); above 5% no gain,
    # however large, can be significant, and the cell has no detectable effect (mde_points None).
    p_floor: float | None = None
    equivalence: dict | None = None  # TOST against +-study.equivalence_margin points
    variance_components: dict | None = None  # draw, seed, residual: only with several draws and seeds
    # Per-seed McNemar tests on the test images, where the runs' predictions are stored
    # (`reporting._test_image_tests`); None where they are not.
    mcnemar: list | None = None
    # The cell's test-image term where they are: the mean gain's SE over resampled test images,
    # its share of the mean's variance and the CI widened by it (`reporting._with_images`).
    test_images: dict | None = None
    # A tuned study's cell (`study.tuning.summary`): the budget, the protocol, each unit's selected
    # trials and settings, the steps, and the budget curves; None untuned.
    tuning: dict | None = None


class Cell(_CellFields):
    """The paired statistics of one contender against the baseline over the units of one cell.

    A unit is a (seed, data seed) pair: its baseline and its contender trained with the same seed
    on the same labelled images. `seeds[i]` and `data_seeds[i]` name unit i, and
    `baseline_accuracies[i]` and `accuracies[i]` are its scores; the differences are paired over
    the units. With the book's sample alone, the units are the seeds, as before draws existed.

    A cell's grid point is `point`, one value per axis but the pooled ones; `cell.pair`,
    `cell.b_train_size`, ... read it, and so may the constructor take them:
    `Cell(contender="transfer", title="transfer", pair=[5, 6], b_train_size=200, ...)`.
    """

    def __init__(self, *args, **kwargs):
        named = {a.name: kwargs.pop(a.name) for a in cell_axes() if a.name in kwargs}
        if named:
            kwargs["point"] = {**kwargs.get("point", {}), **named}
        super().__init__(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        point = self.__dict__.get("point", {})
        if name in point:
            return point[name]
        raise AttributeError(f"Cell has no attribute or axis {name!r}")

    @property
    def setting(self) -> tuple:
        """The cell's axes but the seed, as sort keys: the cells of one setting share their baseline runs."""
        return tuple(a.order(a.from_json(self.point[a.name])) for a in cell_axes() if a.name in self.point)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        point = d.pop("point")
        draws = d.pop("data_seeds")
        d = {"contender": d.pop("contender"), "title": d.pop("title"), **point, **d}
        for optional in ("book", "tuning"):  # an untuned cell's dict keeps the form it always had
            if d[optional] is None:
                del d[optional]
        if draws:  # beside the seeds; a cell of a report made before draws keeps its form
            d = {k: v for key, value in d.items()
                 for k, v in ([(key, value), ("data_seeds", draws)] if key == "seeds" else [(key, value)])}
        return d

    @property
    def units(self) -> list[tuple[int, Any]]:
        """The cell's (seed, data seed) pairs, in the order of its accuracies."""
        return list(zip(self.seeds, self.data_seeds or ["first"] * len(self.seeds)))

    @property
    def verdict(self) -> str:
        """The cell in one word, family-wise: "better" or "worse" (max-T p < 0.05, else Holm's when
        the study had no max-T), "equivalent" (TOST within the margin), or "no evidence"."""
        p = self.p_max_t if self.p_max_t is not None else self.p_holm
        if p is not None and p < ALPHA and self.mean_difference != 0:
            return "better" if self.mean_difference > 0 else "worse"
        if self.equivalence is not None and self.equivalence["verdict"] == "equivalent":
            return "equivalent"
        return "no evidence"


def draw_order(draw: Any) -> tuple:
    """Draws sort "first" before data seeds, data seeds by number."""
    return (0, 0) if draw == FIRST else (1, draw) if isinstance(draw, (int, float)) else (2, str(draw))


@dataclass(frozen=True)
class Units:
    """A cell's runs as the tests see them: a draws x seeds matrix of paired differences.

    With one draw it is one row, the seeds in the order given. With several, a seed lacking a
    run at some draw is left out (a crossed design must be complete: every test here flips or
    averages whole seeds), and so are its runs.
    """

    matrix: np.ndarray  # accuracy differences, rounded to 1e-9
    draws: tuple
    seeds: tuple
    left_out: int  # runs of incomplete seeds

    @property
    def by_seed(self) -> dict[Any, float]:
        """Each seed's mean difference over the draws: the unit of every test."""
        return dict(zip(self.seeds, (float(v) for v in self.matrix.mean(axis=0))))


def units(baseline: list[float], contender: list[float], seeds: list | None = None,
          draws: list | None = None) -> Units:
    """The cell's paired differences as a draws x seeds matrix (see `Units`)."""
    diff = np.round(np.subtract(np.asarray(contender, float), np.asarray(baseline, float)), 9)
    seeds = list(range(len(diff))) if seeds is None else list(seeds)
    draws = [FIRST] * len(diff) if draws is None else list(draws)
    if not len(diff) == len(seeds) == len(draws):
        raise ValueError(f"need one seed and one draw per run: {len(diff)} runs, {len(seeds)} seeds, "
                         f"{len(draws)} draws")
    rows = sorted(set(draws), key=draw_order)
    if len(rows) == 1:
        return Units(diff[None, :], tuple(rows), tuple(seeds), 0)
    at: dict[tuple, float] = {}
    for d, s, v in zip(draws, seeds, diff):
        if (d, s) in at:
            raise ValueError(f"two runs for seed {s} at draw {d}")
        at[(d, s)] = float(v)
    every = sorted(set(seeds))
    complete = [s for s in every if all((d, s) in at for d in rows)]
    matrix = np.array([[at[(d, s)] for s in complete] for d in rows]).reshape(len(rows), len(complete))
    return Units(matrix, tuple(rows), tuple(complete), len(diff) - matrix.size)


def _equivalence(m: np.ndarray, margin_points: float) -> dict:
    """TOST within +-margin points; with several draws on the crossed interval's standard error
    and degrees of freedom, so that "equivalent" holds for a new draw too."""
    from scipy import stats

    if m.shape[0] == 1:
        e = inference.tost(m[0], margin_points, alpha=ALPHA)
        return {"margin_points": e.margin_points, "p_value": e.p_value, "verdict": e.verdict, "ci90": list(e.ci90)}
    ci = inference.crossed_interval(m)
    margin, mean, se, df = margin_points / 100, ci.mean_difference, ci.standard_error, ci.df
    if se and df:
        p_lower, p_upper = float(stats.t.sf((mean + margin) / se, df)), float(stats.t.cdf((mean - margin) / se, df))
        p_diff, half = float(2 * stats.t.sf(abs(mean) / se, df)), float(stats.t.ppf(1 - ALPHA, df)) * se
    else:  # every run gave the same difference
        p_lower, p_upper = float(mean <= -margin), float(mean >= margin)
        p_diff, half = float(mean == 0), 0.0
    p = max(p_lower, p_upper)
    verdict = "equivalent" if p < ALPHA else "different" if p_diff < ALPHA else "inconclusive"
    return {"margin_points": float(margin_points), "p_value": p, "verdict": verdict, "ci90": [mean - half, mean + half]}


def mc_seed(*identity: Any) -> int:
    """A Monte Carlo generator's seed from what a test is about (a cell's point and contender, a
    study's cells): the same study gives the same p-values however, wherever and whenever it is
    reported, and two cells do not share their random sign patterns."""
    return int(fingerprint(*identity), 16)


def paired_stats(baseline: list[float], transfer: list[float], *, seeds: list | None = None,
                 draws: list | None = None, margin_points: float = DEFAULT_MARGIN_POINTS, seed: Any = 0) -> dict:
    """A cell's statistics from its runs' test accuracies (the baseline's and the contender's, run
    by run, with each run's seed and data draw; without `draws`, one draw).

    The unit is the seed: it carries model A and the initialisations. With one draw,
    - p_value: the exact two-sided sign-flip test of the mean difference (every one of the 2**n
      sign patterns up to 20 seeds; Monte Carlo, 100,000 patterns from `seed`, above, with its
      standard error in p_mc_error). It tests the mean the report shows and is exact with the
      ties and zeros that accuracies on a fixed test set make all the time;
    - p_wilcoxon: Wilcoxon's signed-rank test, Pratt's zeros, exact with ties (secondary);
    - ci95: Student t over the seeds.
    With several draws, the same tests flip whole seeds (every draw of a seed together), the
    interval is the crossed random-effects one (it counts the draws' variation too), and the
    variance of a run's difference is split into draw, seed and residual parts.

    Every cell also gets P(win) (`superiority`, Wilson interval) and, from 3 seeds, the minimum
    detectable effect at 80% power and TOST within +-`margin_points`; below 3 seeds, `no_interval`
    says why these and the interval are absent. docs/statistics.md justifies each choice.
    """
    b, t = np.asarray(baseline, float), np.asarray(transfer, float)
    diff = np.round(t - b, 9)  # 0.995 - 0.990 and 0.990 - 0.985 must tie, whatever the float error
    n = len(diff)
    u = units(baseline, transfer, seeds, draws)
    m = u.matrix
    n_draws, n_seeds = m.shape
    crossed = n_draws > 1
    out = {
        "n": n,
        "baseline_mean": float(b.mean()), "baseline_std": float(b.std(ddof=1)) if n > 1 else None,
        "transfer_mean": float(t.mean()), "transfer_std": float(t.std(ddof=1)) if n > 1 else None,
        "mean_difference": float(m.mean()) if m.size else float(diff.mean()), "ci95": None, "p_value": None,
        "error_rate_ratio": error_rate_ratio(float(b.mean()), float(t.mean())),
        "wins": int((diff > 0).sum()), "ties": int((diff == 0).sum()), "losses": int((diff < 0).sum()),
        "design": "crossed" if crossed else "paired", "n_seeds": n_seeds, "n_draws": n_draws,
        "runs_left_out": u.left_out, "ci95_method": None, "no_interval": None, "p_method": None, "p_mc_error": None,
        "p_wilcoxon": None, "superiority": None, "mde_points": None, "equivalence": None,
        "variance_components": None, "p_floor": None,
    }
    if n_seeds == 0:
        out["no_interval"] = "no seed has a run at every draw"
        return out
    per_seed = m.mean(axis=0)
    if n_seeds >= 2:
        test = inference.crossed_sign_flip_test(m, seed=seed)
        out.update(p_value=test.p_value, p_method=test.method, p_mc_error=test.mc_standard_error,
                   p_wilcoxon=inference.wilcoxon_exact(per_seed).p_value, p_floor=p_floor(n_seeds))
    s = inference.p_superiority(m)
    out["superiority"] = {"p": s.p_superiority, "ci95": list(s.ci95), "n_effective": s.n_effective,
                          "design_effect": s.design_effect}
    if n_seeds < MIN_INTERVAL_UNITS:
        out["no_interval"] = (f"{n_seeds} seed{'s' if n_seeds != 1 else ''}: a confidence interval, TOST and the "
                              f"detectable effect need at least {MIN_INTERVAL_UNITS} (with 2, Student's t has one "
                              "degree of freedom and the interval spans +-12.7 standard errors)")
    else:
        ci = inference.crossed_interval(m)
        out["ci95"], out["ci95_method"] = list(ci.ci95), "crossed random effects" if crossed else "student t"
        out["equivalence"] = _equivalence(m, margin_points)
        if out["p_floor"] <= ALPHA:
            out["mde_points"] = inference.minimum_detectable_effect(float(per_seed.std(ddof=1)) * 100, n_seeds,
                                                                    alpha=ALPHA, power=POWER).mde
    if crossed and n_seeds >= 2:
        v = inference.variance_components(m)
        out["variance_components"] = {k: getattr(v, k) for k in (
            "draw_sd_points", "seed_sd_points", "residual_sd_points", "draw_share", "seed_share", "residual_share",
            "draw_var", "seed_var", "residual_var", "raw_draw_var", "raw_seed_var")}
    return out


def p_floor(n_seeds: int) -> float:
    """The smallest two-sided p of the sign-flip test over `n_seeds` units: the observed pattern
    and its mirror image, out of 2^n (Monte Carlo above 20 seeds gives about the same)."""
    return 2.0 ** (1 - n_seeds)


def holm(cells: list[Cell]) -> None:
    """Set each cell's `p_holm`: its primary p-value corrected by Holm's step-down method over the
    contenders compared in the same setting (pair, size, reuse, preset). `max_t_over_study`
    corrects over the whole study instead.

    Comparing ten contenders with the same baseline makes ten tests: at 5% each, one in two
    leaderboards would show a "significant" contender by chance alone. Holm's method keeps that
    family-wise error at 5% under any dependence between the tests (they share the baseline, so
    they are dependent), and is uniformly more powerful than Bonferroni's. Controlling the false
    discovery rate instead (Benjamini-Hochberg) would suit a screen of hundreds of tests; here
    the question is which of a few claims hold, so no false claim at all is the right guard.
    """
    families: dict[tuple, list[Cell]] = {}
    for c in cells:
        if c.p_value is not None:
            families.setdefault(c.setting, []).append(c)
    for family in families.values():
        m, running = len(family), 0.0
        for rank, c in enumerate(sorted(family, key=lambda c: c.p_value)):
            running = max(running, min(1.0, (m - rank) * c.p_value))
            c.p_holm = running


def max_t_over_study(cells: list[Cell], by_seed: list[dict], *, seed: Any = 0) -> dict | None:
    """Set each cell's `p_max_t`: Westfall-Young max-T over every contender and setting of the study.

    One sign pattern per seed flips that seed in every cell at once, so the dependence the
    shared baselines and model A's create is kept, and, unlike Holm within a setting, the
    family is what the study's conclusions are drawn from. `by_seed` holds each cell's
    difference per seed (its mean over the draws). The family is every cell with a test of its
    own (2 seeds or more), tested on the seeds all of them have; the summary says which, and
    which seeds of some cells were left out.
    """
    tested = [i for i, c in enumerate(cells) if c.p_value is not None]
    if not tested:
        return None
    shared = set(by_seed[tested[0]])
    for i in tested[1:]:
        shared &= set(by_seed[i])
    every = set().union(*(by_seed[i] for i in tested))
    summary = {"cells": len(tested), "cells_without_a_test": len(cells) - len(tested), "n_units": len(shared)}
    if len(shared) < 2:
        return {**summary, "p": None, "why": "fewer than 2 seeds are shared by every cell with a test"}
    order = sorted(shared)
    family = inference.max_t({i: {s: by_seed[i][s] for s in order} for i in tested}, seed=seed)
    for i in tested:
        cells[i].p_max_t = family[i].p_adjusted
    return {**summary, "seeds": order, "seeds_left_out": sorted(every - shared), "method": family.method,
            "n_patterns": family.n_patterns, "mc_standard_error": family.mc_standard_error}


def best_sets(cells: list[Cell], by_seed: list[dict], *, seed: Any = 0) -> list[dict]:
    """Set each cell's `in_best_set`: within each setting, whether it cannot be told apart from
    the contender with the highest mean gain (max-T over the gaps to the best, family-wise 5%,
    on the seeds the setting's contenders share). Returns one summary per setting."""
    settings: dict[tuple, list[int]] = {}
    for i, c in enumerate(cells):
        settings.setdefault(c.setting, []).append(i)
    out = []
    for where, members in settings.items():
        shared = set(by_seed[members[0]])
        for i in members[1:]:
            shared &= set(by_seed[i])
        point = cells[members[0]].point
        if len(members) == 1:
            cells[members[0]].in_best_set = True
            out.append({"point": point, "best": cells[members[0]].contender, "members": [cells[members[0]].contender],
                        "n_units": len(shared)})
            continue
        if len(shared) < 2:
            out.append({"point": point, "best": None, "members": None, "n_units": len(shared),
                        "why": "fewer than 2 seeds are shared by the setting's contenders"})
            continue
        order = sorted(shared)
        result = inference.best_set({cells[i].contender: {s: by_seed[i][s] for s in order} for i in members},
                                    alpha=ALPHA, seed=mc_seed(seed, repr(where)))
        for i in members:
            cells[i].in_best_set = cells[i].contender in result.members
        out.append({"point": point, "best": result.best, "members": list(result.members), "n_units": len(order)})
    return out


def book_placement(baseline: list[float], contender: list[float], seeds: list | None = None,
                   draws: list | None = None) -> dict:
    """Where the book's published 97.05% -> 99.25% falls among this cell's runs, given their test
    accuracies (the baseline's and the contender's, run by run, with their seeds and draws): how
    many reach the book's gain (+2.2 points) and its error ratio (3.93), each as a share of runs
    with a Clopper-Pearson 95% interval, on an effective number of runs when several draws make
    the runs clustered (`inference.book_placement`)."""
    book_gain = BOOK["transfer"] - BOOK["baseline"]
    gains = np.subtract(contender, baseline)
    ratios = np.array([error_rate_ratio(b, t) for b, t in zip(baseline, contender)])
    book_ratio = error_rate_ratio(BOOK["baseline"], BOOK["transfer"])
    u = units(baseline, contender, seeds, draws)
    if u.matrix.shape[0] > 1 and u.left_out == 0:  # crossed and complete: the runs as a matrix
        where = {(d, s): i for i, (d, s) in enumerate(zip(draws, seeds))}
        order = [[where[(d, s)] for s in u.seeds] for d in u.draws]
        gains, ratios = gains[order], ratios[order]
    p = inference.book_placement(gains, ratios, book_gain, book_ratio)
    return {"baseline": BOOK["baseline"], "transfer": BOOK["transfer"], "gain": book_gain,
            "error_rate_ratio": book_ratio,
            "seeds_with_gain_at_least_book": p.reached_gain, "seeds_with_ratio_at_least_book": p.reached_ratio,
            "n": len(baseline), "p_gain": p.p_gain, "ci95_gain": list(p.ci95_gain), "p_ratio": p.p_ratio,
            "ci95_ratio": list(p.ci95_ratio), "n_effective_gain": p.n_effective_gain,
            "n_effective_ratio": p.n_effective_ratio}
