"""Benchmark: how long `study report` takes to compute its statistics over a whole leaderboard.

A synthetic study directory (no training) of C contenders x P presets x N seeds, results lines
as the runner writes them, accuracies in the 1/2,000 steps of a real test set; then
`study.report` on it, which reads the lines and computes every cell's exact sign-flip test,
exact Wilcoxon, interval, P(win), MDE and TOST, Holm per setting, max-T over every cell of the
study and the best set of each setting. Timed R times; the best and the median are printed.

    .venv/bin/python bench/report_stats.py                    # 10 contenders x 2 presets x 10 seeds
    .venv/bin/python bench/report_stats.py --seeds 20         # the largest exact enumeration
    .venv/bin/python bench/report_stats.py --seeds 30         # Monte Carlo, 100,000 patterns per test
    .venv/bin/python bench/report_stats.py --draws 5          # 5 data draws per seed (crossed)

Prints one JSON object. The issue's bound: under 10 s for the whole leaderboard report.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from fmtransfer import contenders
from fmtransfer import study as studies
from fmtransfer.config import Config
from fmtransfer.study.axes import Axis, declare


def write_study(directory: Path, names: list[str], presets: list[str], seeds: list[int], draws: int) -> int:
    known = [n for n in names if n in contenders.names()]  # a line of another contender is reported as given
    cfg = Config().replace(**{"study.seeds": seeds, "study.presets": presets, "contenders": ["baseline", *known]})
    (directory / "study.json").write_text(json.dumps({"config": cfg.to_dict()}))
    rng = np.random.default_rng(0)
    lines = []
    for preset in presets:
        for draw in (range(draws) if draws > 1 else [None]):
            for seed in seeds:
                base = float(np.round((0.97 + rng.normal(0, 0.01)) * 2000) / 2000)
                for i, name in enumerate(names):
                    acc = float(np.clip(np.round((base + 0.002 * i + rng.normal(0, 0.01)) * 2000) / 2000, 0, 1))
                    line = {"id": f"seed{seed}-pair5v6-n200-reuseall-{preset}" + ("" if draw is None else f"-d{draw}")
                                  + f"-{name}", "seed": seed, "pair": [5, 6], "b_train_size": 200,
                            "reuse_layers": "all", "preset": preset, "contender": name,
                            "baseline": {"test_accuracy": base}, "result": {"test_accuracy": acc}}
                    if draw is not None:
                        line["data_seed"] = draw
                    lines.append(line)
    (directory / "results.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    return len(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--contenders", type=int, default=10)
    ap.add_argument("--presets", type=int, default=2, choices=(1, 2))
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--draws", type=int, default=1, help="data draws per seed; above 1, a crossed design")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    names = [n for n in contenders.names() if n != "baseline"]
    while len(names) < args.contenders:  # more contenders than are registered: names the report takes as given
        names.append(f"extra{len(names)}")
    names = names[:args.contenders]
    if args.draws > 1:  # the data-seed axis, as a pooled axis, in case this fmtransfer does not declare one
        try:
            studies.axes.axis("data_seed")
        except KeyError:
            declare(Axis("data_seed", source=lambda cfg: ("first",), sets=lambda v: {}, id=lambda v: f"d{v}",
                         valid=lambda v: v == "first" or isinstance(v, int), scope="baseline", pooled=True))
    presets = ["book", "notebook"][:args.presets]
    with tempfile.TemporaryDirectory() as tmp:
        runs = write_study(Path(tmp), names, presets, list(range(42, 42 + args.seeds)), args.draws)
        times = []
        for _ in range(args.repeats):
            started = time.perf_counter()
            result = studies.report(tmp)
            times.append(time.perf_counter() - started)
    methods = sorted({c.p_method for c in result.cells if c.p_method})
    print(json.dumps({
        "contenders": args.contenders, "presets": args.presets, "seeds": args.seeds, "draws": args.draws,
        "cells": len(result.cells), "runs": runs, "p_methods": methods, "max_t": result.max_t,
        "report_seconds_best": round(min(times), 3), "report_seconds_median": round(statistics.median(times), 3),
        "repeats": args.repeats, "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                                             "load_average": [round(x, 2) for x in os.getloadavg()]},
    }, indent=2))


if __name__ == "__main__":
    main()
