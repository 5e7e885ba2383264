"""How big a run directory's split is, and how long a stage takes to load it: the split saved as
dataset row numbers (today) against the copy of the images fmtransfer 0.1 saved, in one invocation.

    .venv/bin/python bench/split_load.py [--repeats 5]

Needs the real Fashion-MNIST (see README, "The data"). Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fmtransfer import stages  # noqa: E402
from fmtransfer.config import Config  # noqa: E402
from fmtransfer.rundir import RunDir  # noqa: E402


def timed(call, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        new, old = RunDir(Path(tmp) / "indices"), RunDir(Path(tmp) / "images")
        stages.split(Config(), new)
        split, manifest = new.load_split("bench")
        old.path.mkdir()
        arrays = {f"{p}_{xy}": getattr(split, p)[i] for p in split.PARTS for i, xy in enumerate("xy")}
        with open(old.split_arrays, "wb") as f:  # what fmtransfer 0.1 wrote
            np.savez(f, b_classes=np.array(split.b_classes), unlabelled=split.unlabelled,
                     fingerprint=np.array(split.fingerprint), **arrays)
        old.write_json(old.split_json, manifest)
        report = {
            "split_npz_bytes": {"indices": new.split_arrays.stat().st_size, "images (0.1)": old.split_arrays.stat().st_size},
            "load_seconds_median": {"indices": round(timed(lambda: new.load_split("bench"), args.repeats), 3),
                                    "images (0.1)": round(timed(lambda: old.load_split("bench"), args.repeats), 3)},
            "repeats": args.repeats,
        }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
