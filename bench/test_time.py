"""How long the whole test suite takes, one process against a worker per core, in one invocation.

    python bench/test_time.py [--out bench/measured/test-time.json] [--modes serial,workers]

`serial` is `pytest -q`, what `make test` ran before 0.6; `workers` is what it runs now,
`pytest -n auto --dist loadfile` (pytest-xdist, whole files per worker). Each runs the whole
suite in a fresh process from the repository's root, with $FMTRANSFER_REQUIRE_SYSTEM=1 as CI sets
it, and is timed as a whole (wall seconds), with pytest's own count of passed and failed tests and
its slowest tests. Compare the two only within one file: machines of one kind differ 2-4x in speed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODES = {
    "serial": ["-q"],
    "workers": ["-n", "auto", "--dist", "loadfile", "-q"],
}
SLOWEST = 10


def cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def run(mode: str) -> dict:
    command = [sys.executable, "-m", "pytest", *MODES[mode], "-p", "no:cacheprovider", f"--durations={SLOWEST}"]
    started = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "FMTRANSFER_REQUIRE_SYSTEM": "1"})
    seconds = time.perf_counter() - started
    out = done.stdout
    summary = out.strip().splitlines()[-1] if out.strip() else ""
    counts = {word: int(n) for n, word in re.findall(r"(\d+) (passed|failed|errors?|skipped)", summary)}
    slowest = [{"seconds": float(s), "test": t} for s, t in
               re.findall(r"^([\d.]+)s (?:call|setup|teardown)\s+(\S+)", out, re.M)][:SLOWEST]
    return {"command": " ".join(["pytest", *MODES[mode]]), "exit": done.returncode, "wall_seconds": round(seconds, 1),
            "summary": summary, "counts": counts, "slowest": slowest}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "bench" / "measured" / "test-time.json"))
    parser.add_argument("--modes", default="serial,workers")
    args = parser.parse_args(argv)
    modes = [m.strip() for m in args.modes.split(",")]
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        parser.error(f"--modes: unknown {', '.join(unknown)}; choose among {', '.join(MODES)}")
    result = {"cpu": cpu(), "cores": os.cpu_count(), "python": platform.python_version(),
              "command": "python bench/test_time.py " + " ".join(argv), "modes": {}}
    for mode in modes:
        result["modes"][mode] = run(mode)
        print(f"{mode}: {result['modes'][mode]['wall_seconds']} s, {result['modes'][mode]['summary']}", flush=True)
    if {"serial", "workers"} <= set(result["modes"]):
        result["workers_over_serial"] = round(result["modes"]["workers"]["wall_seconds"]
                                              / result["modes"]["serial"]["wall_seconds"], 3)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"written: {args.out}")
    return 0 if all(m["exit"] == 0 for m in result["modes"].values()) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
