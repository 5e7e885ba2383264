"""The paired statistics of a cell: each contender against the baseline over seeds, and Holm across a setting."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from fmtransfer.results import error_rate_ratio
from fmtransfer.study.axes import cell_axes


# Hands-On ML 2nd ed., 11.2.1; its grid point is the default Config's.
BOOK = {"pair": (5, 6), "b_train_size": 200, "reuse_layers": "all", "preset": "book",
        "baseline": 0.9705, "transfer": 0.9925}


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
    mean_difference: float
    ci95: list[float] | None
    p_value: float | None
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
    book: dict | None = None
    # Per unit, parallel to `seeds`: "first" (the book's sample) or the data seed of its draw.
    # Empty only in a cell written before draws existed, whose units were all "first".
    data_seeds: list[Any] = field(default_factory=list)


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
        if d["book"] is None:
            del d["book"]
        if draws:  # beside the seeds; a cell of a report made before draws keeps its form
            d = {k: v for key, value in d.items()
                 for k, v in ([(key, value), ("data_seeds", draws)] if key == "seeds" else [(key, value)])}
        return d

    @property
    def units(self) -> list[tuple[int, Any]]:
        """The cell's (seed, data seed) pairs, in the order of its accuracies."""
        return list(zip(self.seeds, self.data_seeds or ["first"] * len(self.seeds)))


def paired_stats(baseline: list[float], transfer: list[float]) -> dict:
    """Paired comparison of test accuracies over seeds.

    The p-value is Wilcoxon's signed-rank test (two-sided), not the paired t-test: accuracy
    differences on a fixed test set are discrete, bounded and often skewed, and with ten seeds
    normality cannot be checked. Its exact null distribution holds only without zero or tied
    differences; these are common (accuracies move in steps of 1/2000), so then the normal
    approximation with tie correction is used, keeping zeros in the ranking (Pratt's method)
    rather than dropping them, which would overstate the evidence. The confidence interval for
    the mean difference is Student's t, the usual summary.
    """
    from scipy import stats

    b, t = np.asarray(baseline, float), np.asarray(transfer, float)
    diff = np.round(t - b, 9)  # 0.995 - 0.990 and 0.990 - 0.985 must tie, whatever the float error
    n = len(diff)
    out = {
        "n": n,
        "baseline_mean": float(b.mean()), "baseline_std": float(b.std(ddof=1)) if n > 1 else None,
        "transfer_mean": float(t.mean()), "transfer_std": float(t.std(ddof=1)) if n > 1 else None,
        "mean_difference": float(diff.mean()), "ci95": None, "p_value": None,
        "error_rate_ratio": error_rate_ratio(float(b.mean()), float(t.mean())),
        "wins": int((diff > 0).sum()), "ties": int((diff == 0).sum()), "losses": int((diff < 0).sum()),
    }
    if n > 1:
        sd = diff.std(ddof=1)
        half = float(stats.t.ppf(0.975, n - 1) * sd / math.sqrt(n))
        out["ci95"] = [float(diff.mean()) - half, float(diff.mean()) + half]
        if np.any(diff != 0):
            nonzero = diff[diff != 0]
            exact = len(nonzero) == n and len(np.unique(np.abs(nonzero))) == n
            out["p_value"] = float(stats.wilcoxon(diff, zero_method="pratt", alternative="two-sided",
                                                  method="exact" if exact else "approx").pvalue)
        else:
            out["p_value"] = 1.0  # every seed tied: no evidence of any difference
    return out


def holm(cells: list[Cell]) -> None:
    """Set each cell's `p_holm`: its p-value corrected by Holm's step-down method over the
    contenders compared in the same setting (pair, size, reuse, preset).

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


def book_placement(baseline: list[float], contender: list[float]) -> dict:
    """Where the book's published 97.05% -> 99.25% falls among this cell's seeds, given their
    test accuracies (the baseline's and the contender's, seed by seed)."""
    book_gain = BOOK["transfer"] - BOOK["baseline"]
    gains = np.subtract(contender, baseline)
    ratios = np.array([error_rate_ratio(b, t) for b, t in zip(baseline, contender)])
    book_ratio = error_rate_ratio(BOOK["baseline"], BOOK["transfer"])
    return {"baseline": BOOK["baseline"], "transfer": BOOK["transfer"], "gain": book_gain,
            "error_rate_ratio": book_ratio,
            "seeds_with_gain_at_least_book": int((gains >= book_gain - 1e-9).sum()),
            "seeds_with_ratio_at_least_book": int((ratios >= book_ratio - 1e-9).sum()),
            "n": len(baseline)}
