"""Budget curves of a tuned study: which trial validation selects, what a budget of n trials is
expected to reach, and where two contenders' curves cross.

A tuned cell gives every contender and the baseline N independent random trials in each unit
(seed, data draw). Selection reads validation only: the best trial has the highest validation
accuracy, ties broken by the lower validation loss, then by the lower trial index; a diverged
trial (loss None) has the worst loss. That is a strict total order, so "the selected trial among
any subset" is always one trial, and Dodge et al. (2019)'s closed form for the expected maximum
of n trials drawn with replacement gives, with the same weights, the expected test accuracy of
the trial validation would select (docs/statistics.md, "Tuned with an equal budget").

Pure NumPy; the figure needs the optional `plot` extra and loads matplotlib only when drawn.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from fmtransfer.errors import UsageError
from fmtransfer.report import figures, save_figure


class BudgetError(UsageError, ValueError):
    """Trials no budget curve can be drawn from (none, lists of different lengths, a score that
    is not a number, a trial index twice). A ValueError too, as NumPy's own would be, but one
    line that names the argument."""


# Validation --------------------------------------------------------------------------------------

def _scores(values: Any, name: str, size: int | None = None) -> np.ndarray:
    """`values` as a float vector: not empty, `size` long when given, every value finite."""
    try:
        a = np.asarray(values, dtype=float)
    except (TypeError, ValueError):
        raise BudgetError(f"{name} must be a sequence of numbers, got {values!r:.60}") from None
    if a.ndim != 1:
        raise BudgetError(f"{name} must be one-dimensional, got shape {a.shape}")
    if a.size == 0:
        raise BudgetError(f"{name} is empty: give at least one value (one per trial)")
    if size is not None and a.size != size:
        raise BudgetError(f"{name} has {a.size} values, but valid_acc has {size}: give one per trial")
    bad = np.flatnonzero(~np.isfinite(a))
    if bad.size:
        raise BudgetError(f"{name}[{bad[0]}] is {a[bad[0]]}, not a finite number")
    return a


def _losses(values: Sequence[float | None], size: int) -> np.ndarray:
    """Validation losses with None (a diverged trial) as +inf, the worst; NaN is refused, since
    a diverged trial is recorded as None and a NaN means something else went wrong."""
    try:
        raw = list(values)
    except TypeError:
        raise BudgetError(f"valid_loss must be a sequence of numbers or None, got {values!r:.60}") from None
    if len(raw) != size:
        raise BudgetError(f"valid_loss has {len(raw)} values, but valid_acc has {size}: give one per trial")
    out = np.empty(size)
    for i, v in enumerate(raw):
        if v is None:
            out[i] = math.inf
            continue
        try:
            out[i] = float(v)
        except (TypeError, ValueError):
            raise BudgetError(f"valid_loss[{i}] is {v!r:.40}, not a number or None") from None
        if math.isnan(out[i]):
            raise BudgetError(f"valid_loss[{i}] is NaN: give None for a diverged trial's loss")
    return out


def _indices(values: Sequence[int] | None, size: int) -> np.ndarray:
    """Trial indices: integers, one per trial, no two equal (else the order would not be strict)."""
    if values is None:
        return np.arange(size)
    raw = list(values)
    if len(raw) != size:
        raise BudgetError(f"trial_index has {len(raw)} values, but valid_acc has {size}: give one per trial")
    for i, v in enumerate(raw):
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
            raise BudgetError(f"trial_index[{i}] is {v!r:.40}, not an integer")
    a = np.asarray(raw, dtype=np.int64)
    uniq, counts = np.unique(a, return_counts=True)
    if (counts > 1).any():
        raise BudgetError(f"trial_index {int(uniq[counts > 1][0])} appears twice: each trial has its own index")
    return a


# Selection ---------------------------------------------------------------------------------------

def selection_order(valid_acc: Sequence[float], valid_loss: Sequence[float | None],
                    trial_index: Sequence[int] | None = None) -> np.ndarray:
    """The trials' positions ordered from the worst to the best by validation alone.

    Better means a higher validation accuracy; among equal accuracies, a lower validation loss
    (None, a diverged trial's, is the worst); among equal losses too, a lower trial index. No two
    trials are equal under this order, so any set of trials has exactly one best. Test scores are
    no argument: they cannot choose anything.

    Args:
        valid_acc: each trial's validation accuracy (a diverged trial's is chance).
        valid_loss: each trial's validation loss, or None where it diverged.
        trial_index: each trial's index in its cell (0, 1, ... when left out); no two equal.

    Returns:
        Positions into the arguments, worst first, best last.

    Example:
        >>> selection_order([0.9, 0.95, 0.9, 0.95], [0.3, 0.2, None, 0.2], [0, 1, 2, 3]).tolist()
        [2, 0, 3, 1]
    """
    acc = _scores(valid_acc, "valid_acc")
    loss = _losses(valid_loss, acc.size)
    index = _indices(trial_index, acc.size)
    # lexsort sorts ascending on its last key first: accuracy up, then loss down, then index down.
    return np.lexsort((-index, -loss, acc))


def selected(valid_acc: Sequence[float], valid_loss: Sequence[float | None],
             trial_index: Sequence[int] | None = None) -> int:
    """The position of the trial validation selects: the last of `selection_order`.

    Example:
        >>> selected([0.9, 0.95, 0.95], [0.3, 0.25, 0.2], [0, 1, 2])
        2
    """
    return int(selection_order(valid_acc, valid_loss, trial_index)[-1])


# Dodge's expected maximum ------------------------------------------------------------------------

def weights(size: int, n: int) -> np.ndarray:
    """The probability that the i-th worst of `size` trials (i = 1..size) is the best of `n`
    trials drawn uniformly with replacement: (i/size)^n - ((i-1)/size)^n.

    The best of n draws is at most the i-th exactly when all n draws are, which has probability
    (i/size)^n; the difference of two such is the chance it is the i-th itself. It needs a strict
    order (`selection_order`): with ties, "the i-th" would not be one trial.

    Example:
        >>> weights(2, 2).tolist()
        [0.25, 0.75]
    """
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
        raise BudgetError(f"size must be an integer of at least 1, got {size!r}")
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise BudgetError(f"n must be an integer of at least 1, got {n!r}")
    edges = (np.arange(size + 1) / size) ** n
    return np.diff(edges)


def _moments(ordered: np.ndarray, w: np.ndarray) -> tuple[float, float]:
    """Mean and standard deviation of a score that is `ordered[i]` with probability `w[i]`."""
    mean = float(w @ ordered)
    var = float(w @ (ordered - mean) ** 2)  # centred: no cancellation when the spread is tiny
    return mean, math.sqrt(max(var, 0.0))


@dataclass(frozen=True)
class Curve:
    """Expected outcomes of tuning with a budget of n trials, for n = 1..N.

    For one unit: `expected_valid[k]` is Dodge's expected best validation accuracy of n = `n[k]`
    trials drawn with replacement from the unit's N, `valid_sd[k]` the standard deviation of that
    best over the draws; `expected_test[k]` and `test_sd[k]` are the same for the test accuracy of
    the trial validation selects among them. `units` is 1 and the standard errors are None.

    For a cell (`cell_curve`): the means over its units of those expectations; the sds are the
    root mean square of the units' sds (the spread of one tuning's luck within a unit); and
    `valid_se`/`test_se` are the across-unit standard errors of the means (None below 2 units).

    Example:
        >>> c = curve([0.8, 0.9], [0.5, 0.4], [0, 1], [0.7, 0.85])
        >>> c.n, c.expected_valid, c.expected_test
        ((1, 2), (0.8500000000000001, 0.875), (0.7749999999999999, 0.8125))
    """

    n: tuple[int, ...]
    expected_valid: tuple[float, ...]
    valid_sd: tuple[float, ...]
    expected_test: tuple[float, ...]
    test_sd: tuple[float, ...]
    units: int = 1
    valid_se: tuple[float, ...] | None = None
    test_se: tuple[float, ...] | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain ints, floats, lists and None, for JSON."""
        def floats(xs):
            return None if xs is None else [float(x) for x in xs]
        return {"n": [int(k) for k in self.n], "units": int(self.units),
                "expected_valid": floats(self.expected_valid), "valid_sd": floats(self.valid_sd),
                "expected_test": floats(self.expected_test), "test_sd": floats(self.test_sd),
                "valid_se": floats(self.valid_se), "test_se": floats(self.test_se)}


