"""Benchmark: a study's throughput. One book cell over N seeds (model A, baseline and transfer
from A per seed) run serially, with `--jobs auto`, with `--stack` (every seed as one graph) and
with both, in one invocation, each in a fresh study directory; and plain Keras for the same work
on one seed, extrapolated per seed.

    .venv/bin/python bench/study.py               # 10 seeds, configs/book.toml
    .venv/bin/python bench/study.py --seeds 3 --quick   # a smoke run of the benchmark
    .venv/bin/python bench/study.py --modes serial,stack --stack 5
    .venv/bin/python bench/study.py --modes serial,draws --draws 5 --no-keras   # N seeds against N x 5 draws

For each mode: total wall time, time per seed, peak memory of the whole process tree (sampled
every 0.2 s from /proc), and the cell's accuracies (mean and sd over seeds) with Wilcoxon's
paired p against the serial study's. `--jobs auto` gives the serial numbers exactly; stacking
agrees to float precision, so its accuracies may differ by a test image here and there. The
`draws` mode runs the same seeds crossed with `--draws D` data seeds (`--data-seeds D`): model A
is trained once per seed and shared by its draws, so only task B's runs multiply; its
`over_serial` is what D draws cost against the book's one sample.
Prints a JSON object; only ratios from one invocation mean anything on a shared machine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODES = ("serial", "jobs auto", "stack", "jobs+stack", "draws")
QUICK = ["--a-epochs", "2", "--b-epochs", "3", "--freeze-epochs", "1", "--fine-tune-epochs", "2"]


def tree_rss_mib(pid: int) -> float:
    """Resident memory of `pid` and all its descendants, from /proc."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/status") as f:
                total += next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    todo += [int(c) for c in f.read().split()]
        except (OSError, StopIteration):
            continue
    return total / 1024


def timed(command: list[str]) -> tuple[float, float]:
    """(wall seconds, peak MiB of the process tree) of `command`."""
    peak, started = [0.0], time.perf_counter()
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    def sample():
        while proc.poll() is None:
            peak[0] = max(peak[0], tree_rss_mib(proc.pid))
            time.sleep(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _, err = proc.communicate()
    sampler.join()
    if proc.returncode != 0:
        sys.exit(f"bench: {' '.join(command)} failed ({proc.returncode}):\n{err[-3000:]}")
    return time.perf_counter() - started, peak[0]


def paired_stats(a: list[float], b: list[float]) -> dict:
    sys.path.insert(0, str(ROOT))
    from fmtransfer.study import paired_stats as stats

    return stats(a, b)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--config", default="configs/book.toml")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--modes", default=",".join(MODES), help=f"any of {', '.join(MODES)} (serial always runs)")
    parser.add_argument("--stack", default=None, help="seeds per graph in the stack modes (default: all of them)")
    parser.add_argument("--draws", type=int, default=5, help="data seeds crossed with the seeds in the draws mode")
    parser.add_argument("--no-keras", action="store_true", help="skip plain Keras' one-seed run")
    args = parser.parse_args()
    stack = args.stack or str(args.seeds)
    modes = {"serial": [], "jobs auto": ["--jobs", "auto"], "stack": ["--stack", stack],
             "jobs+stack": ["--jobs", "auto", "--stack", stack], "draws": ["--data-seeds", str(args.draws)]}
    wanted = ["serial", *[m for m in args.modes.split(",") if m != "serial"]]
    if any(m not in modes for m in wanted):
        parser.error(f"--modes: choose among {', '.join(MODES)}")
    fmtransfer = [sys.executable, "-m", "fmtransfer.cli", "study", "--config", args.config, "--seeds",
                  str(args.seeds), "--no-plots", *(QUICK if args.quick else [])]
    report = {"seeds": args.seeds, "config": args.config, "cpus": os.cpu_count(), "load_before": os.getloadavg()[0]}
    with tempfile.TemporaryDirectory() as tmp:
        for mode, extra in ((m, modes[m]) for m in wanted):
            study_dir = Path(tmp) / mode.replace(" ", "-")
            wall, peak = timed([*fmtransfer, "--run", str(study_dir), *extra])
            cell = json.loads(subprocess.run([sys.executable, "-m", "fmtransfer.cli", "study", "report", str(study_dir),
                                              "--json", "--no-plots"], cwd=ROOT, capture_output=True, text=True,
                                             check=True).stdout)["cells"][0]
            report[mode] = {"wall_seconds": round(wall, 1), "seconds_per_seed": round(wall / args.seeds, 2),
                            "runs": cell["n"], "seconds_per_run": round(wall / cell["n"], 2),
                            "peak_mib": round(peak), "baseline_mean": cell["baseline_mean"],
                            "baseline_std": cell["baseline_std"], "transfer_mean": cell["transfer_mean"],
                            "transfer_std": cell["transfer_std"],
                            "accuracies": cell["accuracies"], "baseline_accuracies": cell["baseline_accuracies"]}
            if mode == "draws":  # what was trained: one model A per seed, whatever the draws
                report[mode]["model_a_files"] = len(list((study_dir / "models").glob("a-*.keras")))
        if not args.no_keras:
            keras = [sys.executable, str(ROOT / "bench" / "bench.py"), "--worker", "keras", "--config", args.config,
                     "--seed", "42", "--out", str(Path(tmp) / "keras.json"), *(["--quick"] if args.quick else [])]
            wall, peak = timed(keras)
            report["plain keras, 1 seed, extrapolated"] = {"seconds_per_seed": round(wall, 1),
                                                           "wall_seconds": round(wall * args.seeds, 1),
                                                           "peak_mib": round(peak)}
    serial = report["serial"]
    for mode in wanted[1:]:
        mine = report[mode]
        mine["over_serial"] = round(mine["wall_seconds"] / serial["wall_seconds"], 3)
        if mode == "draws":  # other units than the serial cell's: nothing to pair
            continue
        mine["same_accuracies"] = mine["accuracies"] == serial["accuracies"]
        mine["paired_p_transfer"] = paired_stats(serial["accuracies"], mine["accuracies"])["p_value"]
        mine["paired_p_baseline"] = paired_stats(serial["baseline_accuracies"], mine["baseline_accuracies"])["p_value"]
    report["load_after"] = os.getloadavg()[0]
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
