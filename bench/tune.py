"""Benchmark: what tuning costs. The book's cell (one seed, baseline and transfer) untuned against
the same cell tuned with N trials each, on validation and with K-fold cross-validation, unstacked
and stacked; and the cnn's cell untuned against tuned, in one invocation.

    .venv/bin/python bench/tune.py                     # 16 trials, every dense mode and the cnn's two
    .venv/bin/python bench/tune.py --repeats 2         # each mode twice, in rounds: min and median
    .venv/bin/python bench/tune.py --skip-cnn --modes untuned,valid,valid-stacked
    .venv/bin/python bench/tune.py --config configs/quick.toml --trials 2 --skip-cnn --out /tmp/tune.json

Each mode is one `fmtransfer study --seeds 1 --no-plots` process in a fresh study directory, so
each pays for its own model A (a tuned study trains model A once per seed and shares it across
its trials; counting it is what "model A included" means). The modes:

    untuned            study --seeds 1
    valid              ... --tune N                          (--tune-on valid, the default)
    valid-stacked      ... --tune N --stack K
    cv                 ... --tune N --tune-on cv:F           (not run by default: --modes to add it)
    cv-stacked         ... --tune N --tune-on cv:F --stack K
    cnn-untuned        ... --arch cnn
    cnn-tuned          ... --arch cnn --tune M               (a cnn never stacks)

Repeats run in rounds (every mode once, then again), so that a drift in the machine's speed
touches every mode alike. Reported per mode: wall seconds (min and median over the repeats), peak
memory of the process tree, and the cell's accuracies from `study report --json`; then the ratios
issue 25 asks for, each a ratio of medians: tuned on validation over untuned (goal at most 1.5x),
tuned by cross-validation over untuned (at most 2x), stacked over unstacked, cnn tuned over cnn
untuned. Written to bench/measured/tune.json (`--out`) with the CPU, core count, versions and the
exact commands. Only ratios from one invocation on an otherwise idle machine mean anything.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
from importlib import metadata
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from study import timed  # noqa: E402  (the same process-tree timer as the study benchmark)
from test_time import cpu  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MODES = ("untuned", "valid", "valid-stacked", "cv-stacked", "cnn-untuned", "cnn-tuned")
ALL_MODES = ("untuned", "valid", "valid-stacked", "cv", "cv-stacked", "cnn-untuned", "cnn-tuned")
# (numerator, denominator, what the issue asks of it)
RATIOS = (
    ("valid", "untuned", "at most 1.5"),
    ("valid-stacked", "untuned", "at most 1.5"),
    ("cv", "untuned", "at most 2"),
    ("cv-stacked", "untuned", "at most 2"),
    ("valid-stacked", "valid", ""),
    ("cv-stacked", "cv", ""),
    ("cnn-tuned", "cnn-untuned", "measured, no bound"),
)


def mode_options(mode: str, trials: int, cnn_trials: int, stack: int, folds: int) -> list[str]:
    tune, cv = ["--tune", str(trials)], ["--tune-on", f"cv:{folds}"]
    return {"untuned": [], "valid": tune, "valid-stacked": [*tune, "--stack", str(stack)],
            "cv": [*tune, *cv], "cv-stacked": [*tune, *cv, "--stack", str(stack)],
            "cnn-untuned": ["--arch", "cnn"], "cnn-tuned": ["--arch", "cnn", "--tune", str(cnn_trials)]}[mode]


def versions() -> dict:
    found = {"python": platform.python_version()}
    for package in ("fmtransfer", "tensorflow", "keras", "numpy"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = None
    sys.path.insert(0, str(ROOT))
    import fmtransfer  # the checkout's own, which the timed commands import too

    found["fmtransfer"] = fmtransfer.__version__
    try:
        found["git"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                      text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        found["git"] = None
    return found


def cell_of(study_dir: Path) -> dict:
    """The study's one cell as `study report --json` gives it: what was selected, and its accuracy."""
    out = subprocess.run([sys.executable, "-m", "fmtransfer.cli", "study", "report", str(study_dir), "--json",
                          "--no-plots"], cwd=ROOT, capture_output=True, text=True)
    if out.returncode != 0:
        return {"report_failed": out.stderr.strip()[-500:]}
    cell = json.loads(out.stdout)["cells"][0]
    found = {k: cell[k] for k in ("n", "baseline_mean", "transfer_mean") if k in cell}
    if cell.get("tuning"):
        found["tuning"] = {k: cell["tuning"].get(k) for k in ("trials", "on", "steps", "baseline_steps",
                                                               "valid_accuracy", "baseline_valid_accuracy")}
    # what was trained: a record per trial (one untuned), and model A's seconds inside the process
    records = [json.loads(line) for path in sorted(study_dir.glob("results*.jsonl"))
               for line in path.read_text().splitlines() if line.strip()]
    found["records"] = len(records)
    found["model_a_files"] = len(list((study_dir / "models").glob("a-*.keras")))
    found["model_a_seconds"] = records[0].get("seconds", {}).get("model_a") if records else None
    return found


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=None, help="a settings file for every mode (default: the book's)")
    parser.add_argument("--trials", type=int, default=16, help="trials per contender in the dense tuned modes")
    parser.add_argument("--cnn-trials", type=int, default=None, help="trials in cnn-tuned (default: --trials)")
    parser.add_argument("--stack", type=int, default=None, help="trials per graph when stacked (default: --trials)")
    parser.add_argument("--folds", type=int, default=5, help="K of --tune-on cv:K")
    parser.add_argument("--modes", default=",".join(DEFAULT_MODES), help=f"any of {', '.join(ALL_MODES)}")
    parser.add_argument("--skip-cnn", action="store_true", help="leave out cnn-untuned and cnn-tuned")
    parser.add_argument("--repeats", type=int, default=1, help="rounds of every mode")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--out", default=str(ROOT / "bench" / "measured" / "tune.json"))
    args = parser.parse_args(argv)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = [m for m in modes if m not in ALL_MODES]
    if unknown:
        parser.error(f"--modes: unknown {', '.join(unknown)}; choose among {', '.join(ALL_MODES)}")
    if args.skip_cnn:
        modes = [m for m in modes if not m.startswith("cnn")]
    if args.trials < 1 or args.repeats < 1:
        parser.error("--trials and --repeats: at least 1")
    cnn_trials = args.cnn_trials or args.trials
    stack = args.stack or args.trials

    base = ["fmtransfer", "study", "--seeds", "1", "--seed", str(args.seed), "--no-plots",
            *(["--config", args.config] if args.config else [])]
    commands = {m: [*base, *mode_options(m, args.trials, cnn_trials, stack, args.folds), "--run", "DIR"]
                for m in modes}
    result = {"cpu": cpu(), "cores": os.cpu_count(), "versions": versions(),
              "command": shlex.join(["python", "bench/tune.py", *argv]),
              "settings": {"config": args.config or "defaults (the book's)", "trials": args.trials,
                           "cnn_trials": cnn_trials, "stack": stack, "folds": args.folds, "repeats": args.repeats},
              "commands": {m: shlex.join(c) for m, c in commands.items()},
              "load_before": os.getloadavg(), "modes": {m: {"wall_seconds": [], "peak_mib": []} for m in modes}}
    with tempfile.TemporaryDirectory(prefix="fmtransfer-bench-tune-") as tmp:
        for round_ in range(args.repeats):
            for mode in modes:
                study_dir = Path(tmp) / f"{mode}-{round_}"  # fresh: model A trained anew in every mode
                command = [sys.executable, "-m", "fmtransfer.cli", *commands[mode][1:-1], str(study_dir)]
                wall, peak = timed(command)
                row = result["modes"][mode]
                row["wall_seconds"].append(round(wall, 2))
                row["peak_mib"].append(round(peak))
                if round_ == 0:
                    row["cell"] = cell_of(study_dir)
                print(f"round {round_ + 1}/{args.repeats} {mode}: {wall:.1f} s", file=sys.stderr, flush=True)
    for row in result["modes"].values():
        row["min_seconds"] = min(row["wall_seconds"])
        row["median_seconds"] = round(statistics.median(row["wall_seconds"]), 2)
    ratios = {}
    for top, bottom, goal in RATIOS:
        if top in modes and bottom in modes:
            mine = {"ratio": round(result["modes"][top]["median_seconds"] / result["modes"][bottom]["median_seconds"], 3),
                    "per_round": [round(a / b, 3) for a, b in zip(result["modes"][top]["wall_seconds"],
                                                                   result["modes"][bottom]["wall_seconds"])]}
            if goal:
                mine["goal"] = goal
            ratios[f"{top} / {bottom}"] = mine
    result["ratios"] = ratios
    result["load_after"] = os.getloadavg()

    print(f"{'mode':<14} {'min s':>9} {'median s':>9} {'peak MiB':>9}  command")
    for mode, row in result["modes"].items():
        print(f"{mode:<14} {row['min_seconds']:>9.1f} {row['median_seconds']:>9.1f} {max(row['peak_mib']):>9}  "
              f"{result['commands'][mode]}")
    print()
    for name, mine in ratios.items():
        print(f"{name:<28} {mine['ratio']:>6.2f}x  {mine.get('goal', '')}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")  # never a half-written file under the final name
    partial.write_text(json.dumps(result, indent=2) + "\n")
    partial.replace(out)
    print(f"written: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