def curve(valid_acc: Sequence[float], valid_loss: Sequence[float | None],
          trial_index: Sequence[int] | None, test_acc: Sequence[float]) -> Curve:
    """One unit's budget curve, n = 1..N, from its N trials (Dodge et al. 2019, in closed form).

    The trials are ranked by `selection_order`, worst to best; with `weights(N, n)` as the chance
    that the i-th is the one selected among n drawn, the expected best validation accuracy is
    sum_i valid_(i) w_i(n) and the expected test accuracy of the selected trial is
    sum_i test_(i) w_i(n); each sd is sqrt(sum_i x_(i)^2 w_i(n) - mean^2). At n = 1 these are the
    plain mean and (population) sd of the trials; as n grows they tend to the best trial's.

    Example:
        >>> curve([0.8, 0.9, 0.9], [0.5, 0.4, None], [0, 1, 2], [0.7, 0.8, 0.6]).expected_test[0]
        0.7
    """
    acc = _scores(valid_acc, "valid_acc")
    test = _scores(test_acc, "test_acc", acc.size)
    order = selection_order(acc, valid_loss, trial_index)
    v, t = acc[order], test[order]
    size = acc.size
    rows = []
    for n in range(1, size + 1):
        w = weights(size, n)
        rows.append((*_moments(v, w), *_moments(t, w)))
    ev, vsd, et, tsd = (tuple(col) for col in zip(*rows))
    return Curve(n=tuple(range(1, size + 1)), expected_valid=ev, valid_sd=vsd, expected_test=et, test_sd=tsd)


