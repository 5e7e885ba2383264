"""Simulation: how often the report's intervals for shares of runs cover the true share.

Two of the report's figures are shares of runs with a 95% interval: P(win), the chance that a
contender beats the baseline on a new seed and draw (`inference.p_superiority`, Wilson), and the
book's placement, the chance that a run reaches the book's gain (`inference.book_placement`,
Clopper-Pearson). With several draws of the labelled sample the runs are clustered: those of a
seed share model A, those of a draw its images. Both intervals then use an effective number of
trials. This script draws crossed designs with known variance components,

    gain[draw, seed] = mu + a[draw] + b[seed] + e,  a ~ N(0, sd_draw), b ~ N(0, sd_seed), e ~ N(0, sd_residual)

sets mu or the book's threshold so that the true share is known, and counts how often each
interval covers it, against the same interval computed as if the runs were independent.

    .venv/bin/python bench/coverage.py                 # 400 simulated studies per case, about a minute
    .venv/bin/python bench/coverage.py --reps 2000     # tighter figures

Prints one JSON object (committed as bench/measured/coverage-<version>.json).
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import numpy as np
from scipy import stats

from fmtransfer.study import inference
from fmtransfer.version import __version__

DESIGNS = ((3, 10), (5, 5), (5, 10), (5, 20))  # draws x seeds
SPREADS = {  # (sd_draw, sd_seed, sd_residual) in points
    "seed-dominated": (0.1, 1.0, 0.5),
    "balanced": (0.5, 0.5, 0.5),
    "residual-dominated": (0.05, 0.3, 1.0),
    "draw-dominated": (1.0, 0.1, 0.3),
}
SHARES = (0.05, 0.2, 0.5)


def _sample(rng: np.random.Generator, r: int, s: int, spread: tuple[float, float, float]) -> np.ndarray:
    a, b, e = (x / 100 for x in spread)  # in points: the differences are accuracy units
    return rng.normal(0, a, (r, 1)) + rng.normal(0, b, (1, s)) + rng.normal(0, e, (r, s))


def _covers(ci: tuple[float, float], p: float) -> bool:
    return ci[0] <= p <= ci[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=400, help="simulated studies per case (default 400)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    t0 = time.perf_counter()
    cases = []
    for r, s in DESIGNS:
        n = r * s
        for name, spread in SPREADS.items():
            total = float(np.sqrt(np.sum(np.square(spread))))
            for share in SHARES:
                # the book: a run reaches the threshold with probability `share`
                threshold = float(stats.norm.isf(share)) * total / 100
                # P(win): the gain's mean set so that a run wins with probability 1 - share
                shift = float(stats.norm.isf(share)) * total / 100
                hits = {"placement": 0, "placement_flat": 0, "p_win": 0, "p_win_flat": 0}
                width = {"placement": [], "p_win": []}
                for _ in range(args.reps):
                    g = _sample(rng, r, s, spread)
                    b = inference.book_placement(g, g, threshold, np.inf)
                    hits["placement"] += _covers(b.ci95_gain, share)
                    hits["placement_flat"] += _covers(inference._clopper_pearson(b.reached_gain, n), share)
                    width["placement"].append(b.ci95_gain[1] - b.ci95_gain[0])
                    w = inference.p_superiority(g + shift)
                    hits["p_win"] += _covers(w.ci95, 1 - share)
                    hits["p_win_flat"] += _covers(inference._wilson(w.p_superiority, n), 1 - share)
                    width["p_win"].append(w.ci95[1] - w.ci95[0])
                cases.append({"draws": r, "seeds": s, "spread": name, "true_share": share,
                              **{k: v / args.reps for k, v in hits.items()},
                              **{f"{k}_mean_width": float(np.mean(v)) for k, v in width.items()}})
    summary = {}
    for key in ("placement", "placement_flat", "p_win", "p_win_flat"):
        values = [c[key] for c in cases]
        summary[key] = {"min": min(values), "median": float(np.median(values)), "max": max(values)}
    print(json.dumps({"bench": "coverage", "version": __version__, "reps": args.reps, "seed": args.seed,
                      "designs": [list(d) for d in DESIGNS], "spreads": SPREADS, "shares": list(SHARES),
                      "nominal": 0.95, "summary": summary, "cases": cases,
                      "seconds": round(time.perf_counter() - t0, 1), "python": platform.python_version()},
                     indent=1))


if __name__ == "__main__":
    main()
