"""Benchmark: each pretraining method against model A, in one invocation.

The contenders issue asks that every pretraining method, with its default settings, take at most
3x the time of model A's 20 epochs on the same machine, and that no stage peak above 2 GiB. This
runs, in one fresh run directory: `split`, `train-a`, then `pretrain --method M` for every
pretraining method, each a separate `fmtransfer` process, and reports each one's wall time, its
ratio to train-a's, its peak memory (the process tree's resident set, sampled from /proc), and
the encoder's linear probe on task B through `transfer --from M`.

    .venv/bin/python bench/pretrain.py                       # dense, every method, defaults
    .venv/bin/python bench/pretrain.py --arch cnn --methods gan,autoencoder
    .venv/bin/python bench/pretrain.py --quick               # a smoke run (1 epoch, 5,000 images)

Prints a JSON object. Only ratios from one invocation mean anything on a shared machine.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from study import timed  # noqa: E402  (the same process-tree timer as the study benchmark)

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    from fmtransfer import contenders

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", default="dense", choices=["dense", "cnn"])
    parser.add_argument("--methods", default=",".join(contenders.pretraining_methods()))
    parser.add_argument("--quick", action="store_true", help="1 epoch everywhere on 5,000 images: a smoke run")
    args = parser.parse_args()
    fm = [sys.executable, "-m", "fmtransfer.cli"]
    with tempfile.TemporaryDirectory(prefix="fmtransfer-bench-pretrain-") as tmp:
        run = ["--run", str(Path(tmp) / "run")]
        if args.quick:  # every epoch count of every section to 1, on 5,000 images
            quick = Path(tmp) / "quick.toml"
            quick.write_text("[train_a]\nepochs = 1\n[pretrain]\nepochs = 1\nunlabelled_size = 5000\n"
                             + "".join(f"[{s}]\nepochs = 1\n" for s in ("greedy", "gan", "rbm")))
            run += ["--config", str(quick)]
        timed([*fm, "split", *run])
        a_seconds, a_peak = timed([*fm, "train-a", *run, "--arch", args.arch])  # later stages remember it
        rows = {"model A (train-a)": {"seconds": round(a_seconds, 1), "ratio": 1.0, "peak_mib": round(a_peak)}}
        for method in args.methods.split(","):
            if args.arch not in contenders.get(method).archs:
                continue
            seconds, peak = timed([*fm, "pretrain", *run, "--method", method, "--no-plot"])
            timed([*fm, "transfer", *run, "--from", method])
            probe = json.loads((Path(tmp) / "run" / f"transfer_{method}.json").read_text())["linear_probe"]
            rows[f"pretrain --method {method}"] = {"seconds": round(seconds, 1), "ratio": round(seconds / a_seconds, 2),
                                                   "peak_mib": round(peak), "linear_probe": probe}
    print(json.dumps({"arch": args.arch, "quick": args.quick, "stages": rows}, indent=2))


if __name__ == "__main__":
    main()