def _same_budgets(curves: Sequence[Curve], name: str) -> tuple[int, ...]:
    if isinstance(curves, Curve) or not isinstance(curves, Sequence) or len(curves) == 0:
        raise BudgetError(f"{name} must be a non-empty list of per-unit curves")
    for i, c in enumerate(curves):
        if not isinstance(c, Curve):
            raise BudgetError(f"{name}[{i}] is {type(c).__name__}, not a Curve")
        if c.n != curves[0].n:
            raise BudgetError(f"{name}[{i}] has budgets 1..{len(c.n)}, {name}[0] 1..{len(curves[0].n)}: "
                              "every unit of a cell needs the same number of trials")
    return curves[0].n


def _se(rows: np.ndarray) -> tuple[float, ...] | None:
    """Standard error of the column means over the rows (units); None with one unit."""
    k = rows.shape[0]
    if k < 2:
        return None
    return tuple(float(x) for x in rows.std(axis=0, ddof=1) / math.sqrt(k))


def cell_curve(per_unit: Sequence[Curve]) -> Curve:
    """A cell's budget curve: its units' curves averaged, each unit weighing the same.

    The expected values are the means over units. The sds are the root mean square of the units'
    sds, sqrt(mean of variances): the spread of what one tuning with n trials reaches within a
    unit, pooled over units (averaging variances, not sds). `valid_se` and `test_se` are the
    standard errors of the mean expectations across units, sd(ddof=1)/sqrt(units): what a report
    draws an interval with (mean +- t(0.975, units-1) x se). They say how well the cell's units
    pin the curve down; the sds say how much one tuning's luck moves it.

    Example:
        >>> a = curve([0.8, 0.9], [0.5, 0.4], [0, 1], [0.7, 0.8])
        >>> b = curve([0.6, 0.7], [0.5, 0.4], [0, 1], [0.5, 0.6])
        >>> c = cell_curve([a, b])
        >>> round(c.expected_test[0], 6), round(c.test_se[0], 6), c.units
        (0.65, 0.1, 2)
    """
    n = _same_budgets(per_unit, "per_unit")
    stack = {f: np.array([getattr(c, f) for c in per_unit], dtype=float)
             for f in ("expected_valid", "valid_sd", "expected_test", "test_sd")}

    def rms(rows: np.ndarray) -> tuple[float, ...]:
        return tuple(float(x) for x in np.sqrt((rows ** 2).mean(axis=0)))

    return Curve(n=n, units=len(per_unit),
                 expected_valid=tuple(float(x) for x in stack["expected_valid"].mean(axis=0)),
                 valid_sd=rms(stack["valid_sd"]),
                 expected_test=tuple(float(x) for x in stack["expected_test"].mean(axis=0)),
                 test_sd=rms(stack["test_sd"]),
                 valid_se=_se(stack["expected_valid"]), test_se=_se(stack["expected_test"]))


# Tuned gain and crossings -------------------------------------------------------------------------

def crossings(a: Sequence[float], b: Sequence[float], *, tolerance: float = 0.0) -> list[int]:
    """The budgets n (from 1: `a[0]` is the value at n = 1) where which of a and b is ahead changes.

    The sign of a - b is followed over n; a difference within `tolerance` of zero has no sign and
    neither starts nor ends a lead. A crossing is reported at the first budget where the new
    leader is strictly ahead, after the other was: (+, 0, -) crosses once, at the third budget;
    (+, 0, +) touches and does not cross; leading zeros cross nothing, since no one led.

    Example:
        >>> crossings([0.80, 0.85, 0.88, 0.90], [0.82, 0.86, 0.87, 0.88])
        [3]
        >>> crossings([1, 2, 3], [0, 2, 1])
        []
    """
    x = _scores(a, "a")
    y = _scores(b, "b")
    if x.size != y.size:
        raise BudgetError(f"a has {x.size} values and b {y.size}: compare curves over the same budgets")
    if not (isinstance(tolerance, (int, float)) and tolerance >= 0 and math.isfinite(tolerance)):
        raise BudgetError(f"tolerance must be a finite number of 0 or more, got {tolerance!r}")
    d = x - y
    found, lead = [], 0
    for k, v in enumerate(d):
        sign = 0 if abs(v) <= tolerance else (1 if v > 0 else -1)
        if sign == 0:
            continue
        if lead and sign != lead:
            found.append(k + 1)
        lead = sign
    return found


@dataclass(frozen=True)
class Gain:
    """The tuned gain against the budget: per n, the mean over units of the contender's expected
    test accuracy (of its validation-selected trial among n) minus the baseline's, paired by unit.

    `se` is the across-unit standard error of that mean, sd(ddof=1)/sqrt(units) of the per-unit
    differences (None below 2 units); `crossings` are the budgets where the mean gain changes sign
    (`crossings`): there, "the contender beats the baseline" depends on the budget.

    Example:
        >>> c = [curve([0.8, 0.9], [0.5, 0.4], [0, 1], [0.9, 0.8])]
        >>> b = [curve([0.8, 0.9], [0.5, 0.4], [0, 1], [0.8, 0.85])]
        >>> g = tuned_gain(c, b)
        >>> [round(x, 4) for x in g.mean], g.crossings
        ([0.025, -0.0125], (2,))
    """

    n: tuple[int, ...]
    mean: tuple[float, ...]
    se: tuple[float, ...] | None
    units: int
    crossings: tuple[int, ...]

    def to_dict(self) -> dict[str, Any]:
        """Plain ints, floats, lists and None, for JSON."""
        return {"n": [int(k) for k in self.n], "units": int(self.units),
                "mean": [float(x) for x in self.mean],
                "se": None if self.se is None else [float(x) for x in self.se],
                "crossings": [int(k) for k in self.crossings]}


def tuned_gain(contender: Sequence[Curve], baseline: Sequence[Curve], *, tolerance: float = 0.0) -> Gain:
    """The contender's tuned gain over the baseline for each budget n, paired by unit.

    Args:
        contender: the contender's per-unit curves (`curve`), one per unit of the cell.
        baseline: the baseline's, in the same unit order.
        tolerance: a mean gain within this of zero counts as no lead (`crossings`).

    Example:
        >>> c = [curve([0.8, 0.9], [0.5, 0.4], None, [0.8, 0.9])] * 2
        >>> tuned_gain(c, c).mean
        (0.0, 0.0)
    """
    n = _same_budgets(contender, "contender")
    if _same_budgets(baseline, "baseline") != n:
        raise BudgetError(f"contender has budgets 1..{len(n)} and baseline 1..{len(baseline[0].n)}: "
                          "tune both with the same number of trials")
    if len(contender) != len(baseline):
        raise BudgetError(f"contender has {len(contender)} units and baseline {len(baseline)}: "
                          "pair them unit by unit")
    d = (np.array([c.expected_test for c in contender], dtype=float)
         - np.array([b.expected_test for b in baseline], dtype=float))
    mean = d.mean(axis=0)
    return Gain(n=n, mean=tuple(float(x) for x in mean), se=_se(d), units=len(contender),
                crossings=tuple(crossings(mean, np.zeros_like(mean), tolerance=tolerance)))


# Figure ------------------------------------------------------------------------------------------

def budget_figure(curves: Mapping[str, Curve], title: str, *, option: str = "--plots"):
    """Two panels against the budget n: the expected best validation accuracy, and the expected
    test accuracy of the validation-selected trial; one line per contender, shaded +- its sd.
    `option` is named if the plot extra is missing."""
    if not curves:
        raise BudgetError("curves is empty: give at least one contender's curve")
    figs = figures(option)
    fig, (left, right) = figs.subplots(1, 2, figsize=(10, 4), sharex=True)
    for name, c in curves.items():
        n = np.asarray(c.n)
        for ax, mean, sd in ((left, c.expected_valid, c.valid_sd), (right, c.expected_test, c.test_sd)):
            m, s = 100 * np.asarray(mean), 100 * np.asarray(sd)
            (line,) = ax.plot(n, m, marker="o", ms=3, label=name)
            # An accuracy lies in 0..100: the band of a spread near the ceiling stops there.
            ax.fill_between(n, np.clip(m - s, 0, 100), np.clip(m + s, 0, 100), color=line.get_color(), alpha=0.15,
                            lw=0)
    left.set_title("expected best validation accuracy", fontsize=9)
    right.set_title("expected test accuracy of the trial validation selects", fontsize=9)
    for ax in (left, right):
        ax.set_xlabel("budget n (trials drawn)")
        ax.set_ylabel("accuracy (%)")
        ax.legend(fontsize=7)
    top = max(len(c.n) for c in curves.values())
    ticks = list(range(1, top + 1)) if top <= 16 else sorted({1, *range(0, top + 1, max(1, top // 8))} - {0})
    left.set_xticks(ticks)
    units = {c.units for c in curves.values()}
    over = f"; lines: mean over {units.pop()} units" if len(units) == 1 and max(c.units for c in curves.values()) > 1 else ""
    fig.suptitle(f"{title}\nshaded: +-1 sd of what one tuning with n trials reaches{over}", fontsize=9)
    fig.tight_layout()
    return fig


def plot_budget(curves: Mapping[str, Curve], title: str, path: str | Path, *, option: str = "--plots") -> Path:
    """`budget_figure` written to `path` as a PNG, atomically; returns the path."""
    path = Path(path)
    save_figure(budget_figure(curves, title, option=option), path)
    return path
